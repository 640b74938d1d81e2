"""What the explorer answers for a text: both variants' predictions, each token's strongest SAE
features, one feature across the text, a head's attention, and the same with features zeroed or
clamped or heads ablated (the computations: `workflow.explore.compute`). `Engine` loads models and
SAEs lazily and keeps them up to a memory budget, and checks every request before computing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from workflow.explore.catalog import Catalog, NotFoundError, Pair
from workflow.explore.compute import (
    CrosscoderBook,
    SaeBook,
    difference,
    encode,
    forward,
    inputs_of,
    latent_classes,
    matched_partners,
    prediction,
    top_features,
)
from workflow.layout import VARIANTS

MAX_TOP = 20


class BadRequestError(ValueError):
    """A request the explorer refuses, with why (HTTP 400)."""


# ------------------------------------------------------------------ the engine


class Engine:
    """Models and SAEs of a study, loaded on first use (on the GPU if there is one) and kept while
    their bytes fit `budget_bytes` (the least recently used leave first)."""

    def __init__(self, catalog: Catalog, budget_bytes: float = 4e9, device=None):
        from workflow.models.loading import pick_device

        self.catalog, self.budget = catalog, budget_bytes
        self.device = device or pick_device()
        self._cache: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        self._lock = threading.RLock()

    # ------------------------------------------------------------ loading

    def _get(self, key: tuple, load):
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key][0]
            obj = load()
            size = sum(p.numel() * p.element_size() for p in obj.parameters()) if hasattr(obj, "parameters") else 0
            self._cache[key] = (obj, size)
            while sum(s for _, s in self._cache.values()) > self.budget and len(self._cache) > 1:
                self._cache.popitem(last=False)
            return obj

    def loaded(self) -> list[str]:
        return [":".join(map(str, k)) for k in self._cache]

    def task_model(self, pair: Pair, variant: str):
        """The variant's classifier (labelled data) or language model, in eval mode, eager attention,
        loaded with the study's load options for that model (dtype, device_map)."""
        from workflow.models import loading
        from workflow.models.sources import resolve_source

        loading.use_options(self.catalog.plan.load_options(pair.model))

        if pair.classifier[variant]:
            folder = pair.classifier[variant]
            _require_safetensors(folder)

            def load():
                n, pad = loading.num_labels(folder), loading.pad_token_id(folder)
                return _eager(loading.load_classifier(folder, n, pad, self.device).eval())

            return self._get(("classifier", folder), load), "classify"
        spec = pair.lm[variant]
        if spec is None:
            raise NotFoundError(f"{pair.model}/{pair.dataset} has neither a task classifier nor a language model")

        for folder in (resolve_source(spec["source"]), spec.get("body")):
            if folder:
                _require_safetensors(folder)

        def load_lm():
            lm = loading.load_lm(resolve_source(spec["source"]), self.device, spec["kind"], spec.get("body"))
            return _eager(lm.eval())

        return self._get(("lm", spec["source"], spec.get("body")), load_lm), spec["kind"]

    def tokenizer(self, pair: Pair):
        from workflow.models.loading import load_tokenizer
        from workflow.models.sources import resolve_source

        source = pair.source["pretrained"]
        return self._get(("tokenizer", source), lambda: load_tokenizer(resolve_source(source)))

    def sae(self, folder: str):
        from workflow import sae as sae_lib

        return self._get(("sae", folder), lambda: sae_lib.load(folder).to(self.device).eval())

    # ------------------------------------------------------------ requests

    def _text(self, pair: Pair, text: str) -> dict:
        tok = self.tokenizer(pair)
        enc = encode(tok, text, pair.max_length, pair.causal_bos)
        if not enc["ids"]:
            raise BadRequestError("the text has no tokens")
        return enc

    def analyse(self, model: str, dataset: str, site: str, layer: int, recipe: str, text: str, top: int = 5,
                interventions: dict | None = None) -> dict:  # fmt: skip
        """Tokens; per variant its prediction and each token's `top` features; with `interventions`
        ({"features": {variant: [change]}, "heads": {variant: [[block, head]]}}) the prediction after
        them and the difference. `recipe` "crosscoder.<name>": the crosscoder's latents, each column
        weighted by the latent's decoder norm on that variant's side."""
        pair = self.catalog.pair(model, dataset)
        folders = self.catalog.sae_folders(pair, site, layer, recipe)
        if not 1 <= top <= MAX_TOP:
            raise BadRequestError(f"top: {top} is not between 1 and {MAX_TOP}")
        plan = _interventions(interventions)
        enc = self._text(pair, text)
        inputs = inputs_of(enc["ids"], self.device)
        runs = {}
        for v in VARIANTS:
            net, kind = self.task_model(pair, v)
            runs[v] = (net, kind, *forward(net, inputs, site, layer))
        book = self._book(folders, {v: r[3] for v, r in runs.items()})
        out = {"tokens": enc["tokens"], "variants": {}}
        for v, (net, kind, logits, _) in runs.items():
            feats = top_features(book.codes[v], top)
            shown = sorted({f for token in feats for f, _ in token})
            row = {
                "prediction": prediction(logits, kind, pair.label_names, self.tokenizer(pair), enc["ids"]),
                "features": feats,
                "partners": {str(f): p for f in shown if (p := self._partner(pair, book, site, layer, recipe, v, f))},
            }
            changes, heads = plan[v]["features"], plan[v]["heads"]
            if changes or heads:
                _check_changes(changes, book.d_sae)
                _check_heads(heads, net)
                edit = book.edit(v, changes) if changes else None
                after, _ = forward(net, inputs, site, layer, edit, [tuple(h) for h in heads])
                row["after"] = prediction(after, kind, pair.label_names, self.tokenizer(pair), enc["ids"])
                row["difference"] = difference(row["prediction"], row["after"])
            out["variants"][v] = row
        return out

    def feature(self, model: str, dataset: str, site: str, layer: int, recipe: str, variant: str, feature: int,
                text: str) -> dict:  # fmt: skip
        """One feature's activation at each token, and its partner's in the other variant (the diff's
        match; a crosscoder latent's partner is itself on the other side), where there is one."""
        pair = self.catalog.pair(model, dataset)
        folders = self.catalog.sae_folders(pair, site, layer, recipe)
        if variant not in VARIANTS:
            raise BadRequestError(f"variant: {variant!r} is not one of {', '.join(VARIANTS)}")
        enc = self._text(pair, text)
        inputs = inputs_of(enc["ids"], self.device)
        acts = {v: forward(self.task_model(pair, v)[0], inputs, site, layer)[1] for v in VARIANTS}
        book = self._book(folders, acts)
        _check_changes([{"feature": feature, "mode": "zero"}], book.d_sae)
        partner = self._partner(pair, book, site, layer, recipe, variant, feature)
        other = VARIANTS[1 - VARIANTS.index(variant)]
        out = {"tokens": enc["tokens"], "feature": {"variant": variant, "id": feature}, "partner": partner, "acts": {}}
        for v, f in ((variant, feature), (other, partner["id"] if partner else None)):
            if f is not None:
                out["acts"][v] = [round(float(a), 4) for a in book.codes[v][:, f]]
        return out

    def _book(self, folders: dict, acts: dict):
        """The dictionary of this (site, layer, recipe) over both variants' activations of the text."""
        if "crosscoder" in folders:
            return CrosscoderBook(self._crosscoder(folders["crosscoder"]), acts, folders["crosscoder"])
        return SaeBook({v: self.sae(folders[v]) for v in VARIANTS}, acts)

    def _crosscoder(self, folder: str):
        from workflow.sae import crosscoder

        return self._get(("crosscoder", folder), lambda: crosscoder.load(folder, self.device))

    def _partner(self, pair, book, site, layer, recipe, variant, feature) -> dict | None:
        if isinstance(book, CrosscoderBook):
            return book.partner(self._get(("latents", book.folder), lambda: latent_classes(book.folder)), feature)
        return self.partner(pair, site, layer, recipe, variant, feature)

    def partner(self, pair: Pair, site: str, layer: int, recipe: str, variant: str, feature: int) -> dict | None:
        """The diff's matched feature of `feature` in the other variant, with its category."""

        path = pair.diffs.get((site, int(layer), recipe))
        if path is None:
            return None
        return self._get(("diff", path), lambda: matched_partners(path)).get((variant, int(feature)))

    def attention(self, model: str, dataset: str, layer: int, head: int, text: str) -> dict:
        """Head `head` of block `layer` (1-based, as the report's heads) attending over the text, per variant."""
        import torch

        from workflow.analysis.attention import AttentionWeights

        pair = self.catalog.pair(model, dataset)
        enc = self._text(pair, text)
        inputs = inputs_of(enc["ids"], self.device)
        out = {"tokens": enc["tokens"], "layer": layer, "head": head, "weights": {}}
        for v in VARIANTS:
            net, _ = self.task_model(pair, v)
            n_blocks, n_heads = net.config.num_hidden_layers, net.config.num_attention_heads
            if not (1 <= layer <= n_blocks and 0 <= head < n_heads):
                where = f"blocks 1..{n_blocks}, heads 0..{n_heads - 1}"
                raise BadRequestError(f"block {layer}, head {head}: not in {where}")
            with torch.inference_mode(), AttentionWeights(net.base_model) as w:
                net(**inputs)
            out["weights"][v] = [[round(float(x), 4) for x in r] for r in w.weights[layer - 1][0, head].tolist()]
        return out


def _require_safetensors(source: str) -> None:
    """The explorer loads weights from safetensors only, never a pickle (pytorch_model.bin): a folder
    (or a Hub id's cached snapshot) must hold safetensors weights, which from_pretrained then prefers."""
    from pathlib import Path

    names = ("model.safetensors", "model.safetensors.index.json")
    if Path(source).is_dir():
        ok = any((Path(source) / n).exists() for n in names)
    else:
        from huggingface_hub import try_to_load_from_cache

        ok = any(isinstance(try_to_load_from_cache(source, n), str) for n in names)
    if not ok:
        raise NotFoundError(f"{source}: no safetensors weights; the explorer does not load pickled checkpoints")


def _eager(model):
    """Attention weights are read by hooks: the eager implementation returns them."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    return model


def _interventions(given) -> dict:
    """{variant: {"features": [change], "heads": [[block, head]]}} from a request's `interventions`
    ({"features": {variant: [...]}, "heads": {variant: [...]}}), every level checked."""
    out = {v: {"features": [], "heads": []} for v in VARIANTS}
    if given is None:
        return out
    if not isinstance(given, dict) or set(given) - {"features", "heads"}:
        raise BadRequestError('interventions: an object with "features" and/or "heads"')
    for kind, per_variant in given.items():
        if not isinstance(per_variant, dict) or set(per_variant) - set(VARIANTS):
            raise BadRequestError(f"interventions.{kind}: an object keyed by {' / '.join(VARIANTS)}")
        for v, items in per_variant.items():
            if not isinstance(items, list):
                raise BadRequestError(f"interventions.{kind}.{v}: not a list")
            out[v][kind] = items
    return out


def _check_changes(changes: list, d_sae: int) -> None:
    seen = set()
    for c in changes:
        if not isinstance(c, dict):
            raise BadRequestError(f'feature change {c!r}: not an object {{"feature", "mode", "value"}}')
        f, mode = c.get("feature"), c.get("mode", "zero")
        if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < d_sae:
            raise BadRequestError(f"feature: {f!r} is not a latent of this SAE (0..{d_sae - 1})")
        if f in seen:
            raise BadRequestError(f"feature: {f} is listed twice")
        seen.add(f)
        if mode not in ("zero", "clamp"):
            raise BadRequestError(f"mode: {mode!r} is not zero or clamp")
        value = c.get("value")
        finite = not isinstance(value, bool) and isinstance(value, (int, float)) and abs(value) <= 1e6
        if mode == "clamp" and not finite:
            raise BadRequestError(f"a clamp needs a finite numeric value (|value| <= 1e6), got {value!r}")
        c.setdefault("mode", mode)


def _check_heads(heads, net) -> None:
    n_blocks, n_heads = net.config.num_hidden_layers, net.config.num_attention_heads
    for h in heads:
        if not (isinstance(h, (list, tuple)) and len(h) == 2 and all(type(x) is int for x in h)):
            raise BadRequestError(f"head: {h!r} is not [block, head]")
        if not (0 <= h[0] < n_blocks and 0 <= h[1] < n_heads):
            raise BadRequestError(f"head: {h!r} is outside {n_blocks} blocks x {n_heads} heads (0-based)")


__all__ = ["Engine", "BadRequestError", "NotFoundError"]
