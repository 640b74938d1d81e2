"""Stage `features`' plots: which features go with which class or concept, and the strongest features on
every token of one test document."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from workflow.analysis.features import first_windows
from workflow.report.figures.canvas import pyplot, save
from workflow.sae.codes import Codes


def _top_by(table: pl.DataFrame, column: str, n: int) -> list[int]:
    """Features of the n largest finite values of a column (NaN, e.g. a class absent from the split, last)."""
    return (
        table.with_columns(pl.col(column).fill_nan(None))
        .sort(column, descending=True, nulls_last=True)
        .filter(pl.col(column).is_not_null())["feature"]
        .head(n)
        .to_list()
    )


def heatmap(table: pl.DataFrame, label_names: list[str], concepts: list[str], path: Path) -> None:
    """The most class-selective features of each class and the best feature of each concept."""
    plt = pyplot()
    live = table.filter(pl.col("n_active") > 0)
    picked: list[int] = []
    for name in label_names:
        picked += _top_by(live, f"auroc:{name}", 4)
    for c in concepts:
        picked += _top_by(live, f"f1:{c}", 1)
    picked = list(dict.fromkeys(picked))
    if not picked:
        fig, ax = plt.subplots(figsize=(4, 1.5))
        why = "no feature fired on these tokens" if label_names or concepts else "unlabelled text: no classes"
        ax.text(0.5, 0.5, why, ha="center", va="center")
        ax.axis("off")
        save(fig, path, dpi=110, tight=False)
        return
    rows = table.filter(pl.col("feature").is_in(picked)).sort(
        pl.col("feature").replace_strict({f: i for i, f in enumerate(picked)}, return_dtype=pl.Int64)
    )
    means = rows.select([f"mean:{n}" for n in label_names]).to_numpy()
    means = means / np.maximum(means.max(axis=1, keepdims=True), 1e-12)
    panels = [(means, label_names, "mean activation per class (row max = 1)")]
    if concepts:
        panels.append((rows.select([f"f1:{c}" for c in concepts]).to_numpy(), concepts, "F1 as concept detector"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 + 3 * len(panels), 1.5 + 0.25 * len(picked)), squeeze=False)
    for ax, (values, names, title) in zip(axes[0], panels):
        im = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(picked)), [f"f{f}" for f in picked])
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax)
    save(fig, path, dpi=110)


def sentence_plot(codes: Codes, tokens: pl.DataFrame, sentence: int, path: Path) -> None:
    """One test document (its first window): activation strength of its strongest features on each token."""
    plt = pyplot()
    doc_ids = tokens["doc_id"].unique(maintain_order=True)
    doc_id = doc_ids[min(sentence, len(doc_ids) - 1)]
    rows = first_windows(tokens).filter(pl.col("doc_id") == doc_id)["row"].to_numpy()
    rows = rows[rows < codes.n_rows]
    mask = np.isin(codes.row, rows)
    strength = np.bincount(codes.feature[mask], weights=codes.value[mask], minlength=codes.d_sae)
    top = np.argsort(-strength)[: min(10, int((strength > 0).sum()))]
    grid = codes.lookup(np.tile(rows, len(top)), np.repeat(top, len(rows))).reshape(len(top), len(rows))
    fig, ax = plt.subplots(figsize=(2 + 0.4 * len(rows), 1.5 + 0.35 * max(len(top), 1)))
    im = ax.imshow(grid if len(top) else np.zeros((1, len(rows))), aspect="auto", cmap="Reds")
    ax.set_xticks(range(len(rows)), tokens["token"].gather(rows).to_list(), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(top)), [f"f{f}" for f in top])
    ax.set_title(f"activation of the strongest features on test document {doc_id}", fontsize=9)
    fig.colorbar(im, ax=ax)
    save(fig, path, dpi=110)
