"""workflow.store: atomic writes, JSON without NaN, and activation sets that refuse to be read half-written."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from workflow.store.activations import ActivationSet, ActivationWriter
from workflow.store.files import atomic_dir, json_safe, nan_to_null, write_json


def test_incomplete_set_is_rejected(tmp_path):
    folder = tmp_path / "set"
    with atomic_dir(folder) as tmp:
        writer = ActivationWriter(tmp, 4, "float16", 3, {})
        writer.append(np.ones((7, 4)))
        writer.close()
    assert ActivationSet(folder).n_rows == 7
    (folder / "shard-00002.npy").unlink()
    with pytest.raises(FileNotFoundError):
        ActivationSet(folder)
    with pytest.raises(FileNotFoundError, match="incomplete"):
        ActivationSet(tmp_path)


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
