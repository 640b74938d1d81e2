"""What a study's results folder holds that the explorer can show: for each (model, dataset) the
variants' task models (classifier or language model), and the (site, layer, recipe) whose SAEs exist
for both variants, with the diff's matched pairs where the diff ran. Paths come from the plan and the
layout, as the workflow's own jobs take them; nothing is listed that is not on disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from workflow import layout
from workflow.layout import CROSSCODER_PREFIX, VARIANTS
from workflow.plan import Plan


class NotFoundError(LookupError):
    """A model, dataset, site, layer or recipe the study does not have (HTTP 404)."""


@dataclass
class Pair:
    """One (model, dataset) of the study: what each variant's predictions come from, and its SAEs."""

    model: str
    dataset: str
    source: dict[str, str]  # variant -> the body's source (tokenizer included)
    classifier: dict[str, str | None]  # variant -> classifier folder (labelled data)
    lm: dict[str, dict | None]  # variant -> Plan.lm_spec (where the base has an LM head)
    label_names: list[str]
    max_length: int
    shape: tuple[int, int] = (0, 0)  # (blocks, heads per block) of the body
    causal_bos: bool = False  # a decoder whose inputs open with BOS (the tokens stage adds it)
    # (site, layer, recipe) -> variant -> SAE folder
    saes: dict[tuple[str, int, str], dict[str, str]] = field(default_factory=dict)
    diffs: dict[tuple[str, int, str], str] = field(default_factory=dict)  # -> diff.parquet
    # (site, layer, "crosscoder.<name>") -> the crosscoder folder (one dictionary for both variants)
    crosscoders: dict[tuple[str, int, str], str] = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "task": "classify" if self.classifier["pretrained"] else ("lm" if self.lm["pretrained"] else "none"),
            "labels": self.label_names,
            "saes": [
                {"site": s, "layer": layer, "recipe": r, "diff": (s, layer, r) in self.diffs}
                for (s, layer, r) in sorted(self.saes)
            ]
            + [{"site": s, "layer": layer, "recipe": r, "diff": True} for (s, layer, r) in sorted(self.crosscoders)],
            "report": f"reports/{self.model}/{self.dataset}/index.html",
            "blocks": self.shape[0],
            "heads": self.shape[1],
        }


class Catalog:
    """Everything a study (its validated config) has on disk under `results` (the working folder's
    ``results/``, as the layout's paths are relative to it)."""

    def __init__(self, study: dict, root: str | Path = "."):
        self.root = Path(root).resolve()
        self.plan = Plan(study)
        self.pairs: dict[tuple[str, str], Pair] = {}
        for model, dataset in self.plan.pairs():
            pair = self._pair(model, dataset)
            if pair is not None:
                self.pairs[(model, dataset)] = pair

    def path(self, relative: str) -> Path:
        return self.root / relative

    def _exists(self, relative: str | None, name: str = "") -> bool:
        return relative is not None and (self.path(relative) / name).exists()

    def _pair(self, model: str, dataset: str) -> Pair | None:
        plan = self.plan
        meta_file = self.path(layout.DATA.file("meta", dataset=dataset))
        if not meta_file.exists():
            return None
        meta = json.loads(meta_file.read_text())
        weights = layout.CLASSIFIER_FILES["weights"]
        source, classifier, lm = {}, {}, {}
        for v in VARIANTS:
            src = plan.variant_source(model, v, dataset)
            source[v] = str(self.path(src)) if src.startswith(layout.RESULTS) else src
            folder = plan.classifier(model, v, dataset)
            classifier[v] = str(self.path(folder)) if self._exists(folder, weights) else None
            spec = plan.lm_spec(model, v, dataset)
            if spec is not None:
                spec = {k: (str(self.path(x)) if isinstance(x, str) and x.startswith(layout.RESULTS) else x)
                        for k, x in spec.items()}  # fmt: skip
            lm[v] = spec
        if plan.made(model) and not self._exists(plan.finetuned_dir(model, dataset), weights):
            return None  # the fine-tune has not run
        if classifier["pretrained"] is None or classifier["finetuned"] is None:
            classifier = dict.fromkeys(VARIANTS)
        labels, max_length = meta.get("label_names") or [], plan.model(model)["max_length"]
        pair = Pair(model, dataset, source, classifier, lm, labels, max_length)
        pair.shape, pair.causal_bos = _shape(source["pretrained"])
        for sae in plan.saes:
            for site, layer in plan.sae_scope(model, dataset, sae):
                folders = {
                    v: layout.SAE.path(model=model, variant=v, dataset=dataset, site=site, layer=layer, sae=sae)
                    for v in VARIANTS
                }
                if all(self._exists(f, "sae_weights.safetensors") for f in folders.values()):
                    pair.saes[(site, layer, sae)] = {v: str(self.path(f)) for v, f in folders.items()}
                    diff = layout.DIFF.path(model=model, dataset=dataset, site=site, layer=layer, sae=sae)
                    if self._exists(diff, "diff.parquet"):
                        pair.diffs[(site, layer, sae)] = str(self.path(diff) / "diff.parquet")
        for name in plan.crosscoders:
            for site, layer in plan.crosscoder_scope(model, dataset, name):
                folder = layout.CROSSCODER.path(model=model, dataset=dataset, site=site, layer=layer, crosscoder=name)
                if self._exists(folder, "crosscoder_weights.safetensors"):
                    pair.crosscoders[(site, layer, CROSSCODER_PREFIX + name)] = str(self.path(folder))
        return pair

    def pair(self, model: str, dataset: str) -> Pair:
        if (model, dataset) not in self.pairs:
            known = ", ".join(f"{m}/{d}" for m, d in self.pairs) or "none"
            raise NotFoundError(f"no model {model!r} on dataset {dataset!r} in this study (known: {known})")
        return self.pairs[(model, dataset)]

    def sae_folders(self, pair: Pair, site: str, layer: int, recipe: str) -> dict[str, str]:
        """variant -> SAE folder; for a crosscoder ("crosscoder.<name>") its one folder under "crosscoder"."""
        key = (site, int(layer), recipe)
        if key in pair.crosscoders:
            return {"crosscoder": pair.crosscoders[key]}
        if key not in pair.saes:
            known = ", ".join(f"{s}:{lay}:{r}" for s, lay, r in sorted([*pair.saes, *pair.crosscoders])) or "none"
            raise NotFoundError(
                f"no SAE {recipe!r} at {site} layer {layer} of {pair.model}/{pair.dataset} (known: {known})"
            )
        return pair.saes[key]

    def describe(self) -> list[dict]:
        return [p.describe() for p in self.pairs.values()]


def _shape(source: str) -> tuple[tuple[int, int], bool]:
    """((blocks, attention heads per block), whether inputs open with a BOS the tokenizer may not add)
    from the model's config.json."""
    from workflow.models.families import FAMILIES, model_family
    from workflow.models.sources import n_layers, read_model_config, resolve_source

    config = read_model_config(resolve_source(source))
    heads = next((config[k] for k in ("num_attention_heads", "n_head", "num_heads") if config.get(k)), 0)
    fam = FAMILIES[model_family(config)]
    return (n_layers(config), int(heads)), fam.causal and fam.prepend_bos
