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

import argparse
import base64
import html
import json
import logging
from pathlib import Path

import numpy as np
import polars as pl

from workflow import io

log = logging.getLogger(__name__)

VARIANTS = ("pretrained", "finetuned")
TYPE_ABBREV = {"self": "S", "previous": "P", "next": "N", "first": "F", "separator": "Sep", "local": "L",
               "broad": "B", "mixed": "M"}


def load_patterns(folder: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    return io.read_json(folder / "patterns.json"), load_file(str(folder / "patterns.safetensors"))


def js_distance(pre: dict[str, np.ndarray], ft: dict[str, np.ndarray], docs: list) -> np.ndarray:
    """(layers, heads) mean over the query tokens of `docs` of the JS distance between the two patterns."""
    from scipy.spatial.distance import jensenshannon

    total, count = None, 0
    for doc in docs:
        p, q = pre[f"doc{doc}"].astype(np.float64), ft[f"doc{doc}"].astype(np.float64)
        if p.shape != q.shape:
            raise ValueError(f"document {doc}: patterns of shape {p.shape} and {q.shape}; the variants saw different tokens")
        d = np.nan_to_num(jensenshannon(p, q, base=2, axis=-1))  # (layers, heads, queries)
        total = d.sum(-1) if total is None else total + d.sum(-1)
        count += d.shape[-1]
    if not count:
        raise ValueError("no pattern documents in common: both variants' heads stages must use the same tokens and seed")
    return total / count


def collect(dirs: dict[str, Path]) -> dict[str, pl.DataFrame]:
    tables = {}
    for name in ("heads", "ablation"):
        tables[name] = pl.concat([pl.read_parquet(dirs[v] / f"{name}.parquet").with_columns(variant=pl.lit(v))
                                  .select("variant", pl.exclude("variant")) for v in VARIANTS], how="vertical_relaxed")
    return tables


def changes(tables: dict[str, pl.DataFrame], js: np.ndarray) -> pl.DataFrame:
    heads = tables["heads"]
    types = heads.pivot(on="variant", index=["layer", "head"], values="type")
    out = types.rename({v: f"type_{v}" for v in VARIANTS}).with_columns(
        js_distance=pl.Series([float(js[l - 1, h]) for l, h in zip(types["layer"], types["head"])]))
    ablation = tables["ablation"]
    for (measure, mode), part in ablation.group_by(["measure", "mode"], maintain_order=True):
        wide = part.pivot(on="variant", index=["layer", "head"], values="delta_loss").rename(
            {v: f"{measure}_{mode}_delta_loss_{v}" for v in VARIANTS})
        out = out.join(wide, on=["layer", "head"], how="left").with_columns(
            (pl.col(f"{measure}_{mode}_delta_loss_finetuned") - pl.col(f"{measure}_{mode}_delta_loss_pretrained"))
            .alias(f"{measure}_{mode}_delta_loss_change"))
    return out.sort("layer", "head")


def _grid(table: pl.DataFrame, column: str, n_layers: int, n_heads: int) -> np.ndarray:
    grid = np.full((n_layers, n_heads), np.nan)
    for layer, head, value in table.select("layer", "head", column).iter_rows():
        grid[layer - 1, head] = np.nan if value is None else value
    return grid


def plots(tables: dict[str, pl.DataFrame], change: pl.DataFrame, title: str, n_docs: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_layers, n_heads = int(change["layer"].max()), int(change["head"].max()) + 1
    ablation = tables["ablation"]
    rows = ablation.select("measure", "mode").unique(maintain_order=True).rows()
    width = max(4.0, 0.45 * n_heads + 1.5)
    fig, axes = plt.subplots(len(rows), 2, figsize=(2 * width, 0.4 * n_layers * len(rows) + 1.2 * len(rows) + 0.6),
                             squeeze=False)
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
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=110)
    plt.close(fig)

    grid = _grid(change, "js_distance", n_layers, n_heads)
    fig, ax = plt.subplots(figsize=(width + 1.5, 0.5 * n_layers + 1.6))
    image = ax.imshow(grid, cmap="viridis", vmin=0, aspect="auto")
    labels = {(l, h): (a, b) for l, h, a, b in change.select("layer", "head", "type_pretrained", "type_finetuned").iter_rows()}
    for (layer, head), (before, after) in labels.items():
        text = TYPE_ABBREV.get(before, before) if before == after else f"{TYPE_ABBREV.get(before, before)}>{TYPE_ABBREV.get(after, after)}"
        value = grid[layer - 1, head]
        ax.text(head, layer - 1, text, ha="center", va="center", fontsize=6,
                color="white" if value < 0.6 * np.nanmax(grid) else "black")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers), [str(l + 1) for l in range(n_layers)])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(image, ax=ax, fraction=0.04, label="Jensen-Shannon distance")
    legend = ", ".join(f"{v}={k}" for k, v in TYPE_ABBREV.items())
    ax.set_title(f"{title}: attention pattern change per head\n(types before>after: {legend})", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pattern_change.png", dpi=110)
    plt.close(fig)


def _encode(pattern: np.ndarray) -> str:
    """Attention (layers, heads, T, T) as base64 of uint8 = round(255 * weight)."""
    return base64.b64encode(np.clip(np.rint(pattern.astype(np.float32) * 255), 0, 255).astype(np.uint8).tobytes()).decode()


def viewer(meta: list[dict], patterns: dict[str, dict], change: pl.DataFrame, n_examples: int, title: str) -> str:
    """patterns.html: data and script inline, nothing fetched."""
    n_layers, n_heads = int(change["layer"].max()), int(change["head"].max()) + 1
    examples = []
    for doc in meta[:n_examples]:
        examples.append({"doc_id": doc["doc_id"], "label": doc["label"], "tokens": doc["tokens"],
                         **{v: _encode(patterns[v][f"doc{doc['doc_id']}"]) for v in VARIANTS}})
    info = {}
    for row in change.iter_rows(named=True):
        info[f"{row['layer']}:{row['head']}"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
    data = {"title": title, "layers": n_layers, "heads": n_heads, "variants": list(VARIANTS), "examples": examples,
            "info": info}
    return VIEWER.replace("__TITLE__", html.escape(title)).replace("__DATA__", json.dumps(data).replace("</", "<\\/"))


VIEWER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Attention patterns: __TITLE__</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.2em;color:#222}
h1{font-size:1.25em} .row{display:flex;gap:2em;flex-wrap:wrap}
.panel{flex:1;min-width:320px} .tokens{display:flex;flex-wrap:wrap;gap:3px;border:1px solid #ccc;padding:.5em;min-height:3em}
.tok{padding:2px 3px;cursor:default;border-radius:3px}
.tok.q{outline:2px solid #d62728}
#grid td{width:22px;height:18px;font-size:10px;text-align:center;cursor:pointer;color:#fff}
#grid td.sel{outline:2px solid #d62728} #grid th{font-weight:normal;font-size:11px;color:#555}
#info{margin:.6em 0;color:#333} canvas{border:1px solid #ccc;image-rendering:pixelated;margin-top:.5em}
</style></head><body>
<h1>Attention patterns: __TITLE__</h1>
<p>Click a head (colour: Jensen-Shannon distance between the variants' patterns). Hover a token: every token is
shaded by the attention it receives from the hovered one (the query; darkest = that query's largest weight, the
value on hover). Below, the full pattern: rows are queries, columns keys, darkest = the pattern's largest weight.</p>
<p><label>Example <select id="example"></select></label></p>
<table id="grid"></table>
<div id="info"></div>
<div class="row" id="panels"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const cache = {};
let layer = 1, head = 0, ex = 0, query = null;
function weights(e, v) {
  const key = e + ":" + v;
  if (!cache[key]) {
    const raw = atob(D.examples[e][v]);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    cache[key] = out;
  }
  return cache[key];
}
function at(w, n, q, k) { return w[(((layer - 1) * D.heads + head) * n + q) * n + k] / 255; }
function render() {
  const e = D.examples[ex], n = e.tokens.length;
  const info = D.info[layer + ":" + head] || {};
  const parts = ["layer " + layer + ", head " + head,
    "type " + info.type_pretrained + " \\u2192 " + info.type_finetuned,
    "JS distance " + info.js_distance];
  for (const k of Object.keys(info)) {
    if (k.endsWith("_delta_loss_pretrained")) {
      const base = k.replace("_delta_loss_pretrained", "");
      parts.push(base.replace("_", " ") + " ablation \\u0394loss " + info[k] + " \\u2192 " + info[base + "_delta_loss_finetuned"]);
    }
  }
  document.getElementById("info").textContent = parts.join(" \\u00b7 ");
  const panels = document.getElementById("panels");
  panels.innerHTML = "";
  for (const v of D.variants) {
    const w = weights(ex, v);
    const div = document.createElement("div");
    div.className = "panel";
    const h = document.createElement("h3");
    h.textContent = v;
    div.appendChild(h);
    const box = document.createElement("div");
    box.className = "tokens";
    let rowMax = 1e-9, allMax = 1e-9;
    for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) {
      const a = at(w, n, q, k);
      allMax = Math.max(allMax, a);
      if (q === query) rowMax = Math.max(rowMax, a);
    }
    e.tokens.forEach((t, k) => {
      const s = document.createElement("span");
      s.className = "tok" + (k === query ? " q" : "");
      s.textContent = t;
      if (query !== null) {
        const a = at(w, n, query, k);
        s.style.background = "rgba(31,119,180," + (a / rowMax).toFixed(3) + ")";
        s.title = "attention from \\"" + e.tokens[query] + "\\": " + a.toFixed(3);
      }
      s.onmouseenter = () => { query = k; render(); };
      box.appendChild(s);
    });
    div.appendChild(box);
    const c = document.createElement("canvas");
    const px = Math.max(2, Math.floor(240 / n));
    c.width = n * px; c.height = n * px;
    const g = c.getContext("2d");
    for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) {
      const a = at(w, n, q, k);
      g.fillStyle = "rgba(31,119,180," + (a / allMax).toFixed(3) + ")";
      g.fillRect(k * px, q * px, px, px);
    }
    if (query !== null) { g.strokeStyle = "#d62728"; g.strokeRect(0, query * px, n * px, px); }
    div.appendChild(c);
    panels.appendChild(div);
  }
  for (const td of document.querySelectorAll("#grid td")) {
    td.classList.toggle("sel", +td.dataset.layer === layer && +td.dataset.head === head);
  }
}
function build() {
  const sel = document.getElementById("example");
  D.examples.forEach((e, i) => {
    const o = document.createElement("option");
    o.value = i;
    o.textContent = "document " + e.doc_id + " (label " + e.label + "): " + e.tokens.slice(0, 8).join(" ") + " \\u2026";
    sel.appendChild(o);
  });
  sel.onchange = () => { ex = +sel.value; query = null; render(); };
  const grid = document.getElementById("grid");
  let top = 0;
  for (const k in D.info) top = Math.max(top, D.info[k].js_distance || 0);
  const hr = document.createElement("tr");
  hr.innerHTML = "<th></th>" + Array.from({length: D.heads}, (_, h) => "<th>" + h + "</th>").join("");
  grid.appendChild(hr);
  for (let l = 1; l <= D.layers; l++) {
    const tr = document.createElement("tr");
    tr.innerHTML = "<th>L" + l + "</th>";
    for (let h = 0; h < D.heads; h++) {
      const td = document.createElement("td");
      const js = (D.info[l + ":" + h] || {}).js_distance || 0;
      td.style.background = "rgba(68,1,84," + (0.15 + 0.85 * js / (top || 1)).toFixed(3) + ")";
      td.title = "layer " + l + " head " + h + ": JS distance " + js;
      td.dataset.layer = l; td.dataset.head = h;
      td.onclick = () => { layer = l; head = h; render(); };
      tr.appendChild(td);
    }
    grid.appendChild(tr);
  }
  render();
}
// a link may pick the head, example and query: patterns.html#layer=5&head=6&example=0&query=3
for (const part of location.hash.slice(1).split("&")) {
  const [k, v] = part.split("=");
  if (k === "layer" && +v >= 1 && +v <= D.layers) layer = +v;
  if (k === "head" && +v >= 0 && +v < D.heads) head = +v;
  if (k === "example" && +v >= 0 && +v < D.examples.length) ex = +v;
  if (k === "query" && v !== "" && +v >= 0) query = +v;
}
if (D.examples.length) { build(); document.getElementById("example").value = ex; } else document.body.appendChild(document.createTextNode("No example documents."));
</script></body></html>
"""


def run(pretrained_dir: str, finetuned_dir: str, n_examples: int, title: str, out_dir: str) -> dict:
    dirs = {"pretrained": Path(pretrained_dir), "finetuned": Path(finetuned_dir)}
    tables = collect(dirs)
    loaded = {v: load_patterns(dirs[v]) for v in VARIANTS}
    meta = loaded["pretrained"][0]
    common = [d["doc_id"] for d in meta if d["doc_id"] in {m["doc_id"] for m in loaded["finetuned"][0]}]
    js = js_distance(loaded["pretrained"][1], loaded["finetuned"][1], common)
    change = changes(tables, js)
    n_docs = io.read_json(dirs["finetuned"] / "heads.json")["n_docs"]
    out = Path(out_dir)
    with io.atomic_dir(out) as tmp:
        tables["heads"].write_parquet(tmp / "heads.parquet")
        tables["ablation"].write_parquet(tmp / "ablation.parquet")
        change.write_parquet(tmp / "changes.parquet")
        plots(tables, change, title, n_docs, tmp)
        page = viewer([d for d in meta if d["doc_id"] in common], {v: loaded[v][1] for v in VARIANTS}, change,
                      n_examples, title)
        (tmp / "patterns.html").write_text(page)
    top = change.sort("js_distance", descending=True).head(3)
    log.info("%s: %d pattern documents; most changed heads %s", out_dir, len(common),
             ", ".join(f"L{l}H{h} ({d:.3f})" for l, h, d in top.select("layer", "head", "js_distance").iter_rows()))
    return {"pattern_docs": len(common)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow heads_summary", description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True, help="heads folder of the pretrained variant")
    parser.add_argument("--finetuned", required=True, help="heads folder of the fine-tuned variant")
    parser.add_argument("--examples", type=int, default=3, help="example documents in patterns.html")
    parser.add_argument("--title", required=True)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    run(args.pretrained, args.finetuned, args.examples, args.title, args.out_dir)
