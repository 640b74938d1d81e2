"""The activation-set format: sharded `.npy` activations and their manifest.

Activation set (one folder per model, variant, dataset, split, site, layer)::

    manifest.json        written last; the set is valid only if it exists
    shard-00000.npy      (rows, d_model) float16 by default, np.load(mmap_mode="r")
    shard-00001.npy      ...

Row i of the set is row i of the tokens table of that (model, dataset, split).
Sets are written inside `files.atomic_dir`, so a killed job never leaves one that
looks finished. The manifest records each shard's byte size and SHA-256: a reader checks
the sizes when it opens the set (cheap) and names the shard and the command that rebuilds it;
`file_digest` checks the contents (`python -m workflow verify`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from workflow.layout import ACTIVATION_SET
from workflow.store.checksums import file_digest
from workflow.store.files import read_json, write_json

MANIFEST = ACTIVATION_SET.names["manifest"]
FORMAT = "activation-set/1"


class NonFiniteActivationsError(ValueError):
    """NaN or inf in the activations being stored."""

    user_facing = True


def rebuild_hint(folder: Path) -> str:
    """The command that rebuilds an activation set: re-run the extract job that wrote it."""
    summary = folder.parent.parent / "extract.json"  # <split>/<site>/L<layer>: the extract folder's summary
    return f"rebuild it with `snakemake --cores N --forcerun {summary}` (its extract job, then what reads it)"


class DamagedSetError(ValueError):
    """An activation set whose files disagree with its manifest; `what`: the file and the problem."""

    user_facing = True  # `python -m workflow` prints the message, not a traceback

    def __init__(self, folder: Path, name: str, problem: str):
        self.what = f"{name}: {problem}"
        super().__init__(
            f"activation set {folder}: {self.what}; the set is damaged (truncated, overwritten or "
            f"missing files): {rebuild_hint(folder)}"
        )


def shard_problem(folder: Path, shard: dict, contents: bool = False) -> str | None:
    """What is wrong with one shard against its manifest entry: missing, another size than recorded,
    or (`contents`: reads every byte) other bytes than its SHA-256. None: nothing. Sets written
    before sizes and checksums were recorded are checked for existence only."""
    path = folder / shard["file"]
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if "bytes" in shard and size != shard["bytes"]:
        return f"{size} bytes, the manifest recorded {shard['bytes']}"
    if contents and "sha256" in shard and file_digest(path) != shard["sha256"]:
        return "contents differ from the manifest's SHA-256"
    return None


class ActivationWriter:
    """Streams (rows, d_model) batches into shards and per-dimension statistics.

    Use inside `atomic_dir`: `close()` writes the manifest last.
    """

    def __init__(self, folder: Path, d_model: int, dtype: str, shard_rows: int, meta: dict):
        self.folder, self.d_model, self.dtype = Path(folder), d_model, np.dtype(dtype)
        self.shard_rows, self.meta = shard_rows, meta
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self.shards: list[dict] = []
        self.n_rows = 0
        self._sum = np.zeros(d_model, dtype=np.float64)  # for the per-dimension mean
        self._sum_sq_norm = 0.0  # for the mean squared norm (SAE normalisation)

    def append(self, acts: np.ndarray) -> None:
        """acts: (rows, d_model), any float dtype; statistics use the stored precision."""
        if acts.ndim != 2 or acts.shape[1] != self.d_model:
            raise ValueError(f"expected (rows, {self.d_model}) activations, got {acts.shape}")
        stored = acts.astype(self.dtype, copy=False)
        if not np.isfinite(stored).all():
            raise self._non_finite(acts, stored)
        wide = stored.astype(np.float64)
        self._sum += wide.sum(0)
        self._sum_sq_norm += float(np.einsum("ij,ij->", wide, wide))
        self._buffer.append(stored)
        self._buffered += len(stored)
        while self._buffered >= self.shard_rows:
            self._flush(self.shard_rows)

    def _non_finite(self, acts: np.ndarray, stored: np.ndarray) -> NonFiniteActivationsError:
        """The error for a batch with NaN or inf: which set, which rows, and whether the model made
        them or the storage dtype could not hold them."""
        bad = ~np.isfinite(stored)
        rows = np.flatnonzero(bad.any(1)) + self.n_rows + self._buffered
        where = " ".join(str(self.meta[k]) for k in ("model", "variant", "dataset", "split") if self.meta.get(k))
        where += f" {self.meta.get('site', '')} L{self.meta.get('layer', '?')}"
        if np.isfinite(acts).all():
            cause = (
                f"the values overflow {self.dtype.name} (largest magnitude {float(np.abs(acts).max()):.4g}); "
                "extract with `extract.dtype: float32`"
            )
        else:
            cause = "the model itself produced them: check its weights and `extract.compute_dtype`"
        return NonFiniteActivationsError(
            f"activation set {where.strip()}: {int(bad.sum())} NaN or inf values in {len(rows)} rows "
            f"(rows {int(rows[0])}..{int(rows[-1])} of the tokens table {self.meta.get('tokens', '')}); {cause}"
        )

    def _flush(self, rows: int) -> None:
        block = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        shard, rest = block[:rows], block[rows:]
        name = f"shard-{len(self.shards):05d}.npy"
        path = self.folder / name
        np.save(path, shard)
        self.shards.append(
            {
                "file": name,
                "start": self.n_rows,
                "stop": self.n_rows + len(shard),
                "bytes": path.stat().st_size,
                "sha256": file_digest(path),
            }
        )
        self.n_rows += len(shard)
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)

    def close(self) -> dict:
        if self._buffered:
            self._flush(self._buffered)
        n = max(self.n_rows, 1)
        manifest = {
            "format": FORMAT,
            **self.meta,
            "dtype": self.dtype.name,
            "d_model": self.d_model,
            "n_rows": self.n_rows,
            "shards": self.shards,
            "mean": (self._sum / n).tolist(),
            "mean_sq_norm": self._sum_sq_norm / n,
        }
        write_json(manifest, self.folder / MANIFEST)
        return manifest


class ActivationSet:
    """Reads a finished activation set, checking it is complete before use."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{self.folder}: no {MANIFEST}; the activation set is incomplete")
        self.manifest = read_json(path)
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{path}: unknown format {self.manifest.get('format')!r}")
        self.n_rows: int = self.manifest["n_rows"]
        self.d_model: int = self.manifest["d_model"]
        expected = 0
        for shard in self.manifest["shards"]:
            if problem := shard_problem(self.folder, shard):  # sizes only: cheap
                raise DamagedSetError(self.folder, shard["file"], problem)
            arr = self.load_shard(shard["file"])
            rows = shard["stop"] - shard["start"]
            if shard["start"] != expected or arr.shape != (rows, self.d_model):
                shape = f"shape {arr.shape}, the manifest says ({rows}, {self.d_model})"
                raise DamagedSetError(self.folder, shard["file"], shape)
            expected = shard["stop"]
        if expected != self.n_rows:
            raise DamagedSetError(self.folder, MANIFEST, f"shards cover {expected} rows, manifest says {self.n_rows}")

    def load_shard(self, name: str) -> np.ndarray:
        try:
            return np.load(self.folder / name, mmap_mode="r")
        except (ValueError, OSError, EOFError) as exc:  # numpy's "mmap length is greater than file size"
            raise DamagedSetError(self.folder, name, f"numpy cannot read it ({exc})") from None

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.manifest["mean"])

    def iter_batches(self, batch_rows: int) -> Iterator[np.ndarray]:
        """Yield consecutive (<= batch_rows, d_model) arrays in row order."""
        for shard in self.manifest["shards"]:
            arr = self.load_shard(shard["file"])
            for start in range(0, len(arr), batch_rows):
                yield np.asarray(arr[start : start + batch_rows])

    def rows(self, indices) -> np.ndarray:
        """The given rows (any order), as float32, reading only the shards they fall in."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= self.n_rows):
            raise IndexError(f"{self.folder}: row out of range 0..{self.n_rows - 1}")
        out = np.empty((len(indices), self.d_model), dtype=np.float32)
        for shard in self.manifest["shards"]:
            inside = np.flatnonzero((indices >= shard["start"]) & (indices < shard["stop"]))
            if len(inside):
                out[inside] = self.load_shard(shard["file"])[indices[inside] - shard["start"]]
        return out

    def read_all(self) -> np.ndarray:
        return np.concatenate([np.asarray(self.load_shard(s["file"])) for s in self.manifest["shards"]])

    @classmethod
    def from_array(cls, acts: np.ndarray, folder: str | Path, shard_rows: int = 65536, **meta) -> ActivationSet:
        """An activation set written from a (rows, d_model) array: how a notebook hands its own
        activations to the SAE library (`workflow.sae.training.train`). `meta`: manifest keys such as
        ``hook_name``; the array is stored in its own float dtype."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        writer = ActivationWriter(folder, acts.shape[1], acts.dtype.name, shard_rows, meta)
        writer.append(acts)
        writer.close()
        return cls(folder)


class _PairedShard:
    """Rows of two same-shaped shards side by side, read on slicing."""

    def __init__(self, a: np.ndarray, b: np.ndarray):
        self.a, self.b = a, b

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, key) -> np.ndarray:
        return np.concatenate([np.asarray(self.a[key]), np.asarray(self.b[key])], axis=-1)


class PairedSets:
    """Two row-aligned activation sets (the pretrained and fine-tuned variants' activations of the
    same tokens) read as one set of width 2 x d_model: row i is [a_i, b_i]. What reads an
    `ActivationSet` (the shuffled training stream, encode passes) reads this the same way; the
    crosscoder trains on it. The two sets must hold the same rows in the same shards."""

    def __init__(self, a: ActivationSet, b: ActivationSet):
        if a.n_rows != b.n_rows or a.d_model != b.d_model:
            raise ValueError(
                f"{a.folder} ({a.n_rows} x {a.d_model}) and {b.folder} ({b.n_rows} x {b.d_model}) "
                "are not the same tokens' activations"
            )
        shards = [(s["start"], s["stop"]) for s in a.manifest["shards"]]
        if shards != [(s["start"], s["stop"]) for s in b.manifest["shards"]]:
            raise ValueError(f"{a.folder} and {b.folder} are sharded differently (extract both with one shard_rows)")
        self.sets = (a, b)
        self.folder = Path(f"{a.folder}+{b.folder.name}")
        self.n_rows, self.d_model = a.n_rows, 2 * a.d_model
        self._files = {s["file"]: t["file"] for s, t in zip(a.manifest["shards"], b.manifest["shards"])}
        self.manifest = {
            **a.manifest,
            "variant": "+".join(str(s.manifest.get("variant")) for s in self.sets),
            "d_model": self.d_model,
            "mean_sq_norm": [s.manifest["mean_sq_norm"] for s in self.sets],
            "mean": [*a.manifest["mean"], *b.manifest["mean"]],
        }

    def load_shard(self, name: str) -> _PairedShard:
        return _PairedShard(self.sets[0].load_shard(name), self.sets[1].load_shard(self._files[name]))

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.manifest["mean"])

    def iter_batches(self, batch_rows: int) -> Iterator[np.ndarray]:
        for a, b in zip(self.sets[0].iter_batches(batch_rows), self.sets[1].iter_batches(batch_rows)):
            yield np.concatenate([a, b], axis=1)

    def rows(self, indices) -> np.ndarray:
        return np.concatenate([s.rows(indices) for s in self.sets], axis=1)


def damage(folder: str | Path) -> list[str]:
    """What is wrong with a stored activation set, reading every byte: shards missing, of the wrong
    size or with contents that differ from the manifest's SHA-256, and a manifest whose rows or
    shapes disagree with its shards. Empty: intact."""
    folder = Path(folder)
    try:
        manifest = read_json(folder / MANIFEST)
        shards = manifest["shards"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{MANIFEST}: unreadable ({exc})"]
    problems = [f"{s['file']}: {p}" for s in shards if (p := shard_problem(folder, s, contents=True))]
    if not problems:
        try:
            ActivationSet(folder)
        except DamagedSetError as exc:
            problems.append(exc.what)
        except (ValueError, KeyError) as exc:
            problems.append(str(exc))
    return problems
