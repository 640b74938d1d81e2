"""Stage `methods`: the diffing methods side by side at one (model, dataset, site, layer, recipe).

One row per feature of the pretrained SAE: its category under the matching of two SAEs
(stage `diff`), under stage-wise fine-tuning (stage `stagewise`), and, for each crosscoder at
this (site, layer), the crosscoder latent whose pretrained-side decoder points closest to the
feature's decoder (cosine ``<name>_cos``), that latent's class and its category in the same
terms (kept / changed / removed / new / dead; `workflow.analysis.crosscoding.categories`).

Agreement between every two methods over the features both label (dead features left out):
the confusion matrix and Cohen's kappa (`sklearn.metrics`); a crosscoder's label counts only
where its latent points at the feature within `match_cosine`.

Output: ``methods.parquet`` and ``methods.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from workflow import layout
from workflow.analysis.matching import MATCH_LABELS
from workflow.runner import cli
from workflow.sae import load
from workflow.store.files import write_json, write_parquet

LABELS = ("kept", "changed", "removed")


def _crosscoder_columns(sae_decoder: np.ndarray, folder: str, name: str) -> pl.DataFrame:
    from workflow.sae.crosscoder import load as load_crosscoder

    cc = load_crosscoder(folder)
    pre_side = cc.saelens_tensors()["W_dec"][0].numpy()  # raw space, as the SAE's decoder
    a = sae_decoder / np.maximum(np.linalg.norm(sae_decoder, axis=1, keepdims=True), 1e-12)
    b = pre_side / np.maximum(np.linalg.norm(pre_side, axis=1, keepdims=True), 1e-12)
    cos = a @ b.T
    best = cos.argmax(1)
    latents = pl.read_parquet(Path(folder) / layout.CROSSCODER.names["latents"])
    picked = latents[best.tolist()]
    return pl.DataFrame(
        {
            f"{name}_latent": best.astype(np.int32),
            f"{name}_cos": cos[np.arange(len(best)), best],
            f"{name}_class": picked["class"],
            f"{name}_relative_norm": picked["relative_norm"],
            f"{name}_category": picked["category"],
        }
    )


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Confusion matrix (rows: a, columns: b) and Cohen's kappa over the features both label."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    both = (a != "") & (b != "")
    labels = sorted(set(a[both]) | set(b[both]), key=lambda c: (c not in LABELS, LABELS.index(c) if c in LABELS else c))
    if not both.any():
        return {"n": 0, "labels": [], "confusion": [], "kappa": None}
    matrix = confusion_matrix(a[both], b[both], labels=labels)
    kappa = cohen_kappa_score(a[both], b[both]) if len(labels) > 1 else 1.0
    return {"n": int(both.sum()), "labels": labels, "confusion": matrix.tolist(), "kappa": float(kappa)}


def run(diff_dir: str, sae_dir: str, stagewise_dir: str | None, crosscoders: dict, cfg: dict, out: str) -> dict:
    """crosscoders: {name: crosscoder folder} at this (site, layer); cfg: the diff section."""
    table = pl.read_parquet(Path(diff_dir) / layout.DIFF.names["table"]).filter(pl.col("side") == "pretrained")
    rows = table.select(
        "feature",
        pl.col("category").alias("matching_category"),
        pl.col("category").replace(MATCH_LABELS).alias("matching"),
    )
    methods = ["matching"]
    if stagewise_dir:
        moved = pl.read_parquet(Path(stagewise_dir) / layout.STAGEWISE.names["movement"])
        rows = rows.join(
            moved.select(
                "feature",
                pl.col("category_pretrained").alias("stagewise"),
                pl.col("decoder_cos").alias("stagewise_decoder_cos"),
                "movement",
            ),
            on="feature",
            how="left",
        )
        methods.append("stagewise")
    decoder = load(sae_dir).W_dec.detach().numpy()
    for name, folder in crosscoders.items():
        cols = _crosscoder_columns(decoder, folder, name)
        rows = pl.concat([rows, cols], how="horizontal")
        methods.append(name)
    out_dir = Path(out)
    write_parquet(rows, out_dir / layout.METHODS.names["table"])

    def labels(method: str) -> np.ndarray:
        column = method if method in ("matching", "stagewise") else f"{method}_category"
        values = rows[column].fill_null("").to_numpy().astype(object)
        if method not in ("matching", "stagewise"):  # a crosscoder: only latents that point at the feature
            values = np.where(rows[f"{method}_cos"].to_numpy() >= cfg["match_cosine"], values, "")
        return np.where(values == "dead", "", values).astype(str)

    pairs = {f"{a}|{b}": agreement(labels(a), labels(b)) for i, a in enumerate(methods) for b in methods[i + 1 :]}
    summary = {
        "methods": methods,
        "counts": {m: {c: int((labels(m) == c).sum()) for c in sorted(set(labels(m)) - {""})} for m in methods},
        "agreement": pairs,
        "n_features": len(rows),
    }
    write_json(summary, out_dir / layout.METHODS.names["summary"])
    return summary


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--diff", required=True, help="the diff folder (diff.parquet)")
    parser.add_argument("--sae", required=True, help="the pretrained SAE folder")
    parser.add_argument("--stagewise", help="the stage-wise folder (movement.parquet)")
    parser.add_argument("--crosscoders", nargs="*", default=[], help="NAME=folder of each crosscoder here")
    cli.add_config(parser, "diff section")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    run(args.diff, args.sae, args.stagewise, cli.pairs(args.crosscoders), args.config, args.out)
