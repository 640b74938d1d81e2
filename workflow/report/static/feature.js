const SAES = Object.fromEntries(DATA.saes.map(s => [s.key, s]));
function saeLabel(s) { return s.crosscoder ? `crosscoder ${s.recipe.slice('crosscoder.'.length)} ${s.site} L${s.layer} ${s.variant} side` : `${s.recipe} ${s.site} L${s.layer} ${s.variant}`; }
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
// a crosscoder latent is the same latent on both sides: always shown on both variants
function matched(s, r) { return !!(r.match && s.partner_key && r.match.partner >= 0 && (s.crosscoder || SAME.has(r.match.category))); }
const CLASS_NAMES = {shared: 'shared', pretrained_only: 'pretrained only', finetuned_only: 'fine-tuned only'};
function crosscoderLine(s, r) {
  const m = r.match, cls = m.category || 'n/a';
  const scaling = m.nu_error == null ? '' : `; latent scaling &nu;<sub>error</sub> ${num(m.nu_error)}, &nu;<sub>reconstruction</sub> ${num(m.nu_reconstruction)} (${m.robust ? 'robust' : 'may only look specific: Complete Shrinkage or Latent Decoupling'})`;
  return `<p><span class="pill ${cls}">${CLASS_NAMES[cls] || cls}</span> crosscoder latent: decoder norm <b>pretrained ${num(m.norm_pretrained)}</b>, <b>fine-tuned ${num(m.norm_finetuned)}</b> (relative norm ${num(m.relative_norm)}: 0 pretrained only, 1 fine-tuned only); the two decoders' cosine ${num(m.decoder_cos)}${scaling}.</p>
  <p class=note>The latent fires on both variants' activations of the same token together; the examples are shaded by the ${s.variant} variant's contribution to its pre-activation.</p>`;
}
function matchLine(s, r) {
  if (!r.match || !s.partner_key) return '';
  if (s.crosscoder) return crosscoderLine(s, r);
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
const SHORT = {retained: 'ret', drifted: 'drift', overwritten: 'over', new: 'new', dead: 'dead', shared: 'sh', pretrained_only: 'pre', finetuned_only: 'ft'};
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
