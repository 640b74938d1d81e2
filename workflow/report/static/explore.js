// The explorer page: DATA (from the page) lists the study's pairs and SAEs; every answer comes from the app's JSON API.
const $ = id => document.getElementById(id);
const VARIANTS = ['pretrained', 'finetuned'];
const PALETTE = ['#1f77b4', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#ff7f0e', '#7f7f7f', '#d62728'];
let last = null;  // the last analysed request and its answers
const pairOf = () => DATA.pairs[parseInt($('pair').value, 10)];
const saeOf = () => pairOf().saes[parseInt($('sae').value, 10)];

async function api(path, body) {
  const r = await fetch(path, {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  const j = await r.json();
  if (!r.ok) throw new Error(j.error || ('HTTP ' + r.status));
  return j;
}
function status(text, error) { $('status').textContent = text; $('status').className = error ? 'error' : 'note'; }

function fillPairs() {
  $('pair').innerHTML = DATA.pairs.map((p, i) => `<option value="${i}">${esc(p.model)} / ${esc(p.dataset)}</option>`).join('');
  fillSaes();
}
function fillSaes() {
  const p = pairOf();
  $('sae').innerHTML = p.saes.map((s, i) => `<option value="${i}">${esc(s.site)} L${s.layer} ${esc(s.recipe)}</option>`).join('')
    || '<option value="-1">no SAE</option>';
  $('report').href = '/results/' + encodeURI(p.report);
  $('block').innerHTML = Array.from({length: p.blocks}, (_, i) => `<option>${i + 1}</option>`).join('');
  $('head').innerHTML = Array.from({length: p.heads}, (_, i) => `<option>${i}</option>`).join('');
}

function request(text) {
  const p = pairOf(), s = saeOf();
  return {model: p.model, dataset: p.dataset, site: s.site, layer: s.layer, recipe: s.recipe, text,
          top: parseInt($('top').value, 10)};
}
function interventions() {
  const out = {features: {}};
  document.querySelectorAll('input.zero:checked').forEach(box => {
    const v = box.dataset.v, f = parseInt(box.dataset.f, 10);
    const clamp = document.querySelector(`input.clamp[data-v="${v}"][data-f="${f}"]`);
    const change = clamp && clamp.value !== '' ? {feature: f, mode: 'clamp', value: parseFloat(clamp.value)} : {feature: f, mode: 'zero'};
    (out.features[v] = out.features[v] || []).push(change);
  });
  const heads = {};
  for (const v of VARIANTS) {
    const box = $('heads-' + v);
    const list = box ? box.value.split(',').map(x => x.trim()).filter(Boolean) : [];
    // block:head, as the report numbers them (block 1-based, head 0-based); the API's blocks are 0-based
    if (list.length) heads[v] = list.map(x => { const [b, h] = x.split(':').map(Number); return [b - 1, h]; });
  }
  if (Object.keys(heads).length) out.heads = heads;
  return Object.keys(out.features).length || out.heads ? out : null;
}

function predictionHtml(p) {
  if (p.kind === 'classify') return Object.entries(p.probs).map(([k, x]) => `${esc(k)} <b>${num(x)}</b>`).join(' · ');
  if (p.kind === 'causal') return 'next: ' + p.next.map(([t, x]) => `${esc(t)} ${num(x)}`).join(', ') + (p.loss !== undefined ? ` · loss ${num(p.loss)}` : '');
  return p.masks.length ? p.masks.map(m => `[MASK]@${m.position}: ` + m.top.map(([t, x]) => `${esc(t)} ${num(x)}`).join(', ')).join('; ') : 'no [MASK] in the text';
}
function differenceHtml(d) {
  if (d.probs) return Object.entries(d.probs).map(([k, x]) => `${esc(k)} <span class="${x >= 0 ? 'diffpos' : 'diffneg'}">${x >= 0 ? '+' : ''}${num(x, 4)}</span>`).join(' · ');
  if (d.loss !== undefined) return `loss ${d.loss >= 0 ? '+' : ''}${num(d.loss, 4)}`;
  return '';
}
function colours(answer) {
  // a colour per matched pair: the pretrained feature's id keys it on both sides
  const c = {pretrained: {}, finetuned: {}};
  let n = 0;
  for (const [f, p] of Object.entries(answer.variants.pretrained.partners || {})) {
    if (!['retained', 'drifted', 'shared'].includes(p.category)) continue;
    const colour = PALETTE[n++ % PALETTE.length];
    c.pretrained[f] = colour; c.finetuned[p.id] = colour;
  }
  return c;
}
function tokensHtml(answer, v, colour) {
  const s = last.sae, key = encodeURIComponent(`${v}-${s.site}-L${s.layer}-${s.recipe}`);
  const base = '/results/' + encodeURI(last.pair.report.replace(/index\.html$/, ''));
  const feats = answer.variants[v].features;
  const max = Math.max(1e-9, ...feats.map(t => t.length ? t[0][1] : 0));
  return answer.tokens.map((t, i) => {
    const fs = feats[i], top = fs.length ? fs[0][1] : 0;
    const links = fs.map(([f, a]) => {
      const style = colour[v][f] ? ` style="border-left:4px solid ${colour[v][f]}"` : '';
      return `<a class="feat" data-v="${v}" data-f="${f}"${style} href="${base}feature.html#sae=${key}&f=${f}" title="feature ${f} (${num(a)}): click to trace, ctrl-click for its page">f${f} ${num(a, 1)}</a>`;
    }).join('');
    return `<span class="chip"><span class="tok" style="${shade(top, max)}" title="${esc(t)}">${esc(t)}</span>${links}</span>`;
  }).join('');
}
function answerHtml(answer, title) {
  const colour = colours(answer);
  const preds = VARIANTS.map(v => {
    const r = answer.variants[v];
    const after = r.after ? `<br>after: ${predictionHtml(r.after)}<br>change: ${differenceHtml(r.difference)}` : '';
    return `<div class="pred" data-v="${v}"><b>${v}</b>: <span class="prediction">${predictionHtml(r.prediction)}</span>${after}</div>`;
  }).join('');
  const grid = `<div class="layer"><div></div><div><b>pretrained</b></div><div><b>fine-tuned</b></div></div>
    <div class="layer"><div></div>${VARIANTS.map(v => `<div class="${v}">${tokensHtml(answer, v, colour)}</div>`).join('')}</div>`;
  return `<h2>${esc(title)}</h2><div class="preds">${preds}</div>${grid}`;
}
function interventionList(answer) {
  // every feature shown, with a box to zero it and a field to clamp it instead
  const rows = VARIANTS.map(v => {
    const shown = [...new Set(answer.variants[v].features.flat().map(([f]) => f))].sort((a, b) => a - b);
    return `<p><b>${v}</b>: ` + shown.map(f => `<label class="iv">f${f} <input type="checkbox" class="zero" data-v="${v}" data-f="${f}">` +
      `<input class="clamp" data-v="${v}" data-f="${f}" size="3" placeholder="0"></label>`).join(' ') + '</p>';
  }).join('');
  const heads = VARIANTS.map(v => `<p><b>${v}</b>: ablate heads <input id="heads-${v}" size="24" placeholder="block:head, e.g. 2:3, 4:0"></p>`).join('');
  return `<details><summary>Interventions: zero (tick) or clamp (tick and give a value) features, ablate heads, then analyse again</summary>${rows}${heads}</details>`;
}

async function analyse(ev) {
  if (ev) ev.preventDefault();
  const texts = [$('text').value].concat($('pairmode').checked ? [$('text2').value] : []);
  if (saeOf() === undefined) { status('this pair has no SAE of both variants', true); return; }
  const iv = interventions(), kept = iv !== null;
  status('analysing…');
  try {
    const answers = await Promise.all(texts.map(t => api('/api/analyse', {...request(t), interventions: iv})));
    last = {request: request(texts[0]), answers, sae: saeOf(), pair: pairOf()};
    $('results').innerHTML = `<div class="${answers.length > 1 ? 'preds' : ''}">` +
      answers.map((a, i) => `<div>${answerHtml(a, answers.length > 1 ? 'Text ' + (i + 1) : 'Text')}</div>`).join('') + '</div>';
    if (!kept) $('interventions').innerHTML = interventionList(answers[0]);
    status(iv ? 'analysed with the interventions ticked' : 'analysed');
  } catch (e) { status(e.message, true); }
}
async function trace(v, f) {
  try {
    const j = await api('/api/feature', {...last.request, variant: v, feature: f});  // the analysis shown
    const rows = Object.entries(j.acts).map(([w, acts]) => {
      const id = w === v ? f : j.partner.id, max = Math.max(1e-9, ...acts);
      return `<p><b>${w}</b> f${id}: ${tokenSpans(j.tokens, acts, max, -1)}</p>`;
    }).join('');
    const partner = !j.partner ? 'no partner: the diff matched none'
      : `partner f${j.partner.id} (${esc(j.partner.category)}` + (j.partner.decoder_cos === null ? ')' : `, decoder cosine ${num(j.partner.decoder_cos)})`);
    $('trace').innerHTML = `<h2>Feature ${f} of the ${v} SAE across the text</h2><p class="note">${partner}</p>${rows}`;
  } catch (e) { status(e.message, true); }
}
async function attend() {
  const p = pairOf();
  try {
    const j = await api('/api/attention', {model: p.model, dataset: p.dataset, layer: parseInt($('block').value, 10),
                                           head: parseInt($('head').value, 10), text: $('text').value});
    $('attention').innerHTML = `<div class="preds">` + VARIANTS.map(v => {
      const w = j.weights[v];
      const head = '<tr><th></th>' + j.tokens.map(t => `<th>${esc(t)}</th>`).join('') + '</tr>';
      const rows = w.map((r, i) => `<tr><th>${esc(j.tokens[i])}</th>` + r.map(x => `<td style="${shade(x, 1)}" title="${num(x)}"></td>`).join('') + '</tr>').join('');
      return `<div><b>${v}</b><table class="att">${head}${rows}</table></div>`;
    }).join('') + '</div>';
  } catch (e) { status(e.message, true); }
}

$('pair').addEventListener('change', () => { fillSaes(); $('interventions').innerHTML = ''; });
$('sae').addEventListener('change', () => { $('interventions').innerHTML = ''; });
$('pairmode').addEventListener('change', () => { $('second').hidden = !$('pairmode').checked; });
$('query').addEventListener('submit', analyse);
$('attend').addEventListener('click', attend);
$('results').addEventListener('click', ev => {
  const a = ev.target.closest('a.feat');
  if (!a || ev.ctrlKey || ev.metaKey) return;
  ev.preventDefault();
  trace(a.dataset.v, parseInt(a.dataset.f, 10));
});
fillPairs();
