"""What each attention head looks at: statistics over a dataset and a head type.

Weights are read with forward hooks on each block's self-attention core
(`AttentionWeights`), which returns them when the model runs its eager
attention. Per head, averaged over every real query token of every document
(padding is never a query or a key):

- ``entropy``: of the query's attention distribution, in nats;
- ``entropy_norm``: entropy / log(keys the query can see), 1 = uniform
  (queries that see a single key are left out);
- ``distance``: mean |query position - key position| under the attention;
- ``self``, ``previous``, ``next``: attention on the token itself, on the one
  before, on the one after (queries that have such a token);
- ``first``: attention on the first token ([CLS] for BERT);
- ``separator``: attention on special tokens after the first ([SEP]); NaN
  where the documents have none (GPT-2).

`head_types` names each head by the first rule that holds, thresholds from the
config's `heads.types`:

1. the largest of the five shares (self, previous, next, first, separator)
   is at least ``share``: that share's name (``first`` and ``separator`` are
   the positional heads);
2. ``local``: mean distance at most ``local_distance`` tokens (a
   distance-based head, spread over its neighbours);
3. ``broad``: ``entropy_norm`` at least ``broad_entropy`` (close to uniform);
4. ``mixed``: none of these.
"""

from __future__ import annotations

import math

import numpy as np

from workflow.models.families import locate
from workflow.models.hooks import Hooks

STATS = ("entropy", "entropy_norm", "distance", "self", "previous", "next", "first", "separator")
SHARES = ("self", "previous", "next", "first", "separator")
TYPES = SHARES + ("local", "broad", "mixed")
DEFAULT_THRESHOLDS = {"share": 0.5, "local_distance": 2.0, "broad_entropy": 0.8}


class AttentionWeights(Hooks):
    """``weights[block]`` = (batch, heads, query, key) attention of the last forward.
    The model must run eager attention (`set_attn_implementation("eager")`): other
    implementations do not return their weights."""

    def __init__(self, base_model):
        attention = locate(base_model).attention
        self.weights: list = [None] * len(attention)
        super().__init__([(module, "forward", self._saver(i)) for i, module in enumerate(attention)])

    def _saver(self, i: int):
        def save(module, args, output):
            if not isinstance(output, tuple) or len(output) < 2 or output[1] is None:
                raise RuntimeError("the attention returned no weights: run the model with attn_implementation='eager'")
            self.weights[i] = output[1].detach()

        return save


class PatternStats:
    """Running sums of `STATS` per (block, head)."""

    def __init__(self, n_blocks: int, n_heads: int):
        self.sums = {s: np.zeros((n_blocks, n_heads)) for s in STATS}
        self.counts = {s: np.zeros(n_blocks) for s in STATS}

    def update(self, block: int, weights, mask, special, causal: bool) -> None:
        """weights (batch, heads, T, T); mask (batch, T) real tokens; special (batch, T) bool."""
        import torch

        a = weights.double()
        real = mask.bool()
        t = a.shape[-1]
        pos = torch.arange(t, device=a.device)
        visible = real[:, None, :].expand(-1, t, -1)
        if causal:
            visible = visible & (pos[None, :, None] >= pos[None, None, :])
        n_visible = visible.sum(-1)  # (batch, T)

        entropy = -(a * a.clamp_min(1e-300).log()).sum(-1)  # (batch, heads, T)
        spread = n_visible >= 2
        sep_keys = (special.bool() & real & (pos[None, :] > 0)).to(a.dtype)
        has_sep = (sep_keys.sum(-1) > 0)[:, None] & real
        per_query = {
            "entropy": (entropy, real),
            "entropy_norm": (entropy / n_visible.clamp_min(2).log()[:, None, :].to(a.dtype), real & spread),
            "distance": ((a * (pos[:, None] - pos[None, :]).abs().to(a.dtype)).sum(-1), real),
            "self": (torch.diagonal(a, dim1=-2, dim2=-1), real),
            "first": (a[..., 0], real),
            "separator": ((a * sep_keys[:, None, None, :]).sum(-1), has_sep),
        }
        # previous: query i+1 on key i; next: query i on key i+1 (both tokens real)
        pairs = real[:, 1:] & real[:, :-1]
        per_query["previous"] = (torch.diagonal(a, offset=-1, dim1=-2, dim2=-1), pairs)
        per_query["next"] = (torch.diagonal(a, offset=1, dim1=-2, dim2=-1), pairs)
        for name, (values, valid) in per_query.items():
            v = valid.to(a.dtype)[:, None, :]
            self.sums[name][block] += (values * v).sum(dim=(0, 2)).cpu().numpy()
            self.counts[name][block] += float(valid.sum())

    def result(self) -> dict[str, np.ndarray]:
        """Per statistic, a (blocks, heads) array of means (NaN where nothing was counted)."""
        out = {}
        for name in STATS:
            count = self.counts[name][:, None]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[name] = np.where(count > 0, self.sums[name] / np.maximum(count, 1), np.nan)
        return out


def head_type(stats: dict[str, float], thresholds: dict) -> str:
    """The type of one head from its statistics (see the module docstring)."""
    shares = {name: stats[name] for name in SHARES if stats.get(name) is not None and not math.isnan(stats[name])}
    if shares:
        best = max(shares, key=shares.get)
        if shares[best] >= thresholds["share"]:
            return best
    if stats["distance"] <= thresholds["local_distance"]:
        return "local"
    if stats["entropy_norm"] >= thresholds["broad_entropy"]:
        return "broad"
    return "mixed"


def head_types(stats: dict[str, np.ndarray], thresholds: dict) -> np.ndarray:
    """(blocks, heads) array of type names."""
    n_blocks, n_heads = stats["entropy"].shape
    return np.array(
        [
            [head_type({k: float(v[b, h]) for k, v in stats.items()}, thresholds) for h in range(n_heads)]
            for b in range(n_blocks)
        ],
        dtype=object,
    )
