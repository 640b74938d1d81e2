"""Atomic writes and JSON, shared by every stage.

Nothing half-written is ever taken for a finished output: every file and folder
is built under a temporary name beside its final path and renamed into place
when complete (rename is atomic on POSIX within one file system).

A write that fails because the disk is full raises `DiskFullError`, naming the output, the free
space and the fix, with the partial file or folder already removed.

JSON has no NaN: `write_json` writes NaN and infinities as null (`json_safe`),
and `nan_to_null` does the same for the float columns of a polars table.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

FULL_BELOW = 1 << 20  # bytes free under which a failed write is taken for a full disk


class DiskFullError(OSError):
    """An output could not be written: its file system is full."""

    user_facing = True  # `python -m workflow` prints the message, not a traceback

    def __init__(self, path: Path, free: int):
        super().__init__(
            errno.ENOSPC,
            f"no space left on the device of {path} ({free:,} bytes free): the job stopped and removed what it "
            "had written, so nothing half-written is kept. Free space there (or point the results folder at a "
            "larger disk) and run the same command again",
        )


def _free(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return -1


IO_WORDS = (
    "write", "space", "os error 28", "storagefull", "serializ", "i/o", "io error", "ioerror",
    "iostream", "inline_container", "streamwriter",  # torch.save on a full disk: no errno survives
)  # fmt: skip


def disk_full(exc: BaseException, where: Path) -> bool:
    """Whether `exc` (or what caused it) is a full disk: ENOSPC; or, as torch, safetensors and polars
    do not all keep the errno, an error that reads as a failed write while `where`'s file system has
    no space left. Any other error (a bad value, a user-facing message) is left as it is."""
    chain = []
    while exc is not None and len(chain) < 20:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    if any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in chain):
        return True
    if any(getattr(e, "user_facing", False) for e in chain):
        return False
    looks_io = any(isinstance(e, OSError) or any(w in str(e).lower() for w in IO_WORDS) for e in chain)
    return looks_io and 0 <= _free(where) < FULL_BELOW


def _partial_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path; rename it to `path` if the block succeeds. Leftovers of earlier
    killed runs (``.name.partial-*``) are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.partial-*"):
        stale.unlink(missing_ok=True)
    tmp = _partial_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as exc:
        if disk_full(exc, path.parent):
            free = _free(path.parent)
            tmp.unlink(missing_ok=True)
            raise DiskFullError(path, free) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; replace `path` with it if the block succeeds.

    Leftovers of earlier killed runs (``.name.partial-*``) are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = _partial_name(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():  # Snakemake pre-creates output folders; they are empty or stale
            shutil.rmtree(path)
        os.replace(tmp, path)
    except Exception as exc:
        if disk_full(exc, path.parent):  # the outermost output is named: a set, not its shard
            free = _free(path.parent)
            shutil.rmtree(tmp, ignore_errors=True)
            raise DiskFullError(path, free) from exc
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def json_safe(obj):
    """`obj` with every NaN or infinite float replaced by None (JSON has no NaN), recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def nan_to_null(frame):
    """A polars table with NaN in its float columns written as null."""
    import polars as pl

    return frame.with_columns(pl.col(pl.Float32, pl.Float64).fill_nan(None))


def write_text(text: str, path: str | Path) -> None:
    """Write UTF-8 text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj, path: str | Path) -> None:
    """Write `obj` as indented JSON atomically, NaN and infinities as null."""
    write_text(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n", path)


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_parquet(df, path: str | Path) -> None:
    """Write a polars DataFrame atomically."""
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)
