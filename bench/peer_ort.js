// peer_ort.js - the ONNX Runtime peer of `make bench` (npm onnxruntime-node, CPU).
//
// Runs the ONNX export of bench/peer_torch.py's module (every hidden state,
// plus CLIP's projection) on the token ids layerlens produced.
//
//   node peer_ort.js verify --onnx F --ids F --dump F --count K --width C --layers L [--proj P]
//       the first K sequences as one right-padded batch, against `llbench
//       dump` (must agree within 1e-4)
//   node peer_ort.js bench --onnx F --ids F [--batch 64] [--latency K] [--arch gpt2|clip]
//       every sequence in right-padded batches of --batch (file order), or K
//       single-sequence calls; prints one JSON object.
//
// Settings: intra-op threads 2 (the machine's cores), inter-op 1, all graph
// optimisations; spinning left at ONNX Runtime's default.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const a = { cmd: argv[0], batch: 64, latency: 0, count: 8, tol: 1e-4, threads: 2, proj: 0 };
  for (let i = 1; i + 1 < argv.length; i += 2) a[argv[i].replace(/^--/, '')] = argv[i + 1];
  for (const k of ['batch', 'latency', 'count', 'tol', 'threads', 'width', 'layers', 'proj'])
    if (a[k] !== undefined) a[k] = Number(a[k]);
  return a;
}

function readIds(path) {
  return fs.readFileSync(path, 'utf8').split('\n').filter((l) => l.trim())
    .map((l) => l.trim().split(/\s+/).map(Number));
}

// Right-padded [B, T] int64 tensor (pad id 0; see peer_torch.py).
function padded(seqs) {
  const T = Math.max(...seqs.map((s) => s.length));
  const data = new BigInt64Array(seqs.length * T);
  seqs.forEach((s, i) => s.forEach((id, t) => { data[i * T + t] = BigInt(id); }));
  return new ort.Tensor('int64', data, [seqs.length, T]);
}

async function session(path, threads) {
  return ort.InferenceSession.create(path, {
    intraOpNumThreads: threads, interOpNumThreads: 1,
    graphOptimizationLevel: 'all', executionMode: 'sequential',
  });
}

// The service's default embedding: GPT-2's last layer at the last text token
// (before the trailing <|endoftext|>), CLIP's projection.
function defaultEmbedding(sess, out, seqs) {
  const names = sess.outputNames;
  if (names.includes('projected')) return out.projected.data.slice();
  const last = out[names[names.length - 1]];
  const [, T, C] = last.dims;
  return seqs.map((s, i) => last.data.slice((i * T + s.length - 2) * C, (i * T + s.length - 1) * C));
}

async function verify(a) {
  const sess = await session(a.onnx, a.threads);
  const seqs = readIds(a.ids).slice(0, a.count);
  const ref = new Float32Array(fs.readFileSync(a.dump).buffer.slice(0));
  const out = await sess.run({ input_ids: padded(seqs) });
  const T = Math.max(...seqs.map((s) => s.length));
  const C = a.width;
  let o = 0; let worst = 0;
  seqs.forEach((s, i) => {
    for (let l = 0; l <= a.layers; l++) {
      const h = out[`hidden_${l}`].data;
      for (let t = 0; t < s.length; t++)
        for (let c = 0; c < C; c++) worst = Math.max(worst, Math.abs(h[(i * T + t) * C + c] - ref[o++]));
    }
    if (a.proj) {
      const p = out.projected.data;
      for (let c = 0; c < a.proj; c++) worst = Math.max(worst, Math.abs(p[i * a.proj + c] - ref[o++]));
    }
  });
  console.log(JSON.stringify({ peer: 'onnxruntime', sequences: seqs.length, max_abs_diff: worst }));
  if (!(worst <= a.tol)) {
    console.error(`peer_ort: states differ from layerlens by ${worst} (> ${a.tol})`);
    process.exit(1);
  }
}

async function bench(a) {
  const sess = await session(a.onnx, a.threads);
  const seqs = readIds(a.ids);
  const now = () => Number(process.hrtime.bigint()) / 1e9;
  const res = { peer: 'onnxruntime', ort: ort.env.versions.common, arch: a.arch, threads: a.threads };
  if (a.latency) {
    const calls = Array.from({ length: a.latency }, (_, i) => seqs[i % seqs.length]);
    for (const s of calls.slice(0, 3)) defaultEmbedding(sess, await sess.run({ input_ids: padded([s]) }), [s]);
    const lat = [];
    for (const s of calls) {
      const t0 = now();
      defaultEmbedding(sess, await sess.run({ input_ids: padded([s]) }), [s]);
      lat.push(now() - t0);
    }
    lat.sort((x, y) => x - y);
    Object.assign(res, {
      calls: lat.length, p50_ms: 1e3 * lat[Math.floor(lat.length / 2)],
      p99_ms: 1e3 * lat[Math.min(lat.length - 1, Math.ceil(0.99 * lat.length) - 1)],
    });
  } else {
    const batches = [];
    for (let i = 0; i < seqs.length; i += a.batch) batches.push(seqs.slice(i, i + a.batch));
    defaultEmbedding(sess, await sess.run({ input_ids: padded(batches[0]) }), batches[0]); // warm-up
    let paddedTokens = 0;
    const t0 = now();
    for (const b of batches) {
      const x = padded(b);
      paddedTokens += x.size;
      defaultEmbedding(sess, await sess.run({ input_ids: x }), b);
    }
    const dt = now() - t0;
    Object.assign(res, {
      sequences: seqs.length, batch: a.batch, seconds: dt, seqs_per_s: seqs.length / dt,
      tokens: seqs.reduce((n, s) => n + s.length, 0), padded_tokens: paddedTokens,
    });
  }
  console.log(JSON.stringify(res));
}

const a = parseArgs(process.argv.slice(2));
({ verify, bench })[a.cmd](a).catch((e) => { console.error(`peer_ort: ${e.stack || e}`); process.exit(1); });
