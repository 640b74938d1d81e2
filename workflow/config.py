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
import functools
from pathlib import Path

import jsonschema
import yaml

from workflow import config_scratch
from workflow.datasets import sources
from workflow.models import families
from workflow.models import sources as model_sources

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "schemas" / "config.schema.yaml"

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
LM_KINDS = {"causal_lm": "causal", "masked_lm": "masked"}  # fine-tuning kind -> the LM head it trains
REQUIRED_KEYS = {"builtin": ["task"], "file": ["path"], "huggingface": ["id"]}


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


def _schema_errors(instance, schema_: dict, prefix: str = "") -> list[str]:
    """Messages for every schema violation; `prefix` is the key path of `instance` in the config."""
    errors = sorted(Validator(schema_).iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [_message(e, prefix) for e in errors]


def _check_variant(spec: dict, given: set, where: str, base: str, problems: list[str]) -> None:
    """The `finetuned` block of one model (its body already resolved as `base`): the LM head a
    causal_lm / masked_lm fine-tune trains, LoRA targets, and a checkpoint's fit to the base.
    Sets ``finetuned.lm`` (the fine-tuned variant's LM head kind) and, for a checkpoint, its
    resolved ``finetuned.resolved``."""
    from workflow.models import checkpoints

    ft, where = spec["finetuned"], f"{where}.finetuned"
    kind = ft["kind"]
    fam = families.FAMILIES[spec["family"]]
    trains_lm = kind in LM_KINDS
    for key in ("method", "lora"):
        if key in given and not trains_lm:
            problems.append(f"{where}.{key}: only for kind causal_lm or masked_lm (this model's kind is {kind!r})")
    if "source" in given and kind != "checkpoint":
        problems.append(f"{where}.source: only for kind checkpoint (this model's kind is {kind!r})")
    ft["lm"] = spec["lm"]
    if trains_lm:
        wanted = LM_KINDS[kind]
        if spec["lm"] != wanted:
            has = f"a {spec['lm']} LM head" if spec["lm"] else "no LM head"
            names = (model_sources.read_model_config(base).get("architectures") or []) if base else []
            problems.append(
                f"{where}.kind: {kind} trains a {wanted} LM head, and {spec['source']} has {has} "
                f"(config.json architectures: {', '.join(names) or 'none'})"
            )
        if ft["method"] == "lora":
            targets = ft["lora"]["target_modules"] or list(fam.lora_targets)
            ft["lora"]["target_modules"] = targets
            unknown = fam.unknown_targets(targets)
            if unknown:
                problems.append(
                    f"{where}.lora.target_modules: {unknown} are not linear layers of a {fam.name} block "
                    f"(it has: {', '.join(fam.linear)})"
                )
        else:
            ft.pop("lora")
    else:
        ft.pop("lora")
        ft.pop("method")
    if kind != "checkpoint":
        return
    if "source" not in ft:
        problems.append(f"{where}: kind checkpoint needs key 'source' (a local folder or a Hugging Face id)")
        return
    try:
        resolved = ft["resolved"] = model_sources.resolve_source(ft["source"])
        found = checkpoints.mismatches(base, resolved)
        ft["lm"] = families.lm_kind(model_sources.read_model_config(resolved)) or spec["lm"]
    except Exception as exc:  # SourceError, or a hub error for an uncached id
        problems.append(f"{where}.source: {exc}")
        return
    problems += [f"{where}.source: {ft['source']} does not fit base {spec['source']}: {p}" for p in found]


def _check_chat(spec: dict, where: str, base: str, problems: list[str]) -> None:
    from workflow.models import checkpoints

    if not spec["chat_template"]:
        return
    ft = spec["finetuned"]
    candidates = {base: spec["source"], **({ft["resolved"]: ft["source"]} if ft.get("resolved") else {})}
    found = [given for resolved, given in candidates.items() if checkpoints.has_chat_template(resolved)]
    if found:
        spec["chat_source"] = found[0]  # the base's template, else the fine-tuned checkpoint's
    else:
        problems.append(
            f"{where}.chat_template: the tokenizer of {spec['source']}"
            + (f" (and of {ft['source']})" if ft.get("resolved") else "")
            + " has no chat template (tokenizer_config.json chat_template, or chat_template.jinja)"
        )


def _check_models(cfg: dict, given: dict[str, set], problems: list[str]) -> None:
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
        config_scratch.check_model_datasets(cfg, name, spec, problems)
        try:
            if spec["source"] == config_scratch.SCRATCH:
                base, model_cfg = None, config_scratch.scratch_config(cfg, name, spec, given[name], problems)
                if model_cfg is None:
                    continue
            else:
                base = model_sources.resolve_source(spec["source"])
                model_cfg = model_sources.read_model_config(base)
            spec["family"] = families.model_family(model_cfg)
            spec["lm"] = families.lm_kind(model_cfg)
            depth = model_sources.n_layers(model_cfg)
            positions = model_sources.n_positions(model_cfg)
            spec["d_model"] = model_sources.d_model(model_cfg)
        except Exception as exc:  # SourceError, or a hub error for an uncached id
            problems.append(f"{where}.source: {exc}")
            continue
        _check_variant(spec, given[name], where, base, problems)
        _check_chat(spec, where, base, problems)
        too_deep = [layer for layer in spec["layers"] if layer > depth]
        if too_deep:
            problems.append(
                f"{layers_key}: layer(s) {too_deep} beyond the {depth} blocks of model {name!r} ({spec['source']})"
            )
        if 0 in spec["layers"] and set(cfg["sites"]) - {"resid_post"}:
            inner = sorted(set(cfg["sites"]) - {"resid_post"})
            problems.append(f"{layers_key}: layer 0 is the embedding output; sites {inner} have no layer 0")
        if positions is not None and spec["max_length"] > positions:
            problems.append(
                f"{length_key}: {spec['max_length']} tokens exceed the {positions} positions of model {name!r}"
            )
        stride = cfg["tokenize"].get("stride")
        if stride is not None and 2 * stride >= spec["max_length"]:
            problems.append(
                f"tokenize.stride: {stride} overlapping tokens leave windows of {length_key} {spec['max_length']} "
                f"advancing by half a window or less (model {name!r}); use a stride of at most "
                f"{(spec['max_length'] - 1) // 2}"
            )


def _check_datasets(cfg: dict, given: dict[str, set], problems: list[str]) -> None:
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


def _check_saes(cfg: dict, given: dict[str, set], problems: list[str]) -> None:
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
        _check_scope(cfg, recipe, where, problems)


def _check_crosscoders(cfg: dict, problems: list[str]) -> None:
    """Crosscoder recipes: one width key, k within the latents, scopes; the thresholds in order."""
    for name, recipe in cfg["crosscoders"].items():
        where = f"crosscoders.{name}"
        if "expansion_factor" in recipe and "d_sae" in recipe:
            problems.append(f"{where}: give expansion_factor or d_sae, not both")
        if "d_sae" not in recipe:
            recipe.setdefault("expansion_factor", 8)
        _check_width(cfg, recipe, where, problems)
        _check_scope(cfg, recipe, where, problems)
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
    _check_models(cfg, {name: set(spec.get("finetuned") or {}) for name, spec in raw["models"].items()}, problems)
    _check_datasets(cfg, {name: set(spec) for name, spec in raw["datasets"].items()}, problems)
    _check_saes(cfg, {name: set(spec) for name, spec in (raw.get("saes") or {}).items()}, problems)
    _check_crosscoders(cfg, problems)
    _check_scope(cfg, cfg["probe"], "probe", problems)
    _check_scope(cfg, cfg["heads"], "heads", problems)
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
