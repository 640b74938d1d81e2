"""Sparse codes of an SAE over an activation set, kept as (row, feature, value) triplets.

An SAE fires on few latents per token, so one encode pass that keeps only the
non-zero codes holds everything later per-feature statistics need: 12 bytes per
active latent per token (1M tokens at L0 32: 384 MB). Triplets are in row-major
order (by row, then feature), as `torch.nonzero` returns them batch by batch, so
the activation of feature f on row r is found by binary search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workflow.store.activations import ActivationSet


@dataclass
class Codes:
    n_rows: int
    d_sae: int
    row: np.ndarray  # (nnz,) int32, non-decreasing
    feature: np.ndarray  # (nnz,) int32, increasing within a row
    value: np.ndarray  # (nnz,) float32, > 0

    def lookup(self, rows: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Activation of features[i] on rows[i] (0 where it does not fire)."""
        keys = self.row.astype(np.int64) * self.d_sae + self.feature
        query = np.asarray(rows, dtype=np.int64) * self.d_sae + np.asarray(features, dtype=np.int64)
        at = np.minimum(np.searchsorted(keys, query), max(len(keys) - 1, 0))
        found = (keys[at] == query) if len(keys) else np.zeros(len(query), dtype=bool)
        return np.where(found, self.value[at] if len(keys) else 0, 0).astype(np.float32)

    def frequency(self) -> np.ndarray:
        """Fraction of rows on which each feature fires."""
        return np.bincount(self.feature, minlength=self.d_sae) / max(self.n_rows, 1)


def encode_batches(sae, aset: ActivationSet, max_tokens: int | None, batch_rows: int, device="cpu"):
    """Yield (first row, x, dense codes) per batch, up to max_tokens rows.

    The encode runs under inference mode, but the yield is outside it: a generator
    suspended inside the context (e.g. the longer of two zipped ones) would leave
    autograd off in the caller's thread."""
    import torch

    limit = aset.n_rows if max_tokens is None else min(max_tokens, aset.n_rows)
    n = 0
    for batch in aset.iter_batches(batch_rows):
        batch = batch[: limit - n]
        if not len(batch):
            break
        with torch.inference_mode():
            x = torch.from_numpy(batch.astype(np.float32)).to(device)
            acts = sae.encode(x)
        yield n, x, acts
        n += len(batch)


def sparse_codes(
    sae, aset: ActivationSet, max_tokens: int | None = None, batch_rows: int = 4096, device="cpu"
) -> Codes:
    """One encode pass over the set, keeping the non-zero codes."""
    rows, feats, vals = [], [], []
    n = 0
    for start, x, acts in encode_batches(sae, aset, max_tokens, batch_rows, device):
        r, f = (acts > 0).nonzero(as_tuple=True)  # row-major order
        rows.append((r + start).int().cpu().numpy())
        feats.append(f.int().cpu().numpy())
        vals.append(acts[r, f].float().cpu().numpy())
        n = start + len(x)
    return Codes(n, sae.d_sae, _joined(rows, np.int32), _joined(feats, np.int32), _joined(vals, np.float32))


def _joined(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def encode_rows(sae, x: np.ndarray, batch_rows: int, device="cpu") -> np.ndarray:
    """Dense codes (rows, d_sae) of an array of activations, encoded `batch_rows` at a time."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_rows):
            out.append(sae.encode(torch.from_numpy(x[start : start + batch_rows]).to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, sae.d_sae), dtype=np.float32)
