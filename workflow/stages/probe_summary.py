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
from workflow.report.figures import probes as figures
from workflow.runner import cli
from workflow.store.files import atomic_dir, read_json

log = logging.getLogger(__name__)


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


def run(probe_dirs: list[str], title: str, out_dir: str) -> None:
    tables = collect(probe_dirs)
    names = layout.PROBE_SUMMARY.names
    reps = tables["probes"]["representation"].unique(maintain_order=True).to_list()
    colors = figures.colors(reps)
    with atomic_dir(out_dir) as tmp:
        figures.accuracy_plot(tables["probes"], colors, title, tmp / names["accuracy_plot"])
        figures.sparse_plot(tables["sparse"], colors, title, tmp / names["sparse_plot"])
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
