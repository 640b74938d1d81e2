"""The report's feature pages and sentence view: their data files and their two HTML pages.

Per (model, dataset) report folder::

    feature.html                 one page for every feature of every SAE: #sae=<key>&f=<id>
    sentences.html               the sentence view: #doc=<i>&recipe=<name>
    data/features/<key>/index.js the SAE's feature list (id, frequency, best class, top tokens, category)
    data/features/<key>/c<n>.js  features n*CHUNK .. (n+1)*CHUNK-1: every statistic of features.parquet,
                                 the activation histogram, the top and quantile examples with the
                                 activation of every token, and the diff match (partner, category)
    data/sentences.js            every token of the first test documents with the features firing on it,
                                 per SAE

`<key>` is ``<variant>-<site>-L<layer>-<recipe>``. Data files are JavaScript that hand
their payload to ``reportData(name, payload)``: browsers refuse ``fetch`` of local JSON
from ``file://`` pages, but load local scripts, so pages load only the chunk they show.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import polars as pl

from workflow import io
from workflow.report_html import finite, page

CHUNK = 32  # features per data file
EXAMPLE_COLUMNS = ["feature", "kind", "rank", "doc_id", "activation", "center", "tokens", "acts"]
VARIANT_ORDER = {"pretrained": 0, "finetuned": 1}


def sae_key(e: dict) -> str:
    return f"{e['variant']}-{e['site']}-L{e['layer']}-{e['sae']}"


def describe_saes(sae_dirs: list[str]) -> list[dict]:
    """One catalogue entry per SAE folder (eval.json and features.json): the recipe with most SAEs first, then by
    recipe, site, layer and variant."""
    entries = []
    for folder in sae_dirs:
        e, f = io.read_json(Path(folder) / "eval.json"), io.read_json(Path(folder) / "features.json")
        entries.append({"key": sae_key(e), "folder": str(folder), "recipe": e["sae"], "architecture": e["architecture"],
                        "site": e["site"], "layer": e["layer"], "variant": e["variant"], "d_sae": e["d_sae"],
                        "fvu": finite(e["fvu"]), "l0": finite(e["l0"]), "dead": finite(e["dead_fraction"]),
                        "labels": f["label_names"], "concepts": f["concepts"]})
    per_recipe = {r: sum(s["recipe"] == r for s in entries) for r in {s["recipe"] for s in entries}}
    entries.sort(key=lambda s: (-per_recipe[s["recipe"]], s["recipe"], s["site"], s["layer"], VARIANT_ORDER.get(s["variant"], 2)))
    by_place = {}
    for s in entries:
        by_place.setdefault((s["recipe"], s["site"], s["layer"]), {})[s["variant"]] = s["key"]
    for s in entries:
        others = by_place[(s["recipe"], s["site"], s["layer"])]
        s["partner_key"] = next((k for v, k in others.items() if v != s["variant"]), None)
        s["n_chunks"] = -(-s["d_sae"] // CHUNK)
    return entries


def _float_columns_to_null(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col(pl.Float32, pl.Float64).fill_nan(None))


def feature_records(folder: str | Path, labels: list[str], diff: pl.DataFrame | None) -> pl.DataFrame:
    """One row per feature (all of them, dead ones too, in id order) with its examples and diff match."""
    folder = Path(folder)
    table = pl.read_parquet(folder / "features.parquet")
    examples = (pl.read_parquet(folder / "examples.parquet", columns=EXAMPLE_COLUMNS)
                .sort(["feature", "kind", "rank"], descending=[False, True, False])  # top before quantile
                .with_columns(pl.col("activation").round(4), pl.col("acts").list.eval(pl.element().round(3)))
                .group_by("feature", maintain_order=True)
                .agg(pl.struct(EXAMPLE_COLUMNS[1:]).alias("examples")))
    records = (table.with_columns(pl.col("best_class").replace_strict(dict(enumerate(labels)), default=None,
                                                                      return_dtype=pl.Utf8),
                                  pl.col("top_token_means").list.eval(pl.element().round(3)))
               .join(examples, on="feature", how="left", maintain_order="left"))
    records = records.with_columns(pl.col("examples").fill_null(pl.lit([], dtype=records.schema["examples"])))
    if diff is not None:
        match = diff.select("feature", pl.struct("partner", "category", "decoder_cos", "act_corr", "best_cos",
                                                 "delta_frequency").alias("match"))
        records = records.join(match, on="feature", how="left", maintain_order="left")
    return _float_columns_to_null(records).sort("feature")


def feature_index(records: pl.DataFrame) -> dict:
    """The SAE's feature list, column-wise (small enough to load at once)."""
    top = records["top_tokens"].list.head(3).list.join(" ").fill_null("")
    out = {"feature": records["feature"].to_list(), "frequency": records["frequency"].round(6).to_list(),
           "max": records["max_activation"].round(3).to_list(), "best_class": records["best_class"].to_list(),
           "best_auroc": records["best_auroc"].round(3).to_list(), "top": top.to_list()}
    if "match" in records.columns:
        out["category"] = records["match"].struct.field("category").to_list()
        out["partner"] = records["match"].struct.field("partner").to_list()
    return out


def _script(name: str, payload_json: str) -> str:
    return f"reportData({json.dumps(name)},{payload_json});\n"


def write_feature_data(saes: list[dict], diffs: dict[tuple, pl.DataFrame], out: Path) -> None:
    """data/features/<key>/{index.js, c<n>.js} for every SAE; `diffs` maps (recipe, site, layer) to diff.parquet."""
    for s in saes:
        diff = diffs.get((s["recipe"], s["site"], s["layer"]))
        side = diff.filter(pl.col("side") == s["variant"]).drop("side") if diff is not None else None
        records = feature_records(s["folder"], s["labels"], side)
        folder = out / "data/features" / s["key"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.js").write_text(_script(f"features/{s['key']}/index", json.dumps(feature_index(records), allow_nan=False)),
                                     encoding="utf-8")
        lines = records.write_ndjson().splitlines()
        for n in range(s["n_chunks"]):
            body = "[" + ",\n".join(lines[n * CHUNK:(n + 1) * CHUNK]) + "]"
            (folder / f"c{n}.js").write_text(_script(f"features/{s['key']}/c{n}", body), encoding="utf-8")
        s["default_feature"] = default_feature(records)


def default_feature(records: pl.DataFrame) -> int:
    """The feature a page opens on: the live feature most associated with a class."""
    live = records.filter(pl.col("n_active") > 0)
    if not len(live):
        return 0
    return int(live.sort("best_auroc", descending=True, nulls_last=True)["feature"][0])


def sentence_data(saes: list[dict], max_top: int = 3) -> dict:
    """The documents of sentences.parquet (the same for every SAE) and, per SAE, the features on each token."""
    docs, per_sae, names = [], {}, {}
    for s in saes:
        table = pl.read_parquet(Path(s["folder"]) / "sentences.parquet")
        if not docs:
            for doc_id, part in table.group_by("doc_id", maintain_order=True):
                docs.append({"doc_id": int(doc_id[0]), "label": s["labels"][part["label"][0]],
                             "tokens": part["token"].to_list()})
        per_sae[s["key"]] = [[[[f, round(float(a), 3)] for f, a in zip(fs, acts)] for fs, acts in
                              zip(part["features"].to_list(), part["acts"].to_list())]
                             for _, part in table.group_by("doc_id", maintain_order=True)]
        used = sorted({f for doc in per_sae[s["key"]] for tok in doc for f, _ in tok})
        top = (pl.read_parquet(Path(s["folder"]) / "features.parquet", columns=["feature", "top_tokens"])
               .filter(pl.col("feature").is_in(used)))
        names[s["key"]] = {str(f): " ".join((t or [])[:max_top]) for f, t in top.iter_rows()}
    return {"docs": docs, "features": per_sae, "names": names}


def write_sentence_data(saes: list[dict], out: Path) -> dict:
    data = sentence_data(saes)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "data/sentences.js").write_text(_script("sentences", json.dumps(data, allow_nan=False)), encoding="utf-8")
    return data


def catalogue(saes: list[dict]) -> list[dict]:
    keep = ("key", "recipe", "architecture", "site", "layer", "variant", "d_sae", "fvu", "l0", "dead", "labels",
            "concepts", "partner_key", "n_chunks", "default_feature")
    return [{k: s.get(k) for k in keep} for s in saes]


LOADER_JS = r"""
const DATA = JSON.parse(document.getElementById('data').textContent);
const cache = {}, waiting = {}, failing = {};
window.reportData = (name, payload) => { cache[name] = payload; (waiting[name] || []).forEach(f => f(payload)); delete waiting[name]; delete failing[name]; };
function load(name) {
  if (name in cache) return Promise.resolve(cache[name]);
  return new Promise((resolve, reject) => {
    const first = !(name in waiting);
    (waiting[name] = waiting[name] || []).push(resolve);
    (failing[name] = failing[name] || []).push(reject);
    if (!first) return;
    const s = document.createElement('script');
    s.src = 'data/' + name + '.js';
    s.onerror = () => { const all = failing[name] || []; delete waiting[name]; delete failing[name]; all.forEach(f => f(new Error('cannot load ' + s.src))); };
    document.head.appendChild(s);
  });
}
const esc = s => String(s).replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
const num = (x, d = 3) => x === null || x === undefined ? 'n/a' : Number(x).toFixed(d);
function hashParams() { return Object.fromEntries(new URLSearchParams(location.hash.slice(1))); }
function shade(a, max) { const t = max > 0 ? Math.min(a / max, 1) : 0; return t > 0 ? `background:rgba(255,110,0,${(0.1 + 0.8 * t).toFixed(2)})` : ''; }
function tokenSpans(tokens, acts, max, center) {
  return tokens.map((t, i) => `<span class="tok${i === center ? ' center' : ''}" style="${shade(acts[i], max)}" title="${esc(t)}: ${num(acts[i])}">${esc(t)}</span>`).join(' ');
}
"""

FEATURE_CSS = """
body{max-width:110rem}.panel h2{font-size:1.15rem;margin-top:.2rem}.panel h3{font-size:.95rem;margin:.7rem 0 .2rem}
.layout{display:grid;grid-template-columns:25rem 1fr;gap:1rem}#list{max-height:85vh;overflow:auto;font-size:.8rem}
#list table{margin:0}#list tr{cursor:pointer}#list tr.sel{background:#ffe8cc}.panels{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
.panel{border:1px solid #ddd;border-radius:6px;padding:.6rem;min-width:0}.panel.sel{border-color:#f80}
.example{font-family:ui-monospace,monospace;font-size:.8rem;margin:.15rem 0;overflow-wrap:anywhere}
.example .val{display:inline-block;width:3.5rem;color:#666}.tok.center{outline:1px solid #a40}
svg.hist rect{fill:#f80}svg.hist text{font-size:10px;fill:#444}.bar{display:inline-block;height:.7rem;background:#f80}
"""

FEATURE_JS = LOADER_JS + r"""
const SAES = Object.fromEntries(DATA.saes.map(s => [s.key, s]));
function saeLabel(s) { return `${s.recipe} ${s.site} L${s.layer} ${s.variant}`; }
async function feature(key, f) { return (await load(`features/${key}/c${Math.floor(f / DATA.chunk)}`))[f % DATA.chunk]; }
function histogram(r) {
  const h = r.hist_counts || [], w = 300, ht = 80, m = Math.max(1, ...h), bw = w / Math.max(h.length, 1);
  const bars = h.map((c, i) => `<rect x="${(i * bw).toFixed(1)}" y="${(ht - ht * c / m).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${(ht * c / m).toFixed(1)}"><title>${num(i * r.max_activation / h.length)}-${num((i + 1) * r.max_activation / h.length)}: ${c}</title></rect>`).join('');
  return `<svg class="hist activation" width="${w}" height="${ht + 14}" role="img" aria-label="activation histogram">${bars}<text x="0" y="${ht + 12}">0</text><text x="${w}" y="${ht + 12}" text-anchor="end">${num(r.max_activation)}</text></svg>`;
}
function densityPlot(s, r) {
  const idx = cache[`features/${s.key}/index`];
  if (!idx) return '';
  const lo = -6, bins = 24, w = 300, ht = 60, counts = new Array(bins).fill(0);
  const bin = f => Math.min(bins - 1, Math.max(0, Math.floor((Math.log10(f) - lo) / -lo * bins)));
  let dead = 0;
  idx.frequency.forEach(f => { if (f > 0) counts[bin(f)]++; else dead++; });
  const m = Math.max(1, ...counts), bw = w / bins;
  const bars = counts.map((c, i) => `<rect x="${(i * bw).toFixed(1)}" y="${(ht - ht * c / m).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${(ht * c / m).toFixed(1)}"><title>10^${(lo + i * -lo / bins).toFixed(2)}: ${c} features</title></rect>`).join('');
  const x = r.frequency > 0 ? ((bin(r.frequency) + 0.5) * bw).toFixed(1) : null;
  const mark = x ? `<line x1="${x}" x2="${x}" y1="0" y2="${ht}" stroke="#06c" stroke-width="2"></line>` : '';
  return `<svg class="hist density" width="${w}" height="${ht + 14}" role="img" aria-label="feature density">${bars}${mark}<text x="0" y="${ht + 12}">1e-6</text><text x="${w}" y="${ht + 12}" text-anchor="end">1</text></svg>
  <p class=note>log10 firing frequency of the SAE's ${idx.frequency.length} features (${dead} never fire); the blue line is this one.</p>`;
}
function labelTable(s, r) {
  const maxMean = Math.max(1e-12, ...s.labels.map(l => r['mean:' + l] || 0));
  return `<table class="labels"><tr><th>class</th><th>mean activation</th><th>AUROC</th></tr>` + s.labels.map(l =>
    `<tr><td>${esc(l)}</td><td><span class="bar" style="width:${(4 * (r['mean:' + l] || 0) / maxMean).toFixed(2)}rem"></span> ${num(r['mean:' + l], 4)}</td><td>${num(r['auroc:' + l])}</td></tr>`).join('') + '</table>';
}
function conceptTable(s, r) {
  if (!s.concepts.length) return '<p class=note>This dataset has no planted concepts.</p>';
  return `<table class="concepts"><tr><th>concept</th><th>precision</th><th>recall</th><th>F1</th></tr>` + s.concepts.map(c =>
    `<tr><td>${esc(c)}</td><td>${num(r['precision:' + c])}</td><td>${num(r['recall:' + c])}</td><td>${num(r['f1:' + c])}</td></tr>`).join('') + '</table>';
}
function examples(r, kind) {
  const ex = (r.examples || []).filter(e => e.kind === kind);
  if (!ex.length) return '<p class=note>none</p>';
  return ex.map(e => `<div class="example"><span class="val">${kind === 'quantile' ? 'q' + (e.rank + 1) + ' ' : ''}${num(e.activation, 2)}</span>${tokenSpans(e.tokens, e.acts, r.max_activation, e.center)}</div>`).join('');
}
const SAME = new Set(['retained', 'drifted']);
function matched(s, r) { return !!(r.match && s.partner_key && r.match.partner >= 0 && SAME.has(r.match.category)); }
function matchLine(s, r) {
  if (!r.match || !s.partner_key) return '';
  const m = r.match, cat = m.category || 'n/a';
  const partner = matched(s, r) ? `matched to <a href="#sae=${s.partner_key}&f=${m.partner}">${SAES[s.partner_key].variant} feature ${m.partner}</a>, decoder cosine ${num(m.decoder_cos)}, activation correlation ${num(m.act_corr)}` : m.partner >= 0
    ? `no match: the matching paired it with ${SAES[s.partner_key].variant} feature <a href="#sae=${s.partner_key}&f=${m.partner}">${m.partner}</a> (decoder cosine ${num(m.decoder_cos)}), below the threshold or not firing`
    : `no match (best decoder cosine ${num(m.best_cos)})`;
  return `<p><span class="pill ${cat}">${cat}</span> ${partner}</p>`;
}
function panel(s, r, selected) {
  const top = (r.top_tokens || []).map((t, i) => `${esc(t)} (${num(r.top_token_means[i])})`).join(', ') || 'n/a';
  return `<div class="panel${selected ? ' sel' : ''}" data-sae="${s.key}" data-feature="${r.feature}">
  <h2 class="feature-title">${esc(saeLabel(s))}: feature ${r.feature}</h2>${matchLine(s, r)}
  <p class="stats">fires on <b>${num(100 * r.frequency, 2)}%</b> of test tokens (${r.n_active}); mean when active <b>${num(r.mean_active)}</b>; max <b>${num(r.max_activation)}</b></p>
  <h3>Activation histogram (non-zero)</h3>${histogram(r)}
  <h3>Feature density in this SAE</h3>${densityPlot(s, r)}
  <h3>Label association</h3>${labelTable(s, r)}<p class=note>AUROC of the activation as a score for the class, one vs rest over all test tokens (0.5: none).</p>
  <h3>Planted concepts</h3>${conceptTable(s, r)}
  <h3>Top tokens</h3><p>${top}</p>
  <h3>Top examples</h3><div class="examples top">${examples(r, 'top')}</div>
  <h3>Quantile examples</h3><div class="examples quantile">${examples(r, 'quantile')}</div></div>`;
}
const SHORT = {retained: 'ret', drifted: 'drift', overwritten: 'over', new: 'new', dead: 'dead'};
let listKey = null, listRows = [];
let generation = 0;
async function showList(key, f, my = generation) {
  if (listKey !== key) {
    const idx = await load(`features/${key}/index`);
    if (my !== generation) return;
    listKey = key;
    listRows = idx.feature.map((id, i) => ({id, frequency: idx.frequency[i], max: idx.max[i], best_class: idx.best_class[i], best_auroc: idx.best_auroc[i], top: idx.top[i], category: idx.category ? idx.category[i] : null}));
  }
  const order = document.getElementById('sort').value, filter = document.getElementById('filter').value.toLowerCase();
  let rows = listRows.filter(r => !filter || r.top.toLowerCase().includes(filter) || String(r.id) === filter || (r.category || '').startsWith(filter));
  if (order !== 'id') rows = rows.slice().sort((a, b) => (b[order] ?? -1) - (a[order] ?? -1));
  document.getElementById('list').innerHTML = `<table><tr><th>id</th><th>freq</th><th>AUROC</th><th class=l>top tokens</th></tr>` +
    rows.slice(0, 300).map(r => `<tr data-id="${r.id}" class="${r.id === f ? 'sel' : ''}"><td><a href="#sae=${key}&f=${r.id}">${r.id}</a>${r.category ? ` <span class="pill ${r.category}" title="${r.category}">${SHORT[r.category] || r.category}</span>` : ''}</td><td>${num(100 * r.frequency, 2)}%</td><td>${num(r.best_auroc, 2)} ${esc(r.best_class || '')}</td><td class=l>${esc(r.top)}</td></tr>`).join('') + '</table>' +
    (rows.length > 300 ? `<p class=note>${rows.length - 300} more: filter or sort</p>` : '');
}
async function show() {
  const my = ++generation;
  const p = hashParams(), key = SAES[p.sae] ? p.sae : DATA.saes[0].key, s = SAES[key];
  const f = Math.min(Math.max(parseInt(p.f ?? s.default_feature, 10) || 0, 0), s.d_sae - 1);
  document.getElementById('sae').value = key;
  document.getElementById('fid').value = f;
  const r = await feature(key, f);
  await load(`features/${key}/index`);
  const panels = [[s, r, true]];
  if (matched(s, r)) {
    panels.push([SAES[s.partner_key], await feature(s.partner_key, r.match.partner), false]);
    await load(`features/${s.partner_key}/index`);
  }
  if (my !== generation) return;
  panels.sort((a, b) => (a[0].variant === 'pretrained' ? 0 : 1) - (b[0].variant === 'pretrained' ? 0 : 1));
  document.getElementById('view').innerHTML = `<div class="panels">${panels.map(x => panel(...x)).join('')}</div>`;
  document.title = `${saeLabel(s)} feature ${f}`;
  await showList(key, f, my);
}
function go(key, f) { location.hash = `sae=${key}&f=${f}`; }
document.getElementById('sae').innerHTML = DATA.saes.map(s => `<option value="${s.key}">${esc(saeLabel(s))}</option>`).join('');
document.getElementById('sae').onchange = e => go(e.target.value, SAES[e.target.value].default_feature);
document.getElementById('fid').onchange = e => go(document.getElementById('sae').value, e.target.value);
document.getElementById('prev').onclick = () => go(document.getElementById('sae').value, Math.max(0, +document.getElementById('fid').value - 1));
document.getElementById('next').onclick = () => go(document.getElementById('sae').value, +document.getElementById('fid').value + 1);
document.getElementById('sort').onchange = document.getElementById('filter').oninput = () => { if (listKey) showList(listKey, +document.getElementById('fid').value); };
window.addEventListener('hashchange', show);
show().then(() => document.body.dataset.ready = '1');
"""


def feature_page(saes: list[dict], title: str) -> str:
    body = f"""<p><a href="index.html">&larr; report</a> · <a href="sentences.html">sentence view</a></p>
<h1>{html.escape(title)}: SAE features</h1>
<p>SAE <select id="sae"></select> feature <input id="fid" type="number" min="0" style="width:6rem">
<button id="prev">&lsaquo;</button><button id="next">&rsaquo;</button></p>
<div class="layout"><div><p>sort <select id="sort"><option value="best_auroc">class AUROC</option>
<option value="frequency">frequency</option><option value="max">max activation</option><option value="id">id</option></select>
<input id="filter" placeholder="token, id or category" size="14"></p><div id="list"></div></div>
<div id="view"><p class=note>Loading…</p></div></div>
<p class=note>Test tokens of the SAE's own variant. Tokens are shaded by the feature's activation (darkest: its
maximum); hover a token for its value. Matched features (decoder cosine, Hungarian matching in stage diff) are shown
side by side, pretrained left.</p>"""
    return page(f"{title}: features", f"<style>{FEATURE_CSS}</style>" + body, FEATURE_JS,
                {"saes": catalogue(saes), "chunk": CHUNK})


SENTENCE_CSS = """
.layer{display:grid;grid-template-columns:4rem 1fr 1fr;gap:.6rem;border-top:1px solid #ddd;padding:.4rem 0}
.chip{display:inline-block;vertical-align:top;margin:0 .15rem .3rem 0;font-size:.8rem;text-align:center}
.chip .tok{display:block;font-weight:600}.chip a.feat{display:block;font-size:.7rem;color:#333;text-decoration:none}
.chip a.feat:hover{text-decoration:underline}.chip.on{cursor:pointer}
"""

SENTENCE_JS = LOADER_JS + r"""
const SAES = Object.fromEntries(DATA.saes.map(s => [s.key, s]));
let S = null;
const count = r => DATA.saes.filter(s => s.recipe === r).length;
const RECIPES = [...new Set(DATA.saes.map(s => s.recipe))].sort((a, b) => count(b) - count(a));
const ONE_SITE = new Set(DATA.saes.map(s => s.site)).size === 1;
function chips(key, doc, tokens, show) {
  const feats = S.features[key][doc], names = S.names[key];
  const max = Math.max(1e-9, ...feats.map(t => t.length ? t[0][1] : 0));
  return tokens.map((t, i) => {
    const fs = feats[i], top = fs.length ? fs[0][1] : 0;
    const links = fs.slice(0, show).map(([f, a]) => `<a class="feat" href="feature.html#sae=${key}&f=${f}" title="feature ${f}: ${esc(names[f] || '')} (${num(a)})">f${f} ${num(a, 1)}</a>`).join('');
    return `<span class="chip"><span class="tok" style="${shade(top, max)}" title="${esc(t)}: ${fs.map(([f, a]) => 'f' + f + ' ' + num(a)).join(', ') || 'no feature'}">${esc(t)}</span>${links}</span>`;
  }).join('');
}
function render() {
  if (!S.docs.length) { document.getElementById('sentence').innerHTML = '<p class=note>No sentences: features.sentence_docs is 0.</p>'; return; }
  const p = hashParams(), doc = Math.max(0, Math.min(parseInt(p.doc || '0', 10) || 0, S.docs.length - 1));
  const recipes = RECIPES, recipe = recipes.includes(p.recipe) ? p.recipe : recipes[0];
  const show = parseInt(document.getElementById('show').value, 10);
  document.getElementById('doc').value = doc; document.getElementById('recipe').value = recipe;
  const d = S.docs[doc], rows = [];
  const places = [...new Set(DATA.saes.filter(s => s.recipe === recipe).map(s => (ONE_SITE ? '' : s.site + ' ') + 'L' + s.layer))];
  for (const place of places) {
    const cell = v => { const s = DATA.saes.find(s => s.recipe === recipe && (ONE_SITE ? '' : s.site + ' ') + 'L' + s.layer === place && s.variant === v);
      return s ? `<div class="${v}">${chips(s.key, doc, d.tokens, show)}</div>` : '<div class=note>no SAE</div>'; };
    rows.push(`<div class="layer" data-place="${esc(place)}"><div><b>${esc(place)}</b></div>${cell('pretrained')}${cell('finetuned')}</div>`);
  }
  document.getElementById('sentence').innerHTML = `<p>document ${d.doc_id}, label <b>${esc(d.label)}</b></p>
    <div class="layer"><div></div><div><b>pretrained</b></div><div><b>fine-tuned</b></div></div>` + rows.join('');
}
load('sentences').then(data => {
  S = data;
  document.getElementById('doc').innerHTML = S.docs.map((d, i) => `<option value="${i}">${i}: [${esc(d.label)}] ${esc(d.tokens.slice(1, 9).join(' '))}…</option>`).join('');
  document.getElementById('recipe').innerHTML = RECIPES.map(r => `<option>${esc(r)}</option>`).join('');
  const go = () => { location.hash = `doc=${document.getElementById('doc').value}&recipe=${document.getElementById('recipe').value}`; };
  document.getElementById('doc').onchange = go; document.getElementById('recipe').onchange = go;
  document.getElementById('show').onchange = render;
  window.addEventListener('hashchange', render);
  render();
  document.body.dataset.ready = '1';
});
"""


def sentence_page(saes: list[dict], title: str) -> str:
    body = f"""<p><a href="index.html">&larr; report</a> · <a href="feature.html">features</a></p>
<h1>{html.escape(title)}: sentence view</h1>
<p>sentence <select id="doc"></select> SAE recipe <select id="recipe"></select> features per token
<select id="show"><option>1</option><option selected>3</option><option>5</option><option>8</option></select></p>
<div id="sentence"><p class=note>Loading…</p></div>
<p class=note>Each test sentence through the SAEs of both models, layer by layer: under every token, the features
firing on it, strongest first (pretrained SAE on pretrained activations, fine-tuned SAE on fine-tuned ones; feature ids
of the two SAEs are unrelated, the diff's matching pairs them). A token is shaded by its strongest feature. Hover a
feature for its top tokens; click it for its page.</p>"""
    return page(f"{title}: sentences", f"<style>{SENTENCE_CSS}</style>" + body, SENTENCE_JS,
                {"saes": catalogue(saes)})
