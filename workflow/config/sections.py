"""Checks of the config's `datasets`, `saes` and `crosscoders` blocks and of the scopes of the
analyses, beyond what the schema says: dataset files and columns, recipe widths, scoped layers."""

from __future__ import annotations

import functools

from workflow.config.schema import schema
from workflow.datasets import sources

# Dataset keys that only make sense for some sources.
SOURCE_KEYS = {
    "builtin": {"task", "n_train", "n_test", "label_noise"},
    "abstractions": {"board", "change", "n_train", "n_test"},
    "rotten_tomatoes": {"test_fraction"},
    "file": {
        *("path", "test_path", "text_column", "label_column", "label_names", "test_fraction", "response_column"),
        "encoding",
    },
    "huggingface": {
        *("id", "config", "train_split", "test_split"),
        *("text_column", "label_column", "label_names", "response_column"),
    },
}
REQUIRED_KEYS = {"builtin": ["task"], "file": ["path"], "huggingface": ["id"]}


def check_datasets(cfg: dict, given: dict[str, set], problems: list[str]) -> None:
    """`given`: per dataset, the keys the user wrote (before defaults were filled in)."""
    for name, spec in cfg["datasets"].items():
        where = f"datasets.{name}"
        kind = spec["source"]
        allowed = SOURCE_KEYS[kind] | {"source", "seed", "max_train", "max_test"}
        for key in sorted(given[name] - allowed):
            problems.append(
                f"{where}.{key}: not used by source {kind!r} (keys for it: {', '.join(sorted(SOURCE_KEYS[kind]))})"
            )
        missing = [k for k in REQUIRED_KEYS.get(kind, []) if k not in spec]
        problems += [f"{where}: source {kind!r} needs key {k!r}" for k in missing]
        if missing:
            continue
        spec["labelled"] = sources.labelled(spec, given[name])
        if not spec["labelled"]:
            spec["label_column"] = None
        if kind in sources.CHECKS:
            problems += sources.CHECKS[kind](spec, where)


@functools.cache
def architecture_keys() -> tuple[set[str], dict[str, set[str]], dict[str, list[str]]]:
    """From the schema's SAE recipe: the keys every architecture shares, each architecture's own keys
    (marked x-architectures) and the keys each needs (x-required-by)."""
    properties = schema()["$defs"]["sae"]["properties"]
    names = properties["architecture"]["enum"]
    shared = {k for k, p in properties.items() if "x-architectures" not in p}
    own = {name: {k for k, p in properties.items() if name in p.get("x-architectures", [])} for name in names}
    required = {name: [k for k, p in properties.items() if name in p.get("x-required-by", [])] for name in names}
    return shared, own, required


def check_saes(cfg: dict, given: dict[str, set], problems: list[str]) -> None:
    """Architecture-specific keys, width and k against every model's d_model, scopes."""
    shared, own, required = architecture_keys()
    for name, recipe in cfg["saes"].items():
        where = f"saes.{name}"
        arch = recipe["architecture"]
        for key in sorted(given[name] - shared - own[arch]):
            problems.append(f"{where}.{key}: not used by architecture {arch!r}")
        if "expansion_factor" in recipe and "d_sae" in recipe:
            problems.append(f"{where}: give expansion_factor or d_sae, not both")
        if "d_sae" not in recipe:
            recipe.setdefault("expansion_factor", 8)
        for key in required[arch]:
            if key not in recipe:
                problems.append(f"{where}: architecture {arch!r} needs key {key!r}")
        for key in set(recipe) - shared - own[arch]:
            recipe.pop(key)  # schema defaults of other architectures
        _check_width(cfg, recipe, where, problems)
        check_scope(cfg, recipe, where, problems)


def check_crosscoders(cfg: dict, problems: list[str]) -> None:
    """Crosscoder recipes: one width key, k within the latents, scopes; the thresholds in order."""
    for name, recipe in cfg["crosscoders"].items():
        where = f"crosscoders.{name}"
        if "expansion_factor" in recipe and "d_sae" in recipe:
            problems.append(f"{where}: give expansion_factor or d_sae, not both")
        if "d_sae" not in recipe:
            recipe.setdefault("expansion_factor", 8)
        _check_width(cfg, recipe, where, problems)
        check_scope(cfg, recipe, where, problems)
    cc = cfg["crosscoder"]
    if not cc["pretrained_only"] < 0.5 - cc["shared_band"] <= 0.5 + cc["shared_band"] < cc["finetuned_only"]:
        problems.append(
            f"crosscoder: the classes overlap (pretrained_only {cc['pretrained_only']}, shared 0.5 +/- "
            f"{cc['shared_band']}, finetuned_only {cc['finetuned_only']}); "
            "keep pretrained_only < shared < finetuned_only"
        )
    for layer in cfg["diff"]["seed_baseline_layers"] or []:
        if not any(layer in spec["layers"] for spec in cfg["models"].values()):
            problems.append(f"diff.seed_baseline_layers: {layer} is not extracted for any model")


def _check_width(cfg: dict, recipe: dict, where: str, problems: list[str]) -> None:
    """k and aux_k must not exceed the latents a recipe has on any model; a recipe trains on at
    least one batch."""
    tokens, batch = recipe.get("train_tokens"), recipe.get("batch_size")
    if tokens is not None and batch is not None and tokens < batch:
        problems.append(
            f"{where}.train_tokens: {tokens} is less than one batch ({where}.batch_size {batch}); "
            "raise train_tokens or lower batch_size"
        )
    for model, spec in cfg["models"].items():
        if "d_model" not in spec:
            continue
        d_sae = recipe.get("d_sae") or recipe["expansion_factor"] * spec["d_model"]
        for key in ("k", "aux_k"):
            if (recipe.get(key) or 0) > d_sae:
                problems.append(
                    f"{where}.{key}: {recipe[key]} is more than the {d_sae} latents it has on model {model!r}"
                )


def check_scope(cfg: dict, section: dict, where: str, problems: list[str]) -> None:
    """A scope's datasets, sites and layers must be the study's own."""
    for key, known in (("datasets", cfg["datasets"]), ("sites", cfg["sites"])):
        unknown = [v for v in section.get(key) or [] if v not in known]
        if unknown:
            problems.append(f"{where}.{key}: {unknown} not in the study's {key} ({', '.join(map(str, known))})")
    if section.get("layers"):
        all_layers = {layer for spec in cfg["models"].values() for layer in spec["layers"]}
        unknown = sorted(set(section["layers"]) - all_layers)
        if unknown:
            problems.append(f"{where}.layers: {unknown} not extracted for any model (layers: {sorted(all_layers)})")
