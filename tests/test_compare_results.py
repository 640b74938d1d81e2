"""benchmarks/compare_results.py finds every changed value, follows renamed folders and ignores timings."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math

import numpy as np
import polars as pl

from tests.conftest import ROOT
from workflow.store.files import write_json

_spec = importlib.util.spec_from_file_location("compare_results", ROOT / "benchmarks" / "compare_results.py")
compare_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_results)


def _results(root, accuracy: float, kmeans_folder: str, ari: float, shard: np.ndarray):
    (root / "models/m/d").mkdir(parents=True)
    metrics = {"finetuned": {"accuracy": accuracy, "loss": math.nan}, "train": {"seconds": accuracy * 100}}
    if kmeans_folder == "clusters":  # as earlier versions wrote it: NaN in the JSON
        (root / "models/m/d/metrics.json").write_text(json.dumps(metrics))
    else:
        write_json(metrics, root / "models/m/d/metrics.json")
    (root / f"analysis/m/d/{kmeans_folder}").mkdir(parents=True)
    pl.DataFrame(
        {"representation": ["raw", "sae:t"], "ari": [ari, float("nan")], "tokens_per_s": [ari, 1.0]}
    ).write_parquet(root / f"analysis/m/d/{kmeans_folder}/scores.parquet")
    (root / "activations").mkdir()
    np.save(root / "activations/shard-00000.npy", shard)


def test_same_values_under_old_names_are_identical_and_a_changed_value_is_named(tmp_path, capsys):
    shard = np.arange(12, dtype=np.float16).reshape(3, 4)
    _results(tmp_path / "old", 0.9, "clusters", 0.5, shard)
    _results(tmp_path / "same", 0.9, "kmeans", 0.5, shard)  # renamed folder; NaN written as null; other timings
    assert compare_results.main([str(tmp_path / "old"), str(tmp_path / "same")]) == 0
    assert "3 files identical" in capsys.readouterr().out
    changed = shard.copy()
    changed[1, 2] = 99
    _results(tmp_path / "new", 0.91, "kmeans", 0.75, changed)
    assert compare_results.main([str(tmp_path / "old"), str(tmp_path / "new")]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT models/m/d/metrics.json: .finetuned.accuracy: 0.9 -> 0.91" in out
    assert "DIFFERENT analysis/m/d/kmeans/scores.parquet: column ari: 1 of 2 values differ (max |diff| 0.25)" in out
    assert "DIFFERENT activations/shard-00000.npy: the bytes differ" in out
    assert "0 files identical" in out


def _folder(study, seconds: float, accuracy: float):
    """A model folder as a study writes it: metrics with a timing, their digest in checksums.json, and a
    path to the study's own folder."""
    folder = study / "results/models/m/d"
    folder.mkdir(parents=True)
    write_json({"accuracy": accuracy, "seconds": seconds, "model": str(folder)}, folder / "metrics.json")
    text = (folder / "metrics.json").read_bytes()
    digest = {"bytes": len(text), "sha256": hashlib.sha256(text).hexdigest()}
    write_json({"files": {"metrics.json": digest}}, folder / "checksums.json")


def test_a_digest_of_timings_and_the_study_folder_are_not_differences(tmp_path, capsys):
    _folder(tmp_path / "a", 1.5, 0.9)
    _folder(tmp_path / "b", 12.25, 0.9)  # other timings (another length, another digest), another study folder
    assert compare_results.main([str(tmp_path / "a/results"), str(tmp_path / "b/results")]) == 0
    assert "2 files identical" in capsys.readouterr().out
    _folder(tmp_path / "c", 1.5, 0.8)
    assert compare_results.main([str(tmp_path / "a/results"), str(tmp_path / "c/results")]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT models/m/d/metrics.json: .accuracy: 0.9 -> 0.8" in out
    assert "DIFFERENT models/m/d/checksums.json: .files.metrics.json.sha256" in out
