// page.test.mjs - the web page in a real browser: Debian's Chromium, driven
// by playwright-core, against `layerlens serve` on loopback with the tiny
// checkpoints.  Checks that the page loads with no console errors and no
// request leaving the server, that each chart has one point per layer per
// model carrying the numbers the API gives for the same request, that the
// token split is the tokenizer's, and that a benchmark runs as a job to its
// chart and table.  Saves a screenshot as $BUILD/web/page.png.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';

import { BUILD, requireShared, startServer } from '../node/serve.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
               '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const TOL = 1e-6; // the page shows the API's numbers: only JSON round-off may differ

let server, context, page, profile, shared;
const consoleErrors = [];
const foreignRequests = [];

async function api(path, body) {
  const res = await fetch(server.url + path, body === undefined ? {} : {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, `${path}: ${res.status}`);
  return res.json();
}

// {series id: [{x, y}]} of the chart in a figure.
async function chartPoints(figure) {
  return page.$$eval(`${figure} circle.point`, cs => {
    const out = {};
    for (const c of cs) (out[c.dataset.series] ||= []).push({ x: +c.dataset.x, y: +c.dataset.y });
    return out;
  });
}

function assertPointsMatch(points, expected, label) {
  assert.equal(points.length, expected.length, `${label}: one point per layer`);
  expected.forEach((e, i) => {
    assert.equal(points[i].x, e.layer, `${label}: layer order`);
    assert.ok(Math.abs(points[i].y - e.value) <= TOL,
              `${label} layer ${e.layer}: page ${points[i].y} vs API ${e.value}`);
  });
}

before(async t => {
  shared = requireShared(t);
  if (!shared) return;
  server = await startServer(shared);
  profile = mkdtempSync(join(tmpdir(), 'layerlens-chromium-'));
  // A persistent context is the way to give Chromium a fresh profile
  // directory of our own (playwright refuses --user-data-dir in args).
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: FLAGS,
    viewport: { width: 1100, height: 900 },
  });
  page = context.pages()[0] || await context.newPage();
  page.on('console', m => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', e => consoleErrors.push(`uncaught: ${e.message}`));
  page.on('request', r => {
    if (!r.url().startsWith(server.url + '/') && !r.url().startsWith('data:')) foreignRequests.push(r.url());
  });
});

after(async () => {
  if (context) await context.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  if (server) {
    const st = await server.stop();
    assert.equal(st.code, 0, `server exit: ${JSON.stringify(st)}\n${server.log()}`);
  }
});

test('the page loads, lists the served models and enables its forms', async t => {
  if (!shared) return t.skip('no shared data');
  const res = await page.goto(server.url + '/');
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-type'], /^text\/html/);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30000 });
  assert.equal(await page.title(), 'layerlens — what every layer of GPT-2 and CLIP encodes');
  assert.ok(await page.isChecked('#use-gpt2'));
  assert.ok(await page.isChecked('#use-clip'));
  assert.match(await page.textContent('#status'), /^ready/);
  assert.equal(await page.isDisabled('#sim-form button[type=submit]'), false);
});

test('similarity: one point per layer per model, equal to /v1/similarity', async t => {
  if (!shared) return t.skip('no shared data');
  await page.fill('#sim-a', 'cat');
  await page.fill('#sim-b', 'dog');
  await page.selectOption('#sim-method', 'auto');
  await page.click('#sim-form button[type=submit]');
  await page.waitForSelector('#sim-chart svg circle.point', { timeout: 30000 });
  const points = await chartPoints('#sim-chart');
  const models = (await api('/v1/models')).data;
  for (const m of models) {
    // "cat" is one word: the paper's word method (GPT-2 between two
    // <|endoftext|>, the last subtoken; CLIP its last subtoken).
    const body = { model: m.id, pairs: [['cat', 'dog']], layers: 'all', pooling: 'last' };
    if (m.id === 'gpt2') Object.assign(body, { bos: true, eos: true });
    const want = (await api('/v1/similarity', body)).data[0].layers
      .filter(e => Number.isInteger(e.layer)).map(e => ({ layer: e.layer, value: e.cosine }));
    assert.equal(want.length, m.layers + 1);
    assertPointsMatch(points[m.id] || [], want, `similarity ${m.id}`);
  }
  // the table has one row per layer entry
  const rows = await page.$$eval('#sim-out table.numbers tbody tr', rs => rs.length);
  assert.ok(rows >= Math.max(...models.map(m => m.layers + 1)), `table rows ${rows}`);
});

test('token split: each input as the tokenizer splits it, the pooled token marked', async t => {
  if (!shared) return t.skip('no shared data');
  await page.fill('#sim-a', 'Tokenization works');
  await page.fill('#sim-b', 'a dog');
  await page.click('#sim-form button[type=submit]');
  await page.waitForFunction(() =>
    [...document.querySelectorAll('#sim-out .token-text')].some(e => e.textContent.includes('Tokenization')),
    null, { timeout: 30000 });
  const groups = await page.$$eval('#sim-out .token-group', gs => gs.map(g => ({
    text: g.querySelector('.token-text').textContent,
    rows: [...g.querySelectorAll('.token-row')].map(r => ({
      model: r.dataset.model,
      tokens: [...r.querySelectorAll('.tok')].map(s => s.textContent),
      pooled: [...r.querySelectorAll('.tok')].findIndex(s => s.classList.contains('pooled')),
    })),
  })));
  assert.equal(groups.length, 2);
  const tok = await api('/v1/tokenize', { model: 'gpt2', input: ['Tokenization works'], bos: true, eos: true });
  const ids = tok.inputs[0].token_ids;
  const gpt2 = groups[0].rows.find(r => r.model === 'gpt2');
  assert.equal(gpt2.tokens.length, ids.length, 'one chip per GPT-2 token');
  assert.equal(gpt2.tokens[0], '<|endoftext|>');
  assert.equal(gpt2.tokens.slice(1, -1).join('').replace(/␣/g, ' '), 'Tokenization works');
  // a sentence uses the end token (the last one, with bos/eos)
  assert.equal(gpt2.pooled, ids.length - 1);
  const clipTok = await api('/v1/tokenize', { model: 'clip', input: ['Tokenization works'] });
  const clip = groups[0].rows.find(r => r.model === 'clip');
  assert.equal(clip.tokens.length, clipTok.inputs[0].token_ids.length, 'one chip per CLIP token');
  assert.equal(clip.pooled, clipTok.inputs[0].token_ids.indexOf(49407), 'CLIP pools its end token');
});

test('an input the API would refuse is explained on the page', async t => {
  if (!shared) return t.skip('no shared data');
  await page.fill('#ss-input', 'only one line');
  await page.click('#ss-form button[type=submit]');
  await page.waitForSelector('#ss-out .error');
  assert.match(await page.textContent('#ss-out .error'), /two/);
});

test('self-similarity: a list gives one point per layer per model', async t => {
  if (!shared) return t.skip('no shared data');
  const items = ['cat', 'dog', 'car', 'philosophy', 'blue'];
  await page.fill('#ss-input', items.join('\n'));
  await page.click('#ss-form button[type=submit]');
  await page.waitForSelector('#ss-chart svg circle.point', { timeout: 30000 });
  const points = await chartPoints('#ss-chart');
  for (const m of (await api('/v1/models')).data) {
    const body = { model: m.id, input: items, layers: 'all', pooling: 'last' };
    if (m.id === 'gpt2') Object.assign(body, { bos: true, eos: true });
    const want = (await api('/v1/self-similarity', body)).layers
      .filter(e => Number.isInteger(e.layer)).map(e => ({ layer: e.layer, value: e.self_similarity }));
    assert.equal(want.length, m.layers + 1);
    assertPointsMatch(points[m.id] || [], want, `self-similarity ${m.id}`);
  }
});

test('benchmark: runs as an evaluation job with progress, then chart and table', async t => {
  if (!shared) return t.skip('no shared data');
  const task = 'rg65';
  await page.waitForSelector(`#bench-task option[value="${task}"]`, { state: 'attached', timeout: 10000 });
  await page.selectOption('#bench-task', task);
  // record every job status the page polls
  const statuses = [];
  const onResponse = async r => {
    if (/\/v1\/evaluations\/[^/]+$/.test(new URL(r.url()).pathname) && r.request().method() === 'GET')
      statuses.push((await r.json()).status);
  };
  page.on('response', onResponse);
  await page.click('#bench-run');
  await page.waitForSelector('#bench-chart svg circle.point', { timeout: 90000 });
  page.off('response', onResponse);
  assert.equal(statuses.at(-1), 'done');
  assert.equal(await page.isVisible('#bench-progress'), true);
  const [value, max] = await page.$eval('#bench-progress', p => [p.value, p.max]);
  assert.equal(value, max, 'the progress bar is full');

  const points = await chartPoints('#bench-chart');
  const models = (await api('/v1/models')).data;
  for (const m of models) {
    assert.equal((points[m.id] || []).length, m.layers + 1, `${task} ${m.id}: one point per layer`);
    for (const p of points[m.id]) assert.ok(p.y >= -1 && p.y <= 1, `a correlation: ${p.y}`);
  }
  // the paper's CLIP best on RG65 is drawn as a reference line
  const rules = await page.$$eval('#bench-chart .rule text', ts => ts.map(x => x.textContent));
  assert.ok(rules.some(s => s.includes('0.88')), `paper rule: ${rules}`);
  const rows = await page.$$eval('#bench-out table.numbers tbody tr', rs => rs.length);
  assert.equal(rows, Math.max(...models.map(m => m.layers + 1)));
});

test('a server with --api-key: the page asks for the key once, then works', async t => {
  if (!shared) return t.skip('no shared data');
  const key = 'k-' + Math.random().toString(36).slice(2);
  const locked = await startServer(shared, ['--api-key', key]);
  const p = await context.newPage(); // its own page: the 401s it provokes are expected
  try {
    await p.goto(locked.url + '/');
    await p.waitForSelector('#key-form:not([hidden])', { timeout: 30000 });
    await p.fill('#key-input', 'wrong');
    await p.click('#key-form button[type=submit]');
    await p.waitForFunction(() => document.querySelector('#key-note').textContent.includes('refused'));
    await p.fill('#key-input', key);
    await p.click('#key-form button[type=submit]');
    await p.waitForSelector('body[data-ready="true"]', { timeout: 30000 });
    assert.equal(await p.isHidden('#key-form'), true);
    await p.click('#sim-form button[type=submit]');
    await p.waitForSelector('#sim-chart svg circle.point', { timeout: 30000 });
  } finally {
    await p.close();
    assert.equal((await locked.stop()).code, 0);
  }
});

test('no console errors and no request beyond the server; screenshot', async t => {
  if (!shared) return t.skip('no shared data');
  mkdirSync(join(BUILD, 'web'), { recursive: true });
  const file = join(BUILD, 'web', 'page.png');
  await page.screenshot({ path: file, fullPage: true });
  assert.deepEqual(consoleErrors, []);
  assert.deepEqual(foreignRequests, []);
});
