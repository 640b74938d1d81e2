"""How fine-tuning changed each attention head (stage `heads_summary`): the distance between the two
variants' attention patterns on the same tokens, and one table of both variants' head types and
ablation effects per head.

The inputs are stage `heads`' outputs (patterns.safetensors, heads.parquet, ablation.parquet); this
module imports no torch, so the summary's code version does not follow the hook machinery that
measured them (`workflow.analysis.attention`, `workflow.analysis.ablation`).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from workflow.layout import VARIANTS


def js_distance(pre: dict[str, np.ndarray], ft: dict[str, np.ndarray], docs: list) -> np.ndarray:
    """(layers, heads) mean over the query tokens of `docs` of the Jensen-Shannon distance (base 2:
    0 = same, 1 = disjoint) between the two variants' attention distributions. `pre`, `ft`:
    ``doc<id>`` -> (layers, heads, T, T) patterns, rows are queries (patterns.safetensors)."""
    from scipy.spatial.distance import jensenshannon

    total, count = None, 0
    for doc in docs:
        p, q = pre[f"doc{doc}"].astype(np.float64), ft[f"doc{doc}"].astype(np.float64)
        if p.shape != q.shape:
            raise ValueError(
                f"document {doc}: patterns of shape {p.shape} and {q.shape}; the variants saw different tokens"
            )
        d = np.nan_to_num(jensenshannon(p, q, base=2, axis=-1))  # (layers, heads, queries)
        total = d.sum(-1) if total is None else total + d.sum(-1)
        count += d.shape[-1]
    if not count:
        raise ValueError(
            "no pattern documents in common: both variants' heads stages must use the same tokens and seed"
        )
    return total / count


def changes(tables: dict[str, pl.DataFrame], js: np.ndarray) -> pl.DataFrame:
    """changes.parquet: per (layer, head) both variants' types, `js` (from `js_distance`) and, per
    ablation (measure, mode), both variants' ``delta_loss`` and its change (fine-tuned minus
    pretrained). `tables`: ``heads`` and ``ablation`` of both variants, with a ``variant`` column."""
    heads = tables["heads"]
    types = heads.pivot(on="variant", index=["layer", "head"], values="type")
    out = types.rename({v: f"type_{v}" for v in VARIANTS}).with_columns(
        js_distance=pl.Series([float(js[l - 1, h]) for l, h in zip(types["layer"], types["head"])])
    )
    ablation = tables["ablation"]
    for (measure, mode), part in ablation.group_by(["measure", "mode"], maintain_order=True):
        wide = part.pivot(on="variant", index=["layer", "head"], values="delta_loss").rename(
            {v: f"{measure}_{mode}_delta_loss_{v}" for v in VARIANTS}
        )
        out = out.join(wide, on=["layer", "head"], how="left").with_columns(
            (
                pl.col(f"{measure}_{mode}_delta_loss_finetuned") - pl.col(f"{measure}_{mode}_delta_loss_pretrained")
            ).alias(f"{measure}_{mode}_delta_loss_change")
        )
    return out.sort("layer", "head")
