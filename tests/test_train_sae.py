"""train_sae on synthetic data with a known dictionary: recovery, determinism, resume, guards."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from tests.sae_helpers import best_match_cosine, planted_dictionary_set, recipe
from workflow.sae import load, training
from workflow.sae.stream import ShuffledRows
from workflow.store.activations import ActivationSet, ActivationWriter
from workflow.store.files import atomic_dir

CPU = torch.device("cpu")
META = {"study": {"site": "resid_post", "layer": 1}, "hook_name": "blocks.0.hook_resid_post"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted") / "acts"
    return folder, planted_dictionary_set(folder)


# Measured on this data (2x overcomplete, 400k tokens): topk 0.999, batchtopk 0.991, relu 0.998, jumprelu 0.936.
FLOORS = {"topk": 0.95, "batchtopk": 0.95, "relu": 0.95, "jumprelu": 0.85}


@pytest.mark.parametrize("architecture", sorted(FLOORS))
def test_each_architecture_recovers_the_planted_dictionary(architecture, planted, tmp_path, caplog):
    folder, truth = planted
    caplog.set_level(logging.INFO, logger="workflow.sae.training")
    result = training.train(str(folder), recipe(architecture), str(tmp_path / "sae"), META, CPU)
    sae = load(tmp_path / "sae")
    cosine = best_match_cosine(truth, sae.W_dec.detach().numpy())
    print(f"{architecture}: mean best-match cosine {cosine.mean():.4f}, final {result['final']}")
    assert cosine.mean() >= FLOORS[architecture]
    assert result["final"]["fvu"] < 0.3
    # progress lines name the step, throughput, loss terms, L0, FVU and dead fraction
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("step "))
    for part in ("tokens/s", "loss", "fvu", "l0", "dead"):
        assert part in line
    log = __import__("polars").read_parquet(tmp_path / "sae" / "training_log.parquet")
    assert {"step", "tokens", "loss", "fvu", "l0", "dead_fraction", "tokens_per_s", "lr"} <= set(log.columns)
    if architecture in ("topk", "batchtopk"):  # fixed sparsity: FVU must fall (L1/L0 ones trade it for sparsity)
        assert log["fvu"][-1] < log["fvu"][0]


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "sae_weights.safetensors"))


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
def test_same_seed_gives_bit_identical_weights_and_resume_matches(architecture, planted, tmp_path, monkeypatch):
    folder, _ = planted
    r = recipe(architecture, train_tokens=60000, checkpoint_every=40)
    training.train(str(folder), r, str(tmp_path / "a"), META, CPU)
    training.train(str(folder), r, str(tmp_path / "b"), META, CPU)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for key in a:
        assert torch.equal(a[key], b[key]), key

    # interrupt after 100 of 118 steps (the last checkpoint is at step 80), then run again
    original = ShuffledRows.batches

    def interrupted(self, start_step=0):
        for i, batch in enumerate(original(self, start_step)):
            if start_step + i == 100:
                raise KeyboardInterrupt("simulated kill")
            yield batch

    monkeypatch.setattr(ShuffledRows, "batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        training.train(str(folder), r, str(tmp_path / "c"), META, CPU)
    assert (tmp_path / "c" / training.CHECKPOINT).exists()
    assert not (tmp_path / "c" / "sae_weights.safetensors").exists()
    monkeypatch.setattr(ShuffledRows, "batches", original)
    training.train(str(folder), r, str(tmp_path / "c"), META, CPU)
    c = _weights(tmp_path / "c")
    for key in a:
        assert torch.equal(a[key], c[key]), key
    assert not (tmp_path / "c" / training.CHECKPOINT).exists()


def test_checkpoint_of_another_recipe_is_not_resumed(planted, tmp_path, caplog):
    folder, _ = planted
    torch.save({"fingerprint": "something else"}, tmp_path / training.CHECKPOINT)
    caplog.set_level(logging.INFO)
    training.train(str(folder), recipe("topk", train_tokens=5000), str(tmp_path), META, CPU)
    assert "ignoring" in caplog.text


def test_non_finite_activations_stop_with_a_clear_error(tmp_path):
    """A set that holds an inf (the writer refuses to store one; here it is planted in a shard
    afterwards, as damage or an older set would hold it)."""
    with atomic_dir(tmp_path / "acts") as tmp:
        w = ActivationWriter(tmp, 8, "float32", 1000, {"hook_name": "h"})
        w.append(np.ones((2000, 8), dtype=np.float32))
        w.close()
    shard = np.load(tmp_path / "acts/shard-00001.npy", mmap_mode="r+")
    shard[234, 3] = np.inf  # row 1234
    shard.flush()
    del shard
    r = recipe("topk", d_sae=16, k=2, train_tokens=4000, batch_size=500, normalize=False, b_dec_init="zeros")
    with pytest.raises(training.NonFiniteError, match="non-finite activations"):
        training.train(str(tmp_path / "acts"), r, str(tmp_path / "sae"), META, CPU)


def test_overflowing_loss_stops_with_the_step_named(tmp_path):
    x = np.random.default_rng(0).standard_normal((2000, 8)).astype(np.float32) * 1e20  # finite; squares are not
    with atomic_dir(tmp_path / "acts") as tmp:
        w = ActivationWriter(tmp, 8, "float32", 1000, {"hook_name": "h"})
        w.append(x)
        w.close()
    r = recipe("relu", d_sae=16, train_tokens=4000, batch_size=500, normalize=False, b_dec_init="zeros")
    with pytest.raises(training.NonFiniteError, match=r"loss is inf at step 0 .*lower lr"):
        training.train(str(tmp_path / "acts"), r, str(tmp_path / "sae"), META, CPU)


def test_stream_visits_every_row_once_per_epoch_and_resumes_exactly(tmp_path):
    n, d = 5000, 3
    x = np.arange(n * d, dtype=np.float32).reshape(n, d)
    with atomic_dir(tmp_path / "acts") as tmp:
        w = ActivationWriter(tmp, d, "float32", 1700, {"hook_name": "h"})
        w.append(x)
        w.close()
    aset = ActivationSet(tmp_path / "acts")
    stream = ShuffledRows(aset, batch_size=100, seed=3, buffer_rows=1024, chunk_rows=256)
    it = stream.batches()
    epoch = np.concatenate([next(it) for _ in range(50)])  # exactly one epoch
    assert sorted(epoch[:, 0].tolist()) == sorted(x[:, 0].tolist())
    assert not np.array_equal(epoch[:, 0], x[:, 0])  # shuffled
    later = [next(it) for _ in range(30)]
    resumed = stream.batches(50)
    for batch in later:
        np.testing.assert_array_equal(batch, next(resumed))
    # memory is bounded by the buffer: no buffer holds more than buffer_rows rows
    assert max(stream._buffer_rows(ids) for ids in stream._buffers(0)) <= 1024


@pytest.mark.parametrize(("calibration_batches", "reproduces_k"), [(16, True), (0, False)])
def test_the_batchtopk_threshold_reproduces_the_training_l0_on_held_out_tokens(
    calibration_batches, reproduces_k, tmp_path
):
    """After a short training (118 steps) the running average of the threshold still remembers the
    early, larger activations: it keeps about half of k on held-out tokens. Set from the final
    weights, it keeps k within 10%."""
    planted_dictionary_set(tmp_path / "train", n=60000, d=64, m=256, k=8, seed=0)
    planted_dictionary_set(tmp_path / "test", n=5000, d=64, m=256, k=8, seed=0)  # same dictionary, new weights
    rec = recipe("batchtopk", k=16, d_sae=256, train_tokens=60000, lr=5e-3, calibration_batches=calibration_batches)
    training.train(str(tmp_path / "train"), rec, str(tmp_path / "sae"), {"study": {}}, torch.device("cpu"))
    sae = load(tmp_path / "sae")
    x = torch.from_numpy(ActivationSet(tmp_path / "test").read_all().astype(np.float32))
    with torch.no_grad():
        l0 = float((sae.encode(x) > 0).sum(1).float().mean())
    assert (abs(l0 - 16) <= 1.6) == reproduces_k, l0


@pytest.mark.workflow
def test_a_killed_train_sae_job_resumes_to_the_same_sae(kill_study, tmp_path):
    """kill -9 of Snakemake and the job after a checkpoint, --unlock, the same command: training
    resumes from the checkpoint (the log says so) and ends with the uninterrupted run's SAE."""
    from tests.kills import KillRun

    folder = "results/saes/bert/finetuned/news/resid_post/L2/topk"
    run = KillRun(kill_study, "train_sae", f"{folder}/cfg.json", tmp_path)
    clean, killed, log = run.run(seed=1, after=training.CHECKPOINT)
    assert "resuming from" in log, log
    run.assert_same(clean, killed, folder)


def test_training_onto_a_full_disk_fails_clearly_and_a_rerun_with_space_completes(small_disk, tiny_bert, tmp_path):
    """An SAE of 2 x 8 x 1,024 float32 weights (64 KiB) and its checkpoints onto a 64 KiB tmpfs: one
    message naming the file and the fix, no traceback, no cfg.json (what marks the SAE done); with
    8 MiB the same command completes and the SAE loads."""
    import json
    import subprocess
    import sys

    disk, resize = small_disk
    with atomic_dir(tmp_path / "acts") as tmp:
        w = ActivationWriter(tmp, 8, "float32", 1000, {"hook_name": "blocks.0.hook_resid_post", "layer": 1})
        w.append(np.random.default_rng(0).standard_normal((2000, 8)).astype(np.float32))
        w.close()
    r = {"architecture": "topk", "d_sae": 1024, "k": 4, "train_tokens": 4000, "batch_size": 200, "checkpoint_every": 5}
    cmd = [sys.executable, "-m", "workflow", "train_sae", "--acts", str(tmp_path / "acts"), "--recipe", json.dumps(r)]
    cmd += ["--name", "r", "--source", str(tiny_bert), "--max-length", "16", "--out", str(disk / "sae")]
    full = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert full.returncode == 1, full.stderr[-3000:]
    assert "Traceback" not in full.stderr and "no space left on the device of" in full.stderr, full.stderr[-3000:]
    assert not (disk / "sae/cfg.json").exists() and not any(".partial-" in p.name for p in disk.rglob("*"))
    resize("8m")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert load(disk / "sae").d_sae == 1024


def test_a_set_smaller_than_one_batch_stops_before_training(tmp_path):
    with atomic_dir(tmp_path / "acts") as tmp:
        w = ActivationWriter(tmp, 8, "float32", 1000, {"hook_name": "h"})
        w.append(np.ones((300, 8), dtype=np.float32))
        w.close()
    r = recipe("topk", d_sae=16, k=2, train_tokens=4000, batch_size=512)
    with pytest.raises(training.TooFewTokensError, match=r"300 tokens, fewer than one batch of 512: lower"):
        training.train(str(tmp_path / "acts"), r, str(tmp_path / "sae"), META, CPU)
    assert not (tmp_path / "sae" / "cfg.json").exists()
