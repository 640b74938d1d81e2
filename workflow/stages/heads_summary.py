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

import base64
import logging
from pathlib import Path

import numpy as np
import polars as pl

from workflow import layout
from workflow.layout import VARIANTS
from workflow.report.figures.canvas import pyplot, save
from workflow.report.render import render
from workflow.runner import cli
from workflow.store.files import atomic_dir, read_json, write_text

log = logging.getLogger(__name__)

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


def load_patterns(folder: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    names = layout.HEADS.names
    return read_json(folder / names["examples"]), load_file(str(folder / names["patterns"]))


def js_distance(pre: dict[str, np.ndarray], ft: dict[str, np.ndarray], docs: list) -> np.ndarray:
    """(layers, heads) mean over the query tokens of `docs` of the JS distance between the two patterns."""
    from scipy.spatial.distance import jensenshannon

    total, count = None, 0
    for doc in docs:
        p, q = pre[f"doc{doc}"].astype(np.float64), ft[f"doc{doc}"].astype(np.float64)
        if p.shape != q.shape:
            raise ValueError(
                f"document {doc}: patterns of shape {p.shape} and {q.shape}; the variants saw different tokens"
            )
        d = np.nan_to_num(jensenshannon(p, q, base=2, axis=-1))  # (layers, heads, queries)
        total = d.sum(-1) if total is None else total + d.sum(-1)
        count += d.shape[-1]
    if not count:
        raise ValueError(
            "no pattern documents in common: both variants' heads stages must use the same tokens and seed"
        )
    return total / count


def collect(dirs: dict[str, Path]) -> dict[str, pl.DataFrame]:
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


def changes(tables: dict[str, pl.DataFrame], js: np.ndarray) -> pl.DataFrame:
    heads = tables["heads"]
    types = heads.pivot(on="variant", index=["layer", "head"], values="type")
    out = types.rename({v: f"type_{v}" for v in VARIANTS}).with_columns(
        js_distance=pl.Series([float(js[l - 1, h]) for l, h in zip(types["layer"], types["head"])])
    )
    ablation = tables["ablation"]
    for (measure, mode), part in ablation.group_by(["measure", "mode"], maintain_order=True):
        wide = part.pivot(on="variant", index=["layer", "head"], values="delta_loss").rename(
            {v: f"{measure}_{mode}_delta_loss_{v}" for v in VARIANTS}
        )
        out = out.join(wide, on=["layer", "head"], how="left").with_columns(
            (
                pl.col(f"{measure}_{mode}_delta_loss_finetuned") - pl.col(f"{measure}_{mode}_delta_loss_pretrained")
            ).alias(f"{measure}_{mode}_delta_loss_change")
        )
    return out.sort("layer", "head")


def _grid(table: pl.DataFrame, column: str, n_layers: int, n_heads: int) -> np.ndarray:
    grid = np.full((n_layers, n_heads), np.nan)
    for layer, head, value in table.select("layer", "head", column).iter_rows():
        grid[layer - 1, head] = np.nan if value is None else value
    return grid


def ablation_plot(
    tables: dict[str, pl.DataFrame], n_layers: int, n_heads: int, title: str, n_docs: int, path: Path
) -> None:
    """Layer x head heatmaps of the loss change when a head is ablated, one row per measure and mode."""
    plt = pyplot()
    ablation = tables["ablation"]
    rows = ablation.select("measure", "mode").unique(maintain_order=True).rows()
    width = max(4.0, 0.45 * n_heads + 1.5)
    fig, axes = plt.subplots(
        len(rows), 2, figsize=(2 * width, 0.4 * n_layers * len(rows) + 1.2 * len(rows) + 0.6), squeeze=False
    )
    for r, (measure, mode) in enumerate(rows):
        part = ablation.filter((pl.col("measure") == measure) & (pl.col("mode") == mode))
        grids = {v: _grid(part.filter(pl.col("variant") == v), "delta_loss", n_layers, n_heads) for v in VARIANTS}
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
    grid = _grid(change, "js_distance", n_layers, n_heads)
    fig, ax = plt.subplots(figsize=(width + 1.5, 0.5 * n_layers + 1.6))
    image = ax.imshow(grid, cmap="viridis", vmin=0, aspect="auto")
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
            color="white" if grid[layer - 1, head] < 0.6 * np.nanmax(grid) else "black",
        )
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers), [str(l + 1) for l in range(n_layers)])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(image, ax=ax, fraction=0.04, label="Jensen-Shannon distance")
    legend = ", ".join(f"{v}={k}" for k, v in TYPE_ABBREV.items())
    ax.set_title(f"{title}: attention pattern change per head\n(types before>after: {legend})", fontsize=8)
    save(fig, path, dpi=110)


def _encode(pattern: np.ndarray) -> str:
    """Attention (layers, heads, T, T) as base64 of uint8 = round(255 * weight)."""
    return base64.b64encode(
        np.clip(np.rint(pattern.astype(np.float32) * 255), 0, 255).astype(np.uint8).tobytes()
    ).decode()


def viewer(meta: list[dict], patterns: dict[str, dict], change: pl.DataFrame, n_examples: int, title: str) -> str:
    """patterns.html: the report's page shell with static/heads.js; data inline, nothing fetched."""
    n_layers, n_heads = int(change["layer"].max()), int(change["head"].max()) + 1
    examples = []
    for doc in meta[:n_examples]:
        examples.append(
            {
                "doc_id": doc["doc_id"],
                "label": doc["label"],
                "tokens": doc["tokens"],
                **{v: _encode(patterns[v][f"doc{doc['doc_id']}"]) for v in VARIANTS},
            }
        )
    info = {
        f"{row['layer']}:{row['head']}": {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
        for row in change.iter_rows(named=True)
    }  # NaN becomes null in the page (script_json)
    data = {
        "title": title,
        "layers": n_layers,
        "heads": n_heads,
        "variants": list(VARIANTS),
        "examples": examples,
        "info": info,
    }
    return render("heads.html.j2", title=f"Attention patterns: {title}", heading=title, data=data)


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
