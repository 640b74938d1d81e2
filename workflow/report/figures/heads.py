"""Stage `heads_summary`'s plots: layer x head heatmaps of what ablating a head costs in each variant,
and of how much its attention pattern changed with fine-tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from workflow.layout import VARIANTS
from workflow.report.figures.canvas import pyplot, save

# head type (workflow.analysis.attention.TYPES) -> its label in a heatmap cell
TYPE_ABBREV = {
    "self": "S",
    "previous": "P",
    "next": "N",
    "first": "F",
    "separator": "Sep",
    "local": "L",
    "broad": "B",
    "mixed": "M",
}


def grid(table: pl.DataFrame, column: str, n_layers: int, n_heads: int) -> np.ndarray:
    """(layers, heads) array of `column` (layers 1-based in `table`); NaN where missing."""
    out = np.full((n_layers, n_heads), np.nan)
    for layer, head, value in table.select("layer", "head", column).iter_rows():
        out[layer - 1, head] = np.nan if value is None else value
    return out


def ablation_plot(
    tables: dict[str, pl.DataFrame], n_layers: int, n_heads: int, title: str, n_docs: int, path: Path
) -> None:
    """Layer x head heatmaps of the loss change when a head is ablated, pretrained and fine-tuned side by
    side, one row per measure and mode (one symmetric colour scale per row)."""
    plt = pyplot()
    ablation = tables["ablation"]
    rows = ablation.select("measure", "mode").unique(maintain_order=True).rows()
    width = max(4.0, 0.45 * n_heads + 1.5)
    fig, axes = plt.subplots(
        len(rows), 2, figsize=(2 * width, 0.4 * n_layers * len(rows) + 1.2 * len(rows) + 0.6), squeeze=False
    )
    for r, (measure, mode) in enumerate(rows):
        part = ablation.filter((pl.col("measure") == measure) & (pl.col("mode") == mode))
        grids = {v: grid(part.filter(pl.col("variant") == v), "delta_loss", n_layers, n_heads) for v in VARIANTS}
        scale = max(float(np.nanmax(np.abs(g))) for g in grids.values()) or 1e-9
        for c, variant in enumerate(VARIANTS):
            ax = axes[r, c]
            image = ax.imshow(grids[variant], cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto")
            ax.set_title(f"{variant}: {measure} loss change, {mode} ablation", fontsize=9)
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            ax.set_xticks(range(n_heads))
            ax.set_yticks(range(n_layers), [str(l + 1) for l in range(n_layers)])
            fig.colorbar(image, ax=ax, fraction=0.04)
    fig.suptitle(f"{title}: ablating one head (loss ablated - clean, {n_docs} test documents)", fontsize=10)
    save(fig, path, dpi=110)


def change_plot(change: pl.DataFrame, n_layers: int, n_heads: int, title: str, path: Path) -> None:
    """Layer x head heatmap of the JS distance, each cell labelled with the head's type before > after."""
    plt = pyplot()
    width = max(4.0, 0.45 * n_heads + 1.5)
    js = grid(change, "js_distance", n_layers, n_heads)
    fig, ax = plt.subplots(figsize=(width + 1.5, 0.5 * n_layers + 1.6))
    image = ax.imshow(js, cmap="viridis", vmin=0, aspect="auto")
    for layer, head, before, after in change.select("layer", "head", "type_pretrained", "type_finetuned").iter_rows():
        short = TYPE_ABBREV.get(before, before)
        text = short if before == after else f"{short}>{TYPE_ABBREV.get(after, after)}"
        ax.text(
            head,
            layer - 1,
            text,
            ha="center",
            va="center",
            fontsize=6,
            color="white" if js[layer - 1, head] < 0.6 * np.nanmax(js) else "black",
        )
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers), [str(l + 1) for l in range(n_layers)])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(image, ax=ax, fraction=0.04, label="Jensen-Shannon distance")
    legend = ", ".join(f"{v}={k}" for k, v in TYPE_ABBREV.items())
    ax.set_title(f"{title}: attention pattern change per head\n(types before>after: {legend})", fontsize=8)
    save(fig, path, dpi=110)
