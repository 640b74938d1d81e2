"""cluster: planted clusters are recovered (ARI >= 0.9) with their own top feature and members."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tests.test_probe import _identity_sae, _write_split
from workflow.stages import kmeans
from workflow.store.files import write_json

CFG = {
    "n_clusters": None,
    "pooling": "mean",
    "normalize": True,
    "n_init": 10,
    "n_nearest": 3,
    "n_top_features": 2,
    "batch_rows": 11,
    "seed": 0,
}


def planted_clusters(folder, n_docs: int = 300, d: int = 24, seed: int = 0):
    """Three classes; every token of a class-c document carries direction 2 + c (1..2) on top
    of shared noise directions, so documents group by class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n_docs)
    doc_len = rng.integers(4, 12, n_docs)
    doc = np.repeat(np.arange(n_docs), doc_len)
    n = len(doc)
    x = np.zeros((n, d), np.float32)
    for r in range(n):
        x[r, rng.choice(np.arange(5, d), 3, replace=False)] = rng.uniform(0.2, 1.0, 3)
    x[np.arange(n), 2 + labels[doc]] = rng.uniform(1.0, 2.0, n)
    _write_split(folder, "test", x, doc_len, labels, np.zeros(n, bool), 100)
    pl.DataFrame(
        {
            "id": np.arange(n_docs) + 100,
            "text": [f"document {i} of class {c}" for i, c in enumerate(labels)],
            "label": labels,
        }
    ).write_parquet(folder / "data.parquet")
    write_json({"label_names": ["a", "b", "c"], "concepts": []}, folder / "meta.json")
    _identity_sae(d, folder / "sae")
    return labels


def run_cluster(folder, cfg=CFG, family="bert"):
    plan = [{"acts": str(folder / "acts_test"), "saes": {"identity": str(folder / "sae")}}]
    return kmeans.run(
        plan,
        str(folder / "test.parquet"),
        str(folder / "data.parquet"),
        str(folder / "meta.json"),
        family,
        cfg,
        str(folder / "out"),
        "planted",
    )


def test_planted_clusters_are_recovered(tmp_path):
    labels = planted_clusters(tmp_path)
    summary = run_cluster(tmp_path)
    scores = pl.read_parquet(tmp_path / "out/scores.parquet")
    assert scores["representation"].to_list() == ["raw", "sae:identity"]
    assert scores["ari"].min() >= 0.9 and scores["purity"].min() >= 0.95
    assert scores["silhouette"].min() > 0.2
    table = pl.read_parquet(tmp_path / "out/clusters.parquet")
    for row in table.iter_rows(named=True):
        c = "abc".index(row["majority"])
        assert row["top_features"][0] == 2 + c  # the cluster's own planted direction
        assert all(text.endswith(f"class {c}") for text in row["nearest_texts"])
        assert sum(row["label_counts"]) == row["size"]
    assert table.filter(pl.col("representation") == "raw")["size"].sum() == len(labels)
    assert set(table["layer"]) == {1} and set(table["variant"]) == {"finetuned"}
    assert summary["n_docs"] == len(labels)
    assert (tmp_path / "out/clusters.png").stat().st_size > 1000


def test_bad_inputs_fail_clearly(tmp_path):
    planted_clusters(tmp_path, n_docs=30)
    with pytest.raises(ValueError, match="cannot make"):
        run_cluster(tmp_path, {**CFG, "n_clusters": 31})
    with pytest.raises(ValueError, match="family"):
        run_cluster(tmp_path, family="t5")
