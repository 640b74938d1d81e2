"""Checks of the config's `models` block that the schema cannot make: sources exist (or are cached /
reachable), layers fit each model's depth, sites exist, fine-tuned variants and chat templates are
whole."""

from __future__ import annotations

from workflow.config import scratch as config_scratch
from workflow.config.schema import schema, schema_errors
from workflow.models import families
from workflow.models import sources as model_sources

LM_KINDS = {"causal_lm": "causal", "masked_lm": "masked"}  # fine-tuning kind -> the LM head it trains


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


def check_models(cfg: dict, given: dict[str, set], problems: list[str]) -> None:
    finetune_schema = {**schema()["$defs"]["finetune"], "$defs": schema()["$defs"]}
    for name, spec in cfg["models"].items():
        where = f"models.{name}"
        merged = {**cfg["finetune"], **spec.get("finetune", {})}
        problems += schema_errors(merged, finetune_schema, prefix=f"{where}.finetune")
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
