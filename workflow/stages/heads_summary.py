"""Stage `heads_summary`: the attention heads of one (model, dataset), pretrained against fine-tuned.

Reads the two `heads` outputs (same documents, same tokens) and writes:

- ``heads.parquet`` and ``ablation.parquet``: both variants' tables, with a
  ``variant`` column;
- ``changes.parquet``: one row per (layer, head): ``js_distance``, the
  Jensen-Shannon distance (base 2, 0 = same, 1 = disjoint) between the two
  variants' attention distributions, averaged over every query token of the
  pattern documents; both head types; and, per ablation measure and mode,
  both variants' ``delta_loss`` and its change (fine-tuned minus pretrained);
- ``ablation.png``: layer x head heatmaps of the loss change when a head is
  ablated, pretrained and fine-tuned side by side (one row per measure and
  mode, one colour scale per row);
- ``pattern_change.png``: layer x head heatmap of the JS distance, each cell
  labelled with the head's type before -> after where it changed;
- ``patterns.html``: a self-contained interactive view (no network, works
  from ``file://``): pick a head in the grid (coloured by JS distance) and an
  example text; hover a token to shade every token by the attention it
  receives from it, in both models side by side, with the full query x key
  pattern drawn below. ``patterns.html#layer=5&head=6&example=0&query=3``
  opens on that head, example and query token.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from workflow import layout
from workflow.analysis.head_changes import changes, js_distance
from workflow.layout import VARIANTS
from workflow.report.figures.heads import ablation_plot, change_plot
from workflow.report.heads_viewer import viewer
from workflow.runner import cli
from workflow.store.files import atomic_dir, read_json, write_text

log = logging.getLogger(__name__)


def load_patterns(folder: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """A heads folder's patterns.json and patterns.safetensors (``doc<id>`` -> (layers, heads, T, T))."""
    from safetensors.numpy import load_file

    names = layout.HEADS.names
    return read_json(folder / names["examples"]), load_file(str(folder / names["patterns"]))


def collect(dirs: dict[str, Path]) -> dict[str, pl.DataFrame]:
    """Both variants' heads and ablation tables, each one table with a leading ``variant`` column."""
    tables = {}
    for name in ("heads", "ablation"):
        tables[name] = pl.concat(
            [
                pl.read_parquet(dirs[v] / layout.HEADS.names[name])
                .with_columns(variant=pl.lit(v))
                .select("variant", pl.exclude("variant"))
                for v in VARIANTS
            ],
            how="vertical_relaxed",
        )
    return tables


def run(pretrained_dir: str, finetuned_dir: str, n_examples: int, title: str, out_dir: str) -> dict:
    dirs = {"pretrained": Path(pretrained_dir), "finetuned": Path(finetuned_dir)}
    tables = collect(dirs)
    loaded = {v: load_patterns(dirs[v]) for v in VARIANTS}
    meta = loaded["pretrained"][0]
    common = [d["doc_id"] for d in meta if d["doc_id"] in {m["doc_id"] for m in loaded["finetuned"][0]}]
    js = js_distance(loaded["pretrained"][1], loaded["finetuned"][1], common)
    change = changes(tables, js)
    n_docs = read_json(dirs["finetuned"] / layout.HEADS.names["summary"])["n_docs"]
    n_layers, n_heads = int(change["layer"].max()), int(change["head"].max()) + 1
    names = layout.HEADS_SUMMARY.names
    with atomic_dir(out_dir) as tmp:
        tables["heads"].write_parquet(tmp / names["heads"])
        tables["ablation"].write_parquet(tmp / names["ablation"])
        change.write_parquet(tmp / names["changes"])
        ablation_plot(tables, n_layers, n_heads, title, n_docs, tmp / names["ablation_plot"])
        change_plot(change, n_layers, n_heads, title, tmp / names["change_plot"])
        page = viewer(
            [d for d in meta if d["doc_id"] in common], {v: loaded[v][1] for v in VARIANTS}, change, n_examples, title
        )
        write_text(page, tmp / names["viewer"])
    top = change.sort("js_distance", descending=True).head(3)
    log.info(
        "%s: %d pattern documents; most changed heads %s",
        out_dir,
        len(common),
        ", ".join(f"L{l}H{h} ({d:.3f})" for l, h, d in top.select("layer", "head", "js_distance").iter_rows()),
    )
    return {"pattern_docs": len(common)}


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--pretrained", required=True, help="heads folder of the pretrained variant")
    parser.add_argument("--finetuned", required=True, help="heads folder of the fine-tuned variant")
    parser.add_argument("--examples", type=int, default=3, help="example documents in patterns.html")
    parser.add_argument("--title", required=True)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    run(args.pretrained, args.finetuned, args.examples, args.title, args.out_dir)
