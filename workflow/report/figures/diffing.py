"""Stage `diff_summary`'s plots: one recipe's feature categories, SAE transfer and matched decoder cosines
by layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from workflow.analysis.matching import FT_CATEGORIES, PRE_CATEGORIES
from workflow.report.figures.canvas import pyplot, save

COLORS = {"retained": "#2b8cbe", "drifted": "#fdae61", "overwritten": "#d7191c", "new": "#1a9641", "dead": "#bbbbbb"}


def categories_plot(cats: pl.DataFrame, title: str, path: Path) -> None:
    """Category fractions by layer, pretrained and fine-tuned features side by side, a row per site."""
    plt = pyplot()
    sites = cats["site"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(len(sites), 2, figsize=(10, 3.2 * len(sites)), squeeze=False)
    for i, site in enumerate(sites):
        for j, (side, names) in enumerate((("pretrained", PRE_CATEGORIES), ("finetuned", FT_CATEGORIES))):
            ax = axes[i][j]
            part = cats.filter((pl.col("site") == site) & (pl.col("side") == side))
            layers = sorted(part["layer"].unique().to_list())
            bottom = np.zeros(len(layers))
            for name in names:
                values = np.array(
                    [part.filter((pl.col("layer") == l) & (pl.col("category") == name))["fraction"][0] for l in layers]
                )
                ax.bar([str(l) for l in layers], values, bottom=bottom, color=COLORS[name], label=name)
                bottom += values
            ax.set_title(f"{side} features ({site})", fontsize=9)
            ax.set_xlabel("layer")
            ax.set_ylabel("fraction of features")
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    save(fig, path, dpi=110)


def transfer_plot(transfer: pl.DataFrame, sites: list[str], title: str, path: Path) -> None:
    """Spliced task (or, on unlabelled data, LM) loss recovered and explained variance by layer, each SAE
    on each variant."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    # unlabelled data has no task loss: the LM's loss recovered takes its place
    measure = "task" if transfer["task_loss_recovered"].null_count() < len(transfer) else "lm"
    if f"{measure}_loss_recovered" not in transfer.columns:
        measure = "task"
    for (sae, acts), style in (
        (("pretrained", "pretrained"), "o-"),
        (("finetuned", "finetuned"), "s-"),
        (("pretrained", "finetuned"), "o--"),
        (("finetuned", "pretrained"), "s--"),
    ):
        for site in sites:
            part = transfer.filter(
                (pl.col("sae") == sae) & (pl.col("activations") == acts) & (pl.col("site") == site)
            ).sort("layer")
            label = f"{sae} SAE on {acts}" + (f" ({site})" if len(sites) > 1 else "")
            axes[0].plot(part["layer"], part[f"{measure}_loss_recovered"].cast(pl.Float64), style, label=label)
            axes[1].plot(part["layer"], part["explained_variance"], style, label=label)
    axes[0].set_ylabel(f"{measure} loss recovered (spliced)")
    axes[1].set_ylabel("explained variance")
    for ax in axes:
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}: SAE transfer", fontsize=10)
    save(fig, path, dpi=110)


def cosine_plot(cosines: dict, title: str, path: Path) -> None:
    """Histogram of the matched pairs' decoder cosines, one line per (site, layer)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (site, layer), values in sorted(cosines.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        ax.hist(values, bins=np.linspace(-0.2, 1, 49), histtype="step", label=f"L{layer} {site}")
    ax.set_xlabel("decoder cosine of matched pairs")
    ax.set_ylabel("pairs")
    ax.legend(fontsize=7)
    ax.set_title(f"{title}: matched decoder cosines", fontsize=10)
    save(fig, path, dpi=110)
