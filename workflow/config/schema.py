"""The study config's JSON Schema (``schemas/config.schema.yaml``): defaults filled in while it
validates, and each error as one line naming its key path; `ConfigError` lists every problem."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """One or more problems in the study config; str() lists them all."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid study config:\n" + "\n".join(f"  - {p}" for p in problems))


def _with_defaults(validator_class):
    """A validator that fills in schema defaults while it validates (jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


Validator = _with_defaults(jsonschema.Draft202012Validator)


@functools.cache
def schema() -> dict:
    """The parsed schema (read once per process; never mutated)."""
    # the C loader (libyaml) reads it ~10x faster: this runs on every snakemake start
    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _path(error, prefix: str) -> str:
    return (
        ".".join([prefix, *map(str, error.absolute_path)] if prefix else map(str, error.absolute_path)) or "(top level)"
    )


def _message(error, prefix: str) -> str:
    where = _path(error, prefix)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"{where}: unknown key {', '.join(map(repr, extra))}{hint}"
    if "propertyNames" in error.schema_path:
        return f"{where}: name {error.instance!r} may hold only letters, digits, '_' and '-'"
    return f"{where}: {error.instance!r} is invalid: {error.message}"


def schema_errors(instance, schema_: dict, prefix: str = "") -> list[str]:
    """Messages for every schema violation; `prefix` is the key path of `instance` in the config."""
    errors = sorted(Validator(schema_).iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [_message(e, prefix) for e in errors]
