"""Stage `probe_summary`'s figures: held-out accuracy of the sequence probes by layer, and of the
k-sparse probes against k; pretrained dashed, fine-tuned solid, a colour per representation."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from workflow.report.figures.canvas import pyplot, save

VARIANT_STYLE = {"pretrained": "--", "finetuned": "-"}


def colors(reps: list[str]) -> dict:
    """A tab10 colour per representation, in order."""
    return {rep: pyplot().cm.tab10(i % 10) for i, rep in enumerate(reps)}


def accuracy_plot(probes: pl.DataFrame, colors: dict, title: str, path: Path) -> None:
    """Held-out accuracy of the sequence probes by layer, one panel per pooling."""
    plt = pyplot()
    reps = list(colors)
    sites = probes["site"].unique(maintain_order=True).to_list()
    poolings = probes["pooling"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, len(poolings), figsize=(5.2 * len(poolings), 3.8), squeeze=False)
    for ax, pooling in zip(axes[0], poolings):
        for rep in reps:
            for variant, style in VARIANT_STYLE.items():
                for site in sites:
                    part = probes.filter(
                        (pl.col("representation") == rep)
                        & (pl.col("variant") == variant)
                        & (pl.col("pooling") == pooling)
                        & (pl.col("site") == site)
                    ).sort("layer")
                    if len(part):
                        label = f"{rep} {variant}" + (f" {site}" if len(sites) > 1 else "")
                        ax.plot(part["layer"], part["accuracy"], style, marker="o", color=colors[rep], label=label)
        ax.axhline(probes["chance"].max(), color="grey", lw=0.8, ls=":", label="majority class")
        ax.set_title(f"{pooling} pooling", fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel("held-out accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{title}: sequence probes (train fit, test score)", fontsize=10)
    save(fig, path, dpi=110)


def sparse_plot(sparse: pl.DataFrame, colors: dict, title: str, path: Path) -> None:
    """k-sparse probe accuracy against k, one panel per (site, layer)."""
    plt = pyplot()
    keys = sparse.select("site", "layer").unique(maintain_order=True).sort("site", "layer").rows()
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4.2 * max(len(keys), 1), 3.6), squeeze=False)
    for ax, (site, layer) in zip(axes[0], keys):
        for rep in colors:
            for variant, style in VARIANT_STYLE.items():
                part = sparse.filter(
                    (pl.col("representation") == rep)
                    & (pl.col("variant") == variant)
                    & (pl.col("site") == site)
                    & (pl.col("layer") == layer)
                ).sort("k")
                if len(part):
                    ax.plot(part["k"], part["accuracy"], style, marker="o", color=colors[rep], label=f"{rep} {variant}")
        ax.set_xscale("log", base=2)
        ax.set_title(f"L{layer} {site}", fontsize=9)
        ax.set_xlabel("k features")
        ax.set_ylabel("held-out accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{title}: k-sparse probes (features ranked by class separation)", fontsize=10)
    save(fig, path, dpi=110)
