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
    "type " + info.type_pretrained + " \u2192 " + info.type_finetuned,
    "JS distance " + info.js_distance];
  for (const k of Object.keys(info)) {
    if (k.endsWith("_delta_loss_pretrained")) {
      const base = k.replace("_delta_loss_pretrained", "");
      parts.push(base.replace("_", " ") + " ablation \u0394loss " + info[k] + " \u2192 " + info[base + "_delta_loss_finetuned"]);
    }
  }
  document.getElementById("info").textContent = parts.join(" \u00b7 ");
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
        s.title = "attention from \"" + e.tokens[query] + "\": " + a.toFixed(3);
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
    o.textContent = "document " + e.doc_id + " (label " + e.label + "): " + e.tokens.slice(0, 8).join(" ") + " \u2026";
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
