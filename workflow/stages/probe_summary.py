"""Stage `probe_summary`: the probes of one (model, dataset) across layers and variants.

Collects every `probe` output of a (model, dataset) into long tables (one
column each for variant, site and layer) and two plots:

- ``probes.parquet``, ``sparse.parquet``, ``ranked.parquet``, ``tokens.parquet``;
- ``probe_accuracy.png``: held-out accuracy of the sequence probes by layer,
  pretrained and fine-tuned side by side, raw activations against each SAE,
  one panel per pooling;
- ``sparse.png``: k-sparse probe accuracy against k, one panel per layer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from workflow import layout
from workflow.report.figures.canvas import pyplot, save
from workflow.runner import cli
from workflow.store.files import atomic_dir, read_json

log = logging.getLogger(__name__)

VARIANT_STYLE = {"pretrained": "--", "finetuned": "-"}


def _tagged(path: Path, where: dict) -> pl.DataFrame:
    table = pl.read_parquet(path)
    return table.with_columns(*(pl.lit(v).alias(k) for k, v in where.items()))


def collect(probe_dirs: list[str]) -> dict[str, pl.DataFrame]:
    """The probe folders' tables, each row tagged with the variant, site and layer its probe.json names."""
    names = layout.PROBE.names
    tables: dict[str, list[pl.DataFrame]] = {name: [] for name in ("probes", "sparse", "ranked", "tokens")}
    for folder in map(Path, probe_dirs):
        summary = read_json(folder / names["summary"])
        where = {k: summary[k] for k in ("variant", "site", "layer")}
        for name, file in (("probes", "sequence"), ("sparse", "sparse"), ("ranked", "ranked"), ("tokens", "tokens")):
            tables[name].append(_tagged(folder / names[file], where))
    order = ["variant", "site", "layer"]
    return {
        name: pl.concat(parts, how="diagonal_relaxed").sort(order, maintain_order=True) if parts else pl.DataFrame()
        for name, parts in tables.items()
    }


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


def run(probe_dirs: list[str], title: str, out_dir: str) -> None:
    tables = collect(probe_dirs)
    names = layout.PROBE_SUMMARY.names
    reps = tables["probes"]["representation"].unique(maintain_order=True).to_list()
    colors = {rep: pyplot().cm.tab10(i % 10) for i, rep in enumerate(reps)}
    with atomic_dir(out_dir) as tmp:
        accuracy_plot(tables["probes"], colors, title, tmp / names["accuracy_plot"])
        sparse_plot(tables["sparse"], colors, title, tmp / names["sparse_plot"])
        for name, table in tables.items():
            table.write_parquet(tmp / names[name])
    for row in tables["probes"].filter(pl.col("pooling") == "mean").iter_rows(named=True):
        log.info(
            "%-10s %s L%-2d %-12s accuracy %.3f",
            row["variant"],
            row["site"],
            row["layer"],
            row["representation"],
            row["accuracy"],
        )


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--probes", nargs="+", required=True, help="probe output folders")
    parser.add_argument("--title", required=True)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    run(args.probes, args.title, args.out_dir)
