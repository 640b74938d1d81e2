"""probe: pooling equals a naive computation; planted labels are found by a 1-sparse probe,
shuffled labels give chance, and the test split never leaks into fitting."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from tests.sae_helpers import bare_sae
from workflow.analysis import pooling, probes
from workflow.stages import probe
from workflow.store.activations import ActivationSet, ActivationWriter
from workflow.store.files import atomic_dir, write_json

CFG = {
    "Cs": [1e-2, 1e-1, 1.0, 10.0],
    "folds": 3,
    "max_iter": 1000,
    "tol": 1e-4,
    "max_train_docs": None,
    "ks": [1, 2, 4, 8],
    "sparse_pooling": "mean",
    "token_max_tokens": None,
    "token_saes": True,
    "batch_rows": 7,
    "seed": 0,
}


def _identity_sae(d: int, folder):
    sae = bare_sae("relu", d, d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.fill_(-0.1)
    sae.save(folder, {"hook_name": "blocks.0.hook_resid_post", "study": {"site": "resid_post", "layer": 1}})
    return sae


def _write_split(
    folder, name: str, x: np.ndarray, doc_len: np.ndarray, labels: np.ndarray, concept: np.ndarray, first_id: int
):
    n = len(x)
    doc = np.repeat(np.arange(len(doc_len)), doc_len)
    pos = np.concatenate([np.arange(k) for k in doc_len])
    tokens = pl.DataFrame(
        {
            "row": np.arange(n),
            "doc_id": doc + first_id,
            "pos": pos.astype(np.int32),
            "token_id": (pos % 5).astype(np.int32),
            "token": [f"t{p % 5}" for p in pos],
            "label": labels[doc].astype(np.int32),
            "is_special": pos == 0,
            "concepts": [["c0"] if c else [] for c in concept],
        }
    )
    tokens.write_parquet(folder / f"{name}.parquet")
    with atomic_dir(folder / f"acts_{name}") as tmp:
        writer = ActivationWriter(
            tmp,
            x.shape[1],
            "float32",
            50,
            {"model": "tiny", "variant": "finetuned", "dataset": "planted", "site": "resid_post", "layer": 1},
        )
        writer.append(x)
        writer.close()


def planted_split(rng, n_docs: int, d: int, labels: np.ndarray | None = None):
    """Documents of 3..12 tokens; direction 1 (0.5..1) on every token of class-1 documents;
    direction 0 on ~20% of ordinary tokens marks concept c0; two random others elsewhere."""
    if labels is None:
        labels = rng.integers(0, 2, n_docs)
    doc_len = rng.integers(3, 13, n_docs)
    n = int(doc_len.sum())
    doc = np.repeat(np.arange(n_docs), doc_len)
    pos = np.concatenate([np.arange(k) for k in doc_len])
    x = np.zeros((n, d), np.float32)
    for r in range(n):
        x[r, rng.choice(np.arange(2, d), 2, replace=False)] = rng.uniform(0.5, 2.0, 2)
    concept = (rng.random(n) < 0.2) & (pos > 0)
    x[concept, 0] = rng.uniform(0.5, 2.0, concept.sum())
    carry = labels[doc] == 1
    x[carry, 1] = rng.uniform(0.5, 1.0, carry.sum())
    return x, doc_len, labels, concept


def planted_study(
    folder, d: int = 16, n_train: int = 150, n_test: int = 400, seed: int = 0, shuffle_test: bool = False
):
    rng = np.random.default_rng(seed)
    train = planted_split(rng, n_train, d)
    test = planted_split(rng, n_test, d)
    test_labels = rng.permutation(test[2]) if shuffle_test else test[2]
    _write_split(folder, "train", train[0], train[1], train[2], train[3], 0)
    _write_split(folder, "test", test[0], test[1], test_labels, test[3], 10_000)
    _identity_sae(d, folder / "sae")
    write_json({"label_names": ["neg", "pos"], "concepts": ["c0"]}, folder / "meta.json")
    return train, test


def run_probe(folder, cfg=CFG, family="bert"):
    return probe.run(
        {s: str(folder / f"acts_{s}") for s in ("train", "test")},
        {s: str(folder / f"{s}.parquet") for s in ("train", "test")},
        str(folder / "meta.json"),
        family,
        {"identity": str(folder / "sae")},
        cfg,
        str(folder / "out"),
    )


def test_pooling_equals_a_naive_computation():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 9, 40)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    x = rng.standard_normal((offsets[-1], 5)).astype(np.float32)
    batches = [(s, x[s : s + 7]) for s in range(0, len(x), 7)]  # batches cut across documents
    for position in ("first", "last"):
        pooled = pooling.pool_batches(batches, offsets, position)
        for i in range(len(lengths)):
            doc = x[offsets[i] : offsets[i + 1]]
            np.testing.assert_allclose(pooled.mean[i], doc.mean(0), rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(pooled.position[i], doc[0] if position == "first" else doc[-1])
    with pytest.raises(ValueError, match="cover"):
        pooling.pool_batches(batches[:-1], offsets, "first")


def test_sae_pooling_pools_the_codes(tmp_path):
    train, _ = planted_study(tmp_path)
    sae = _identity_sae(16, tmp_path / "sae2")
    offsets = np.concatenate([[0], np.cumsum(train[1])])
    pooled = pooling.pool_set(ActivationSet(tmp_path / "acts_train"), offsets, "last", sae, batch_rows=13)
    codes = np.maximum(train[0] - 0.1, 0)
    np.testing.assert_allclose(pooled.mean[3], codes[offsets[3] : offsets[4]].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled.position[3], codes[offsets[4] - 1], rtol=1e-5, atol=1e-6)


def test_stage_finds_the_planted_label_feature_and_concept(tmp_path):
    planted_study(tmp_path)
    summary = run_probe(tmp_path)
    out = tmp_path / "out"
    seq = pl.read_parquet(out / "sequence.parquet")
    assert set(seq["representation"]) == {"raw", "sae:identity"} and set(seq["pooling"]) == {"mean", "first"}
    assert seq["accuracy"].min() >= 0.99 and seq["macro_f1"].min() >= 0.99  # every token carries the label
    sparse = pl.read_parquet(out / "sparse.parquet")
    k1 = sparse.filter(pl.col("k") == 1)
    assert k1["features"].to_list() == [[1], [1]]
    assert k1["accuracy"].min() >= 0.99
    ranked = pl.read_parquet(out / "ranked.parquet")
    top = ranked.filter((pl.col("representation") == "sae:identity") & (pl.col("rank") == 0)).row(0, named=True)
    assert top["feature"] == 1 and top["top_class"] == "pos" and top["examples"].endswith("sae/examples.parquet")
    tokens = pl.read_parquet(out / "tokens.parquet")
    assert tokens["concept"].to_list() == ["c0", "c0"]
    assert tokens["auroc"].min() >= 0.99 and tokens["f1"].min() >= 0.95
    assert summary["n_train_docs"] == 150 and summary["n_test_docs"] == 400


def test_stage_fits_on_train_only(tmp_path):
    """Test labels shuffled: a probe fitted on train (whose data carry the true labels) predicts the
    true test labels, so it scores chance against the shuffled ones. 300 pooled features for 250
    test documents and almost no regularisation: a probe that had seen the test labels would fit
    them (shown below), so a leak would score near 1."""
    planted_study(tmp_path, d=300, n_train=150, n_test=250, shuffle_test=True)
    cfg = {**CFG, "Cs": [1e4], "ks": [1, 300]}
    run_probe(tmp_path, cfg)
    seq = pl.read_parquet(tmp_path / "out/sequence.parquet")
    assert seq["train_accuracy"].min() == 1.0
    assert (seq["accuracy"] - 0.5).abs().max() < 0.12, seq
    sparse = pl.read_parquet(tmp_path / "out/sparse.parquet")
    assert (sparse["accuracy"] - 0.5).abs().max() < 0.12, sparse
    # the same probe fitted on the test split itself (a leak) memorises the shuffled labels
    from workflow.analysis.pooling import pool_set
    from workflow.store.tokens import read_documents

    docs = read_documents(tmp_path / "test.parquet")
    x = pool_set(ActivationSet(tmp_path / "acts_test"), docs.offsets, "first").mean
    leaky = probes.fit_probe(x, docs.labels, x, docs.labels, cfg)
    assert leaky["accuracy"] == 1.0


def test_bad_inputs_fail_clearly(tmp_path):
    planted_study(tmp_path)
    with pytest.raises(ValueError, match="family"):
        run_probe(tmp_path, family="t5")
    y = np.zeros(20, int)
    y[0] = 1
    with pytest.raises(ValueError, match="1 train example"):
        probes.fit_probe(np.ones((20, 2)), y, np.ones((5, 2)), np.zeros(5, int), CFG)
