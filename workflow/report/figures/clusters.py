"""Stage `kmeans`'s figure: what each k-means cluster of documents is made of."""

from __future__ import annotations

import numpy as np
import polars as pl

from workflow.report.figures.canvas import pyplot, save


def composition_plot(clusters: pl.DataFrame, scores: pl.DataFrame, label_names: list[str], title: str, path) -> None:
    """Class composition of each cluster (stacked bars): one panel per representation, layer and variant."""
    plt = pyplot()
    panels = scores.select("representation", "site", "layer", "variant").rows()
    reps = scores["representation"].unique(maintain_order=True).to_list()
    cols = max(1, len(panels) // max(len(reps), 1))
    fig, axes = plt.subplots(len(reps), cols, figsize=(2.3 * cols, 2.5 * len(reps)), squeeze=False)
    colors = [plt.cm.tab10(i % 10) for i in range(len(label_names))]
    for i, rep in enumerate(reps):
        mine = [p for p in panels if p[0] == rep]
        for j, (_, site, layer, variant) in enumerate(mine[:cols]):
            ax = axes[i][j]
            pick = (
                (pl.col("representation") == rep)
                & (pl.col("site") == site)
                & (pl.col("layer") == layer)
                & (pl.col("variant") == variant)
            )
            part = clusters.filter(pick).sort("cluster")
            counts = np.array(part["label_counts"].to_list(), dtype=float).reshape(len(part), len(label_names))
            bottom = np.zeros(len(part))
            for c, name in enumerate(label_names):
                ax.bar(
                    [str(v) for v in part["cluster"].to_list()],
                    counts[:, c],
                    bottom=bottom,
                    color=colors[c],
                    label=name,
                )
                bottom += counts[:, c]
            ari = scores.filter(pick)["ari"][0]
            ax.set_title(f"{rep} {variant[:3]} L{layer}\nARI {ari:.2f}", fontsize=7)
            ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"{title}: k-means clusters of test documents, class composition".strip(": "), fontsize=10)
    save(fig, path, dpi=100)
