"""Tokens table and activation sets: alignment, values, atomicity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest
import torch

from workflow import dataset, extract, io, models, tokenize

SPEC = {"source": "builtin", "task": "movie_sentiment", "n_train": 60, "n_test": 20, "label_noise": 0.0, "seed": 0,
        "max_train": None, "max_test": None}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    dataset.run("movie_sentiment", SPEC, str(out))
    return out


def test_tokens_table_contract(data_dir, tiny_bert, tmp_path):
    table = tokenize.run(str(data_dir / "train.parquet"), str(tiny_bert), 64, str(tmp_path / "t.parquet"))
    data = pl.read_parquet(data_dir / "train.parquet")
    assert table["row"].to_list() == list(range(len(table)))
    assert table["doc_id"].unique(maintain_order=True).to_list() == data["id"].to_list()
    tokenizer = models.load_tokenizer(str(tiny_bert))
    assert tokenizer.pad_token_id not in table.filter(~pl.col("is_special"))["token_id"].to_list()
    first = table.filter(pl.col("doc_id") == data["id"][0])
    assert first["pos"].to_list() == list(range(len(first)))
    assert first["token_id"].to_list() == tokenizer(data["text"][0])["input_ids"]
    # [CLS] and [SEP] are kept and flagged; they carry no concept
    specials = table.filter(pl.col("is_special"))
    assert set(specials["token"]) == {"[CLS]", "[SEP]"} and specials["concepts"].list.len().sum() == 0
    # planted concepts land on the tokens that spell them
    negations = table.filter(pl.col("concepts").list.contains("negation"))
    assert len(negations) > 0 and set(negations["token"]) <= {"not", "never", "hardly", "barely", "scarcely"}
    tagged = table.filter(pl.col("token").is_in(["not", "never"]))
    assert tagged["concepts"].list.contains("negation").all()


def _tokens(data_dir, model, tmp_path, split="test"):
    out = tmp_path / f"{model.name}-{split}.parquet"
    tokenize.run(str(data_dir / f"{split}.parquet"), str(model), 64, str(out))
    return out


@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_activation_sets_align_with_tokens_and_model(which, data_dir, tiny_bert, tiny_gpt2, tmp_path):
    model = tiny_bert if which == "bert" else tiny_gpt2
    tokens_path = _tokens(data_dir, model, tmp_path)
    targets = [("resid_post", 0), ("resid_post", 2), ("mlp_out", 1)]
    extract.run(str(model), str(tokens_path), targets, str(tmp_path / "acts"), {"model": which}, batch_size=7,
                shard_rows=100)
    table = pl.read_parquet(tokens_path)
    sets = {t: io.ActivationSet(extract.set_folder(tmp_path / "acts", *t)) for t in targets}
    assert {s.n_rows for s in sets.values()} == {len(table)}
    assert len(sets[("resid_post", 2)].manifest["shards"]) > 1  # several shards, rows still in order
    # recompute document 3 alone (no padding) and find its rows in the set
    doc = table.filter(pl.col("doc_id") == table["doc_id"].unique(maintain_order=True)[3])
    body = models.load_base_model(str(model))
    ids = torch.tensor([doc["token_id"].to_list()])
    with torch.inference_mode(), models.Capture(body, targets, stop=False) as cap:
        ref = cap.run(input_ids=ids, attention_mask=torch.ones_like(ids))
    rows = doc["row"].to_numpy()
    for t, s in sets.items():
        stored = s.read_all()[rows].astype(np.float32)
        np.testing.assert_allclose(stored, ref[t][0].numpy(), rtol=2e-3, atol=2e-3)  # float16 storage
    full = sets[("resid_post", 2)].read_all().astype(np.float64)
    np.testing.assert_allclose(sets[("resid_post", 2)].mean, full.mean(0), rtol=1e-6, atol=1e-6)
    assert sets[("resid_post", 2)].manifest["hook_name"] == "blocks.1.hook_resid_post"


def test_incomplete_set_is_rejected(tmp_path):
    folder = tmp_path / "set"
    with io.atomic_dir(folder) as tmp:
        writer = io.ActivationWriter(tmp, 4, "float16", 3, {})
        writer.append(np.ones((7, 4)))
        writer.close()
    assert io.ActivationSet(folder).n_rows == 7
    (folder / "shard-00002.npy").unlink()
    with pytest.raises(FileNotFoundError):
        io.ActivationSet(folder)
    with pytest.raises(FileNotFoundError, match="incomplete"):
        io.ActivationSet(tmp_path)


def test_killed_extract_leaves_no_finished_set_and_rerun_completes(data_dir, tiny_bert, tmp_path):
    """SIGKILL mid-extraction: nothing at the final path; a re-run gives a complete, valid set."""
    tokens_path = _tokens(data_dir, tiny_bert, tmp_path, split="train")
    out_root = tmp_path / "acts"
    final = extract.set_folder(out_root, "resid_post", 2)
    cfg = json.dumps({"batch_size": 1, "dtype": "float16", "shard_rows": 16, "compute_dtype": "float32"})
    cmd = [sys.executable, "-m", "workflow", "extract", "--model", str(tiny_bert), "--tokens", str(tokens_path),
           "--targets", "resid_post:2", "--out-root", str(out_root), "--meta", "{}", "--config", cfg]
    # slow every stored window down so the kill surely lands mid-run
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "WORKFLOW_TEST_SLEEP": "0.3"}
    (tmp_path / "sitecustomize.py").write_text(
        "import os, time, workflow.io as io\n"
        "orig = io.ActivationWriter.append\n"
        "def slow(self, a):\n"
        "    time.sleep(float(os.environ['WORKFLOW_TEST_SLEEP'])); orig(self, a)\n"
        "io.ActivationWriter.append = slow\n"
    )
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(out_root.glob("resid_post/.L2.partial-*/shard-00001.npy")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(out_root.glob("resid_post/.L2.partial-*")), "the kill should land while shards are being written"
    assert not final.exists()
    with pytest.raises(FileNotFoundError):
        io.ActivationSet(final)
    env["WORKFLOW_TEST_SLEEP"] = "0"
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    done = io.ActivationSet(final)
    assert done.n_rows == len(pl.read_parquet(tokens_path))
    assert not any(out_root.glob("resid_post/.L2.partial-*"))  # leftovers of the killed run are gone


def test_document_sample_is_seeded_capped_and_in_table_order(data_dir, tiny_bert, tmp_path):
    docs = tokenize.read_documents(_tokens(data_dir, tiny_bert, tmp_path, split="train"))
    assert docs.n_tokens == sum(len(t) for t in docs.token_ids) and len(docs.special) == len(docs.token_ids)
    sub = docs.sample(max_tokens=300, seed=1)
    assert 0 < sub.n_tokens <= 300 and sub.n_tokens + max(len(t) for t in docs.token_ids) > 300
    again = docs.sample(max_tokens=300, seed=1)
    assert [t.tolist() for t in sub.token_ids] == [t.tolist() for t in again.token_ids]
    other = docs.sample(max_tokens=300, seed=2)
    assert [t.tolist() for t in sub.token_ids] != [t.tolist() for t in other.token_ids]
    positions = [next(i for i, t in enumerate(docs.token_ids) if np.array_equal(t, s)) for s in sub.token_ids]
    assert positions == sorted(positions)  # table order kept
    assert len(docs.sample(max_docs=5).token_ids) == 5 and docs.sample().n_tokens == docs.n_tokens
    assert all(s[0] and s[-1] and not s[1:-1].any() for s in sub.special)  # [CLS] ... [SEP]
