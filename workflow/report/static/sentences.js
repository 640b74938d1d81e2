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
