"""Sequence-level representations of documents, pooled from token rows.

Row i of an activation set is row i of its tokens table, so each document is a
contiguous range of rows (`Documents.offsets`). Two poolings per document:

- ``mean``: the mean over all its tokens, special ones included (as
  sentence-transformers' mean pooling counts every unmasked token);
- ``first`` for encoders (the [CLS] token their classifier reads) or
  ``last`` for decoders (the last real token, which their classifier reads): the
  family's ``pooled`` position (`workflow.models.families`).

The same pass pools raw activations or SAE latents (each batch of rows is
encoded, pooled and dropped, so a split is never held as dense codes).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from workflow.store.activations import ActivationSet


@dataclass
class Pooled:
    mean: np.ndarray  # (n_docs, d) float32
    position: np.ndarray  # (n_docs, d) float32: the first or last token of each document
    position_name: str  # "first" | "last"

    def get(self, pooling: str) -> np.ndarray:
        if pooling == "mean":
            return self.mean
        if pooling in ("first", "last", "position"):
            return self.position
        raise ValueError(f"unknown pooling {pooling!r}: mean, first or last")


def position_rows(offsets: np.ndarray, position: str) -> np.ndarray:
    """Row of the pooled token of each document."""
    if position == "first":
        return offsets[:-1].copy()
    if position == "last":
        return offsets[1:] - 1
    raise ValueError(f"unknown position {position!r}: first or last")


def pool_batches(batches: Iterable[tuple[int, np.ndarray]], offsets: np.ndarray, position: str) -> Pooled:
    """Pool consecutive (first row, (rows, d) array) batches that cover every row once, in order."""
    offsets = np.asarray(offsets, dtype=np.int64)
    n_docs, n_rows = len(offsets) - 1, int(offsets[-1])
    lengths = np.diff(offsets)
    if (lengths <= 0).any():
        raise ValueError(f"document {int(np.argmax(lengths <= 0))} has no tokens")
    picks = position_rows(offsets, position)
    sums = pos = None
    seen = 0
    for start, block in batches:
        block = np.asarray(block, dtype=np.float32)
        if start != seen:
            raise ValueError(f"batches are not consecutive: expected row {seen}, got {start}")
        stop = start + len(block)
        if stop > n_rows:
            raise ValueError(f"batches run past the documents' {n_rows} rows")
        if sums is None:
            sums = np.zeros((n_docs, block.shape[1]), dtype=np.float64)
            pos = np.zeros((n_docs, block.shape[1]), dtype=np.float32)
        first_doc = int(np.searchsorted(offsets, start, side="right") - 1)
        last_doc = int(np.searchsorted(offsets, stop - 1, side="right") - 1)
        docs = np.arange(first_doc, last_doc + 1)
        cuts = np.maximum(offsets[docs], start) - start  # where each document starts inside the block
        sums[docs] += np.add.reduceat(block, cuts, axis=0)
        inside = (picks >= start) & (picks < stop)
        pos[inside] = block[picks[inside] - start]
        seen = stop
    if seen != n_rows:
        raise ValueError(f"batches cover {seen} rows, the documents {n_rows}")
    return Pooled((sums / lengths[:, None]).astype(np.float32), pos, position)


def raw_batches(aset: ActivationSet, batch_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    start = 0
    for block in aset.iter_batches(batch_rows):
        yield start, block
        start += len(block)


def sae_batches(sae, aset: ActivationSet, batch_rows: int, device="cpu") -> Iterator[tuple[int, np.ndarray]]:
    from workflow.sae.codes import encode_batches

    for start, _, acts in encode_batches(sae, aset, None, batch_rows, device):
        yield start, acts.float().cpu().numpy()


def pool_set(
    aset: ActivationSet, offsets: np.ndarray, position: str, sae=None, batch_rows: int = 4096, device="cpu"
) -> Pooled:
    """Pool an activation set (raw, or through `sae`) per document."""
    if aset.n_rows != int(offsets[-1]):
        raise ValueError(f"{aset.folder}: {aset.n_rows} rows, but its tokens table has {int(offsets[-1])}")
    batches = raw_batches(aset, batch_rows) if sae is None else sae_batches(sae, aset, batch_rows, device)
    return pool_batches(batches, offsets, position)
