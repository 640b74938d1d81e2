"""Attention statistics with known answers, on attention patterns planted directly (no model): a
previous-token, a uniform and a first-token head scored and typed as such, padding ignored; the heads
table and the documents kept for the pattern view. (Hooks on real models: tests/test_heads.py.)"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from workflow.analysis.attention import (
    DEFAULT_THRESHOLDS,
    PatternStats,
    head_types,
    heads_table,
    pattern_docs,
    pattern_examples,
)
from workflow.store.tokens import Documents

LENGTHS = (12, 9)  # two documents, the second padded to the first's length


def _planted() -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, 3 heads, T, T) causal weights: head 0 on the previous token (query 0 on itself), head 1
    uniform over the keys a query sees, head 2 on the first token; padding queries put all their
    weight on a padding key, which no statistic may count."""
    t = max(LENGTHS)
    weights = torch.zeros(len(LENGTHS), 3, t, t, dtype=torch.float64)
    mask = torch.zeros(len(LENGTHS), t, dtype=torch.long)
    for d, n in enumerate(LENGTHS):
        mask[d, :n] = 1
        for q in range(n):
            weights[d, 0, q, max(q - 1, 0)] = 1.0
            weights[d, 1, q, : q + 1] = 1.0 / (q + 1)
            weights[d, 2, q, 0] = 1.0
        weights[d, :, n:, t - 1] = 1.0
    return weights, mask


def _stats() -> dict:
    weights, mask = _planted()
    stats = PatternStats(1, 3)
    stats.update(0, weights, mask, torch.zeros_like(mask, dtype=torch.bool), causal=True)
    return stats.result()


def test_a_planted_previous_token_head_is_scored_and_typed_previous():
    got = _stats()
    queries = [q for n in LENGTHS for q in range(n)]  # every real query once
    n_q = len(queries)
    assert got["previous"][0, 0] == pytest.approx(1.0)
    assert got["next"][0, 0] == 0.0 and got["entropy"][0, 0] == pytest.approx(0.0, abs=1e-12)
    assert got["self"][0, 0] == pytest.approx(len(LENGTHS) / n_q)  # only query 0 has no previous token
    assert got["distance"][0, 0] == pytest.approx((n_q - len(LENGTHS)) / n_q)
    assert got["first"][0, 0] == pytest.approx(2 * len(LENGTHS) / n_q)  # queries 0 and 1
    assert np.isnan(got["separator"][0, 0])  # no document has a separator token
    assert head_types(got, DEFAULT_THRESHOLDS)[0, 0] == "previous"


def test_a_uniform_head_is_broad_and_a_first_token_head_is_first():
    got = _stats()
    queries = [q for n in LENGTHS for q in range(n)]
    assert got["entropy"][0, 1] == pytest.approx(np.mean([math.log(q + 1) for q in queries]))
    assert got["entropy_norm"][0, 1] == pytest.approx(1.0)  # uniform over what it sees (query 0 left out)
    assert got["self"][0, 1] == pytest.approx(np.mean([1 / (q + 1) for q in queries]))
    assert got["distance"][0, 1] == pytest.approx(np.mean([q / 2 for q in queries]))
    assert got["first"][0, 2] == pytest.approx(1.0) and got["distance"][0, 2] == pytest.approx(np.mean(queries))
    assert head_types(got, DEFAULT_THRESHOLDS)[0].tolist() == ["previous", "broad", "first"]


def test_heads_table_has_one_row_per_head_and_nan_as_null():
    got = _stats()
    table = heads_table(got, head_types(got, DEFAULT_THRESHOLDS))
    assert table["layer"].to_list() == [1, 1, 1] and table["head"].to_list() == [0, 1, 2]
    assert table["type"].to_list() == ["previous", "broad", "first"]
    assert table["separator"].null_count() == 3 and table["previous"][0] == pytest.approx(1.0)


def _documents(lengths: list[int], doc_ids: list[int]) -> Documents:
    ids = [np.arange(n) + 5 for n in lengths]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Documents(ids, np.arange(len(lengths)) % 2, offsets, [np.zeros(n, bool) for n in lengths], np.array(doc_ids))


def test_pattern_docs_take_short_ones_in_order_then_the_shortest_long_ones():
    docs = _documents([9, 3, 7, 4, 8, 5], [10, 11, 12, 13, 14, 15])
    assert pattern_docs(docs, 2, 5) == [1, 3]
    assert pattern_docs(docs, 5, 5) == [1, 3, 5, 2, 4]  # 7 and 8 tokens: the shortest of the long ones
    assert pattern_docs(docs, 3, 2) == [1, 3, 5]  # none is short: the shortest


def test_pattern_examples_hold_the_first_windows_tokens_cut_to_the_cap():
    docs = _documents([3, 5], [7, 8])
    tokens = pl.DataFrame(
        {
            "doc_id": [7, 7, 7, 8, 8, 8, 8, 8, 8, 8],
            "window": [0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
            "token": ["a", "b", "c", "d", "e", "f", "g", "h", "x", "y"],
        }
    )
    got = pattern_examples(tokens, docs, [7, 8], [1, 0], 4)
    assert got == [
        {"doc_id": 8, "label": 1, "tokens": ["d", "e", "f", "g"], "cut": True},
        {"doc_id": 7, "label": 0, "tokens": ["a", "b", "c"], "cut": False},
    ]
