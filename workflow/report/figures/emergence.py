"""Stage `emergence`'s figure: how selective the probes of roots and composites are over training, and
how close each layer is to the final model's (CKA)."""

from __future__ import annotations

import numpy as np
import polars as pl

from workflow.report.figures import canvas as plots


def plot(table: pl.DataFrame, cka_table: pl.DataFrame, path: str) -> None:
    """Three panels against the training step (log scale, step 0 at 0.5), a line per (site, layer):
    the mean selectivity of the root and of the composite token probes, and the biased linear CKA."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    groups = [
        ("token", "root_", "root cells (token probes)"),
        # board probes (has_root_r) read roots from the bag of tokens already at step 0: composites are
        # the informative second level
        ("token", "composite_", "composite cells (token probes)"),
    ]
    keys = table.select("site", "layer").unique().sort(["layer", "site"]).rows()
    for ax, (level, prefix, title) in zip(axes, groups):
        part = table.filter((pl.col("level") == level) & pl.col("factor").str.starts_with(prefix))
        for site, layer in keys:
            g = (
                part.filter((pl.col("site") == site) & (pl.col("layer") == layer))
                .group_by("step")
                .agg(pl.col("selectivity").mean())
                .sort("step")
            )
            ax.plot(
                np.maximum(g["step"].to_numpy(), 0.5), g["selectivity"].to_numpy(), marker="o", label=f"{site} L{layer}"
            )
        ax.set(xscale="log", xlabel="training step (0 shown at 0.5)", ylabel="mean selectivity", title=title)
        ax.axhline(0, color="grey", lw=0.5)
    ax = axes[2]
    for site, layer in keys:
        g = cka_table.filter((pl.col("site") == site) & (pl.col("layer") == layer)).sort("step")
        ax.plot(np.maximum(g["step"].to_numpy(), 0.5), g["cka_biased"].to_numpy(), marker="o", label=f"{site} L{layer}")
    ax.set(
        xscale="log",
        xlabel="training step",
        ylabel="linear CKA (biased)",
        title="CKA to the final model",
        ylim=(0, 1.02),
    )
    axes[0].legend(fontsize=7)
    plots.save(fig, path)
