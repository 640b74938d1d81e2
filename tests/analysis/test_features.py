"""workflow.analysis.features on planted codes: statistics, top tokens, label and concept association, top
examples with their windows, sentences, and the best feature per concept, all known by hand.

Eight token rows in two documents of four (doc 0 class "a", doc 1 class "b"); three features:
feature 0 fires 1, 2, 3, 4 on rows 4..7 (all of doc 1), feature 1 fires 5 on row 0, feature 2 never.
Concept "c" marks rows 4 and 5."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from workflow.analysis import features
from workflow.sae.codes import Codes

CFG = {"top_tokens": 1, "min_token_count": 1, "n_top": 2, "n_quantiles": 1, "per_quantile": 0, "window": 1, "seed": 0}


def _planted() -> tuple[Codes, pl.DataFrame]:
    codes = Codes(
        n_rows=8,
        d_sae=3,
        row=np.array([0, 4, 5, 6, 7], np.int32),
        feature=np.array([1, 0, 0, 0, 0], np.int32),
        value=np.array([5.0, 1.0, 2.0, 3.0, 4.0], np.float32),
    )
    token_ids = [0, 1, 2, 0, 1, 2, 0, 1]
    tokens = pl.DataFrame(
        {
            "row": np.arange(8),
            "doc_id": [0] * 4 + [1] * 4,
            "pos": [0, 1, 2, 3] * 2,
            "token_id": token_ids,
            "token": [f"t{i}" for i in token_ids],
            "label": [0] * 4 + [1] * 4,
            "is_special": [False] * 8,
            "concepts": [[], [], [], [], ["c"], ["c"], [], []],
        }
    )
    return codes, tokens


def test_statistics_of_planted_codes():
    codes, tokens = _planted()
    table, examples, extra = features.describe(codes, tokens, ["a", "b"], ["c"], CFG)
    assert table["n_active"].to_list() == [4, 1, 0]
    np.testing.assert_allclose(table["frequency"], [0.5, 1 / 8, 0.0])
    np.testing.assert_allclose(table["mean_activation"], [10 / 8, 5 / 8, 0.0])
    np.testing.assert_allclose(table["mean_active"], [2.5, 5.0, 0.0])
    np.testing.assert_allclose(table["max_activation"], [4.0, 5.0, 0.0])
    # feature 0 fires on every token of class b and on none of class a: AUROC 1 for b, 0 for a
    np.testing.assert_allclose([table["auroc:b"][0], table["auroc:a"][0]], [1.0, 0.0])
    np.testing.assert_allclose([table["mean:b"][0], table["mean:a"][0]], [2.5, 0.0])
    # concept c (rows 4, 5): feature 0 finds both among its 4 firings
    np.testing.assert_allclose([table["precision:c"][0], table["recall:c"][0], table["f1:c"][0]], [0.5, 1.0, 2 / 3])
    assert extra["concept_tokens"] == {"c": 2}
    # token t1 (rows 1, 4, 7) has feature 0's highest mean over all its occurrences: (0 + 1 + 4) / 3
    assert table["top_tokens"][0].to_list() == ["t1"]
    assert table["top_token_means"][0].to_list() == pytest.approx([5 / 3])
    # feature 0's activations in 20 bins of width 0.2 over (0, 4]: 1, 2, 3 open bins 5, 10, 15; the max the last
    assert np.flatnonzero(table["hist_counts"][0].to_numpy()).tolist() == [5, 10, 15, 19]


def test_top_examples_are_the_largest_activations_with_their_windows():
    codes, tokens = _planted()
    _, examples, _ = features.describe(codes, tokens, ["a", "b"], ["c"], CFG)
    top = examples.filter(pl.col("kind") == "top").sort("feature", "rank")
    assert top.select("feature", "rank", "row", "activation").rows() == [(0, 0, 7, 4.0), (0, 1, 6, 3.0), (1, 0, 0, 5.0)]
    # a window of one token either side, cut at the document's end (row 7) and start (row 0)
    assert top["tokens"].to_list() == [["t0", "t1"], ["t2", "t0", "t1"], ["t0", "t1"]]
    assert top["center"].to_list() == [1, 1, 0]
    assert top["acts"].to_list() == [[3.0, 4.0], [2.0, 3.0, 4.0], [5.0, 0.0]]


def test_sentences_and_the_best_feature_per_concept():
    codes, tokens = _planted()
    table, _, extra = features.describe(codes, tokens, ["a", "b"], ["c"], CFG)
    sentences = features.sentence_features(codes, tokens, 1, 1)
    assert sentences["row"].to_list() == [0, 1, 2, 3]
    assert sentences["features"].to_list() == [[1], [], [], []] and sentences["acts"].to_list() == [[5.0], [], [], []]
    best = features.best_per_concept(codes, table, tokens, ["c"], extra["concept_tokens"])["c"]
    assert best["feature"] == 0 and best["f1"] == pytest.approx(2 / 3) and best["tokens"] == 2
    # no feature reaches precision 0.8 for c: an empty union
    assert best["precise_features"] == 0 and best["precise_union_recall"] == 0.0
