"""What every stage's command line shares (`python -m workflow <stage> ...`)."""

from __future__ import annotations

import argparse
import json


def parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The argument parser of a stage module (`__name__`, `__doc__`): its name and first doc line."""
    return argparse.ArgumentParser(
        prog=f"python -m workflow {module.rpartition('.')[2]}", description=doc.strip().splitlines()[0]
    )


def add_config(p: argparse.ArgumentParser, what: str, flag: str = "--config") -> None:
    """A required JSON option: the stage's slice of the study config."""
    p.add_argument(flag, required=True, type=json.loads, help=f"the {what} as JSON")


def classifier_job(p: argparse.ArgumentParser, model_help: str, config_what: str) -> argparse.ArgumentParser:
    """The options of a job that makes a sequence classifier from a model and a labelled dataset."""
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--train-tokens", required=True)
    p.add_argument("--test-tokens", required=True)
    p.add_argument("--meta", required=True, help="the dataset's meta.json (label names)")
    add_config(p, config_what)
    p.add_argument("--out-dir", required=True)
    return p


def pairs(items: list[str]) -> dict[str, str]:
    """NAME=VALUE arguments as a dict (e.g. --sae topk=results/saes/...)."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=VALUE, got {item!r}")
        out[name] = value
    return out
