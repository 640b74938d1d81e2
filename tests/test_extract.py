"""Stage `extract`: activation sets aligned with the tokens table, and atomic under a kill."""

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

from tests.conftest import colour_words, tokens_table
from workflow.models import loading
from workflow.models.extraction import set_folder
from workflow.models.hooks import Capture
from workflow.stages import extract, tokens
from workflow.store.activations import ActivationSet


@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_activation_sets_align_with_tokens_and_model(which, data_dir, tiny_bert, tiny_gpt2, tmp_path):
    model = tiny_bert if which == "bert" else tiny_gpt2
    tokens_path = tokens_table(data_dir, model, tmp_path)
    targets = [("resid_post", 0), ("resid_post", 2), ("mlp_out", 1)]
    extract.run(
        str(model), str(tokens_path), targets, str(tmp_path / "acts"), {"model": which}, batch_size=7, shard_rows=100
    )
    table = pl.read_parquet(tokens_path)
    sets = {t: ActivationSet(set_folder(tmp_path / "acts", *t)) for t in targets}
    assert {s.n_rows for s in sets.values()} == {len(table)}
    assert len(sets[("resid_post", 2)].manifest["shards"]) > 1  # several shards, rows still in order
    # recompute document 3 alone (no padding) and find its rows in the set
    doc = table.filter(pl.col("doc_id") == table["doc_id"].unique(maintain_order=True)[3])
    body = loading.load_base_model(str(model))
    ids = torch.tensor([doc["token_id"].to_list()])
    with torch.inference_mode(), Capture(body, targets, stop=False) as cap:
        ref = cap.run(input_ids=ids, attention_mask=torch.ones_like(ids))
    rows = doc["row"].to_numpy()
    for t, s in sets.items():
        stored = s.read_all()[rows].astype(np.float32)
        np.testing.assert_allclose(stored, ref[t][0].numpy(), rtol=2e-3, atol=2e-3)  # float16 storage
    full = sets[("resid_post", 2)].read_all().astype(np.float64)
    np.testing.assert_allclose(sets[("resid_post", 2)].mean, full.mean(0), rtol=1e-6, atol=1e-6)
    assert sets[("resid_post", 2)].manifest["hook_name"] == "blocks.1.hook_resid_post"


def test_killed_extract_leaves_no_finished_set_and_rerun_completes(data_dir, tiny_bert, tmp_path):
    """SIGKILL mid-extraction: nothing at the final path; a re-run gives a complete, valid set."""
    tokens_path = tokens_table(data_dir, tiny_bert, tmp_path, split="train")
    out_root = tmp_path / "acts"
    final = set_folder(out_root, "resid_post", 2)
    cfg = json.dumps({"batch_size": 1, "dtype": "float16", "shard_rows": 16, "compute_dtype": "float32"})
    cmd = [
        sys.executable,
        "-m",
        "workflow",
        "extract",
        "--model",
        str(tiny_bert),
        "--tokens",
        str(tokens_path),
        "--targets",
        "resid_post:2",
        "--out-root",
        str(out_root),
        "--meta",
        "{}",
        "--config",
        cfg,
    ]
    # slow every stored window down so the kill surely lands mid-run
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "WORKFLOW_TEST_SLEEP": "0.3"}
    (tmp_path / "sitecustomize.py").write_text(
        "import os, time\n"
        "from workflow.store.activations import ActivationWriter\n"
        "orig = ActivationWriter.append\n"
        "def slow(self, a):\n"
        "    time.sleep(float(os.environ['WORKFLOW_TEST_SLEEP'])); orig(self, a)\n"
        "ActivationWriter.append = slow\n"
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
        ActivationSet(final)
    env["WORKFLOW_TEST_SLEEP"] = "0"
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    done = ActivationSet(final)
    assert done.n_rows == len(pl.read_parquet(tokens_path))
    assert not any(out_root.glob("resid_post/.L2.partial-*"))  # leftovers of the killed run are gone


def test_load_options_reach_the_model(tmp_path):
    """--load: bfloat16 weights placed by a device_map give activations within bf16 rounding of float32."""
    from tests.tiny_models import make_tiny

    model = make_tiny("llama", tmp_path / "llama")
    colour_words(tmp_path / "test.parquet", 12)
    tokens.run(str(tmp_path / "test.parquet"), str(model), 16, str(tmp_path / "tokens.parquet"))
    sets = {}
    for name, load in (("fp32", {}), ("bf16", {"dtype": "bfloat16", "device_map": "cpu"})):
        cfg = {"batch_size": 4, "dtype": "float32", "shard_rows": 1000, "compute_dtype": "float32"}
        extract.main(
            ["--model", str(model), "--tokens", str(tmp_path / "tokens.parquet"), "--targets", "resid_post:2"]
            + ["--out-root", str(tmp_path / name), "--meta", "{}", "--config", json.dumps(cfg)]
            + ["--load", json.dumps(load)]
        )
        sets[name] = ActivationSet(tmp_path / name / "resid_post" / "L2").read_all()
    loading.use_options({})
    assert not np.array_equal(sets["fp32"], sets["bf16"])  # the bf16 weights were used
    np.testing.assert_allclose(sets["bf16"], sets["fp32"], rtol=0.1, atol=0.1)


@pytest.mark.workflow
def test_a_killed_extract_job_reruns_to_the_same_sets(kill_study, tmp_path):
    """kill -9 of Snakemake and the job between two sets, --unlock, the same command: every set
    equals an uninterrupted run's."""
    from tests.kills import KillRun

    folder = "results/activations/bert/finetuned/news/train"
    clean, killed, _ = KillRun(kill_study, "extract", f"{folder}/extract.json", tmp_path).run(seed=6)
    KillRun.assert_same(clean, killed, folder)


def test_extraction_onto_a_full_disk_fails_clearly_and_a_rerun_with_space_completes(
    data_dir, tiny_bert, small_disk, tmp_path
):
    """Three sets of the train split (~240 KB) onto a 64 KiB tmpfs: one message naming the set and
    the fix, no traceback, nothing left that a later run takes as done; with 8 MiB it completes."""
    disk, resize = small_disk
    tokens_path = tokens_table(data_dir, tiny_bert, tmp_path, split="train")
    cfg = json.dumps({"batch_size": 8, "dtype": "float16", "shard_rows": 256, "compute_dtype": "float32"})
    cmd = [sys.executable, "-m", "workflow", "extract", "--model", str(tiny_bert), "--tokens", str(tokens_path)]
    cmd += ["--targets", "resid_post:1", "resid_post:2", "mlp_out:2", "--out-root", str(disk / "acts")]
    cmd += ["--meta", "{}", "--config", cfg]
    full = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert full.returncode == 1, full.stderr[-3000:]
    assert "Traceback" not in full.stderr and "no space left on the device of" in full.stderr, full.stderr[-3000:]
    assert "run the same command again" in full.stderr
    leftovers = [p for p in disk.rglob("*") if p.is_file()]
    assert not any(p.name == "manifest.json" for p in leftovers) and not any(".partial-" in str(p) for p in leftovers)
    resize("8m")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    n_rows = len(pl.read_parquet(tokens_path))
    for site, layer in (("resid_post", 1), ("resid_post", 2), ("mlp_out", 2)):
        aset = ActivationSet(set_folder(disk / "acts", site, layer))
        assert aset.n_rows == n_rows and not np.isnan(aset.read_all()).any()
