"""Stage `similarity`'s plot: each measure of pretrained vs fine-tuned similarity by layer."""

from __future__ import annotations

import numpy as np
import polars as pl

from workflow.report.figures.canvas import pyplot, save

# column of the similarity table: (legend label, line style, marker)
STYLES = {
    "mean_cosine": ("cosine of mean activations", "-", "o"),
    "token_cosine": ("mean per-token cosine", "-", "s"),
    "cka_debiased": ("linear CKA (debiased)", "-", "^"),
    "cka_biased": ("linear CKA (biased)", "--", "v"),
}


def plot(table: pl.DataFrame, title: str, path: str) -> None:
    """One line per measure over the layers of `table` (stage similarity's table; layer 0 = embeddings),
    the y axis from below the lowest value (or 0) to just above 1."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for column, (label, line, marker) in STYLES.items():
        ax.plot(table["layer"], table[column], line, marker=marker, label=label)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("pretrained vs fine-tuned")
    ax.set_xticks(table["layer"].to_list())
    ax.set_ylim(min(0.0, float(np.nanmin(table.select(list(STYLES)).to_numpy()))) - 0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title, fontsize=10)
    save(fig, path)
