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
