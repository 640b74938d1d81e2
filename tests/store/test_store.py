"""workflow.store: atomic writes, JSON without NaN, and activation sets that refuse to be read half-written."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from workflow.store.activations import ActivationSet, ActivationWriter, DamagedSetError
from workflow.store.files import atomic_dir, json_safe, nan_to_null, write_json


def test_incomplete_set_is_rejected(tmp_path):
    folder = tmp_path / "set"
    with atomic_dir(folder) as tmp:
        writer = ActivationWriter(tmp, 4, "float16", 3, {})
        writer.append(np.ones((7, 4)))
        writer.close()
    assert ActivationSet(folder).n_rows == 7
    (folder / "shard-00002.npy").unlink()
    with pytest.raises(DamagedSetError, match="shard-00002.npy: missing"):
        ActivationSet(folder)
    with pytest.raises(FileNotFoundError, match="incomplete"):
        ActivationSet(tmp_path)


def _stored_set(results, rows=10, model="m"):
    """A finished activation set where the workflow puts one, and its extract job's summary."""
    extract = results / f"activations/{model}/pretrained/d/train"
    folder = extract / "resid_post/L2"
    with atomic_dir(folder) as tmp:
        writer = ActivationWriter(tmp, 4, "float16", 4, {})
        writer.append(np.arange(rows * 4, dtype=np.float32).reshape(rows, 4))
        writer.close()
    write_json({}, extract / "extract.json")
    return folder


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-8])


def _flip(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # a value, not the header: numpy still reads it
    path.write_bytes(bytes(data))


def _edit_manifest(path):
    manifest = json.loads((path.parent / "manifest.json").read_text())
    manifest["n_rows"] += 1
    (path.parent / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("plant", "found"),
    [
        (_truncate, "shard-00001.npy: 152 bytes, the manifest recorded 160"),
        (_flip, "shard-00001.npy: contents differ from the manifest's SHA-256"),
        (lambda p: p.unlink(), "shard-00001.npy: missing"),
        (_edit_manifest, "shards cover 10 rows, manifest says 11"),
    ],
)
def test_verify_finds_every_planted_damage_and_names_the_rebuild(plant, found, tmp_path, capsys):
    from workflow.store import verify

    folder = _stored_set(tmp_path / "results")
    other = _stored_set(tmp_path / "results", model="m2")  # an intact set beside it
    assert verify.verify(tmp_path / "results") == {}
    plant(folder / "shard-00001.npy")
    damaged = verify.verify(tmp_path / "results")
    assert list(damaged) == [folder] and other not in damaged
    assert any(found in p for p in damaged[folder][0]), damaged
    with pytest.raises(SystemExit) as exit_:
        verify.main([str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert exit_.value.code == 1 and f"DAMAGED {folder}" in out and "2 activation sets and 0 SAE" in out
    assert f"--forcerun {folder.parent.parent / 'extract.json'}" in out


def test_a_truncated_shard_is_named_with_its_fix_and_no_traceback(tmp_path):
    """A consumer of a truncated set (train_sae) stops with one message naming the set, the shard
    and the command that rebuilds it, not numpy's mmap traceback."""
    import subprocess
    import sys

    folder = _stored_set(tmp_path / "results", rows=64)
    _truncate(folder / "shard-00003.npy")
    recipe = json.dumps({"architecture": "relu", "d_sae": 8, "train_tokens": 64, "batch_size": 16})
    cmd = [sys.executable, "-m", "workflow", "train_sae", "--acts", str(folder), "--recipe", recipe, "--name", "r"]
    cmd += ["--source", "m", "--max-length", "16", "--out", str(tmp_path / "sae")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"activation set {folder}: shard-00003.npy:" in result.stderr
    assert "the manifest recorded" in result.stderr and "--forcerun" in result.stderr
    assert not (tmp_path / "sae").exists()


def test_json_is_written_without_nan_and_a_failed_block_leaves_nothing(tmp_path):
    write_json({"a": math.nan, "b": [1.0, math.inf], "c": {"d": -math.inf, "e": 2}}, tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.0, None], "c": {"d": None, "e": 2}}
    assert json_safe(math.nan) is None and json_safe(1.5) == 1.5
    frame = nan_to_null(pl.DataFrame({"x": [1.0, math.nan], "n": [1, 2]}))
    assert frame["x"].to_list() == [1.0, None] and frame["n"].to_list() == [1, 2]
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


@pytest.mark.parametrize(
    ("value", "cause"),
    [
        (1e6, "overflow float16 (largest magnitude 1e+06); extract with `extract.dtype: float32`"),
        (np.nan, "the model itself produced them"),
    ],
)
def test_non_finite_activations_stop_the_set_naming_it_the_rows_and_the_cause(value, cause, tmp_path):
    from workflow.store.activations import NonFiniteActivationsError

    folder = tmp_path / "set"
    meta = {"model": "m", "variant": "finetuned", "dataset": "d", "split": "test", "site": "resid_post", "layer": 4}
    acts = np.ones((6, 4), dtype=np.float32)
    acts[4, 1] = value
    with pytest.raises(NonFiniteActivationsError) as err, atomic_dir(folder) as tmp:
        writer = ActivationWriter(tmp, 4, "float16", 3, {**meta, "tokens": "t.parquet"})
        writer.append(np.zeros((5, 4), dtype=np.float32))
        writer.append(acts)
    message = str(err.value)
    assert message.startswith(
        "activation set m finetuned d test resid_post L4: 1 NaN or inf values in 1 rows (rows 9..9"
    )
    assert cause in message and err.value.user_facing
    assert not folder.exists()  # nothing half-written is left to be taken as finished


def _stored_sae(results):
    """A trained SAE (a small ReLU one) where the workflow puts one, with its checksums."""
    import torch

    from tests.sae_helpers import recipe
    from workflow.sae import training

    acts = _stored_set(results, rows=64)
    out = results / "saes/m/pretrained/d/resid_post/L2/relu"
    r = recipe("relu", d_sae=8, train_tokens=64, batch_size=16, normalize=False, b_dec_init="zeros")
    training.train(str(acts), r, str(out), {"model": "m"}, torch.device("cpu"))
    return out


def _edit_checksums(path):
    record = json.loads((path.parent / "checksums.json").read_text())
    record["files"][path.name]["sha256"] = "0" * 64
    (path.parent / "checksums.json").write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("plant", "found"),
    [
        (_truncate, "sae_weights.safetensors has 8 bytes fewer"),
        (_flip, "sae_weights.safetensors does not match its recorded SHA-256"),
        (lambda p: p.unlink(), "sae_weights.safetensors is missing"),
        (_edit_checksums, "sae_weights.safetensors does not match its recorded SHA-256"),
    ],
)
def test_verify_finds_damage_in_an_sae_folder_and_names_its_job(plant, found, tmp_path, capsys):
    from workflow.store import verify

    sae = _stored_sae(tmp_path / "results")
    record = json.loads((sae / "checksums.json").read_text())
    assert set(record["files"]) == {"sae_weights.safetensors", "cfg.json", "training_log.parquet"}
    assert verify.verify(tmp_path / "results") == {}
    plant(sae / "sae_weights.safetensors")
    damaged = verify.verify(tmp_path / "results")
    assert list(damaged) == [sae]
    problems, hint = damaged[sae]
    if "fewer" in found:  # the size is named with both numbers
        want = record["files"]["sae_weights.safetensors"]["bytes"]
        found = f"sae_weights.safetensors has {want - 8} bytes, {want} recorded"
    assert found in problems, problems
    assert f"--force {sae / 'cfg.json'}" in hint
    with pytest.raises(SystemExit):
        verify.main([str(tmp_path / "results")])
    assert "1 activation sets and 1 SAE, crosscoder and model folders checked" in capsys.readouterr().out


def test_a_truncated_sae_or_model_fails_on_open_naming_the_folder_and_the_fix(tmp_path, tiny_bert):
    import shutil

    from workflow.models.sources import resolve_source
    from workflow.sae import load
    from workflow.store.checksums import DamagedFolderError, record

    sae = _stored_sae(tmp_path / "results")
    load(sae)  # intact: loads
    _truncate(sae / "sae_weights.safetensors")
    with pytest.raises(DamagedFolderError, match=r"relu: sae_weights.safetensors has \d+ bytes, \d+ recorded.*--force"):
        load(sae)
    model = shutil.copytree(tiny_bert, tmp_path / "results/models/m/classify/d")
    record(model, None, target=model / "metrics.json")
    assert resolve_source(str(model)) == str(model.resolve())
    _truncate(model / "model.safetensors")
    with pytest.raises(DamagedFolderError, match=r"model.safetensors has .* recorded.*--force .*metrics.json"):
        resolve_source(str(model))


def test_only_a_failed_write_on_a_full_disk_reads_as_a_full_disk(tmp_path, monkeypatch):
    import errno

    from workflow.store import files

    enospc = OSError(errno.ENOSPC, "No space left on device")
    assert files.disk_full(enospc, tmp_path)  # whatever the free space
    wrapped = RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    monkeypatch.setattr(files, "_free", lambda where: 4096)  # a full disk
    assert files.disk_full(wrapped, tmp_path)
    assert files.disk_full(RuntimeError("basic_ios::clear: iostream error"), tmp_path)  # torch.save's
    assert not files.disk_full(ValueError("row 3: NaN in the activations"), tmp_path)  # not a write
    faced = OSError(errno.EIO, "x")
    faced.user_facing = True
    assert not files.disk_full(faced, tmp_path)
    monkeypatch.setattr(files, "_free", lambda where: 10**9)
    assert not files.disk_full(wrapped, tmp_path)  # space left: some other write failure


def test_a_killed_writes_partial_file_is_removed_by_the_next_write(tmp_path):
    from workflow.store.files import write_text

    (tmp_path / ".out.txt.partial-99999").write_text("half")
    write_text("whole", tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_text() == "whole" and not list(tmp_path.glob(".out.txt.partial-*"))
