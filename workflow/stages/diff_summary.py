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

import polars as pl

from workflow import layout
from workflow.analysis.matching import FT_CATEGORIES, PRE_CATEGORIES
from workflow.report.figures.diffing import categories_plot, cosine_plot, transfer_plot
from workflow.runner import cli
from workflow.store.files import atomic_dir, read_json

log = logging.getLogger(__name__)


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
