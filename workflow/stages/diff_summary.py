"""Stage `diff_summary`: one recipe's feature diff and SAE transfer across layers.

Collects the `diff` outputs of every (site, layer) of a (model, dataset, recipe)
into two tables and three plots:

- ``categories.parquet``: count and fraction of each category per side, site and layer;
- ``transfer.parquet``: the transfer rows (each SAE on each variant's activations) per site and layer;
- ``categories.png``: category fractions by layer (pretrained features: retained /
  drifted / overwritten / dead; fine-tuned features: retained / drifted / new / dead);
- ``transfer.png``: spliced task loss recovered and explained variance by layer, each SAE on its
  own model and transferred to the other;
- ``decoder_cosine.png``: histogram of the matched pairs' decoder cosines per layer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from workflow import layout
from workflow.analysis.matching import FT_CATEGORIES, PRE_CATEGORIES
from workflow.report.figures.canvas import pyplot, save
from workflow.runner import cli
from workflow.store.files import atomic_dir, read_json

log = logging.getLogger(__name__)

COLORS = {"retained": "#2b8cbe", "drifted": "#fdae61", "overwritten": "#d7191c", "new": "#1a9641", "dead": "#bbbbbb"}


def collect(diff_dirs: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    categories, transfer, cosines = [], [], {}
    for folder in diff_dirs:
        summary = read_json(Path(folder) / layout.DIFF.names["summary"])
        where = {"site": summary["site"], "layer": summary["layer"]}
        for side, names in (("pretrained", PRE_CATEGORIES), ("finetuned", FT_CATEGORIES)):
            block = summary["categories"][side]
            for name in names:
                categories.append(
                    {
                        **where,
                        "side": side,
                        "category": name,
                        "count": block["counts"][name],
                        "fraction": block["fractions"][name],
                    }
                )
        transfer.append(
            pl.read_parquet(Path(folder) / layout.DIFF.names["transfer"]).with_columns(
                pl.lit(where["site"]).alias("site"), pl.lit(where["layer"]).alias("layer")
            )
        )
        table = pl.read_parquet(Path(folder) / layout.DIFF.names["table"], columns=["side", "decoder_cos"])
        cosines[(where["site"], where["layer"])] = (
            table.filter(pl.col("side") == "pretrained")["decoder_cos"].drop_nans().to_numpy()
        )
    cats = pl.DataFrame(categories).sort("site", "layer")
    return cats, pl.concat(transfer, how="diagonal_relaxed").sort("site", "layer"), cosines


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


def run(diff_dirs: list[str], title: str, out_dir: str) -> None:
    cats, transfer, cosines = collect(diff_dirs)
    names = layout.DIFF_SUMMARY.names
    with atomic_dir(out_dir) as tmp:
        categories_plot(cats, title, tmp / names["categories_plot"])
        transfer_plot(transfer, cats["site"].unique(maintain_order=True).to_list(), title, tmp / names["transfer_plot"])
        cosine_plot(cosines, title, tmp / names["cosine_plot"])
        cats.write_parquet(tmp / names["categories"])
        transfer.write_parquet(tmp / names["transfer"])
    for row in cats.filter(pl.col("side") == "pretrained").iter_rows(named=True):
        log.info("%s L%d %-11s %.3f", row["site"], row["layer"], row["category"], row["fraction"])


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument(
        "--diffs", nargs="+", required=True, help="diff output folders (diff.json, diff.parquet, transfer.parquet)"
    )
    parser.add_argument("--title", required=True)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    run(args.diffs, args.title, args.out_dir)
