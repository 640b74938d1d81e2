"""How root-like can an SAE's latents be on a scratch model? A sweep of SAE recipes on a finished study.

Trains each recipe (layer, architecture, d_sae, k) on the scratch model's activation set of its
corpus (the train split, as the emergence stage's SAEs) and scores every root abstraction's best
single latent by F1 on the last `--eval-tokens` ordinary tokens of that set (the emergence stage
scores on test boards; this sweep is for comparing recipes, not for the report). Prints each
recipe's F1 per root, the minimum, the mean and how many roots reach 0.8 (issue 21's bar).

    make demo && python benchmarks/board_saes.py --study . [--model boardnet --corpus boards]
    python benchmarks/board_saes.py --recipes 3:topk:64:4 2:batchtopk:64:4 --train-tokens 1000000
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from workflow.analysis import emergence as em
from workflow.sae import load, recipe_from_dict, training
from workflow.sae.codes import encode_rows
from workflow.store.activations import ActivationSet

DEFAULT = [
    "1:topk:64:4", "2:topk:64:4", "3:topk:64:4", "2:topk:16:1", "2:topk:32:2", "3:topk:128:4",
    "2:topk:256:8", "3:topk:256:8", "3:topk:512:16", "3:batchtopk:64:4",
]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=Path("."), help="the folder the study ran in (its results/)")
    p.add_argument("--model", default="boardnet")
    p.add_argument("--corpus", default="boards")
    p.add_argument("--recipes", nargs="+", default=DEFAULT, help="LAYER:ARCHITECTURE:D_SAE:K")
    p.add_argument("--train-tokens", type=int, default=500_000)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--eval-tokens", type=int, default=100_000)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = args.study / "results"
    tokens = pl.read_parquet(results / f"tokens/{args.model}/{args.corpus}/train.parquet")
    concepts = tokens["concepts"].to_list()
    roots = sorted({c for cs in concepts for c in cs if c.startswith("root_")}, key=lambda c: int(c[5:]))
    rows = np.flatnonzero(~tokens["is_special"].to_numpy())[-args.eval_tokens :]
    member = np.stack([np.array([r in concepts[i] for i in rows]) for r in roots], 1)
    print(f"{args.model} on {args.corpus}: {len(roots)} roots, {len(rows):,} scored tokens, "
          f"{args.train_tokens:,} training tokens, lr {args.lr}")  # fmt: skip
    for spec in args.recipes:
        layer, arch, d_sae, k = spec.split(":")
        folder = results / f"activations/{args.model}/pretrained/{args.corpus}/train/resid_post/L{layer}"
        aset = ActivationSet(folder)
        recipe = {"architecture": arch, "d_sae": int(d_sae), "k": int(k), "lr": args.lr}
        recipe |= {"train_tokens": args.train_tokens, "batch_size": 512}
        with tempfile.TemporaryDirectory() as tmp:
            training.train(aset.folder, recipe_from_dict(recipe), tmp, {"model": args.model})
            codes = encode_rows(load(tmp), aset.rows(rows).astype(np.float32), 4096)
        f1 = [em.best_f1(codes, member[:, j])[1] for j in range(len(roots))]
        each = " ".join(f"{f:.2f}" for f in f1)
        head = f"L{layer} {arch:<9} d_sae {int(d_sae):>4} k {int(k):>2}"
        n = sum(f >= 0.8 for f in f1)
        print(f"{head}: min {min(f1):.2f} mean {np.mean(f1):.2f} >= 0.8: {n}/{len(f1)}  [{each}]", flush=True)


if __name__ == "__main__":
    main()
