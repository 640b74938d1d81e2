"""`workflow.models.extraction`: captured activations written in tokens-table order, padding dropped."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from workflow.models import extraction
from workflow.store.activations import ActivationSet
from workflow.store.tokens import Documents


class FakeCapture:
    """Stands in for `Capture`: each (site, layer) activation is the token id (plus the layer) in every one
    of 3 dimensions, so a stored row says which token it came from. Records each batch's documents."""

    def __init__(self, keys):
        self.keys, self.batches = keys, []

    def run(self, input_ids, attention_mask):
        self.batches.append(input_ids.shape)
        values = (input_ids * attention_mask).float()[..., None].expand(-1, -1, 3)  # (B, T, 3)
        return {key: values + key[1] for key in self.keys}


class ListWriter:
    def __init__(self):
        self.appended = []

    def append(self, acts):
        self.appended.append(acts)


def _documents(lengths, seed=0):
    rng = np.random.default_rng(seed)
    token_ids = [rng.integers(1, 1000, n) for n in lengths]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Documents(token_ids, np.zeros(len(lengths), int), offsets, [np.zeros(n, bool) for n in lengths])


def test_rows_follow_the_table_in_windows_though_each_window_runs_sorted_by_length():
    lengths = [5, 1, 9, 3, 3, 7, 2, 8] * 5  # 40 documents: windows of 16, 16 and 8 at batch size 1
    docs = _documents(lengths)
    keys = [("resid_post", 0), ("mlp_out", 2)]
    capture, writers = FakeCapture(keys), {key: ListWriter() for key in keys}
    extraction.stream(capture, docs, writers, 1, 0, torch.float32, torch.device("cpu"))
    assert [len(a) for a in writers[keys[0]].appended] == [sum(lengths[:16]), sum(lengths[16:32]), sum(lengths[32:])]
    ids = np.concatenate(docs.token_ids)
    for (_, layer), writer in writers.items():
        np.testing.assert_array_equal(np.concatenate(writer.appended), np.repeat(ids[:, None] + layer, 3, 1))
    assert [shape[1] for shape in capture.batches[:16]] == sorted(lengths[:16])  # each window shortest first


def test_padding_is_dropped_from_batches_of_unequal_documents():
    docs = _documents([4, 1, 6, 2, 2])
    capture, writer = FakeCapture([("resid_post", 1)]), ListWriter()
    extraction.stream(capture, docs, {("resid_post", 1): writer}, 2, 0, torch.float16, torch.device("cpu"))
    (stored,) = writer.appended
    assert stored.dtype == np.float16 and stored.shape == (15, 3)
    np.testing.assert_array_equal(stored[:, 0], np.concatenate(docs.token_ids) + 1)


def test_writers_open_in_temporary_folders_and_unconfigured_sets_are_removed(tmp_path):
    assert extraction.set_folder(tmp_path, "mlp_out", 3) == tmp_path / "mlp_out" / "L3"
    old = extraction.set_folder(tmp_path, "attn_out", 1)
    kept = extraction.set_folder(tmp_path, "resid_post", 2)
    for folder in (old, kept):
        folder.mkdir(parents=True)
    extraction.remove_unconfigured_sets(tmp_path, [("resid_post", 2)])
    assert kept.is_dir() and not old.exists()
    targets = [("resid_post", 2), ("mlp_out", 1)]
    with contextlib.ExitStack() as stack:
        writers = extraction.open_writers(stack, targets, str(tmp_path), {"model": "m"}, "t.parquet", 4, "float32", 8)
        assert list(writers) == targets
        for writer in writers.values():
            writer.append(np.ones((3, 4), np.float32))
            writer.close()
        assert not (tmp_path / "mlp_out" / "L1").exists()  # renamed into place only when the stack closes
    aset = ActivationSet(tmp_path / "mlp_out" / "L1")
    assert aset.n_rows == 3 and aset.manifest["model"] == "m" and aset.manifest["hook_name"] == "blocks.0.hook_mlp_out"
    assert aset.manifest["tokens"] == "t.parquet" and aset.manifest["layer"] == 1


@pytest.mark.parametrize("n_docs,size,expected", [(5, 2, [[0, 1], [2, 3], [4]]), (2, 4, [[0, 1]]), (0, 3, [])])
def test_windows_are_consecutive_ranges(n_docs, size, expected):
    assert [list(w) for w in extraction._windows(n_docs, size)] == expected
