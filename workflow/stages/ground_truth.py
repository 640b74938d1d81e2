"""Stage `ground_truth`: every diffing method scored against a fine-tune whose effect is known.

On a boards dataset with a declared change (`workflow.datasets.abstractions`), the truth of every
root is known: kept roots should be retained, changed roots drifted, removed roots overwritten,
added roots new (in the terms every method shares: kept, changed, removed, new). For each root, each
method's answer is the category of the unit that carries the root best:

* **matching** (stage `diff`): the pretrained SAE's feature of highest F1 for the root (its
  "fires" as a detector of the root's cells, on the test split, stage `features`) and that
  feature's category; for an added root, the fine-tuned SAE's best feature and its category
  (``new`` if it has no partner);
* **stagewise**: the same pretrained feature's stage-wise category (added roots: none, as the
  method follows pretrained features only);
* each **crosscoder**: its latent of highest F1 for the root and that latent's category.

A root whose best unit has F1 below `min_f1` is ``unfound``: no unit of that method carries it,
so its category says nothing of the root (it counts as a miss in recall).

Scores per method and category (over roots): precision (of the roots a method puts in the category,
the share truly there), recall (of the roots truly there, the share it finds) and F1, plus the
confusion matrix. Writes ``truth.parquet`` (a row per method x root) and ``truth.json``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from workflow import layout
from workflow.analysis.truth import answers, scores
from workflow.runner import cli
from workflow.store.files import read_json, write_json, write_parquet


def crosscoder_latents(folder: str) -> pl.DataFrame:
    """A crosscoder's latents: each one's category (latents.parquet) beside its F1 as a detector of each
    planted concept on the test tokens (features.parquet, the features stage's statistics)."""
    names = layout.CROSSCODER.names
    features = pl.read_parquet(Path(folder) / names["features"])
    f1 = features.select("feature", *[c for c in features.columns if c.startswith("f1:")])
    return pl.read_parquet(Path(folder) / names["latents"]).join(f1.rename({"feature": "latent"}), on="latent")


def run(
    meta: str,
    diff_dir: str,
    sae_pre: str,
    sae_ft: str,
    stagewise_dir: str | None,
    crosscoders: dict,
    min_f1: float,
    out: str,
) -> dict:
    truth = read_json(meta)["generator"]["truth"]
    diff = pl.read_parquet(Path(diff_dir) / layout.DIFF.names["table"])
    features = {
        v: pl.read_parquet(Path(d) / layout.SAE.names["features"])
        for v, d in (("pretrained", sae_pre), ("finetuned", sae_ft))
    }
    stagewise = pl.read_parquet(Path(stagewise_dir) / layout.STAGEWISE.names["movement"]) if stagewise_dir else None
    latents = {n: crosscoder_latents(f) for n, f in crosscoders.items()}
    rows = answers(truth, diff, features, stagewise, latents, min_f1)
    result = {"scores": scores(rows), "min_f1": min_f1, "truth": truth}
    write_parquet(pl.DataFrame(rows), Path(out) / layout.TRUTH.names["table"])
    write_json(result, Path(out) / layout.TRUTH.names["summary"])
    return result


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--meta", required=True, help="the dataset's meta.json (generator.truth)")
    parser.add_argument("--diff", required=True, help="the diff folder")
    parser.add_argument("--sae-pretrained", required=True)
    parser.add_argument("--sae-finetuned", required=True)
    parser.add_argument("--stagewise", help="the stage-wise folder")
    parser.add_argument("--crosscoders", nargs="*", default=[], help="NAME=crosscoder folder at this (site, layer)")
    parser.add_argument("--min-f1", type=float, default=0.5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    run(
        args.meta,
        args.diff,
        args.sae_pretrained,
        args.sae_finetuned,
        args.stagewise,
        cli.pairs(args.crosscoders),
        args.min_f1,
        args.out,
    )
