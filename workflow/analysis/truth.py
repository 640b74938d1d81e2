"""Scoring diffing methods against a fine-tune whose effect is known (stage `ground_truth`).

Each root of a boards dataset with a declared change has a true category in the terms every method
shares (kept, changed, removed, new); `answers` reads each method's category for the root from the
unit (SAE feature, crosscoder latent) that carries it best, and `scores` counts, per method and
category over roots, precision, recall, F1 and the confusion matrix.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from workflow.analysis.matching import MATCH_LABELS

CATEGORIES = ("kept", "changed", "removed", "new")
SHARED = {**MATCH_LABELS, "new": "new", "dead": "dead"}  # the matching's categories in the shared terms


def _best(table: pl.DataFrame, concept: str, id_column: str) -> tuple[int, float]:
    """The unit (its `id_column`) of highest F1 as a detector of `concept`, and that F1; (-1, 0.0)
    where the table has no such column or no rows."""
    column = f"f1:{concept}"
    if column not in table.columns or not len(table):
        return -1, 0.0
    i = int(table[column].arg_max())
    return int(table[id_column][i]), float(table[column][i])


def answers(
    truth: dict, diff: pl.DataFrame, features: dict, stagewise: pl.DataFrame | None, crosscoders: dict, min_f1: float
) -> list[dict]:
    """A row per method x root: its truth, the unit the method reads it from, that unit's F1, and
    the category it gives."""
    rows = []
    side = {s: diff.filter(pl.col("side") == s) for s in ("pretrained", "finetuned")}
    for root, category in truth.items():
        expected = SHARED[category]
        variant = "finetuned" if expected == "new" else "pretrained"
        feature, f1 = _best(features[variant], root, "feature")
        got = side[variant].filter(pl.col("feature") == feature)["category"]
        predicted = SHARED.get(got[0], got[0]) if len(got) else "unfound"
        rows.append(
            {"method": "matching", "root": root, "truth": expected, "unit": feature, "f1": f1, "predicted": predicted}
        )
        if stagewise is not None and expected != "new":
            got = stagewise.filter(pl.col("feature") == feature)["category_pretrained"]
            rows.append(
                {
                    "method": "stagewise",
                    "root": root,
                    "truth": expected,
                    "unit": feature,
                    "f1": f1,
                    "predicted": got[0] if len(got) else "unfound",
                }
            )
        for name, latents in crosscoders.items():
            indexed = latents if "latent" in latents.columns else latents.with_row_index("latent")
            latent, cf1 = _best(indexed, root, "latent")
            cat = indexed.filter(pl.col("latent") == latent)["category"][0] if latent >= 0 else "unfound"
            rows.append({"method": name, "root": root, "truth": expected, "unit": latent, "f1": cf1, "predicted": cat})
    for row in rows:
        if row["f1"] < min_f1:
            row["predicted"] = "unfound"
    return rows


def scores(rows: list[dict]) -> dict:
    """Per method: precision, recall and F1 of each category over roots, and the confusion matrix."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        part = [r for r in rows if r["method"] == method]
        truth = np.array([r["truth"] for r in part])
        pred = np.array([r["predicted"] for r in part])
        per = {}
        for c in CATEGORIES:
            n_true, n_pred = int((truth == c).sum()), int((pred == c).sum())
            hit = int(((truth == c) & (pred == c)).sum())
            if not n_true and not n_pred:
                continue
            precision = hit / n_pred if n_pred else None
            recall = hit / n_true if n_true else None
            f1 = 2 * hit / (n_true + n_pred) if n_true + n_pred else None
            per[c] = {
                "n_true": n_true,
                "n_predicted": n_pred,
                "hits": hit,
                "precision": precision,
                "recall": recall,
                "f1": f1,
            }
        labels = sorted(
            set(truth) | set(pred),
            key=lambda c: (CATEGORIES + ("dead", "unfound")).index(c) if c in CATEGORIES + ("dead", "unfound") else 99,
        )
        confusion = {
            t: {p: int(((truth == t) & (pred == p)).sum()) for p in labels} for t in labels if (truth == t).any()
        }
        out[method] = {
            "categories": per,
            "accuracy": float((truth == pred).mean()),
            "n_roots": len(part),
            "confusion": confusion,
        }
    return out
