// serve.mjs - what the Node test suites share: start `$BUILD/layerlens serve`
// on a free loopback port with the tiny checkpoints of ../shared/fixtures,
// wait until it is ready, and stop it with SIGTERM (checking that it exits 0).
//
// Like tu_shared() in tests/testutil.h: without ../shared (or
// $LAYERLENS_SHARED) a suite skips, except under CI=true, where that fails.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BUILD = resolve(ROOT, process.env.BUILD || 'build');
export const BINARY = join(BUILD, 'layerlens');

// The shared reference directory, or null (with the reason) when missing.
export function sharedDir() {
  const dir = resolve(ROOT, process.env.LAYERLENS_SHARED || '../shared');
  return existsSync(join(dir, 'fixtures', 'models')) ? dir : null;
}

// For node:test: skips the test (or fails it under CI=true) without shared/.
export function requireShared(t) {
  const dir = sharedDir();
  if (dir) return dir;
  const msg = `reference data not found (../shared or $LAYERLENS_SHARED)`;
  if (process.env.CI === 'true') throw new Error(`${msg}; required under CI=true`);
  t.skip(msg);
  return null;
}

// The options `layerlens serve --help` lists (so a suite can use an option
// only where this build has it).
export function serveOptions() {
  const r = spawnSync(BINARY, ['serve', '--help'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${BINARY} serve --help failed: ${r.stderr}`);
  return new Set(r.stdout.match(/--[a-z0-9-]+/g));
}

// Starts the server; resolves to {url, port, stop(), log()}.  extra: more
// command-line arguments.
export async function startServer(shared, extra = []) {
  const fixtures = join(shared, 'fixtures', 'models');
  const opts = serveOptions();
  const scratch = mkdtempSync(join(tmpdir(), 'layerlens-node-'));
  const args = ['serve', '--host', '127.0.0.1', '--port', '0',
                '--gpt2', join(fixtures, 'gpt2-tiny'), '--clip', join(fixtures, 'clip-tiny')];
  if (opts.has('--data')) args.push('--data', join(shared, 'data', 'benchmarks'));
  if (opts.has('--results-dir')) args.push('--results-dir', join(scratch, 'results'));
  args.push(...extra);
  const child = spawn(BINARY, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', d => { log += d; });
  child.stderr.on('data', d => { log += d; });
  const exited = new Promise(res => child.on('exit', (code, signal) => res({ code, signal })));

  const port = await waitFor(() => {
    const m = log.match(/listening on http:\/\/\S*:(\d+)/);
    return m ? +m[1] : null;
  }, 20000, () => `the server did not start:\n${log}`, exited);
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    try {
      return (await fetch(`${url}/readyz`)).status === 200;
    } catch {
      return false;
    }
  }, 60000, () => `the server did not become ready:\n${log}`, exited);

  return {
    url, port, args,
    log: () => log,
    // SIGTERM, then the exit status (a clean stop is code 0).
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20000);
      const st = await exited;
      clearTimeout(timer);
      rmSync(scratch, { recursive: true, force: true });
      return st;
    },
  };
}

async function waitFor(probe, ms, message, exited) {
  const deadline = Date.now() + ms;
  let gone = null;
  exited.then(st => { gone = st; });
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (gone) throw new Error(`exited (${JSON.stringify(gone)}) - ${message()}`);
    if (Date.now() > deadline) throw new Error(message());
    await new Promise(r => setTimeout(r, 50));
  }
}
