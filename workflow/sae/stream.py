"""Shuffled training batches streamed from an activation set by memmap.

Memory is bounded by the shuffle buffer, never the set: each epoch visits the
set's chunks (`chunk_rows` consecutive rows, read contiguously from the
memmapped shards) in a seeded random order, groups them into buffers of about
`buffer_rows` rows, and shuffles the rows within each buffer. The stream is the
concatenation of the shuffled buffers of epoch 0, 1, ...; batches are its
consecutive slices. It is a pure function of (set, seed, sizes), so resuming at
step s skips s * batch_size rows by arithmetic, reading only the buffer the
resumed step starts in: an interrupted run sees exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from workflow.store.activations import ActivationSet


class ShuffledRows:
    def __init__(
        self, aset: ActivationSet, batch_size: int, seed: int, buffer_rows: int = 65536, chunk_rows: int = 256
    ):
        if aset.n_rows == 0:
            raise ValueError(f"{aset.folder}: the activation set has no rows")
        self.aset, self.batch_size, self.seed = aset, batch_size, seed
        self.arrays = [aset.load_shard(s["file"]) for s in aset.manifest["shards"]]
        self.chunks = [  # (shard, start, stop) in set order
            (i, start, min(start + chunk_rows, len(arr)))
            for i, arr in enumerate(self.arrays)
            for start in range(0, len(arr), chunk_rows)
        ]
        self.chunks_per_buffer = max(1, buffer_rows // chunk_rows)

    def _buffers(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.chunks))
        return [order[i : i + self.chunks_per_buffer].tolist() for i in range(0, len(order), self.chunks_per_buffer)]

    def _buffer_rows(self, chunk_ids: list[int]) -> int:
        return sum(self.chunks[c][2] - self.chunks[c][1] for c in chunk_ids)

    def _read(self, epoch: int, index: int, chunk_ids: list[int]) -> np.ndarray:
        rows = np.concatenate([np.asarray(self.arrays[s][a:b]) for s, a, b in (self.chunks[c] for c in chunk_ids)])
        return rows[np.random.default_rng([self.seed, epoch, index]).permutation(len(rows))]

    def batches(self, start_step: int = 0) -> Iterator[np.ndarray]:
        """Endless (batch_size, d) float32 batches, starting at `start_step`."""
        skip = start_step * self.batch_size
        epoch, skip = divmod(skip, self.aset.n_rows)
        carry = np.empty((0, self.aset.d_model), dtype=np.float32)
        while True:
            for index, chunk_ids in enumerate(self._buffers(epoch)):
                size = self._buffer_rows(chunk_ids)
                if skip >= size:
                    skip -= size
                    continue
                rows = self._read(epoch, index, chunk_ids)[skip:].astype(np.float32)
                skip = 0
                rows = np.concatenate([carry, rows]) if len(carry) else rows
                n_full = len(rows) // self.batch_size
                for b in range(n_full):
                    yield rows[b * self.batch_size : (b + 1) * self.batch_size]
                carry = rows[n_full * self.batch_size :]
            epoch += 1

    def sample(self, n: int) -> np.ndarray:
        """Up to `n` rows from the first shuffled buffers of epoch 0 (for initialising b_dec)."""
        out, got = [], 0
        for index, chunk_ids in enumerate(self._buffers(0)):
            out.append(self._read(0, index, chunk_ids))
            got += len(out[-1])
            if got >= n:
                break
        return np.concatenate(out)[:n].astype(np.float32)
