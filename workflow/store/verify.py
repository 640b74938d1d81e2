"""`python -m workflow verify [results]`: check every stored activation set against its manifest.

Reads every shard and compares its size and SHA-256 with what the extract job recorded, and the
manifest's rows and shapes with the shards (`workflow.store.activations.damage`). Lists each
damaged set with the command that rebuilds it, and exits 1 if there is any. Sets written before
the manifests recorded sizes and checksums are checked for shapes and rows only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workflow import layout
from workflow.store.activations import MANIFEST, damage, rebuild_hint


def stored_sets(results: str | Path) -> list[Path]:
    """Every activation set folder under results/activations (those with a manifest)."""
    root = Path(results) / Path(layout.ACTIVATIONS.template).relative_to(layout.RESULTS).parts[0]
    return sorted(p.parent for p in root.glob(f"**/{MANIFEST}"))


def verify(results: str | Path) -> dict[Path, list[str]]:
    """{set folder: problems} of every damaged set."""
    return {folder: problems for folder in stored_sets(results) if (problems := damage(folder))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow verify", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default=layout.RESULTS, help="the results folder (default: results)")
    args = parser.parse_args(argv)
    sets = stored_sets(args.results)
    damaged = verify(args.results)
    for folder, problems in damaged.items():
        print(f"DAMAGED {folder}:")
        for p in problems:
            print(f"  {p}")
        print(f"  {rebuild_hint(folder)}")
    print(
        f"{len(sets)} activation sets checked under {args.results}: "
        f"{len(damaged)} damaged, {len(sets) - len(damaged)} intact"
    )
    sys.exit(1 if damaged else 0)
