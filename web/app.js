// app.js - the layerlens page: similarity by layer, self-similarity by layer
// and benchmark runs, all through the public HTTP API of the server that
// serves this page (same origin, no other network access).
import { lineChart } from './chart.js';

const MODELS = {
  gpt2: { name: 'GPT-2', color: '#d9480f' },
  clip: { name: 'CLIP', color: '#1864ab' },
};

// Published values of Wolfe & Caliskan (ACL 2022) for the 12-layer models.
// layers: one value per layer from 0; best: the best layer's score; max/min:
// a bound over every layer; at: {layer: value}.
const PAPER = {
  selfsim_words: {
    gpt2: { layers: [0.659, 0.737, 0.661, 0.629, 0.588, 0.573, 0.552, 0.551, 0.565, 0.588, 0.633, 0.770, 0.964] },
    clip: { layers: [0.159, 0.149, 0.127, 0.080, 0.057], max: 0.25 },
  },
  rg65: { clip: { best: 0.88 } },
  stsb: { clip: { best: 0.73 }, gpt2: { max: 0.45 } },
  selfsim_sentences: { clip: { at: { 12: 0.25 } }, gpt2: { min: 0.97 } },
};
const PAPER_LAYERS = 12;

const METRIC_LABEL = {
  spearman: 'Spearman ρ',
  pearson: 'Pearson r',
  self_similarity: 'mean pairwise cosine',
};

const $ = sel => document.querySelector(sel);

function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== false && v != null) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}

// ---- talking to the server ----

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error.message : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

// A server started with --api-key answers 401 without the key: the page
// asks for it once and keeps it for this tab only (sessionStorage).
const KEY_ITEM = 'layerlens-api-key';
const keyWaiters = [];

function needKey(wrong) {
  $('#key-form').hidden = false;
  $('#key-note').textContent = wrong ? 'that key was refused; try again' : 'this server needs an API key';
  $('#key-input').focus();
  return new Promise(resolve => keyWaiters.push(resolve));
}

function useKey(ev) {
  ev.preventDefault();
  sessionStorage.setItem(KEY_ITEM, $('#key-input').value.trim());
  $('#key-form').hidden = true;
  for (const resolve of keyWaiters.splice(0)) resolve();
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const key = sessionStorage.getItem(KEY_ITEM);
  if (key) init.headers.Authorization = `Bearer ${key}`;
  const res = await fetch(path, init);
  const type = res.headers.get('Content-Type') || '';
  const data = type.startsWith('application/json') ? await res.json() : await res.text();
  if (res.status === 401) {
    await needKey(!!key);
    return api(method, path, body);
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return { data, res };
}

function showError(box, err) {
  box.replaceChildren(h('p', { class: 'error', role: 'alert' }, err.message || String(err)));
}

// ---- models ----

const state = { models: [], benchmarks: [], job: null };

function selectedModels() {
  return state.models.filter(m => $(`#use-${m.id}`)?.checked).map(m => m.id);
}

function modelInfo(id) {
  return state.models.find(m => m.id === id);
}

async function loadModels() {
  const status = $('#status');
  for (;;) {
    try {
      const { data } = await api('GET', '/v1/models');
      if (data.data.every(m => m.ready)) {
        state.models = data.data;
        break;
      }
      status.textContent = 'loading models…';
    } catch (err) {
      status.textContent = `cannot reach the server: ${err.message}`;
    }
    await new Promise(r => setTimeout(r, 1000));
  }
  const picks = $('#model-picks');
  picks.replaceChildren();
  for (const m of state.models) {
    const info = MODELS[m.id] || { name: m.id, color: '#555' };
    picks.append(h('label', { class: 'pick' },
      h('input', { type: 'checkbox', id: `use-${m.id}`, checked: true }),
      h('span', { class: 'swatch', 'data-model': m.id }), h('span', {}, info.name),
      h('small', {}, `${m.layers} layers × ${m.width}${m.demo ? ', demo weights' : ''}`)));
  }
  status.textContent = state.models.some(m => m.demo)
    ? 'ready — demo (random) weights: numbers show the mechanics, not the models'
    : 'ready';
}

// ---- methods: how a text becomes one vector ----

// The paper's methods (see docs/web.md): a single word takes its last
// subtoken, GPT-2 between two <|endoftext|>; a sentence takes the end token.
function requestOptions(model, method, texts) {
  if (method === 'auto') method = texts.every(t => !/\s/.test(t.trim())) ? 'word' : 'sentence';
  const gpt2 = model === 'gpt2';
  switch (method) {
  case 'word': return { pooling: 'last', bos: gpt2, eos: gpt2 };
  case 'sentence': return { pooling: 'eos', bos: gpt2, eos: gpt2 };
  case 'mean': return { pooling: 'mean', bos: false, eos: false };
  default: return { pooling: 'last', bos: false, eos: false };
  }
}

function withSpecials(model, opts, body) {
  if (model === 'gpt2') Object.assign(body, { bos: opts.bos, eos: opts.eos });
  return body;
}

// ---- token split ----

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8');

// The token pieces of one tokenized input; offsets are byte offsets into
// the UTF-8 text, special tokens have an empty span.
function tokenPieces(input) {
  const bytes = utf8.encode(input.text);
  return input.tokens.map((tok, i) => {
    const [a, b] = input.offsets[i];
    const special = a === b;
    return { tok, id: input.token_ids[i], special, text: special ? tok : fromUtf8.decode(bytes.slice(a, b)) };
  });
}

// Which tokens make the vector for a pooling.
function pooledIndices(pieces, pooling) {
  const text = pieces.map((p, i) => (p.special ? -1 : i)).filter(i => i >= 0);
  if (pooling === 'mean') return new Set(text);
  if (pooling === 'last') return new Set(text.slice(-1));
  const last = text.length ? text[text.length - 1] : -1;
  const eos = pieces.findIndex((p, i) => i > last && p.special);
  return new Set(eos >= 0 ? [eos] : []);
}

function tokenRow(model, input, pooling) {
  const pieces = tokenPieces(input);
  const used = pooledIndices(pieces, pooling);
  return h('div', { class: 'token-row', 'data-model': model },
    h('span', { class: 'token-model' }, MODELS[model]?.name || model),
    h('span', { class: 'token-count' }, `${pieces.length}`),
    h('span', { class: 'tokens' }, pieces.map((p, i) => h('span', {
      class: 'tok' + (p.special ? ' special' : '') + (used.has(i) ? ' pooled' : ''),
      title: `id ${p.id} · ${p.tok}${used.has(i) ? ' · used for the vector' : ''}`,
    }, p.special ? p.text : p.text.replace(/ /g, '␣')))));
}

async function renderTokens(box, perModel) {
  // perModel: [{model, texts, opts}]
  const groups = new Map();
  for (const { model, texts, opts } of perModel) {
    const { data } = await api('POST', '/v1/tokenize', withSpecials(model, opts, { model, input: texts }));
    data.inputs.forEach((inp, i) => {
      if (!groups.has(i)) groups.set(i, { text: inp.text, rows: [] });
      groups.get(i).rows.push(tokenRow(model, inp, opts.pooling));
    });
  }
  box.replaceChildren(...[...groups.values()].map(g =>
    h('div', { class: 'token-group' }, h('div', { class: 'token-text' }, `“${g.text}”`), g.rows)));
}

// ---- tables ----

function fmt(v, digits = 3) {
  return v == null || !isFinite(v) ? '—' : (+v).toFixed(digits);
}

function table(head, rows, cls) {
  return h('table', { class: cls || 'numbers' },
    h('thead', {}, h('tr', {}, head.map(c => h('th', {}, c)))),
    h('tbody', {}, rows.map(r => h('tr', {}, r.map((c, i) => h(i ? 'td' : 'th', {}, c))))));
}

// Numeric layers only; CLIP's "final" / "projected" rows go to the table.
function byLayer(entries, key) {
  return entries.filter(e => Number.isInteger(e.layer)).map(e => ({ x: e.layer, y: e[key] }));
}

// ---- similarity ----

async function runSimilarity(ev) {
  ev.preventDefault();
  const a = $('#sim-a').value, b = $('#sim-b').value, method = $('#sim-method').value;
  const out = $('#sim-out');
  const models = selectedModels();
  if (!models.length) return showError(out, new Error('pick at least one model'));
  out.replaceChildren(h('p', { class: 'muted' }, 'computing…'));
  try {
    const results = await Promise.all(models.map(async model => {
      const opts = requestOptions(model, method, [a, b]);
      const body = withSpecials(model, opts, { model, pairs: [[a, b]], layers: 'all', pooling: opts.pooling });
      const { data } = await api('POST', '/v1/similarity', body);
      return { model, opts, layers: data.data[0].layers };
    }));
    const chart = h('figure', { id: 'sim-chart' });
    chart.append(lineChart({
      title: `cosine(“${a}”, “${b}”) by layer`, xLabel: 'layer', yLabel: 'cosine similarity',
      series: results.map(r => ({ id: r.model, name: MODELS[r.model].name, color: MODELS[r.model].color,
                                  points: byLayer(r.layers, 'cosine') })),
    }));
    const tokens = h('div', { class: 'token-box' });
    out.replaceChildren(chart, layerTable(results, 'cosine', 'cosine'), h('h3', {}, 'Token split'), tokens);
    await renderTokens(tokens, results.map(r => ({ model: r.model, texts: [a, b], opts: r.opts })));
  } catch (err) {
    showError(out, err);
  }
}

// One row per layer key (numbers first, then CLIP's named outputs).
function layerTable(results, key, label, extra) {
  const keys = [];
  for (const r of results) for (const e of r.layers) if (!keys.includes(e.layer)) keys.push(e.layer);
  keys.sort((p, q) => (Number.isInteger(p) ? p : 1e9) - (Number.isInteger(q) ? q : 1e9));
  const head = ['layer'];
  for (const r of results) {
    head.push(`${MODELS[r.model].name} ${label}`);
    if (extra) head.push(`${MODELS[r.model].name} ${extra.label}`);
  }
  const rows = keys.map(k => {
    const row = [String(k)];
    for (const r of results) {
      const e = r.layers.find(x => x.layer === k);
      row.push(fmt(e && e[key]));
      if (extra) row.push(fmt(e && e[extra.key]));
    }
    return row;
  });
  return table(head, rows);
}

// ---- self-similarity ----

async function runSelfSimilarity(ev) {
  ev.preventDefault();
  const items = $('#ss-input').value.split('\n').map(s => s.trim()).filter(Boolean);
  const method = $('#ss-method').value;
  const out = $('#ss-out');
  const models = selectedModels();
  if (!models.length) return showError(out, new Error('pick at least one model'));
  if (items.length < 2) return showError(out, new Error('give at least two lines'));
  out.replaceChildren(h('p', { class: 'muted' }, 'computing…'));
  try {
    const results = await Promise.all(models.map(async model => {
      const opts = requestOptions(model, method, items);
      const body = withSpecials(model, opts, { model, input: items, layers: 'all', pooling: opts.pooling });
      const { data } = await api('POST', '/v1/self-similarity', body);
      return { model, opts, layers: data.layers };
    }));
    const chart = h('figure', { id: 'ss-chart' });
    chart.append(lineChart({
      title: `self-similarity of ${items.length} inputs by layer`, xLabel: 'layer',
      yLabel: 'mean pairwise cosine',
      series: results.map(r => ({ id: r.model, name: MODELS[r.model].name, color: MODELS[r.model].color,
                                  points: byLayer(r.layers, 'self_similarity') })),
    }));
    const tokens = h('div', { class: 'token-box' });
    out.replaceChildren(chart,
      layerTable(results, 'self_similarity', 'self-sim.', { key: 'mean_norm', label: 'mean norm' }),
      h('h3', {}, 'Token split'), tokens);
    await renderTokens(tokens, results.map(r => ({ model: r.model, texts: items, opts: r.opts })));
  } catch (err) {
    showError(out, err);
  }
}

// ---- benchmarks (evaluation jobs) ----

async function loadBenchmarks() {
  const select = $('#bench-task');
  try {
    const { data } = await api('GET', '/v1/benchmarks');
    state.benchmarks = (data.tasks || []).filter(b => b.available !== false);
  } catch (err) {
    $('#bench-out').replaceChildren(h('p', { class: 'muted' },
      `no benchmarks on this server (${err.message})`));
    $('#bench-run').disabled = true;
    return;
  }
  select.replaceChildren(...state.benchmarks.map(b => h('option', {
    value: b.task, title: b.description || '',
  }, `${b.task}${b.n != null ? ` (${b.n} items)` : ''}`)));
  if (!state.benchmarks.length)
    $('#bench-out').replaceChildren(h('p', { class: 'muted' },
      'no benchmark data on this server (start it with --data DIR)'));
  $('#bench-run').disabled = state.benchmarks.length === 0;
}

function setProgress(done, total, text) {
  const bar = $('#bench-progress');
  bar.hidden = false;
  bar.max = total > 0 ? total : 1;
  bar.value = total > 0 ? Math.min(done, total) : 0;
  $('#bench-status').textContent = text;
}

function seconds(ms) {
  return ms == null ? '?' : `${(ms / 1000).toFixed(1)} s`;
}

async function runBenchmark(ev) {
  ev.preventDefault();
  const task = $('#bench-task').value;
  const models = selectedModels();
  const out = $('#bench-out');
  if (!models.length) return showError(out, new Error('pick at least one model'));
  out.replaceChildren();
  $('#bench-run').disabled = true;
  $('#bench-cancel').disabled = false;
  setProgress(0, 0, 'submitting…');
  try {
    const { data, res } = await api('POST', '/v1/evaluations', { tasks: [task], models, layers: 'all' });
    const url = res.headers.get('Location') || `/v1/evaluations/${data.id}`;
    state.job = url;
    const job = await pollJob(url);
    if (job.status === 'done') renderBenchmark(out, task, job.result);
    else if (job.status === 'cancelled') out.replaceChildren(h('p', { class: 'muted' }, 'cancelled'));
    else showError(out, new Error(job.error?.message || job.error || `evaluation ${job.status}`));
  } catch (err) {
    showError(out, err);
    $('#bench-status').textContent = '';
  } finally {
    state.job = null;
    $('#bench-run').disabled = false;
    $('#bench-cancel').disabled = true;
  }
}

async function pollJob(url) {
  for (;;) {
    const { data: job } = await api('GET', url);
    const p = job.progress || {};
    const finished = !['queued', 'running'].includes(job.status);
    const total = p.total || 0, done = job.status === 'done' ? total : p.done || 0;
    const eta = job.estimated_remaining_ms != null ? `, about ${seconds(job.estimated_remaining_ms)} left` : '';
    setProgress(job.status === 'done' ? 1 : done, job.status === 'done' ? 1 : total,
      `${job.status}: ${done} / ${total} texts embedded, ${seconds(job.elapsed_ms)}${finished ? '' : eta}`);
    if (finished) return job;
    await new Promise(r => setTimeout(r, 250));
  }
}

async function cancelBenchmark() {
  if (!state.job) return;
  $('#bench-cancel').disabled = true;
  try {
    await api('DELETE', state.job);
  } catch (err) {
    showError($('#bench-out'), err);
  }
}

// The paper's values for a task and model, as chart series and rules.  Per-
// layer values are drawn only for a model with the paper's layer count.
function paperOverlay(task, model, nLayers) {
  const p = (PAPER[task] || {})[model];
  const series = [], rules = [];
  if (!p) return { series, rules };
  const name = MODELS[model].name, color = MODELS[model].color;
  const comparable = nLayers === PAPER_LAYERS;
  if (p.layers && comparable)
    series.push({ id: `paper-${model}`, name: `${name} (paper)`, color, dashed: true, hollow: true,
                  points: p.layers.map((y, x) => ({ x, y })) });
  if (p.at && comparable)
    series.push({ id: `paper-${model}`, name: `${name} (paper)`, color, dashed: true, hollow: true,
                  points: Object.entries(p.at).map(([x, y]) => ({ x: +x, y })) });
  if (p.best != null) rules.push({ y: p.best, color, label: `paper: ${name} best ${p.best}` });
  if (p.max != null) rules.push({ y: p.max, color, label: `paper: ${name} ≤ ${p.max} at every layer` });
  if (p.min != null) rules.push({ y: p.min, color, label: `paper: ${name} ≥ ${p.min} at every layer` });
  return { series, rules };
}

function paperAt(task, model, layer, nLayers) {
  const p = (PAPER[task] || {})[model];
  if (!p || nLayers !== PAPER_LAYERS) return null;
  if (p.layers && layer < p.layers.length) return p.layers[layer];
  if (p.at && p.at[layer] != null) return p.at[layer];
  return null;
}

function renderBenchmark(out, task, result) {
  const perModel = (result.results || {})[task] || {};
  const models = Object.keys(perModel);
  const series = [], rules = [];
  let metric = null;
  for (const model of models) {
    const r = perModel[model];
    metric = metric || r.metric;
    series.push({ id: model, name: MODELS[model]?.name || model, color: MODELS[model]?.color || '#555',
                  points: byLayer(r.layers, 'score') });
    const ov = paperOverlay(task, model, modelInfo(model)?.layers);
    series.push(...ov.series);
    rules.push(...ov.rules);
  }
  const chart = h('figure', { id: 'bench-chart' });
  chart.append(lineChart({ title: `${task}: ${METRIC_LABEL[metric] || metric} by layer`,
                           xLabel: 'layer', yLabel: METRIC_LABEL[metric] || 'score', series, rules }));

  const layers = [];
  for (const m of models) for (const e of perModel[m].layers) if (!layers.includes(e.layer)) layers.push(e.layer);
  // a "paper" column only where the paper gives per-layer values
  const perLayer = m => { const p = (PAPER[task] || {})[m]; return !!(p && (p.layers || p.at)); };
  const head = ['layer'];
  for (const m of models) head.push(`${MODELS[m]?.name || m}`, '95% CI', ...(perLayer(m) ? ['paper'] : []));
  const rows = layers.map(L => {
    const row = [String(L)];
    for (const m of models) {
      const e = perModel[m].layers.find(x => x.layer === L) || {};
      const best = perModel[m].best_layer === L;
      row.push(e.score == null ? `— ${e.reason || ''}`.trim() : fmt(e.score) + (best ? ' ★' : ''));
      row.push(e.ci ? `${fmt(e.ci[0])} … ${fmt(e.ci[1])}` : '—');
      if (perLayer(m)) row.push(Number.isInteger(L) ? fmt(paperAt(task, m, L, modelInfo(m)?.layers)) : '—');
    }
    return row;
  });
  const notes = models.map(m => {
    const r = perModel[m];
    return h('li', {}, `${MODELS[m]?.name || m}: ${r.n} items${r.variant ? `, method ${r.variant}` : ''}` +
      `${r.best_layer != null ? `, best layer ${r.best_layer} (${fmt(r.best_score ?? (r.layers.find(e => e.layer === r.best_layer) || {}).score)})` : ''}` +
      `${r.skipped && r.skipped.length ? `, ${r.skipped.length} skipped` : ''}`);
  });
  if (models.some(m => perLayer(m) && modelInfo(m)?.layers !== PAPER_LAYERS))
    notes.push(h('li', {}, `The paper's per-layer values are for the ${PAPER_LAYERS}-layer models and are drawn only for them.`));
  out.replaceChildren(chart, table(head, rows), h('ul', { class: 'notes' }, notes),
    h('p', { class: 'muted' }, `took ${seconds(result.timing_ms)}`));
}

// ---- start ----

async function main() {
  $('#sim-form').addEventListener('submit', runSimilarity);
  $('#ss-form').addEventListener('submit', runSelfSimilarity);
  $('#bench-form').addEventListener('submit', runBenchmark);
  $('#bench-cancel').addEventListener('click', cancelBenchmark);
  $('#key-form').addEventListener('submit', useKey);
  await loadModels();
  for (const b of document.querySelectorAll('form button[type=submit]')) b.disabled = false;
  await loadBenchmarks();
  document.body.dataset.ready = 'true';
}

main();
