"""features: the streaming, vectorised tables equal a naive per-feature computation; planted concepts are found."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from tests.sae_helpers import bare_sae
from workflow.analysis import features as feature_stats
from workflow.sae.codes import sparse_codes
from workflow.stages import features
from workflow.store.activations import ActivationSet, ActivationWriter
from workflow.store.files import atomic_dir, read_json, write_json

CFG = {
    "max_tokens": None,
    "batch_rows": 97,
    "top_tokens": 3,
    "min_token_count": 3,
    "n_top": 4,
    "n_quantiles": 3,
    "per_quantile": 2,
    "window": 2,
    "sentence": 1,
    "sentence_docs": 3,
    "sentence_top": 2,
    "seed": 0,
}


def planted_study(folder, n_docs=60, doc_len=10, d=16, seed=0, sae_dir=None, study=None, labels=("neg", "pos")):
    """Rows are sums of 2 of d axis directions; the SAE is the identity with a small threshold,
    so feature i fires exactly where direction i is present. Concept "c0" marks the rows of
    direction 0; documents of class 1 carry direction 1 on every token. Tokens, activations and
    meta.json go into `folder`, the SAE (with `study` as its metadata's study block) into `sae_dir`
    (default folder/sae)."""
    study = study or {"site": "resid_post", "layer": 1}
    rng = np.random.default_rng(seed)
    n = n_docs * doc_len
    labels_doc = rng.integers(0, 2, n_docs)
    x = np.zeros((n, d), np.float32)
    for r in range(n):
        x[r, rng.choice(np.arange(2, d), 2, replace=False)] = rng.uniform(0.5, 2.0, 2)
        if rng.random() < 0.2:
            x[r, 0] = rng.uniform(0.5, 2.0)
        if labels_doc[r // doc_len] == 1:
            x[r, 1] = rng.uniform(0.5, 1.0)
    token_ids = rng.integers(0, 12, n)
    tokens = pl.DataFrame(
        {
            "row": np.arange(n),
            "doc_id": np.repeat(np.arange(n_docs), doc_len),
            "pos": np.tile(np.arange(doc_len), n_docs),
            "token_id": token_ids,
            "token": [f"t{i}" for i in token_ids],
            "label": np.repeat(labels_doc, doc_len),
            "is_special": np.zeros(n, bool),
            "concepts": [["c0"] if x[r, 0] > 0 else [] for r in range(n)],
        }
    )
    tokens.write_parquet(folder / "tokens.parquet")
    with atomic_dir(folder / "acts") as tmp:
        writer = ActivationWriter(tmp, d, "float32", 128, {"site": study["site"], "layer": study["layer"]})
        writer.append(x)
        writer.close()
    sae = bare_sae("relu", d, d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.fill_(-0.1)
    sae.save(sae_dir or folder / "sae", {"hook_name": "blocks.0.hook_resid_post", "study": study})
    write_json({"label_names": list(labels), "concepts": ["c0"]}, folder / "meta.json")
    return x, tokens, sae


def test_tables_equal_a_naive_computation(tmp_path):
    from sklearn.metrics import roc_auc_score

    x, tokens, sae = planted_study(tmp_path)
    features.run(
        str(tmp_path / "sae"),
        str(tmp_path / "acts"),
        str(tmp_path / "tokens.parquet"),
        str(tmp_path / "meta.json"),
        CFG,
    )
    table = pl.read_parquet(tmp_path / "sae/features.parquet")
    dense = sae.encode(torch.from_numpy(x)).detach().numpy()  # (n, d_sae)
    labels = tokens["label"].to_numpy()
    concept = tokens["concepts"].list.len().to_numpy() > 0
    token_ids = tokens["token_id"].to_numpy()
    for f in range(dense.shape[1]):
        a = dense[:, f]
        row = table.row(f, named=True)
        assert row["frequency"] == pytest.approx((a > 0).mean())
        assert row["mean_activation"] == pytest.approx(a.mean(), rel=1e-5)
        assert row["max_activation"] == pytest.approx(a.max(), rel=1e-6)
        for c, name in enumerate(["neg", "pos"]):
            assert row[f"mean:{name}"] == pytest.approx(a[labels == c].mean(), rel=1e-5, abs=1e-7)
            assert row[f"auroc:{name}"] == pytest.approx(roc_auc_score(labels == c, a), abs=1e-9)
        tp = ((a > 0) & concept).sum()
        assert row["f1:c0"] == pytest.approx(2 * tp / ((a > 0).sum() + concept.sum()))
        means = {t: a[token_ids == t].mean() for t in np.unique(token_ids) if (token_ids == t).sum() >= 3}
        best = sorted(means, key=lambda t: -means[t])[:3]
        expected_hist = (
            np.histogram(a[a > 0], bins=feature_stats.HIST_BINS, range=(0, a.max()))[0] if a.max() > 0 else 0
        )
        np.testing.assert_array_equal(row["hist_counts"], expected_hist)
        if (a > 0).any():
            assert row["top_tokens"] == [f"t{t}" for t in best if means[t] > 0][:3]
    # planted: feature 0 detects concept c0 exactly, feature 1 separates the classes
    assert table.row(0, named=True)["f1:c0"] == 1.0
    assert table.row(1, named=True)["auroc:pos"] == 1.0
    summary = read_json(tmp_path / "sae/features.json")
    assert summary["best_feature_per_concept"]["c0"]["feature"] == 0


def test_examples_are_the_top_activations_with_their_windows(tmp_path):
    x, tokens, sae = planted_study(tmp_path)
    features.run(
        str(tmp_path / "sae"),
        str(tmp_path / "acts"),
        str(tmp_path / "tokens.parquet"),
        str(tmp_path / "meta.json"),
        CFG,
    )
    examples = pl.read_parquet(tmp_path / "sae/examples.parquet")
    dense = sae.encode(torch.from_numpy(x)).detach().numpy()
    doc = tokens["doc_id"].to_numpy()
    for f in range(dense.shape[1]):
        top = examples.filter((pl.col("feature") == f) & (pl.col("kind") == "top")).sort("rank")
        expected = np.sort(dense[:, f][dense[:, f] > 0])[::-1][: CFG["n_top"]]
        np.testing.assert_allclose(top["activation"].to_numpy(), expected, rtol=1e-6)
        for ex in examples.filter(pl.col("feature") == f).iter_rows(named=True):
            r = ex["row"]
            rows = [
                q for q in range(r - CFG["window"], r + CFG["window"] + 1) if 0 <= q < len(doc) and doc[q] == doc[r]
            ]
            assert ex["tokens"] == tokens["token"].gather(rows).to_list()
            np.testing.assert_allclose(ex["acts"], dense[rows, f], rtol=1e-6)
            assert ex["acts"][ex["center"]] == pytest.approx(ex["activation"])
        quantile = examples.filter((pl.col("feature") == f) & (pl.col("kind") == "quantile"))
        assert (
            quantile["rank"].n_unique() == min(CFG["n_quantiles"], int((dense[:, f] > 0).sum()))
            or (dense[:, f] > 0).sum() < 3
        )
    assert (tmp_path / "sae/features.png").stat().st_size > 0 and (tmp_path / "sae/sentence.png").stat().st_size > 0


def test_sentences_hold_every_token_of_the_first_documents_with_its_strongest_features(tmp_path):
    x, tokens, sae = planted_study(tmp_path)
    features.run(
        str(tmp_path / "sae"),
        str(tmp_path / "acts"),
        str(tmp_path / "tokens.parquet"),
        str(tmp_path / "meta.json"),
        CFG,
    )
    sentences = pl.read_parquet(tmp_path / "sae/sentences.parquet")
    dense = sae.encode(torch.from_numpy(x)).detach().numpy()
    assert sentences["doc_id"].to_list() == tokens.filter(pl.col("doc_id") < 3)["doc_id"].to_list()
    for r in sentences.iter_rows(named=True):
        a = dense[r["row"]]
        strongest = np.argsort(-a, kind="stable")[: min(2, int((a > 0).sum()))]
        assert sorted(r["features"]) == sorted(strongest.tolist())
        np.testing.assert_allclose(r["acts"], a[r["features"]], rtol=1e-6)
        assert r["acts"] == sorted(r["acts"], reverse=True) and r["token"] == tokens["token"][r["row"]]


def test_codes_lookup_and_batching(tmp_path):
    x, _, sae = planted_study(tmp_path)
    codes = sparse_codes(sae, ActivationSet(tmp_path / "acts"), max_tokens=250, batch_rows=64)
    dense = sae.encode(torch.from_numpy(x[:250])).detach().numpy()
    assert codes.n_rows == 250
    rows, feats = np.meshgrid(np.arange(250), np.arange(dense.shape[1]), indexing="ij")
    np.testing.assert_allclose(codes.lookup(rows.ravel(), feats.ravel()).reshape(dense.shape), dense, rtol=1e-6)


def test_no_examples_and_all_dead_features_still_write_tables(tmp_path):
    x, tokens, sae = planted_study(tmp_path)
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)  # nothing fires
    sae.save(tmp_path / "dead", {"hook_name": "blocks.0.hook_resid_post", "study": {"site": "resid_post", "layer": 1}})
    for folder, n_top in (("sae", 0), ("dead", 4)):
        summary = features.run(
            str(tmp_path / folder),
            str(tmp_path / "acts"),
            str(tmp_path / "tokens.parquet"),
            str(tmp_path / "meta.json"),
            {**CFG, "n_top": n_top},
        )
        table = pl.read_parquet(tmp_path / folder / "features.parquet")
        examples = pl.read_parquet(tmp_path / folder / "examples.parquet")
        assert len(table) == 16 and (tmp_path / folder / "features.png").exists()
        assert set(examples["kind"].unique()) <= {"quantile", "top"}
        if folder == "dead":
            assert summary["dead_fraction"] == 1.0 and len(examples) == 0
            assert (table["auroc:pos"] == 0.5).all()
        else:
            assert "top" not in set(examples["kind"]) and len(examples) > 0


def test_encoding_leaves_autograd_on_even_when_a_generator_is_left_unfinished(tmp_path):
    from workflow.sae.codes import encode_batches

    x, _, sae = planted_study(tmp_path)
    aset = ActivationSet(tmp_path / "acts")
    for _ in zip(encode_batches(sae, aset, 100, 64), encode_batches(sae, aset, None, 64)):
        assert torch.is_grad_enabled()  # the longer generator stays suspended after zip stops
    assert torch.is_grad_enabled()


@pytest.mark.workflow
def test_a_killed_features_job_reruns_to_the_same_tables(kill_study, tmp_path):
    """kill -9 of Snakemake and the job between two of its output files, --unlock, the same
    command: the tables equal an uninterrupted run's (no file of the killed run is kept)."""
    from tests.kills import KillRun

    folder = "results/saes/bert/pretrained/news/resid_post/L2/topk"
    clean, killed, _ = KillRun(kill_study, "features", f"{folder}/features.json", tmp_path).run(seed=3)
    KillRun.assert_same(clean, killed, folder)
