"""What the explorer computes for a text: both variants' predictions, each token's strongest SAE
features, one feature across the text, a head's attention, and the same with features zeroed or
clamped or heads ablated. Plain functions of loaded models, so that tests compare the app's answers
with them; `Engine` loads models and SAEs lazily and keeps them up to a memory budget.

A feature intervention leaves the SAE's error in place: at each token the activation becomes
``x + sum_f (new_f - code_f) * W_dec[f] / scale``, so only the chosen features' part of the
reconstruction changes (zero: ``new_f = 0``; clamp: ``new_f`` = the value at every token).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict

from workflow.explore.catalog import Catalog, NotFoundError, Pair
from workflow.layout import VARIANTS

MAX_TOP = 20


class BadRequestError(ValueError):
    """A request the explorer refuses, with why (HTTP 400)."""


# ------------------------------------------------------------------ tokens


def encode(tokenizer, text: str, max_length: int, causal_bos: bool) -> dict:
    """Token ids of `text` as the tokens stage makes them (specials, truncation, a BOS for decoders
    whose tokenizer does not add one), with the token strings."""
    ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    bos = tokenizer.bos_token_id
    if causal_bos and bos is not None and ids[:1] != [bos]:
        ids = [bos, *ids][:max_length]
    return {"ids": ids, "tokens": tokenizer.convert_ids_to_tokens(ids)}


def _inputs(ids: list[int], device) -> dict:
    import torch

    t = torch.tensor([ids], device=device)
    return {"input_ids": t, "attention_mask": torch.ones_like(t)}


# ------------------------------------------------------------------ one variant's forward


def forward(model, inputs: dict, site: str, layer: int, edit=None, heads=()):
    """(logits, the (site, layer) activation) of one forward, with `edit(acts) -> acts` spliced in
    at the site (after the capture) and the heads in `heads` ((block, head), 0-based) zeroed."""
    import torch

    from workflow.analysis.ablation import HeadPatch
    from workflow.models.families import locate
    from workflow.models.hooks import Capture, Hooks, Splice

    base = model.base_model
    where = locate(base)
    n_heads = base.config.num_attention_heads
    patches = [HeadPatch(where.head_out[b], n_heads, [(h, None)]) for b, h in heads]
    capture = Capture(base, [(site, layer)], stop=False)
    splice = Splice(base, site, layer, edit) if edit is not None else Hooks()
    with torch.inference_mode(), capture, splice, contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        logits = model(**inputs).logits.float()
    return logits, capture.captured[(site, layer)][0].float()


def codes_of(sae, acts):
    """(tokens, d_sae) codes of a (tokens, d_model) activation."""
    import torch

    with torch.inference_mode():
        return sae.encode(acts.float())


def feature_edit(sae, changes: list[dict]):
    """`edit` for `forward`: each change {"feature", "mode": zero|clamp, "value"} applied through the
    SAE's decoder rows, the SAE's error left in place."""
    import torch

    features = torch.tensor([c["feature"] for c in changes])
    rows = (sae.W_dec[features] / sae.scale).detach()

    def edit(acts):
        shape = acts.shape
        flat = acts.reshape(-1, shape[-1]).float()
        with torch.inference_mode():
            codes = sae.encode(flat)[:, features]
        new = torch.stack(
            [torch.zeros_like(codes[:, i]) if c["mode"] == "zero" else torch.full_like(codes[:, i], float(c["value"]))
             for i, c in enumerate(changes)], 1)  # fmt: skip
        return (flat + (new - codes) @ rows).reshape(shape).to(acts.dtype)

    return edit


def top_features(codes, k: int) -> list[list[list[float]]]:
    """Per token, its `k` strongest firing features as [feature, activation]."""
    import torch

    vals, idx = torch.topk(codes, min(k, codes.shape[1]), dim=1)
    return [
        [[int(i), round(float(v), 4)] for i, v in zip(ri, rv) if v > 0] for ri, rv in zip(idx.tolist(), vals.tolist())
    ]


def prediction(logits, kind: str, labels: list[str], tokenizer, ids: list[int]) -> dict:
    """A classifier's class probabilities, or an LM's top 5 next tokens (causal) or top 5 at each
    [MASK] (masked) and the text's mean next-token loss (causal)."""
    import torch.nn.functional as F

    if kind == "classify":
        p = F.softmax(logits[0], -1)
        names = labels or [str(i) for i in range(len(p))]
        probs = {n: round(float(x), 6) for n, x in zip(names, p)}
        return {"kind": kind, "probs": probs, "label": names[int(p.argmax())]}
    logp = F.log_softmax(logits[0], -1)

    def top5(row) -> list:
        return [[tokenizer.convert_ids_to_tokens(int(i)), round(float(v.exp()), 6)] for v, i in zip(*row.topk(5))]

    if kind == "causal":
        out = {"kind": kind, "next": top5(logp[-1])}
        if len(ids) > 1:
            targets = logp[:-1].gather(1, logits.new_tensor(ids[1:]).long()[:, None])
            out["loss"] = round(float(-targets.mean()), 6)
        return out
    masks = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
    return {"kind": kind, "masks": [{"position": i, "top": top5(logp[i])} for i in masks]}


def difference(before: dict, after: dict) -> dict:
    """What an intervention changed: each class's probability, or the LM loss."""
    if before["kind"] == "classify":
        return {"probs": {k: round(after["probs"][k] - v, 6) for k, v in before["probs"].items()}}
    if "loss" in before:
        return {"loss": round(after["loss"] - before["loss"], 6)}
    return {}


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
        inputs = _inputs(enc["ids"], self.device)
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
        inputs = _inputs(enc["ids"], self.device)
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
            return book.partner(self._get(("latents", book.folder), lambda: _latent_classes(book.folder)), feature)
        return self.partner(pair, site, layer, recipe, variant, feature)

    def partner(self, pair: Pair, site: str, layer: int, recipe: str, variant: str, feature: int) -> dict | None:
        """The diff's matched feature of `feature` in the other variant, with its category."""

        path = pair.diffs.get((site, int(layer), recipe))
        if path is None:
            return None
        return self._get(("diff", path), lambda: _partners(path)).get((variant, int(feature)))

    def attention(self, model: str, dataset: str, layer: int, head: int, text: str) -> dict:
        """Head `head` of block `layer` (1-based, as the report's heads) attending over the text, per variant."""
        import torch

        from workflow.analysis.attention import AttentionWeights

        pair = self.catalog.pair(model, dataset)
        enc = self._text(pair, text)
        inputs = _inputs(enc["ids"], self.device)
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


class SaeBook:
    """Each variant's own SAE on its own activations."""

    def __init__(self, saes: dict, acts: dict):
        self.saes = saes
        self.codes = {v: codes_of(sae, acts[v]) for v, sae in saes.items()}
        self.d_sae = saes["pretrained"].d_sae

    def edit(self, variant: str, changes: list[dict]):
        return feature_edit(self.saes[variant], changes)


class CrosscoderBook:
    """One crosscoder on both variants' activations of each token: its latents' codes, shown per
    variant weighted by the latent's decoder norm on that side (what it writes into that model)."""

    def __init__(self, cc, acts: dict, folder: str):
        import torch

        self.cc, self.folder, self.d_sae = cc, folder, cc.d_sae
        self.joint = codes_of(cc, torch.cat([acts[v] for v in VARIANTS], -1))
        self.rows = {v: (cc.W_dec[:, self._cut(i)] / cc.scale[self._cut(i)]).detach() for i, v in enumerate(VARIANTS)}
        self.norms = {v: r.norm(dim=1) for v, r in self.rows.items()}
        self.codes = {v: self.joint * self.norms[v] for v in VARIANTS}

    def _cut(self, side: int) -> slice:
        return slice(side * self.cc.side, (side + 1) * self.cc.side)

    def edit(self, variant: str, changes: list[dict]):
        """Zero a latent on one side, or clamp its weighted activation there, through that side's decoder."""
        import torch

        features = torch.tensor([c["feature"] for c in changes])
        codes = self.joint[:, features]
        norms = self.norms[variant][features].clamp_min(1e-12)
        values = [0.0 if c["mode"] == "zero" else float(c["value"]) for c in changes]
        new = torch.tensor(values, device=codes.device)[None, :] / norms[None, :] * torch.ones_like(codes)
        delta = (new - codes) @ self.rows[variant][features]

        def fn(acts):
            return (acts.float() + delta.reshape(acts.shape)).to(acts.dtype)

        return fn

    def partner(self, classes: dict, feature: int) -> dict:
        return {"id": int(feature), "category": classes.get(int(feature), "other"), "decoder_cos": None}


def _latent_classes(folder: str) -> dict:
    """{latent: class (shared, pretrained_only, finetuned_only, other, ...)} of a crosscoder's latents.parquet."""
    import polars as pl

    table = pl.read_parquet(f"{folder}/latents.parquet", columns=["latent", "class"])
    return dict(table.iter_rows())


def _partners(path: str) -> dict:
    """{(side, feature): partner} of a diff table's matched features."""
    import polars as pl

    table = pl.read_parquet(path, columns=["side", "feature", "partner", "category", "decoder_cos"])
    return {
        (side, f): {"id": int(p), "category": c, "decoder_cos": float(cos)}
        for side, f, p, c, cos in table.iter_rows()
        if p >= 0
    }


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
