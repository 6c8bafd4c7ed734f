// contract.test.mjs - api/openapi.yaml against the real server.
//
// 1. The document lints clean with Redocly's strict recommended rules
//    (tests/api/redocly.yaml says which rules are off, and why).
// 2. Every request below goes to `layerlens serve` on loopback (tiny
//    checkpoints); every response must be documented for its operation -
//    status, content type, headers, body - and the body must validate
//    against the schema with every object closed (a field the server sends
//    and the document does not name is an error: the contract is exact).
//    Request bodies of successful cases are validated against the request
//    schema the same way.  Wrong methods must answer 405 with an Allow header
//    that names exactly the documented methods.
// 3. Coverage: every documented operation is exercised with a success, every
//    error status the service has (400 401 404 405 409 413 422 503 504) is seen.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import YAML from 'yaml';

import { ROOT, requireShared, startServer } from '../node/serve.mjs';

const SPEC_FILE = join(ROOT, 'api', 'openapi.yaml');
const spec = YAML.parse(readFileSync(SPEC_FILE, 'utf8'), { uniqueKeys: true });

// ---- schemas ----

// A copy of a schema with every object closed (unevaluatedProperties:
// false unless it says otherwise) and component refs made absolute.
function closed(schema) {
  if (Array.isArray(schema)) return schema.map(closed);
  if (!schema || typeof schema !== 'object') return schema;
  const out = {};
  for (const [k, v] of Object.entries(schema)) {
    if (k === '$ref') out[k] = v.replace('#/components/schemas/', 'openapi#/$defs/');
    else if (['properties', '$defs', 'patternProperties', 'dependentSchemas'].includes(k))
      out[k] = Object.fromEntries(Object.entries(v).map(([n, s]) => [n, closed(s)]));
    else if (['enum', 'const', 'required', 'default', 'examples', 'example', 'description'].includes(k)) out[k] = v;
    else out[k] = closed(v);
  }
  const isObject = out.type === 'object' || (Array.isArray(out.type) && out.type.includes('object')) || out.properties;
  if (isObject && !('additionalProperties' in out) && !('unevaluatedProperties' in out))
    out.unevaluatedProperties = false;
  return out;
}

const ajv = new Ajv2020({ strict: true, strictTypes: false, strictRequired: false, allErrors: true });
addFormats(ajv);
ajv.addVocabulary(['example', 'discriminator', 'xml', 'externalDocs']);
ajv.addSchema({ $id: 'openapi', $defs: closed(spec.components?.schemas || {}) });
const compiled = new Map();

function validator(key, schema) {
  if (!compiled.has(key)) compiled.set(key, ajv.compile(closed(schema)));
  return compiled.get(key);
}

function validate(key, schema, value, what) {
  const v = validator(key, schema);
  if (!v(value)) {
    const errs = v.errors.slice(0, 8).map(e => `  ${e.instancePath || '/'} ${e.message}` +
      (e.params?.unevaluatedProperty ? ` (${e.params.unevaluatedProperty})` : '')).join('\n');
    assert.fail(`${what} does not match ${key}:\n${errs}\n${JSON.stringify(value).slice(0, 600)}`);
  }
}

// A Response / Request Body / Header object, following its $ref.
function deref(o) {
  while (o && o.$ref) {
    assert.match(o.$ref, /^#\//, `external $ref ${o.$ref}`);
    o = o.$ref.slice(2).split('/').reduce((n, p) => n[p.replace(/~1/g, '/').replace(/~0/g, '~')], spec);
  }
  return o;
}

// ---- operations ----

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'];

// The documented path template of a concrete path, or null.
function templateOf(path) {
  const segs = path.split('/');
  let best = null;
  for (const t of Object.keys(spec.paths)) {
    const ts = t.split('/');
    if (ts.length !== segs.length) continue;
    if (ts.every((s, i) => (/^\{.+\}$/.test(s) ? segs[i] !== '' : s === segs[i])))
      if (!best || !t.includes('{')) best = t; // a literal path wins over a template
  }
  return best;
}

const seen = new Set();      // "METHOD template status"
const statuses = new Set();  // every status seen

// Checks one response against the document.  Returns the parsed body.
function checkResponse(method, path, res, text, reqBody) {
  const what = `${method} ${path} -> ${res.status}`;
  const tmpl = templateOf(path);
  const type = (res.headers.get('content-type') || '').split(';')[0].trim();
  const json = type === 'application/json' ? JSON.parse(text) : null;
  statuses.add(res.status);
  if (!tmpl) {
    // an unknown route: 404 with the error body
    assert.equal(res.status, 404, `${what}: path not in the document`);
    validate('Error', { $ref: '#/components/schemas/Error' }, json, what);
    return json;
  }
  const item = spec.paths[tmpl];
  const op = item[method.toLowerCase()] || (method === 'HEAD' ? item.get : null);
  if (!op) {
    assert.equal(res.status, 405, `${what}: ${method} is not documented for ${tmpl}`);
    const documented = METHODS.filter(m => item[m]).map(m => m.toUpperCase());
    if (documented.includes('GET')) documented.push('HEAD');
    const allow = (res.headers.get('allow') || '').split(',').map(s => s.trim()).filter(Boolean);
    assert.deepEqual(allow.sort(), [...new Set(documented)].sort(), `${what}: Allow header`);
    validate('Error', { $ref: '#/components/schemas/Error' }, json, what);
    seen.add(`${method} ${tmpl} 405`);
    return json;
  }
  const code = String(res.status);
  const resp = deref(op.responses[code] || op.responses[`${code[0]}XX`] || op.responses.default);
  assert.ok(resp, `${what}: status not documented for ${method} ${tmpl} (${Object.keys(op.responses)})`);
  seen.add(`${method} ${tmpl} ${res.status}`);
  for (const [name, h] of Object.entries(resp.headers || {})) {
    const v = res.headers.get(name);
    assert.ok(v != null, `${what}: documented header ${name} missing`);
    const hs = deref(h).schema || {};
    if (hs.type === 'integer') assert.match(v, /^\d+$/, `${what}: header ${name}`);
  }
  if (!resp.content) {
    assert.equal(text, '', `${what}: undocumented body`);
    return null;
  }
  assert.ok(resp.content[type], `${what}: content type ${type} not documented (${Object.keys(resp.content)})`);
  const schema = resp.content[type].schema;
  if (json !== null && schema) validate(`${method} ${tmpl} ${code} ${type}`, schema, json, what);
  else if (schema?.type === 'string') assert.equal(typeof text, 'string');
  if (reqBody !== undefined && res.status < 300) {
    const rb = deref(op.requestBody);
    assert.ok(rb, `${what}: a body was sent but none is documented`);
    validate(`${method} ${tmpl} request`, rb.content['application/json'].schema, reqBody, `${what} request body`);
  }
  return json;
}

// ---- talking to the server ----

let server, limited, shared;

async function call(base, method, path, { body, raw, headers } = {}) {
  const init = { method, headers: { ...(headers || {}) } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  } else if (raw !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = raw;
  }
  const res = await fetch(base.url + path, init);
  const text = await res.text();
  return { res, text, json: checkResponse(method, path, res, text, body) };
}

// Sends raw bytes and reads the reply (for a Content-Length the client
// never sends the body for).
function rawExchange(port, bytes) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks = [];
    sock.setTimeout(10000, () => { sock.destroy(); reject(new Error('timeout')); });
    sock.on('data', d => chunks.push(d));
    sock.on('error', reject);
    sock.on('close', () => {
      const all = Buffer.concat(chunks).toString('utf8');
      const [head, ...rest] = all.split('\r\n\r\n');
      const lines = head.split('\r\n');
      const headers = new Headers();
      for (const l of lines.slice(1)) { const i = l.indexOf(':'); headers.append(l.slice(0, i), l.slice(i + 1).trim()); }
      resolve({ status: +lines[0].split(' ')[1], headers, text: rest.join('\r\n\r\n') });
    });
    sock.write(bytes);
  });
}

async function expect(base, method, path, status, opts) {
  const r = await call(base, method, path, opts);
  assert.equal(r.res.status, status, `${method} ${path}: ${r.text.slice(0, 300)}`);
  return r.json;
}

before(async t => {
  shared = requireShared(t);
  if (!shared) return;
  server = await startServer(shared);
  // a second server made to refuse: a two-sequence queue whose batches wait
  // 10 s for company, and a 3 s deadline
  limited = await startServer(shared, ['--max-queue', '2', '--max-inputs', '2',
                                       '--max-batch-wait-us', '10000000', '--batch-idle-wait', '--request-timeout-ms', '3000']);
});

after(async () => {
  for (const s of [server, limited]) {
    if (!s) continue;
    const st = await s.stop();
    assert.equal(st.code, 0, `server exit ${JSON.stringify(st)}:\n${s.log()}`);
  }
});

// ---- 1. lint ----

test('api/openapi.yaml is OpenAPI 3.1 and lints clean (redocly, strict recommended rules)', () => {
  assert.match(spec.openapi, /^3\.1\./);
  const bin = join(ROOT, 'tests', 'api', 'node_modules', '.bin', 'redocly');
  const r = spawnSync(bin, ['lint', SPEC_FILE, '--config', join(ROOT, 'tests', 'api', 'redocly.yaml'),
                            '--format', 'stylish'], {
    encoding: 'utf8',
    env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', NO_UPDATE_NOTIFIER: '1' },
  });
  assert.equal(r.status, 0, `redocly lint:\n${r.stdout}\n${r.stderr}`);
  assert.doesNotMatch(r.stdout, /\b(error|warning)\b/);
});

test('every schema in the document compiles (strict JSON Schema 2020-12)', () => {
  for (const name of Object.keys(spec.components.schemas))
    validator(`#/components/schemas/${name}`, { $ref: `#/components/schemas/${name}` });
});

// ---- 2. responses ----

test('probes, metrics, models, the web page', async t => {
  if (!shared) return t.skip('no shared data');
  await expect(server, 'GET', '/healthz', 200);
  await expect(server, 'POST', '/healthz', 405, { body: {} });
  await expect(server, 'GET', '/readyz', 200);
  await expect(server, 'DELETE', '/readyz', 405);
  const m = await call(server, 'GET', '/metrics');
  assert.equal(m.res.status, 200);
  assert.match(m.text, /^# (HELP|TYPE) /m);
  const models = await expect(server, 'GET', '/v1/models', 200);
  assert.deepEqual(models.data.map(x => x.id).sort(), ['clip', 'gpt2']);
  await expect(server, 'PUT', '/v1/models', 405, { body: {} });
  await expect(server, 'GET', '/', 200);
  await expect(server, 'GET', '/web/app.js', 200);
  await expect(server, 'GET', '/web/style.css', 200);
  await expect(server, 'GET', '/web/nothing-here.js', 404);
  await expect(server, 'POST', '/', 405, { body: {} });
  await expect(server, 'GET', '/v1/nothing-here', 404);
});

test('tokenize: success and every error', async t => {
  if (!shared) return t.skip('no shared data');
  const one = await expect(server, 'POST', '/v1/tokenize', 200, { body: { model: 'gpt2', input: 'Hello world' } });
  assert.deepEqual(one.inputs[0].token_ids, [15496, 995]); // GPT-2's ids for "Hello", " world"
  await expect(server, 'POST', '/v1/tokenize', 200, { body: { model: 'gpt2', input: ['a', 'b c'], bos: true, eos: true } });
  await expect(server, 'POST', '/v1/tokenize', 200, { body: { model: 'clip', input: ['naïve café'], truncate: true } });
  await expect(server, 'POST', '/v1/tokenize', 400, { raw: '{"model": "gpt2", "input": ' });
  await expect(server, 'POST', '/v1/tokenize', 400, { raw: Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]) });
  await expect(server, 'POST', '/v1/tokenize', 400, { raw: '{"model": "gpt2", "model": "clip", "input": "x"}' });
  await expect(server, 'POST', '/v1/tokenize', 400, { raw: '[1, 2]' });
  await expect(server, 'POST', '/v1/tokenize', 400, { raw: '{"model": "gpt2", "input": 5}' });
  await expect(server, 'POST', '/v1/tokenize', 400, { raw: '{"model": "gpt2"}' });
  await expect(server, 'POST', '/v1/tokenize', 400, { raw: '{"model": "gpt2", "input": []}' });
  await expect(server, 'POST', '/v1/tokenize', 404, { raw: '{"model": "bert", "input": "x"}' });
  await expect(server, 'GET', '/v1/tokenize', 405);
  await expect(server, 'POST', '/v1/tokenize', 422,
               { raw: JSON.stringify({ model: 'clip', input: 'word '.repeat(100), truncate: false }) });
  await expect(server, 'POST', '/v1/tokenize', 413,
               { raw: JSON.stringify({ model: 'gpt2', input: Array(2049).fill('a') }) });
  // an announced body over --max-body-bytes is refused before it is sent
  const r = await rawExchange(server.port, 'POST /v1/tokenize HTTP/1.1\r\nHost: x\r\n' +
    'Content-Type: application/json\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n');
  assert.equal(r.status, 413);
  checkResponse('POST', '/v1/tokenize', r, r.text);
});

test('embeddings: default, per layer, every pooling, tokens, base64; errors', async t => {
  if (!shared) return t.skip('no shared data');
  await expect(server, 'POST', '/v1/embeddings', 200, { body: { model: 'clip', input: 'a photo of a cat' } });
  await expect(server, 'POST', '/v1/embeddings', 200, { body: { model: 'gpt2', input: ['a', 'b'], normalize: true } });
  const all = await expect(server, 'POST', '/v1/embeddings', 200,
                           { body: { model: 'clip', input: ['x y'], layers: 'all', pooling: 'none', return_tokens: true } });
  assert.ok(all.data[0].layers.length >= 5);
  await expect(server, 'POST', '/v1/embeddings', 200,
               { body: { model: 'clip', input: 'x', layers: ['final', 'projected', 0], pooling: 'mean' } });
  await expect(server, 'POST', '/v1/embeddings', 200,
               { body: { model: 'gpt2', input: 'x', layers: '0,2', pooling: 'eos', bos: true, eos: true } });
  await expect(server, 'POST', '/v1/embeddings', 200,
               { body: { model: 'gpt2', input: 'x', encoding_format: 'base64', user: 'someone' } });
  await expect(server, 'POST', '/v1/embeddings', 400, { raw: '{"model": "gpt2", "input": "x", "pooling": "max"}' });
  await expect(server, 'POST', '/v1/embeddings', 400, { raw: '{"model": "gpt2", "input": "x", "layers": [99]}' });
  await expect(server, 'POST', '/v1/embeddings', 400, { raw: '{"model": "gpt2", "input": ""}' });
  await expect(server, 'POST', '/v1/embeddings', 404, { raw: '{"model": "gpt3", "input": "x"}' });
  await expect(server, 'GET', '/v1/embeddings', 405);
  await expect(server, 'POST', '/v1/embeddings', 422,
               { raw: JSON.stringify({ model: 'clip', input: 'word '.repeat(100), truncate: false }) });
  await expect(server, 'POST', '/v1/embeddings', 413,
               { raw: JSON.stringify({ model: 'gpt2', input: Array(2049).fill('a') }) });
});

test('similarity and self-similarity: success and errors', async t => {
  if (!shared) return t.skip('no shared data');
  const s = await expect(server, 'POST', '/v1/similarity', 200,
                         { body: { model: 'gpt2', pairs: [['cat', 'dog'], ['a', 'b']], layers: 'all', bos: true, eos: true } });
  assert.equal(s.data.length, 2);
  await expect(server, 'POST', '/v1/similarity', 200,
               { body: { model: 'clip', pairs: { source: 'cat', targets: ['dog', 'car'] }, pooling: 'eos' } });
  await expect(server, 'POST', '/v1/similarity', 400, { raw: '{"model": "gpt2", "pairs": [["a"]]}' });
  await expect(server, 'POST', '/v1/similarity', 400, { raw: '{"model": "gpt2", "pairs": [["a", "b"]], "pooling": "none"}' });
  await expect(server, 'POST', '/v1/similarity', 404, { raw: '{"model": "x", "pairs": [["a", "b"]]}' });
  await expect(server, 'GET', '/v1/similarity', 405);
  await expect(server, 'POST', '/v1/similarity', 422,
               { raw: JSON.stringify({ model: 'clip', pairs: [['word '.repeat(100), 'x']], truncate: false }) });
  const ss = await expect(server, 'POST', '/v1/self-similarity', 200,
                          { body: { model: 'clip', input: ['cat', 'dog', 'car'], layers: 'all', pooling: 'last' } });
  assert.equal(ss.n, 3);
  await expect(server, 'POST', '/v1/self-similarity', 400, { raw: '{"model": "clip", "input": ["only one"]}' });
  await expect(server, 'POST', '/v1/self-similarity', 404, { raw: '{"model": "x", "input": ["a", "b"]}' });
  await expect(server, 'GET', '/v1/self-similarity', 405);
  await expect(server, 'POST', '/v1/self-similarity', 413,
               { raw: JSON.stringify({ model: 'gpt2', input: Array(2049).fill('a') }) });
});

test('back-pressure and deadlines: 503 queue full with Retry-After, 504 timeout', async t => {
  if (!shared) return t.skip('no shared data');
  // two sequences fill the queue and wait for company; the deadline answers them
  const first = call(limited, 'POST', '/v1/embeddings', { body: { model: 'gpt2', input: ['a', 'b'] } });
  let depth = 0;
  for (let i = 0; i < 100 && depth !== 2; i++) {
    await new Promise(r => setTimeout(r, 20));
    const m = (await call(limited, 'GET', '/metrics')).text.match(/^layerlens_queue_depth (\d+)/m);
    depth = m ? +m[1] : 0;
  }
  assert.equal(depth, 2, 'the first request is queued');
  const full = await call(limited, 'POST', '/v1/similarity', { body: { model: 'gpt2', pairs: [['c', 'd']] } });
  assert.equal(full.res.status, 503);
  assert.equal(full.json.error.code, 'queue_full');
  const late = await first;
  assert.equal(late.res.status, 504);
});

test('benchmarks and synchronous evaluation (POST /v1/evaluate and /evaluate)', async t => {
  if (!shared) return t.skip('no shared data');
  const b = await expect(server, 'GET', '/v1/benchmarks', 200);
  assert.ok(b.tasks.some(x => x.task === 'rg65' && x.available));
  const r = await expect(server, 'POST', '/v1/evaluate', 200,
                         { body: { tasks: ['rg65'], models: ['gpt2', 'clip'], layers: 'all',
                                   thresholds: { rg65: { clip: -1 } } } });
  assert.equal(r.passed, true);
  assert.equal(r.results.rg65.clip.layers.length, 5);
  await expect(server, 'POST', '/evaluate', 200,
               { body: { tasks: ['selfsim_sentences'], models: ['clip'], method: { sentence: 'mean' } } });
  await expect(server, 'POST', '/v1/evaluate', 200,
               { body: { models: ['gpt2'], pairs: [['cat', 'dog', 1], ['car', 'bus', 2], ['sun', 'moon', 3], ['a', 'b', 4]] } });
  await expect(server, 'POST', '/v1/evaluate', 200, { body: { models: ['clip'], items: ['a cat', 'the dog', 'my car'] } });
  await expect(server, 'POST', '/v1/evaluate', 400, { raw: '{"tasks": ["no_such_task"]}' });
  await expect(server, 'POST', '/v1/evaluate', 400, { raw: '{"tasks": "rg65", "unknown_field": 1}' });
  await expect(server, 'GET', '/v1/evaluate', 405);
  await expect(server, 'GET', '/evaluate', 405);
  await expect(server, 'POST', '/v1/benchmarks', 405, { body: {} });
});

test('evaluation jobs: 202 + Location, progress to done, cancel, 404, 409', async t => {
  if (!shared) return t.skip('no shared data');
  const created = await call(server, 'POST', '/v1/evaluations', { body: { tasks: ['rg65'], models: ['gpt2'] } });
  assert.equal(created.res.status, 202);
  const loc = created.res.headers.get('location');
  assert.equal(loc, `/v1/evaluations/${created.json.id}`);
  let job;
  for (let i = 0; i < 600; i++) {
    job = await expect(server, 'GET', loc, 200);
    if (!['queued', 'running'].includes(job.status)) break;
    await new Promise(r => setTimeout(r, 50));
  }
  assert.equal(job.status, 'done');
  assert.ok(job.result.results.rg65.gpt2);
  await expect(server, 'DELETE', loc, 409); // finished: nothing to cancel
  await expect(server, 'PUT', loc, 405, { body: {} });
  await expect(server, 'GET', '/v1/evaluations/0123456789abcdef0123456789abcdef', 404);
  await expect(server, 'DELETE', '/v1/evaluations/0123456789abcdef0123456789abcdef', 404);
  await expect(server, 'GET', '/v1/evaluations', 405);
  await expect(server, 'POST', '/v1/evaluations', 400, { raw: '{"tasks": ["no_such_task"]}' });

  // a long job (every paper task), cancelled while it runs or waits
  const long = await call(server, 'POST', '/v1/evaluations', { body: { tasks: 'paper', models: ['gpt2', 'clip'] } });
  assert.equal(long.res.status, 202);
  const del = await call(server, 'DELETE', long.res.headers.get('location'));
  assert.ok([200, 202].includes(del.res.status), `cancel: ${del.res.status}`);
  for (let i = 0; i < 600; i++) {
    job = await expect(server, 'GET', long.res.headers.get('location'), 200);
    if (!['queued', 'running'].includes(job.status)) break;
    await new Promise(r => setTimeout(r, 50));
  }
  assert.equal(job.status, 'cancelled');
});

test('--api-key: 401 with WWW-Authenticate without the key, 200 with it; probes stay open', async t => {
  if (!shared) return t.skip('no shared data');
  const key = 'contract-' + Math.random().toString(36).slice(2);
  const locked = await startServer(shared, ['--api-key', key]);
  try {
    const auth = { Authorization: `Bearer ${key}` };
    const no = await expect(locked, 'GET', '/v1/models', 401);
    assert.equal(no.error.code, 'missing_api_key');
    const wrong = await expect(locked, 'POST', '/v1/tokenize', 401,
                               { body: { model: 'gpt2', input: 'x' }, headers: { Authorization: 'Bearer nope' } });
    assert.equal(wrong.error.code, 'invalid_api_key');
    await expect(locked, 'POST', '/evaluate', 401, { body: { tasks: ['rg65'] } });
    await expect(locked, 'GET', '/v1/evaluations/0123456789abcdef0123456789abcdef', 401);
    await expect(locked, 'GET', '/v1/models', 200, { headers: auth });
    await expect(locked, 'POST', '/v1/tokenize', 200, { body: { model: 'clip', input: 'x' }, headers: auth });
    for (const open of ['/healthz', '/readyz', '/metrics', '/', '/web/app.js']) await expect(locked, 'GET', open, 200);
  } finally {
    assert.equal((await locked.stop()).code, 0);
  }
});

test('OPTIONS on every route; CORS headers for allowed origins only; /metrics behind the key', async t => {
  if (!shared) return t.skip('no shared data');
  const key = 'contract-' + Math.random().toString(36).slice(2);
  const origin = 'https://page.example';
  const cors = await startServer(shared, ['--api-key', key, '--metrics-public=0', '--cors-origin', origin]);
  try {
    const preflight = { 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization, content-type' };
    for (const [tmpl, item] of Object.entries(spec.paths)) {
      if (!item.options) continue;
      const path = tmpl.replace('{id}', '0123456789abcdef0123456789abcdef');
      const ok = await call(cors, 'OPTIONS', path, { headers: { Origin: origin, ...preflight } });
      assert.equal(ok.res.status, 204, `OPTIONS ${path}`);
      assert.equal(ok.res.headers.get('access-control-allow-origin'), origin, `OPTIONS ${path}`);
      const documented = METHODS.filter(m => item[m]).map(m => m.toUpperCase());
      if (documented.includes('GET')) documented.push('HEAD');
      const allow = ok.res.headers.get('allow').split(',').map(x => x.trim());
      assert.deepEqual(allow.sort(), [...new Set(documented)].sort(), `OPTIONS ${path}: Allow`);
      assert.deepEqual(ok.res.headers.get('access-control-allow-methods').split(',').map(x => x.trim()).sort(), allow);
      const other = await call(cors, 'OPTIONS', path, { headers: { Origin: 'https://other.example', ...preflight } });
      assert.equal(other.res.status, 403);
      assert.equal(other.json.error.code, 'origin_not_allowed');
      assert.equal(other.res.headers.get('access-control-allow-origin'), null);
      const plain = await call(cors, 'OPTIONS', path);
      assert.equal(plain.res.status, 204);
    }
    const models = await call(cors, 'GET', '/v1/models', { headers: { Origin: origin, Authorization: `Bearer ${key}` } });
    assert.equal(models.res.status, 200);
    assert.equal(models.res.headers.get('access-control-allow-origin'), origin);
    assert.equal(models.res.headers.get('vary'), 'Origin');
    await expect(cors, 'GET', '/metrics', 401);
    await expect(cors, 'GET', '/metrics', 200, { headers: { Authorization: `Bearer ${key}` } });
    await expect(cors, 'GET', '/healthz', 200);
  } finally {
    assert.equal((await cors.stop()).code, 0);
  }
});

// ---- 3. coverage ----

test('coverage: every operation succeeded once, every error status was seen', async t => {
  if (!shared) return t.skip('no shared data');
  const missing = [];
  const untested = [];
  for (const [tmpl, item] of Object.entries(spec.paths)) {
    for (const m of METHODS.filter(x => item[x])) {
      const M = m.toUpperCase();
      const codes = Object.keys(item[m].responses);
      if (!codes.some(c => c.startsWith('2') && seen.has(`${M} ${tmpl} ${c}`))) missing.push(`${M} ${tmpl}`);
      for (const c of codes) if (!seen.has(`${M} ${tmpl} ${c}`)) untested.push(`${M} ${tmpl} ${c}`);
    }
  }
  assert.deepEqual(missing, [], 'operations never answered with success');
  for (const s of [400, 401, 404, 405, 409, 413, 422, 503, 504]) assert.ok(statuses.has(s), `status ${s} never seen`);
  t.diagnostic(`${seen.size} documented (operation, status) pairs exercised; not exercised: ${untested.join(', ')}`);
});
