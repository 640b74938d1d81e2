"""Checksums of stored folders: SAEs, crosscoders and fine-tuned checkpoints.

The job that writes such a folder records, in ``checksums.json`` beside its files, each file's
byte size and SHA-256 and the file Snakemake rebuilds the folder through (`record`). Readers
compare the sizes on open, which costs a `stat` per file (`check_sizes`); `python -m workflow
verify` reads every byte (`problems`). Activation sets keep theirs in their manifest
(`workflow.store.activations`). Only standard-library imports: model sources are resolved at
config validation.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from workflow.layout import CHECKSUMS as NAME


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def rebuild_hint(target: str) -> str:
    return f"rebuild it with `snakemake --cores N --force {target}`, then `snakemake --cores N` for what reads it"


class DamagedFolderError(ValueError):
    """A stored folder whose files disagree with its checksums.json."""

    user_facing = True  # `python -m workflow` prints the message, not a traceback

    def __init__(self, folder: Path, problems: list[str], target: str):
        self.problems = problems
        super().__init__(
            f"{folder}: {'; '.join(problems)}; the folder is damaged (truncated, overwritten or missing "
            f"files): {rebuild_hint(target)}"
        )


def record(folder: str | Path, names: list[str] | None, target: str | Path) -> None:
    """Write `folder`/checksums.json for the files `names` (None: every file under the folder,
    recursively). `target`: the output file whose job rebuilds the folder. Call it last, after
    every file is in place (inside `files.atomic_dir`, the partial folder)."""
    from workflow.store.files import write_json

    folder = Path(folder)
    if names is None:
        names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != NAME)
    files = {n: {"bytes": (folder / n).stat().st_size, "sha256": file_digest(folder / n)} for n in names}
    write_json({"target": str(target), "files": files}, folder / NAME)


def _read(folder: Path) -> dict | None:
    path = folder / NAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"target": str(folder), "files": {}, "error": f"{NAME} unreadable: {exc}"}


def problems(folder: str | Path, contents: bool = True) -> list[str]:
    """What disagrees with `folder`/checksums.json: missing files, other sizes, and (`contents`)
    other SHA-256 digests. Empty for a folder without checksums.json."""
    folder = Path(folder)
    saved = _read(folder)
    if saved is None:
        return []
    found = [saved["error"]] if "error" in saved else []
    for name, want in saved["files"].items():
        path = folder / name
        if not path.is_file():
            found.append(f"{name} is missing")
        elif (size := os.stat(path).st_size) != want["bytes"]:
            found.append(f"{name} has {size} bytes, {want['bytes']} recorded")
        elif contents and file_digest(path) != want["sha256"]:
            found.append(f"{name} does not match its recorded SHA-256")
    return found


def target(folder: str | Path) -> str:
    """The output file whose job rebuilds `folder` (as recorded)."""
    saved = _read(Path(folder)) or {}
    return saved.get("target", str(folder))


def check_sizes(folder: str | Path) -> None:
    """Raise `DamagedFolderError` if a recorded file is missing or has another size (cheap)."""
    if found := problems(folder, contents=False):
        raise DamagedFolderError(Path(folder), found, target(folder))


def stored_folders(results: str | Path) -> list[Path]:
    """Every folder under `results` with a checksums.json."""
    return sorted(p.parent for p in Path(results).glob(f"**/{NAME}"))
