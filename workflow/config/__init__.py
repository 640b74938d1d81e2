"""Study configuration: schema validation and the checks that can be made before any job starts.

`load(config)` fills defaults from ``schemas/config.schema.yaml``, validates
types, then checks what can be seen before any job starts: model sources
exist (or are cached / reachable), layers fit each model's depth, sites exist,
dataset files and columns are there and labels are integers. All problems are
reported at once, each naming its key path and the bad value.

Nothing here imports torch or transformers: the Snakefile calls it on every
invocation, and a no-op run must stay fast.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from workflow.config.models import check_models
from workflow.config.schema import SCHEMA_PATH, ConfigError, schema, schema_errors
from workflow.config.sections import architecture_keys, check_crosscoders, check_datasets, check_saes, check_scope

__all__ = ["SCHEMA_PATH", "ConfigError", "architecture_keys", "load", "load_file", "schema"]


def load(raw: dict) -> dict:
    """Validate a study config and return it with defaults filled in; raise ConfigError."""
    cfg = copy.deepcopy(raw)
    problems = schema_errors(cfg, schema())
    if problems:
        raise ConfigError(problems)
    check_models(cfg, {name: set(spec.get("finetuned") or {}) for name, spec in raw["models"].items()}, problems)
    check_datasets(cfg, {name: set(spec) for name, spec in raw["datasets"].items()}, problems)
    check_saes(cfg, {name: set(spec) for name, spec in (raw.get("saes") or {}).items()}, problems)
    check_crosscoders(cfg, problems)
    check_scope(cfg, cfg["probe"], "probe", problems)
    check_scope(cfg, cfg["heads"], "heads", problems)
    diff = cfg["diff"]
    if diff["match_cosine"] > diff["retained_cosine"]:
        problems.append(
            f"diff.match_cosine: {diff['match_cosine']} is above diff.retained_cosine "
            f"{diff['retained_cosine']}; a retained pair must also count as matched"
        )
    if problems:
        raise ConfigError(problems)
    return cfg


def load_file(path: str | Path) -> dict:
    return load(yaml.safe_load(Path(path).read_text()) or {})
