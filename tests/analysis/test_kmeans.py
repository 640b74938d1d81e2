"""K-means on planted clusters: recovered exactly (ARI 1), scored against the labels, each cluster
described by its own planted direction and its nearest documents."""

from __future__ import annotations

import numpy as np
import pytest

from workflow.analysis import kmeans as km

CFG = {"normalize": True, "n_init": 4, "n_nearest": 2, "n_top_features": 2, "seed": 0}


def planted(n: int = 90, d: int = 12, seed: int = 0):
    """Three classes of equal size; class c lies along direction 2 + c (3 to 4) plus noise 0.1."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n // 3)
    x = 0.1 * rng.standard_normal((n, d))
    x[np.arange(n), 2 + labels] += rng.uniform(3, 4, n)
    return x, labels


def test_purity_counts_each_clusters_majority():
    assert km.purity(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0])) == pytest.approx(3 / 5)
    assert km.purity(np.array([1, 1, 0]), np.array([2, 2, 0])) == 1.0
    assert np.isnan(km.purity(np.array([], int), np.array([], int)))


def test_planted_clusters_are_recovered_exactly_and_a_random_split_scores_chance():
    x, labels = planted()
    assign, centres, z = km.kmeans(x, 3, True, 4, 0)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0)  # spherical: rows on the unit sphere
    result = km.scores(z, assign, labels)
    assert result["ari"] == pytest.approx(1.0) and result["nmi"] == pytest.approx(1.0) and result["purity"] == 1.0
    assert result["silhouette"] > 0.8 and result["n_clusters_found"] == 3
    shuffled = km.scores(z, np.random.default_rng(1).integers(0, 3, len(x)), labels)
    assert abs(shuffled["ari"]) < 0.05 and shuffled["purity"] < 0.55
    with pytest.raises(ValueError, match="cannot make"):
        km.kmeans(x[:2], 3, True, 4, 0)


def test_each_cluster_is_described_by_its_planted_direction_and_nearest_documents():
    x, labels = planted()
    ids = np.arange(len(x)) + 100
    texts = [f"doc {i} class {c}" for i, c in enumerate(labels)]
    top_tokens = {"sae:r": {2: ["a"], 3: ["b", "c"]}}
    scores, clusters = km.cluster_representations(
        {"raw": x, "sae:r": np.maximum(x, 0)}, labels, ["x", "y", "z"], ids, texts, top_tokens,
        {"variant": "v", "site": "s", "layer": 1}, "mean", 3, CFG,
    )  # fmt: skip
    assert [(r["representation"], r["pooling"], r["n_clusters"]) for r in scores] == [
        ("raw", "mean", 3), ("sae:r", "mean", 3)
    ]  # fmt: skip
    assert all(r["ari"] == pytest.approx(1.0) and r["variant"] == "v" for r in scores)
    assert len(clusters) == 6
    for row in clusters:
        c = "xyz".index(row["majority"])
        assert row["size"] == 30 and row["label_counts"][c] == 30 and row["majority_share"] == 1.0
        assert row["top_features"][0] == 2 + c  # the cluster's own planted direction
        assert all(text.endswith(f"class {c}") for text in row["nearest_texts"]) and len(row["nearest_texts"]) == 2
        assert all(labels[i - 100] == c for i in row["nearest_doc_ids"])
        expected = {"raw": "", "sae:r": {0: "a", 1: "b, c", 2: ""}[c]}[row["representation"]]
        assert row["top_feature_tokens"][0] == expected
