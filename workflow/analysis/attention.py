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

`patterns_of` runs one eager pass over a document sample for all of that (and each head's mean
output, which mean ablation writes, `workflow.analysis.ablation`), keeping the full attention of a
few documents for the pattern viewer. Two variants' heads are compared in
`workflow.analysis.head_changes`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from workflow.analysis.ablation import HeadMeans
from workflow.models.families import locate
from workflow.models.families import n_heads as heads_of
from workflow.models.hooks import Hooks
from workflow.store.tokens import Documents, batches, length_order

log = logging.getLogger(__name__)

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


def heads_table(stats: dict, types: np.ndarray) -> pl.DataFrame:
    """One row per (layer, head), layers 1-based: the statistics (NaN as null) and the type."""
    n_blocks, n = types.shape
    return pl.DataFrame(
        {
            "layer": np.repeat(np.arange(1, n_blocks + 1), n),
            "head": np.tile(np.arange(n), n_blocks),
            **{name: stats[name].reshape(-1) for name in STATS},
            "type": types.reshape(-1).tolist(),
        }
    ).with_columns(pl.col(name).fill_nan(None) for name in STATS)


# ---------------------------------------------------------------- one pass over a sample


def attention_pass(
    model,
    docs: Documents,
    causal: bool,
    batch_size: int,
    pad_id: int,
    device,
    keep: set[int] = frozenset(),
    max_tokens: int | None = None,
) -> tuple[dict, list, dict[int, np.ndarray]]:
    """Statistics per head, each head's mean output per block, and the attention of documents `keep`
    (positions in `docs`) among their first `max_tokens` tokens (None: all) as float16 (blocks, heads,
    T, T). The model must run eager attention."""
    import torch

    base = model.base_model
    stats = PatternStats(len(locate(base).blocks), heads_of(model.config))
    patterns: dict[int, np.ndarray] = {}
    with (
        torch.inference_mode(),
        AttentionWeights(base) as attn,
        HeadMeans(base, heads_of(model.config)) as means,
    ):
        for idx, inputs in batches(docs, batch_size, pad_id, length_order(docs)):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            mask = inputs["attention_mask"]
            special = torch.zeros_like(mask, dtype=torch.bool)
            for j, i in enumerate(idx):
                special[j, : len(docs.special[i])] = torch.from_numpy(docs.special[i].astype(bool))
            means.mask = mask
            model(**inputs)
            means.update_count()
            for block, weights in enumerate(attn.weights):
                stats.update(block, weights, mask, special, causal)
            for j, i in enumerate(idx):
                if int(i) in keep:
                    n = min(len(docs.token_ids[i]), max_tokens or len(docs.token_ids[i]))
                    patterns[int(i)] = (
                        torch.stack([w[j, :, :n, :n] for w in attn.weights]).to(torch.float16).cpu().numpy()
                    )
    return stats.result(), means.means(), patterns


@dataclass
class Seen:
    """What one attention pass over the documents saw."""

    stats: dict  # statistic name -> (blocks, heads) means
    means: list  # per block, each head's mean output (what mean ablation writes)
    patterns: dict  # document position -> float16 (blocks, heads, T, T) attention
    thresholds: dict  # the head type thresholds used
    types: np.ndarray  # (blocks, heads) head type names


def patterns_of(model, docs: Documents, causal: bool, cfg: dict, pad_id: int, device, shown: list[int]) -> Seen:
    """Pattern statistics, head types, mean head outputs and the patterns of documents `shown`, in one
    pass with eager attention (the model's own implementation is put back after). `cfg`: the ``heads``
    config (batch_size, pattern_max_tokens, types: thresholds over `DEFAULT_THRESHOLDS`)."""
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    stats, means, patterns = attention_pass(
        model, docs, causal, cfg["batch_size"], pad_id, device, set(shown), cfg["pattern_max_tokens"]
    )
    model.set_attn_implementation(implementation)
    thresholds = {**DEFAULT_THRESHOLDS, **cfg["types"]}
    return Seen(stats, means, patterns, thresholds, head_types(stats, thresholds))


# ---------------------------------------------------------------- the documents shown


def pattern_docs(docs: Documents, limit: int, max_tokens: int) -> list[int]:
    """The first `limit` documents (table order) of at most `max_tokens` tokens; where fewer are that
    short, then the shortest of the others (stored cut to `max_tokens`), so the view is never empty."""
    lengths = [len(ids) for ids in docs.token_ids]
    short = [i for i, n in enumerate(lengths) if n <= max_tokens]
    long = sorted((i for i, n in enumerate(lengths) if n > max_tokens), key=lambda i: (lengths[i], i))
    return (short + long)[:limit]


def pattern_examples(tokens: pl.DataFrame, docs: Documents, doc_ids: list, shown: list[int], cap: int) -> list[dict]:
    """patterns.json: each stored document's id, label and tokens (cut to `cap`, and marked so);
    `tokens`: the tokens table (``doc_id``, ``token``, and ``window`` where documents are windowed:
    the first window is the one sampled)."""
    table = tokens.filter(pl.col("doc_id").is_in([doc_ids[i] for i in shown]))
    table = table.filter(pl.col("window") == 0) if "window" in table.columns else table
    words = {d: g["token"].to_list() for (d,), g in table.group_by("doc_id", maintain_order=True)}
    meta = [
        {
            "doc_id": doc_ids[i],
            "label": int(docs.labels[i]),
            "tokens": words[doc_ids[i]][:cap],
            "cut": len(words[doc_ids[i]]) > cap,
        }
        for i in shown
    ]
    if any(m["cut"] for m in meta):
        log.info(
            "%d of the %d pattern documents are longer than %d tokens: shown cut",
            sum(m["cut"] for m in meta),
            len(meta),
            cap,
        )
    return meta
