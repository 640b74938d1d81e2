"""Linear probes on planted features: the held-out accuracy they must reach, the features a k-sparse
probe must pick, and the tables stage `probe` writes from them."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from workflow.analysis import probes
from workflow.analysis.pooling import Pooled

CFG = {"Cs": [0.1, 1.0], "folds": 3, "max_iter": 1000, "tol": 1e-4, "seed": 0}
CFG |= {"ks": [1, 2, 4], "sparse_pooling": "mean", "token_max_tokens": None, "token_saes": False, "batch_rows": 7}


def separable(rng, n: int, d: int, dims=(3,)):
    """Labels 0/1, carried by `dims` (+-1 with noise 0.1), the other dimensions noise of width 1."""
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, d))
    for i in dims:
        x[:, i] = (2 * y - 1) + 0.1 * rng.standard_normal(n)
    return x, y


def test_a_planted_separable_feature_is_decoded_at_the_accuracy_its_labels_allow():
    rng = np.random.default_rng(0)
    (x_train, y_train), (x_test, y_test) = separable(rng, 400, 20), separable(rng, 1000, 20)
    result = probes.fit_probe(x_train, y_train, x_test, y_test, CFG)
    assert result["accuracy"] == 1.0 and result["train_accuracy"] == 1.0 and result["macro_f1"] == 1.0
    assert result["chance"] == pytest.approx(np.bincount(y_test).max() / 1000)
    flipped = y_test.copy()
    flipped[:100] = 1 - flipped[:100]  # 10% of the test labels wrong: the probe reads the truth
    assert probes.fit_probe(x_train, y_train, x_test, flipped, CFG)["accuracy"] == pytest.approx(0.9)


def test_constant_columns_are_dropped_and_a_single_class_fails_clearly():
    rng = np.random.default_rng(1)
    x, y = separable(rng, 200, 6)
    x[:, [0, 5]] = 2.0
    result = probes.fit_probe(x, y, x, y, CFG)
    assert result["n_features"] == 6 and result["n_used"] == 4 and result["accuracy"] == 1.0
    with pytest.raises(ValueError, match="single class"):
        probes.fit_probe(x, np.zeros(200, int), x, y, CFG)


def test_a_k_sparse_probe_picks_the_planted_dimensions_first():
    rng = np.random.default_rng(2)
    y_train, y_test = rng.integers(0, 2, 600), rng.integers(0, 2, 600)
    x_train, x_test = rng.standard_normal((600, 40)), rng.standard_normal((600, 40))
    for x, y in ((x_train, y_train), (x_test, y_test)):
        x[:, 11] += 3 * y  # strongest
        x[:, 5] += 1.5 * y  # weaker
    rows, order, scores = probes.sparse_probes(x_train, y_train, x_test, y_test, [1, 2, 100], CFG)
    assert order[:2].tolist() == [11, 5] and scores[11] > scores[5] > scores[order[2]]
    assert [r["k"] for r in rows] == [1, 2, 40] and rows[1]["features"] == [11, 5]
    assert 0.9 < rows[0]["accuracy"] < rows[1]["accuracy"]  # the second planted feature adds to the first


def test_one_carrying_feature_gives_a_1_sparse_probe_at_100_percent_and_shuffled_labels_chance():
    rng = np.random.default_rng(0)
    x_train, x_test = rng.standard_normal((300, 50)), rng.standard_normal((1000, 50))
    y_train, y_test = (x_train[:, 7] > 0).astype(int), (x_test[:, 7] > 0).astype(int)
    rows, order, _ = probes.sparse_probes(x_train, y_train, x_test, y_test, [1, 4], CFG)
    assert order[0] == 7 and rows[0]["features"] == [7]
    assert rows[0]["accuracy"] >= 0.98
    shuffled = probes.sparse_probes(x_train, rng.permutation(y_train), x_test, rng.permutation(y_test), [1], CFG)[0]
    assert abs(shuffled[0]["accuracy"] - 0.5) < 0.08


def test_a_memorising_probe_scores_chance_on_shuffled_labels():
    """500 features for 200 train rows and almost no regularisation: the probe fits the
    shuffled train labels perfectly and still scores chance on held-out rows."""
    rng = np.random.default_rng(0)
    x_train, x_test = rng.standard_normal((200, 500)), rng.standard_normal((1000, 500))
    y_train, y_test = rng.integers(0, 2, 200), rng.integers(0, 2, 1000)
    result = probes.fit_probe(x_train, y_train, x_test, y_test, {**CFG, "Cs": [1e4]})
    assert result["train_accuracy"] == 1.0
    assert abs(result["accuracy"] - 0.5) < 0.06


class Rows:
    """The one method of an ActivationSet the token probes read."""

    def __init__(self, x):
        self.x = x

    def rows(self, indices):
        return self.x[indices].astype(np.float32)


def _tokens(concept: np.ndarray) -> pl.DataFrame:
    n = len(concept)
    special = np.arange(n) % 10 == 0
    return pl.DataFrame(
        {"row": np.arange(n), "is_special": special, "concepts": [["c0"] if c else [] for c in concept]}
    )


def test_token_probes_find_a_rare_planted_concept_and_skip_an_unseen_one():
    rng = np.random.default_rng(3)
    tables, sets = {}, {}
    for split in ("train", "test"):
        concept = (rng.random(1000) < 0.1) & (np.arange(1000) % 10 > 0)
        x = rng.standard_normal((1000, 6))
        x[:, 2] += 4 * concept
        tables[split], sets[split] = _tokens(concept), Rows(x)
    rows = probes.token_probes(tables, sets, ["c0", "c1"], {}, CFG, "test")
    assert [(r["representation"], r["concept"]) for r in rows] == [("raw", "c0")]  # c1 has no tokens
    (row,) = rows
    positives = tables["test"]["concepts"].list.contains("c0").sum()
    assert row["auroc"] > 0.99 and row["n_train"] == 900 and row["n_positive_test"] == positives
    assert probes.token_table([]).columns == list(probes.TOKEN_SCHEMA)


def test_sequence_probes_rank_the_planted_feature_with_its_class():
    rng = np.random.default_rng(4)
    pooled = {}
    labels = {}
    for split, n in (("train", 120), ("test", 80)):
        x, labels[split] = separable(rng, n, 8, dims=(6,))
        pooled.setdefault("raw", {})[split] = Pooled(x, -x, "first")
        pooled.setdefault("sae:r", {})[split] = Pooled(np.maximum(x, 0), np.maximum(-x, 0), "first")
    keep = {"train": np.arange(100), "test": np.arange(80)}
    labels["train"] = labels["train"][:100]
    seq, sparse, ranked = probes.sequence_probes(
        pooled, keep, labels, ["neg", "pos"], "first", {"r": "/saes/r"}, CFG, "test"
    )
    assert [(r["representation"], r["pooling"]) for r in seq] == [
        ("raw", "mean"), ("raw", "first"), ("sae:r", "mean"), ("sae:r", "first")
    ]  # fmt: skip
    assert min(r["accuracy"] for r in seq) == 1.0 and {r["n_train"] for r in seq} == {100}
    assert [r["k"] for r in sparse] == [1, 2, 4, 1, 2, 4] and {r["pooling"] for r in sparse} == {"mean"}
    top = [r for r in ranked if r["rank"] == 0]
    assert [(r["feature"], r["top_class"], r["examples"]) for r in top] == [
        (6, "pos", None), (6, "pos", "/saes/r/examples.parquet")
    ]  # fmt: skip
    table = pl.DataFrame(ranked, schema=probes.RANKED_SCHEMA)
    tops = {"sae:r": pl.DataFrame({"feature": [6, 0], "top_tokens": [["a", "b"], ["c"]]})}
    joined = probes.with_top_tokens(table, tops)
    assert joined.filter(pl.col("rank") == 0)["top_tokens"].to_list() == [None, ["a", "b"]]


def test_sample_docs_keeps_a_seeded_sorted_subset():
    offsets = np.arange(0, 101, 10)  # 10 documents
    assert probes.sample_docs(offsets, None, 0).tolist() == list(range(10))
    picked = probes.sample_docs(offsets, 4, 0)
    assert len(set(picked)) == 4 and picked.tolist() == sorted(picked) and picked.max() < 10
    assert picked.tolist() == probes.sample_docs(offsets, 4, 0).tolist()
