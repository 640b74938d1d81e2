"""How root-like can an SAE's latents be on a scratch model? A sweep of SAE recipes on a finished study.

Trains each recipe (layer, architecture, d_sae, k) on the scratch model's activation set of its
corpus (the train split, as the emergence stage's SAEs) and scores every root abstraction's best
single latent by F1 on the last `--eval-tokens` ordinary tokens of that set (the emergence stage
scores on test boards; this sweep is for comparing recipes, not for the report). Prints each
recipe's F1 per root, the minimum, the mean and how many roots reach 0.8 (issue 21's bar).

A latent fires where its activation is above 0 (the emergence stage's rule); `--thresholds` adds
the best F1 over thresholds at fractions of each latent's largest activation on the scored tokens
(Karvonen et al. 2024 score board-game SAE features so), for latents that fire weakly elsewhere.

`--variance` first prints, per stored layer, the share of the activations' variance explained by
each cell's token, its board position, its root (background cells as one more class), token and
root added (least squares on both one-hot codes) and their combination: how strongly the roots
stand out against the token identities an SAE also has to code.

    make demo && python benchmarks/board_saes.py --study . [--model boardnet --corpus boards]
    python benchmarks/board_saes.py --recipes 3:topk:64:4 2:batchtopk:64:4 --train-tokens 1000000
    python benchmarks/board_saes.py --variance --thresholds 0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from workflow.analysis import alignment
from workflow.sae import load, recipe_from_dict, training
from workflow.sae.codes import encode_rows
from workflow.store.activations import ActivationSet

DEFAULT = [
    "1:topk:64:4", "2:topk:64:4", "3:topk:64:4", "2:topk:16:1", "2:topk:32:2", "3:topk:128:4",
    "2:topk:256:8", "3:topk:256:8", "3:topk:512:16", "3:batchtopk:64:4",
]  # fmt: skip


def variance_shares(x: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of the variance of `x` explained by each grouping's means (between-group variance)."""
    centred = x - x.mean(0)
    total = float((centred**2).sum())
    shares = {}
    for name, g in groups.items():
        _, inverse, counts = np.unique(g, return_inverse=True, return_counts=True)
        sums = np.zeros((len(counts), x.shape[1]))
        np.add.at(sums, inverse, centred)
        shares[name] = float(((sums**2).sum(1) / counts).sum() / total)
    return shares


def additive_share(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Share of the variance explained by least squares on the one-hot codes of `a` and of `b` together."""
    centred = x - x.mean(0)
    codes = [np.unique(g, return_inverse=True)[1] for g in (a, b)]
    design = np.hstack([c[:, None] == np.arange(c.max() + 1)[None, :] for c in codes])
    fitted = design @ np.linalg.lstsq(design.astype(np.float64), centred, rcond=None)[0]
    return 1.0 - float(((centred - fitted) ** 2).sum() / (centred**2).sum())


def print_variance(results: Path, args, rows: np.ndarray, tokens: pl.DataFrame, root: np.ndarray) -> None:
    token = tokens["token_id"].to_numpy()[rows]
    position = tokens["pos"].to_numpy()[rows]
    folder = results / f"activations/{args.model}/pretrained/{args.corpus}/train/resid_post"
    for layer in sorted(int(p.name[1:]) for p in folder.glob("L*")):
        x = ActivationSet(folder / f"L{layer}").rows(rows).astype(np.float64)
        s = variance_shares(x, {"token": token, "position": position, "root": root, "both": token * 1000 + root})
        both = additive_share(x, token, root)
        print(f"L{layer} variance explained by token {s['token']:.3f}, position {s['position']:.3f}, root "
              f"{s['root']:.3f}, token + root {both:.3f}, token x root {s['both']:.3f}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=Path("."), help="the folder the study ran in (its results/)")
    p.add_argument("--model", default="boardnet")
    p.add_argument("--corpus", default="boards")
    p.add_argument("--recipes", nargs="*", default=DEFAULT, help="LAYER:ARCHITECTURE:D_SAE:K")
    p.add_argument("--train-tokens", type=int, default=500_000)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--eval-tokens", type=int, default=100_000)
    p.add_argument("--thresholds", type=float, nargs="*", default=[], help="fractions of a latent's maximum")
    p.add_argument("--variance", action="store_true", help="print each layer's variance shares first")
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
    if args.variance:
        print_variance(results, args, rows, tokens, np.where(member.any(1), member.argmax(1), -1))
    for spec in args.recipes:
        sweep(results, args, spec, rows, member)


def sweep(results: Path, args, spec: str, rows: np.ndarray, member: np.ndarray) -> None:
    layer, arch, d_sae, k = spec.split(":")
    folder = results / f"activations/{args.model}/pretrained/{args.corpus}/train/resid_post/L{layer}"
    aset = ActivationSet(folder)
    recipe = {"architecture": arch, "d_sae": int(d_sae), "k": int(k), "lr": args.lr}
    recipe |= {"train_tokens": args.train_tokens, "batch_size": 512}
    with tempfile.TemporaryDirectory() as tmp:
        training.train(aset.folder, recipe_from_dict(recipe), tmp, {"model": args.model})
        codes = encode_rows(load(tmp), aset.rows(rows).astype(np.float32), 4096)
    head = f"L{layer} {arch:<9} d_sae {int(d_sae):>4} k {int(k):>2}"
    f1 = [alignment.best_f1(codes, member[:, j])[1] for j in range(member.shape[1])]
    print(f"{head}: {summary(f1)}", flush=True)
    if args.thresholds:
        f1 = [alignment.best_threshold_f1(codes, member[:, j], args.thresholds)[1] for j in range(member.shape[1])]
        print(f"{' ' * len(head)}  best threshold: {summary(f1)}", flush=True)


def summary(f1: list[float]) -> str:
    each = " ".join(f"{f:.2f}" for f in f1)
    return f"min {min(f1):.2f} mean {np.mean(f1):.2f} >= 0.8: {sum(f >= 0.8 for f in f1)}/{len(f1)}  [{each}]"


if __name__ == "__main__":
    main()
