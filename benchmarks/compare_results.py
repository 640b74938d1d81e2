"""Do two results folders hold the same numbers? Every table, JSON value, activation shard and SAE weight.

Run the same study twice (for example before and after a change to the code, on the same machine and
seeds) and compare:

    python benchmarks/compare_results.py OLD/results NEW/results

It pairs the files of both folders (Parquet tables, JSON files, `.npy` activation shards, `.safetensors`
weights), following the folders that were renamed (`RENAMES`), and compares their values: tables column
by column and row by row (floats exactly: NaN equals NaN and null), JSON recursively (a NaN written by an
older version equals the null a newer one writes; keys only the new side has are listed, not counted as
differences, a changed column type is one), arrays bit for bit. Of the report folders only the numbers
the study index shows (`summary.json`) are compared: the pages are made from the tables compared. Timings
and device names are left out (`SKIP_KEYS`, `SKIP_COLUMNS`, `SKIP_FOLDERS`), and so are the digests that a
folder's `checksums.json` keeps of a file that compared the same (a training log's digest changes with its
timings). A string that names a path inside the old study folder (the results folder's parent) equals the
same path inside the new one. Prints one line per file that
is not identical and a count per kind; exits 1 if any value differs or a file is missing on either side.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from pathlib import Path

import polars as pl

# Folders and files renamed since earlier versions: (pattern on the old relative path, replacement).
RENAMES = [
    (r"^heads/([^/]+)/([^/]+)/", r"frozen_classifiers/\1/\2/"),  # stage linear_head -> frozen_classifier
    (r"^(analysis/[^/]+/[^/]+)/clusters/cluster\.json$", r"\1/kmeans/kmeans.json"),  # stage cluster -> kmeans
    (r"^(analysis/[^/]+/[^/]+)/clusters/", r"\1/kmeans/"),
]
STRING_RENAMES = [("results/heads/", "results/frozen_classifiers/")]  # paths written inside JSON values
SKIP_FOLDERS = ("benchmarks/",)  # timings
REPORT_FILES = ("summary.json",)  # of the report folders, the numbers the study index shows (not the HTML pages)
SKIP_KEYS = {
    "seconds",
    "encode_seconds",
    "tokens_per_s",
    "device",  # timings and the machine
    "plan",  # the k-means job's input list (its format changed; its results are in scores/clusters.parquet)
}
SKIP_COLUMNS = {"tokens_per_s"}
SUFFIXES = (".parquet", ".json", ".npy", ".safetensors")
CHECKSUMS = "checksums.json"  # each file's bytes and SHA-256 (workflow.layout.CHECKSUMS)


def new_name(old: str) -> str:
    for pattern, replacement in RENAMES:
        old = re.sub(pattern, replacement, old)
    return old


def _same_scalar(a, b) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return b is None or (isinstance(b, float) and math.isnan(b))
    if isinstance(b, float) and math.isnan(b):
        return a is None
    if isinstance(a, str) and isinstance(b, str):
        for old, new in [*STRING_RENAMES, *STUDY_FOLDERS]:
            a = a.replace(old, new)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b and (type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float))))


def compare_json(a, b, where: str = "") -> tuple[list[str], list[str]]:
    """(differences, keys only b has) between two parsed JSON values."""
    if isinstance(a, dict) and isinstance(b, dict):
        diffs, added = [], [f"{where}.{k}".lstrip(".") for k in b if k not in a and k not in SKIP_KEYS]
        for key, value in a.items():
            if key in SKIP_KEYS:
                continue
            if key not in b:
                diffs.append(f"{where}.{key}: missing in the new file".lstrip("."))
                continue
            d, n = compare_json(value, b[key], f"{where}.{key}")
            diffs, added = diffs + d, added + n
        return diffs, added
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items, now {len(b)}"], []
        diffs, added = [], []
        for i, (x, y) in enumerate(zip(a, b)):
            d, n = compare_json(x, y, f"{where}[{i}]")
            diffs, added = diffs + d, added + n
        return diffs, added
    return ([] if _same_scalar(a, b) else [f"{where}: {a!r} -> {b!r}"]), []


def compare_table(a: pl.DataFrame, b: pl.DataFrame) -> tuple[list[str], list[str]]:
    """(differences, columns only b has) between two tables, column by column."""
    diffs, added = [], [c for c in b.columns if c not in a.columns]
    if len(a) != len(b):
        return [f"{len(a)} rows, now {len(b)}"], added
    for column in a.columns:
        if column in SKIP_COLUMNS:
            continue
        if column not in b.columns:
            diffs.append(f"column {column}: missing in the new table")
            continue
        x, y = a[column], b[column]
        if x.dtype != y.dtype:
            diffs.append(f"column {column}: type {x.dtype}, now {y.dtype}")
            continue
        if x.dtype.is_float():
            xs, ys = x.fill_nan(None), y.fill_nan(None)
            unequal = ((xs != ys) | (xs.is_null() != ys.is_null())).fill_null(False)
            if unequal.any():
                gap = (xs - ys).abs().max()
                diffs.append(f"column {column}: {int(unequal.sum())} of {len(x)} values differ (max |diff| {gap})")
        else:
            d, _ = compare_json(x.to_list(), y.to_list(), f"column {column}")
            diffs += [f"column {column}: {len(d)} of {len(x)} values differ, e.g. {d[0]}"] if d else []
    return diffs, added


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


STUDY_FOLDERS: list[tuple[str, str]] = []  # (old study folder, new study folder), set by `compare`


def _without_same(checksums: dict, same: set[str]) -> dict:
    """A checksums.json without the entries of files (names relative to its folder) that compared the same."""
    return {**checksums, "files": {k: v for k, v in checksums.get("files", {}).items() if k not in same}}


def compare_file(old: Path, new: Path, same: set[str] = frozenset()) -> tuple[list[str], list[str]]:
    if old.name == CHECKSUMS:
        a, b = (_without_same(json.loads(p.read_text()), same) for p in (old, new))
        return compare_json(a, b)
    if old.suffix == ".parquet":
        return compare_table(pl.read_parquet(old), pl.read_parquet(new))
    if old.suffix == ".json":
        return compare_json(json.loads(old.read_text()), json.loads(new.read_text()))
    return ([] if _digest(old) == _digest(new) else ["the bytes differ"]), []


def _compared(relative: str) -> bool:
    if relative.startswith(SKIP_FOLDERS) or "/." in f"/{relative}":
        return False
    if relative.startswith("reports/"):
        return relative.rsplit("/", 1)[-1] in REPORT_FILES
    return relative.endswith(SUFFIXES)


def files(root: Path) -> list[str]:
    names = (str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return sorted(name for name in names if _compared(name))


def compare(old_root: Path, new_root: Path) -> dict:
    old_files, new_files = files(old_root), set(files(new_root))
    STUDY_FOLDERS[:] = [(str(old_root.resolve().parent) + "/", str(new_root.resolve().parent) + "/")]
    report = {"identical": [], "different": {}, "added": {}, "missing": [], "only_new": []}
    # checksums.json last: its entries of files that compared the same are left out
    for name in sorted(old_files, key=lambda n: n.rsplit("/", 1)[-1] == CHECKSUMS):
        target = new_name(name)
        if target not in new_files:
            report["missing"].append(name)
            continue
        new_files.discard(target)
        folder = target.rpartition("/")[0]
        same = {n.rpartition("/")[2] for n in report["identical"] if n.rpartition("/")[0] == folder}
        diffs, added = compare_file(old_root / name, new_root / target, same)
        (report["different"].__setitem__(target, diffs) if diffs else report["identical"].append(target))
        if added:
            report["added"][target] = added
    report["only_new"] = sorted(new_files)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="results folder of the first run")
    parser.add_argument("new", type=Path, help="results folder of the second run")
    parser.add_argument("--show-added", action="store_true", help="list the keys and columns only the new run has")
    args = parser.parse_args(argv)
    r = compare(args.old, args.new)
    for name, diffs in r["different"].items():
        print(f"DIFFERENT {name}: " + "; ".join(diffs[:5]) + (f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else ""))
    for name in r["missing"]:
        print(f"MISSING in {args.new}: {name} (as {new_name(name)})")
    for name in r["only_new"]:
        print(f"ONLY in {args.new}: {name}")
    if args.show_added:
        for name, added in r["added"].items():
            print(f"ADDED in {name}: {', '.join(added)}")
    kinds = {s: sum(n.endswith(s) for n in r["identical"]) for s in SUFFIXES}
    print(
        f"{len(r['identical'])} files identical ({', '.join(f'{n} {s}' for s, n in kinds.items())}); "
        f"{len(r['different'])} different; {len(r['missing'])} missing; {len(r['only_new'])} only in the new run; "
        f"{len(r['added'])} with keys or columns only the new run has"
    )
    return 1 if r["different"] or r["missing"] or r["only_new"] else 0


if __name__ == "__main__":
    sys.exit(main())
