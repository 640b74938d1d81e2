"""The dataset stage: every source gives the contract's tables and metadata."""

from __future__ import annotations

import bz2
import io as stdio

import polars as pl
import pytest

from workflow.datasets import sources
from workflow.stages import dataset
from workflow.store.files import read_json

BASE = {"seed": 0, "max_train": None, "max_test": None}


def _rows(n):
    return pl.DataFrame(
        {
            "body": [f"{'good' if i % 2 else 'bad'} thing {i}" for i in range(n)],
            "y": ["pos" if i % 2 else "neg" for i in range(n)],
        }
    )


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_local_files_with_named_columns_and_string_labels(suffix, tmp_path):
    path = tmp_path / f"d.{suffix}"
    table = _rows(50)
    {"csv": table.write_csv, "jsonl": table.write_ndjson, "parquet": table.write_parquet}[suffix](path)
    spec = {
        **BASE,
        "source": "file",
        "path": str(path),
        "test_path": None,
        "text_column": "body",
        "label_column": "y",
        "label_names": ["neg", "pos"],
        "test_fraction": 0.2,
    }
    meta = dataset.run("d", spec, str(tmp_path / "out"))
    train, test = (pl.read_parquet(tmp_path / f"out/{s}.parquet") for s in ("train", "test"))
    assert (meta["n_train"], meta["n_test"]) == (40, 10) and meta["label_names"] == ["neg", "pos"]
    assert train.columns == ["id", "text", "label"] and train["label"].dtype == pl.Int64
    assert set(train["id"]).isdisjoint(test["id"]) and len(set(train["text"]) | set(test["text"])) == 50
    good = train.filter(pl.col("text").str.starts_with("good"))
    assert (good["label"] == 1).all()  # "pos" -> 1 through label_names
    assert meta["bow_baseline"]["accuracy"] == 1.0  # one word decides: the baseline sees it


@pytest.mark.parametrize(
    ("labels", "names"),
    [
        (["cnn", "abcnews", "bbc"], ["abcnews", "bbc", "cnn"]),  # strings, sorted
        ([10, 2, 7], ["2", "7", "10"]),  # integers that are not 0..K-1, sorted as numbers
    ],
)
def test_label_names_auto_numbers_the_values_found_in_sorted_order(labels, names, tmp_path):
    path, test_path = tmp_path / "train.csv", tmp_path / "test.csv"
    n = 30
    pl.DataFrame({"text": [f"w{i % 3} doc {i}" for i in range(n)], "y": [labels[i % 3] for i in range(n)]}).write_csv(
        path
    )
    pl.DataFrame({"text": ["w1 a", "w2 b", "w0 c"], "y": [labels[1], labels[2], labels[0]]}).write_csv(test_path)
    spec = {
        **BASE,
        "source": "file",
        "path": str(path),
        "test_path": str(test_path),
        "text_column": "text",
        "label_column": "y",
        "label_names": "auto",
    }
    assert sources.check_file(spec, "datasets.d") == []
    meta = dataset.run("d", spec, str(tmp_path / "out"))
    assert meta["label_names"] == names
    train, test = (pl.read_parquet(tmp_path / f"out/{s}.parquet") for s in ("train", "test"))
    want = {str(v): names.index(str(v)) for v in labels}
    assert train["label"].to_list() == [want[str(labels[i % 3])] for i in range(n)]
    assert test["label"].to_list() == [want[str(labels[1])], want[str(labels[2])], want[str(labels[0])]]


def test_a_file_in_another_encoding_reads_with_its_encoding_key(tmp_path):
    path = tmp_path / "latin1.csv"
    rows = "text,label\n" + "".join(f"caf\u00e9 cr\u00e8me {i},{i % 2}\n" for i in range(20))
    path.write_bytes(rows.encode("latin-1"))
    spec = {**BASE, "source": "file", "path": str(path), "test_path": None, "text_column": "text"}
    spec |= {"label_column": "label", "label_names": None, "test_fraction": 0.2}
    errors = sources.check_file(spec, "datasets.d")
    assert len(errors) == 1 and "not valid utf-8 at byte 14 (line 2" in errors[0] and "`encoding`" in errors[0]
    assert sources.check_file({**spec, "encoding": "latin-1"}, "datasets.d") == []
    dataset.run("d", {**spec, "encoding": "latin-1"}, str(tmp_path / "out"))
    texts = pl.read_parquet(tmp_path / "out/train.parquet")["text"].to_list()
    assert all(t.startswith("caf\u00e9 cr\u00e8me") for t in texts)


def test_builtin_dataset_has_spans_and_a_baseline_below_one(tmp_path):
    spec = {**BASE, "source": "builtin", "task": "app_rating", "n_train": 400, "n_test": 100, "label_noise": 0.1}
    meta = dataset.run("apps", spec, str(tmp_path))
    train = pl.read_parquet(tmp_path / "train.parquet")
    assert meta["label_names"][0] == "1 star" and meta["n_test"] == 100
    assert 0.2 < meta["bow_baseline"]["accuracy"] < 1.0
    assert "negation" in meta["concepts"] and sum(meta["class_counts"]["train"].values()) == 400
    row = train.row(0, named=True)
    assert all(row["text"][s["start"] : s["end"]].strip() == row["text"][s["start"] : s["end"]] for s in row["spans"])
    assert read_json(tmp_path / "meta.json") == meta


def test_rotten_tomatoes_split_by_movie(tmp_path):
    spec = {**BASE, "source": "rotten_tomatoes", "test_fraction": 0.2}
    train, test, names = sources.load_rotten_tomatoes(spec)
    assert names == ["rotten", "fresh"] and len(train) + len(test) == 7403 + 5405
    assert 0.15 < len(test) / (len(train) + len(test)) < 0.25
    with bz2.open(sources._rotten_tomatoes_path()) as packed:
        raw = pl.read_csv(stdio.BytesIO(packed.read()))
    # a few snippets are quoted for several films: judge only texts that name one film
    movies = raw.group_by("text").agg(pl.col("movie_name").unique())
    movie_of = {t: m[0] for t, m in movies.iter_rows() if len(m) == 1}
    train_movies = {movie_of[t] for t in train["text"] if t in movie_of}
    test_movies = {movie_of[t] for t in test["text"] if t in movie_of}
    assert len(train_movies) > 100 and len(test_movies) > 20 and train_movies.isdisjoint(test_movies)
    capped = dataset.run("rt", {**spec, "max_train": 300, "max_test": 100}, str(tmp_path))
    assert (capped["n_train"], capped["n_test"]) == (300, 100)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".parquet"])
def test_unlabelled_text_gets_no_labels_and_no_baseline(suffix, tmp_path):
    texts = [f"document number {i} about things" for i in range(30)]
    path = tmp_path / f"docs{suffix}"
    if suffix == ".txt":
        path.write_text("\n".join(texts) + "\n\n")  # blank lines are not documents
    else:
        frame = pl.DataFrame({"text": texts, "source": ["web"] * 30})
        frame.write_ndjson(path) if suffix == ".jsonl" else frame.write_parquet(path)
    spec = {"source": "file", "path": str(path), "text_column": "text", "label_column": None, "labelled": False}
    spec |= {"test_path": None, "test_fraction": 0.2, "seed": 0, "max_train": None, "max_test": None}
    meta = dataset.run("docs", spec, str(tmp_path / "out"))
    assert meta["labelled"] is False and meta["label_names"] == [] and meta["bow_baseline"] is None
    train = pl.read_parquet(tmp_path / "out/train.parquet")
    assert meta["n_train"] + meta["n_test"] == 30 and set(train["label"]) == {sources.UNLABELLED}


def test_snakemake_called_by_path_runs_its_jobs_without_the_environment_on_path(tmp_path):
    """`.venv/bin/snakemake` without activating the environment: jobs run the stages with the
    interpreter that runs Snakemake, not whatever `python` is first on PATH."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import ROOT

    snakemake = Path(sys.executable).parent / "snakemake"
    env = {**os.environ, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    target = "results/data/movie_sentiment/meta.json"
    cmd = [str(snakemake), "--snakefile", str(ROOT / "Snakefile"), "--cores", "1", target]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_json(tmp_path / target)["label_names"] == ["negative", "positive"]


def test_a_fine_tune_below_the_majority_class_or_the_word_counts_is_named():
    from workflow.datasets.baseline import shortfall

    meta = {"class_counts": {"test": {"0": 60, "1": 40}}, "bow_baseline": {"accuracy": 0.8}}
    assert "does not beat the majority class (0.600)" in shortfall(0.6, meta)
    assert "is below the bag-of-words baseline (0.800)" in shortfall(0.7, meta)
    assert "finetune.epochs" in shortfall(0.7, meta)
    assert shortfall(0.85, meta) is None
    assert shortfall(0.1, {"class_counts": None, "bow_baseline": None}) is None  # unlabelled: nothing to compare
