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


def add_load(p: argparse.ArgumentParser) -> None:
    """--load: how the job loads its models (dtype, device_map), as JSON; see `loading.use_options`."""
    p.add_argument("--load", type=json.loads, default={}, help="the model's load options as JSON")


def parse_model_job(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse a model job's arguments and load its models with their --load options from here on."""
    from workflow.models.loading import use_options

    args = p.parse_args(argv)
    use_options(args.load)
    return args


def add_lm(p: argparse.ArgumentParser, flag: str = "--lm", whose: str = "the variant") -> None:
    """A language-model spec as JSON (`Plan.lm_spec`: source, kind, body); absent: no LM head."""
    p.add_argument(flag, type=json.loads, default=None, help=f"language model of {whose} as JSON (source, kind, body)")


def classifier_job(p: argparse.ArgumentParser, model_help: str, config_what: str) -> argparse.ArgumentParser:
    """The options of a job that makes a sequence classifier from a model and a labelled dataset."""
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--train-tokens", required=True)
    p.add_argument("--test-tokens", required=True)
    p.add_argument("--meta", required=True, help="the dataset's meta.json (label names)")
    add_config(p, config_what)
    add_load(p)
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
