"""Study configuration: schema validation, up-front checks and per-job slices.

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
import functools
import hashlib
import json
from pathlib import Path

import jsonschema
import yaml

from workflow import models
from workflow.datasets import sources

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "schemas" / "config.schema.yaml"

# Modules each stage's output depends on; a change to any re-runs the stage.
STAGE_MODULES = {
    "dataset": ["dataset.py", "datasets/builtin.py", "datasets/sources.py", "io.py"],
    "tokenize": ["tokenize.py", "models.py", "io.py"],
    "finetune": ["finetune.py", "tokenize.py", "models.py", "io.py"],
    "extract": ["extract.py", "tokenize.py", "models.py", "io.py"],
    "similarity": ["similarity.py", "similarity_stats.py", "tokenize.py", "models.py", "io.py"],
    "linear_head": ["linear_head.py", "finetune.py", "tokenize.py", "models.py", "io.py"],
    "train_sae": ["train_sae.py", "sae/__init__.py", "sae/base.py", "sae/losses.py", "sae/stream.py", "io.py"],
    "evaluate_sae": ["evaluate_sae.py", "codes.py", "reconstruction.py", "splice.py", "sae/__init__.py", "sae/base.py",
                     "tokenize.py", "models.py", "io.py"],
    "features": ["features.py", "codes.py", "sae/__init__.py", "sae/base.py", "io.py"],
    "diff": ["diff.py", "codes.py", "reconstruction.py", "evaluate_sae.py", "splice.py", "train_sae.py", "sae/__init__.py",
             "sae/base.py", "tokenize.py", "models.py", "io.py"],
    "diff_summary": ["diff_summary.py", "diff.py", "io.py"],
    "probe": ["probe.py", "pooling.py", "codes.py", "sae/__init__.py", "sae/base.py", "tokenize.py", "io.py"],
    "cluster": ["cluster.py", "pooling.py", "codes.py", "sae/__init__.py", "sae/base.py", "tokenize.py", "io.py"],
    "probe_summary": ["probe_summary.py", "io.py"],
    "heads": ["heads.py", "head_ablation.py", "attention_stats.py", "tokenize.py", "models.py", "io.py"],
    "heads_summary": ["heads_summary.py", "io.py"],
    "report": ["report.py", "report_features.py", "report_html.py", "io.py"],
}
# Each SAE architecture's own modules: editing one re-runs only SAEs of that architecture.
ARCHITECTURE_MODULES = {
    "relu": ["sae/relu.py"],
    "topk": ["sae/topk.py", "sae/kernels.py"],
    "batchtopk": ["sae/batchtopk.py", "sae/topk.py", "sae/kernels.py"],
    "jumprelu": ["sae/jumprelu.py"],
}
# Dataset keys that only make sense for some sources.
SOURCE_KEYS = {
    "builtin": {"task", "n_train", "n_test", "label_noise"},
    "rotten_tomatoes": {"test_fraction"},
    "file": {"path", "test_path", "text_column", "label_column", "label_names", "test_fraction"},
    "huggingface": {"id", "config", "train_split", "test_split", "text_column", "label_column", "label_names"},
}
REQUIRED_KEYS = {"builtin": ["task"], "file": ["path"], "huggingface": ["id"]}
# SAE recipe keys that only make sense for some architectures.
ARCHITECTURE_KEYS = {
    "relu": {"l1_coefficient", "target_l0", "sparsity_warmup_fraction"},
    "topk": {"k", "aux_k", "aux_coefficient", "sparse_kernels"},
    "batchtopk": {"k", "aux_k", "aux_coefficient", "sparse_kernels", "threshold_momentum"},
    "jumprelu": {"l0_coefficient", "target_l0", "sparsity_warmup_fraction", "bandwidth", "threshold_init"},
}
SAE_SCOPE_KEYS = ("datasets", "layers", "sites")  # where a recipe runs; not part of the job's recipe
SHARED_SAE_KEYS = {*SAE_SCOPE_KEYS, "architecture", "expansion_factor", "d_sae", "lr", "adam_betas", "warmup_fraction", "decay_fraction",
                   "train_tokens", "batch_size", "seed", "dtype", "normalize", "b_dec_init", "dead_tokens",
                   "shuffle_buffer", "checkpoint_every", "log_every"}
DEFAULT_COEFFICIENTS = {"relu": ("l1_coefficient", 5.0), "jumprelu": ("l0_coefficient", 1.0)}


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
    return ".".join([prefix, *map(str, error.absolute_path)] if prefix else map(str, error.absolute_path)) or "(top level)"


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


def _schema_errors(instance, schema_: dict, prefix: str = "") -> list[str]:
    """Messages for every schema violation; `prefix` is the key path of `instance` in the config."""
    errors = sorted(Validator(schema_).iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [_message(e, prefix) for e in errors]


def _check_models(cfg: dict, problems: list[str]) -> None:
    finetune_schema = {**schema()["$defs"]["finetune"], "$defs": schema()["$defs"]}
    for name, spec in cfg["models"].items():
        where = f"models.{name}"
        merged = {**cfg["finetune"], **spec.get("finetune", {})}
        problems += _schema_errors(merged, finetune_schema, prefix=f"{where}.finetune")
        spec["finetune"] = merged
        layers_key = f"{where}.layers" if "layers" in spec else "layers"
        length_key = f"{where}.max_length" if "max_length" in spec else "tokenize.max_length"
        spec.setdefault("layers", cfg["layers"])
        spec.setdefault("max_length", cfg["tokenize"]["max_length"])
        try:
            resolved = models.resolve_source(spec["source"])
            model_cfg = models.read_model_config(resolved)
            models.model_family(model_cfg)
            spec["family"] = models.model_family(model_cfg)
            depth = models.n_layers(model_cfg)
            positions = models.n_positions(model_cfg)
            spec["d_model"] = int(model_cfg.get("hidden_size") or model_cfg.get("n_embd"))
        except Exception as exc:  # SourceError, or a hub error for an uncached id
            problems.append(f"{where}.source: {exc}")
            continue
        too_deep = [layer for layer in spec["layers"] if layer > depth]
        if too_deep:
            problems.append(f"{layers_key}: layer(s) {too_deep} beyond the {depth} blocks of model {name!r} ({spec['source']})")
        if 0 in spec["layers"] and set(cfg["sites"]) - {"resid_post"}:
            problems.append(f"{layers_key}: layer 0 is the embedding output; sites {sorted(set(cfg['sites']) - {'resid_post'})} have no layer 0")
        if positions is not None and spec["max_length"] > positions:
            problems.append(f"{length_key}: {spec['max_length']} tokens exceed the {positions} positions of model {name!r}")


def _check_datasets(cfg: dict, given: dict[str, set], problems: list[str]) -> None:
    """`given`: per dataset, the keys the user wrote (before defaults were filled in)."""
    for name, spec in cfg["datasets"].items():
        where = f"datasets.{name}"
        kind = spec["source"]
        allowed = SOURCE_KEYS[kind] | {"source", "seed", "max_train", "max_test"}
        for key in sorted(given[name] - allowed):
            problems.append(f"{where}.{key}: not used by source {kind!r} (keys for it: {', '.join(sorted(SOURCE_KEYS[kind]))})")
        missing = [k for k in REQUIRED_KEYS.get(kind, []) if k not in spec]
        problems += [f"{where}: source {kind!r} needs key {k!r}" for k in missing]
        if missing or kind not in sources.CHECKS:
            continue
        problems += sources.CHECKS[kind](spec, where)


def _check_saes(cfg: dict, given: dict[str, set], problems: list[str]) -> None:
    """Architecture-specific keys, width and k against every model's d_model, scopes."""
    for name, recipe in cfg["saes"].items():
        where = f"saes.{name}"
        arch = recipe["architecture"]
        for key in sorted(given[name] - SHARED_SAE_KEYS - ARCHITECTURE_KEYS[arch]):
            problems.append(f"{where}.{key}: not used by architecture {arch!r}")
        if "expansion_factor" in recipe and "d_sae" in recipe:
            problems.append(f"{where}: give expansion_factor or d_sae, not both")
        if "d_sae" not in recipe:
            recipe.setdefault("expansion_factor", 8)
        if arch in ("topk", "batchtopk") and "k" not in recipe:
            problems.append(f"{where}: architecture {arch!r} needs key 'k' (latents per token)")
        if arch in DEFAULT_COEFFICIENTS:
            key, default = DEFAULT_COEFFICIENTS[arch]
            recipe.setdefault(key, default)
        for key in set(recipe) - SHARED_SAE_KEYS - ARCHITECTURE_KEYS[arch]:
            recipe.pop(key)  # schema defaults of other architectures
        for model, spec in cfg["models"].items():
            if "d_model" not in spec:
                continue
            d_sae = recipe.get("d_sae") or recipe["expansion_factor"] * spec["d_model"]
            if recipe.get("k") and recipe["k"] > d_sae:
                problems.append(f"{where}.k: {recipe['k']} is more than the {d_sae} latents it has on model {model!r}")
            if (recipe.get("aux_k") or 0) > d_sae:
                problems.append(f"{where}.aux_k: {recipe['aux_k']} is more than the {d_sae} latents it has on model {model!r}")
        _check_scope(cfg, recipe, where, problems)


def _check_scope(cfg: dict, section: dict, where: str, problems: list[str]) -> None:
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


def load(raw: dict) -> dict:
    """Validate a study config and return it with defaults filled in; raise ConfigError."""
    cfg = copy.deepcopy(raw)
    problems = _schema_errors(cfg, schema())
    if problems:
        raise ConfigError(problems)
    _check_models(cfg, problems)
    _check_datasets(cfg, {name: set(spec) for name, spec in raw["datasets"].items()}, problems)
    _check_saes(cfg, {name: set(spec) for name, spec in (raw.get("saes") or {}).items()}, problems)
    _check_scope(cfg, cfg["probe"], "probe", problems)
    _check_scope(cfg, cfg["heads"], "heads", problems)
    diff = cfg["diff"]
    if diff["match_cosine"] > diff["retained_cosine"]:
        problems.append(f"diff.match_cosine: {diff['match_cosine']} is above diff.retained_cosine "
                        f"{diff['retained_cosine']}; a retained pair must also count as matched")
    if problems:
        raise ConfigError(problems)
    return cfg


def load_file(path: str | Path) -> dict:
    return load(yaml.safe_load(Path(path).read_text()) or {})


# ------------------------------------------------------------ per-job slices


def code_version(stage: str, architecture: str | None = None) -> str:
    """Hash of the sources a stage runs: a params entry, so editing a stage re-runs it.
    SAE stages add the modules of their recipe's `architecture`."""
    digest = hashlib.sha256()
    for module in STAGE_MODULES[stage] + ARCHITECTURE_MODULES.get(architecture, []):
        digest.update((ROOT / "workflow" / module).read_bytes())
    return digest.hexdigest()[:16]


def sae_job_recipe(recipe: dict) -> dict:
    """What one SAE job receives: the recipe without the keys that say where it runs."""
    return {k: v for k, v in recipe.items() if k not in SAE_SCOPE_KEYS}


def heads_job_config(section: dict) -> dict:
    """What a heads job receives: the section without its scope and the viewer's example count."""
    return {k: v for k, v in section.items() if k not in ("datasets", "n_examples")}


def probe_job_config(section: dict) -> dict:
    """What a probe or cluster job receives: its section without the scope keys."""
    return {k: v for k, v in section.items() if k not in SAE_SCOPE_KEYS}


def as_json(obj) -> str:
    """Canonical JSON of a config slice, passed to a stage and compared by Snakemake."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
