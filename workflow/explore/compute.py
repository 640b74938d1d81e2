"""The computations behind the explorer's answers, as plain functions of loaded models: a text's
tokens, one variant's forward with an edit spliced in and heads ablated, SAE codes and their top
features, predictions and their differences, and the dictionaries of one (site, layer, recipe) over
both variants (`SaeBook`: each variant's SAE; `CrosscoderBook`: one crosscoder reading both).

A feature intervention leaves the SAE's error in place: at each token the activation becomes
``x + sum_f (new_f - code_f) * W_dec[f] / scale``, so only the chosen features' part of the
reconstruction changes (zero: ``new_f = 0``; clamp: ``new_f`` = the value at every token).
"""

from __future__ import annotations

import contextlib

from workflow.layout import VARIANTS

# ------------------------------------------------------------------ tokens


def encode(tokenizer, text: str, max_length: int, causal_bos: bool) -> dict:
    """Token ids of `text` as the tokens stage makes them (`workflow.store.tokens.encode`: specials,
    truncation, a BOS for decoders whose tokenizer does not add one), with the token strings."""
    from workflow.store import tokens

    enc, _, _ = tokens.encode(tokenizer, [text], max_length, True, causal_bos, None)
    ids = enc["input_ids"][0]
    return {"ids": ids, "tokens": tokenizer.convert_ids_to_tokens(ids)}


def inputs_of(ids: list[int], device) -> dict:
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


def latent_classes(folder: str) -> dict:
    """{latent: class (shared, pretrained_only, finetuned_only, other, ...)} of a crosscoder's latents.parquet."""
    import polars as pl

    table = pl.read_parquet(f"{folder}/latents.parquet", columns=["latent", "class"])
    return dict(table.iter_rows())


def matched_partners(path: str) -> dict:
    """{(side, feature): partner} of a diff table's matched features."""
    import polars as pl

    table = pl.read_parquet(path, columns=["side", "feature", "partner", "category", "decoder_cos"])
    return {
        (side, f): {"id": int(p), "category": c, "decoder_cos": float(cos)}
        for side, f, p, c, cos in table.iter_rows()
        if p >= 0
    }
