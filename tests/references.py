"""References the tests compare the fast code against: written for clarity, not speed.

- `linear_cka`: linear CKA from the full n x n Gram matrices (the streaming
  `workflow.analysis.similarity.SimilarityAccumulator` must agree);
- `naive_head_effects`: one full forward per ablated head (the batched
  `workflow.analysis.ablation.head_effects` must agree; `benchmarks/heads.py`
  times the two).
"""

from __future__ import annotations

import math

import numpy as np

from workflow.analysis.ablation import EffectSums, HeadPatch, Measure, ablation_plans
from workflow.models.families import locate
from workflow.models.families import n_heads as n_heads_of
from workflow.store.tokens import Documents, labelled_batches


def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    """Reference linear CKA from the full n x n Gram matrices (for tests only)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)  # (n, d_x), (n, d_y)
    n = x.shape[0]
    k, l_ = x @ x.T, y @ y.T  # (n, n)
    if not debiased:
        h = np.eye(n) - np.ones((n, n)) / n  # centring matrix

        def hsic(a, b):
            return np.trace(a @ h @ b @ h) / (n - 1) ** 2
    else:
        if n < 4:
            return math.nan

        def hsic(a, b):
            a, b = a.copy(), b.copy()
            np.fill_diagonal(a, 0.0)
            np.fill_diagonal(b, 0.0)
            one = np.ones(n)
            return (
                np.trace(a @ b)
                + (one @ a @ one) * (one @ b @ one) / ((n - 1) * (n - 2))
                - 2.0 / (n - 2) * (one @ a @ b @ one)
            ) / (n * (n - 3))

    prod = hsic(k, k) * hsic(l_, l_)
    return float(hsic(k, l_) / math.sqrt(prod)) if prod > 0 else math.nan


def naive_head_effects(
    model, docs: Documents, measure: Measure, modes, means, batch_size: int, pad_id: int, device
) -> tuple[np.ndarray, np.ndarray]:
    """The reference: one full forward per (mode, block, head), nothing cached or stacked."""
    import torch

    base = model.base_model
    where = locate(base)
    n_blocks, n_heads = len(where.blocks), n_heads_of(model.config)
    modes = list(modes)
    sums = EffectSums((len(modes), n_blocks, n_heads))
    with torch.inference_mode():
        for _, inputs, labels in labelled_batches(docs, batch_size, pad_id, device):
            sums.add_clean(measure(model(**inputs).logits, inputs, labels))
            for block in range(n_blocks):
                for mode, head, fill in ablation_plans(modes, n_heads, means, block):
                    with HeadPatch(where.head_out[block], n_heads, [(head, fill)]):
                        sums.ablated[modes.index(mode), block, head] += measure(model(**inputs).logits, inputs, labels)
    return sums.clean, sums.ablated
