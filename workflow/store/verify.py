"""`python -m workflow verify [results]`: check every stored activation set, SAE, crosscoder and
model folder against what the job that wrote it recorded.

Activation sets: every shard's size and SHA-256 against the manifest, and the manifest's rows and
shapes against the shards (`workflow.store.activations.damage`). SAE, crosscoder and fine-tuned
model folders: every file in their ``checksums.json`` (`workflow.store.checksums`). Lists each
damaged one with the command that rebuilds it, and exits 1 if there is any. What was written
before sizes and checksums were recorded is checked for shapes and rows only (sets) or not at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workflow import layout
from workflow.store import checksums
from workflow.store.activations import MANIFEST, damage
from workflow.store.activations import rebuild_hint as set_hint


def stored_sets(results: str | Path) -> list[Path]:
    """Every activation set folder under results/activations (those with a manifest)."""
    root = Path(results) / Path(layout.ACTIVATIONS.template).relative_to(layout.RESULTS).parts[0]
    return sorted(p.parent for p in root.glob(f"**/{MANIFEST}"))


def verify(results: str | Path) -> dict[Path, tuple[list[str], str]]:
    """{folder: (problems, how to rebuild it)} of every damaged set and folder."""
    found = {folder: (problems, set_hint(folder)) for folder in stored_sets(results) if (problems := damage(folder))}
    for folder in checksums.stored_folders(results):
        if problems := checksums.problems(folder):
            found[folder] = (problems, checksums.rebuild_hint(checksums.target(folder)))
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow verify", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default=layout.RESULTS, help="the results folder (default: results)")
    args = parser.parse_args(argv)
    n_sets, n_folders = len(stored_sets(args.results)), len(checksums.stored_folders(args.results))
    damaged = verify(args.results)
    for folder, (problems, hint) in damaged.items():
        print(f"DAMAGED {folder}:")
        for p in problems:
            print(f"  {p}")
        print(f"  {hint}")
    print(
        f"{n_sets} activation sets and {n_folders} SAE, crosscoder and model folders checked under "
        f"{args.results}: {len(damaged)} damaged, {n_sets + n_folders - len(damaged)} intact"
    )
    sys.exit(1 if damaged else 0)
