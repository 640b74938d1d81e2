"""`workflow.analysis.head_changes`: the Jensen-Shannon distance on distributions whose distance is
known, averaged over every query token; both variants' heads paired in one table."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from workflow.analysis.head_changes import changes, js_distance


def _one_hot(n: int, at: int) -> np.ndarray:
    out = np.zeros(n)
    out[at] = 1.0
    return out


def test_js_distance_of_known_distributions_is_averaged_over_every_query():
    """Head 0 the same in both variants (0); head 1 disjoint in document 1 (1 per query) and
    [1, 0] against [0.5, 0.5] in document 2: JSD = H([.75, .25]) - (0 + 1) / 2 bits, distance its root."""
    same = np.full((1, 1, 3, 3), 1 / 3)
    pre = {"doc1": np.concatenate([same, _one_hot(3, 0)[None, None, None].repeat(3, 2)], axis=1)}
    ft = {"doc1": np.concatenate([same, _one_hot(3, 2)[None, None, None].repeat(3, 2)], axis=1)}
    pre["doc2"] = np.stack([np.full((2, 2), 0.5), np.array([[1.0, 0.0], [1.0, 0.0]])])[None]
    ft["doc2"] = np.stack([np.full((2, 2), 0.5), np.full((2, 2), 0.5)])[None]
    half = math.sqrt(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)) - 0.5)
    assert half == pytest.approx(0.5579, abs=1e-4)
    got = js_distance(pre, ft, [1, 2])
    assert got.shape == (1, 2)
    assert got[0, 0] == pytest.approx(0.0, abs=1e-7)
    assert got[0, 1] == pytest.approx((3 * 1.0 + 2 * half) / 5)  # 5 queries, not the mean of 2 documents
    f16 = {k: v.astype(np.float16) for k, v in pre.items()}  # as stored in patterns.safetensors
    assert js_distance(f16, f16, [1, 2]) == pytest.approx(np.zeros((1, 2)), abs=1e-7)


def test_js_distance_refuses_patterns_of_different_tokens_or_none():
    with pytest.raises(ValueError, match="different tokens"):
        js_distance({"doc1": np.ones((1, 1, 2, 2))}, {"doc1": np.ones((1, 1, 3, 3))}, [1])
    with pytest.raises(ValueError, match="no pattern documents in common"):
        js_distance({}, {}, [])


def test_head_changes_pair_both_variants_per_head():
    heads = pl.DataFrame(
        {
            "variant": ["pretrained"] * 2 + ["finetuned"] * 2,
            "layer": [1, 1, 1, 1],
            "head": [0, 1, 0, 1],
            "type": ["previous", "broad", "previous", "first"],
        }
    )
    ablation = pl.DataFrame(
        {
            "variant": ["pretrained"] * 2 + ["finetuned"] * 2,
            "measure": ["task"] * 4,
            "mode": ["zero"] * 4,
            "layer": [1, 1, 1, 1],
            "head": [0, 1, 0, 1],
            "delta_loss": [0.5, 0.1, 0.25, 0.4],
        }
    )
    got = changes({"heads": heads, "ablation": ablation}, np.array([[0.2, 0.7]]))
    assert got["js_distance"].to_list() == [0.2, 0.7]
    assert got["type_pretrained"].to_list() == ["previous", "broad"]
    assert got["type_finetuned"].to_list() == ["previous", "first"]
    assert got["task_zero_delta_loss_change"].to_list() == pytest.approx([-0.25, 0.3])
