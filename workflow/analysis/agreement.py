"""The diffing methods side by side at one (site, layer, recipe): each pretrained SAE feature's label
under the matching of two SAEs, under stage-wise fine-tuning and under each crosscoder, and how far
every two methods agree.

All labels are in the terms the methods share (kept / changed / removed / new / dead;
`matching.MATCH_LABELS`, `crosscoding.categories`). A crosscoder labels a feature through its
nearest latent: the one whose pretrained-side decoder (raw space, as the SAE's decoder) has the
largest cosine with the feature's decoder; it counts only where that cosine reaches match_cosine.
Dead features are left out of the agreement. Agreement between two methods: the confusion matrix
and Cohen's kappa (`sklearn.metrics`) over the features both label.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from workflow.analysis.matching import MATCH_LABELS

LABELS = ("kept", "changed", "removed")
OWN_COLUMNS = ("matching", "stagewise")  # methods labelled in a column of their name (a crosscoder: <name>_category)


def method_table(diff: pl.DataFrame, movement: pl.DataFrame | None, decoder: np.ndarray, crosscoders: dict):
    """One row per pretrained SAE feature with its label under every method, and the methods' names.
    `diff`: the pretrained side of diff.parquet; `movement`: movement.parquet of stage-wise
    fine-tuning (None: not run); `decoder`: (d_sae, d_in) the SAE's decoder; `crosscoders`: {name:
    ((d_latents, d_in) pretrained-side decoder, latents.parquet)}."""
    rows = diff.select(
        "feature",
        pl.col("category").alias("matching_category"),
        pl.col("category").replace(MATCH_LABELS).alias("matching"),
    )
    methods = ["matching"]
    if movement is not None:
        columns = movement.select(
            "feature",
            pl.col("category_pretrained").alias("stagewise"),
            pl.col("decoder_cos").alias("stagewise_decoder_cos"),
            "movement",
        )
        rows = rows.join(columns, on="feature", how="left")
        methods.append("stagewise")
    for name, (pre_side, latents) in crosscoders.items():
        rows = pl.concat([rows, nearest_latents(decoder, pre_side, latents, name)], how="horizontal")
        methods.append(name)
    return rows, methods


def nearest_latents(sae_decoder: np.ndarray, pre_side: np.ndarray, latents: pl.DataFrame, name: str) -> pl.DataFrame:
    """Per SAE feature, the crosscoder latent whose pretrained-side decoder points closest to the
    feature's decoder: its index, the cosine, its class, relative norm and category."""
    a = sae_decoder / np.maximum(np.linalg.norm(sae_decoder, axis=1, keepdims=True), 1e-12)
    b = pre_side / np.maximum(np.linalg.norm(pre_side, axis=1, keepdims=True), 1e-12)
    cos = a @ b.T
    best = cos.argmax(1)
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


def method_labels(rows: pl.DataFrame, method: str, match_cosine: float) -> np.ndarray:
    """Each feature's label under `method` ("": none, or dead); a crosscoder's only where its latent
    points at the feature within `match_cosine`."""
    column = method if method in OWN_COLUMNS else f"{method}_category"
    values = rows[column].fill_null("").to_numpy().astype(object)
    if method not in OWN_COLUMNS:  # a crosscoder: only latents that point at the feature
        values = np.where(rows[f"{method}_cos"].to_numpy() >= match_cosine, values, "")
    return np.where(values == "dead", "", values).astype(str)


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


def summary(rows: pl.DataFrame, methods: list[str], match_cosine: float) -> dict:
    """methods.json: each method's label counts and the agreement of every two methods."""
    found = {m: method_labels(rows, m, match_cosine) for m in methods}
    pairs = {f"{a}|{b}": agreement(found[a], found[b]) for i, a in enumerate(methods) for b in methods[i + 1 :]}
    return {
        "methods": methods,
        "counts": {m: {c: int((found[m] == c).sum()) for c in sorted(set(found[m]) - {""})} for m in methods},
        "agreement": pairs,
        "n_features": len(rows),
    }
