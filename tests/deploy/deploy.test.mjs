// deploy.test.mjs - what can be checked of the container and Kubernetes
// files without a Docker engine or a cluster:
//   - the Dockerfile's build stage builds the same binary with the same
//     commands as the Makefile: its COPY lines and RUN make lines are
//     replayed in a scratch directory and give the same objects and program;
//   - the runtime stage installs the Debian package of every shared library
//     the binary links, runs as a non-root user, health-checks /healthz;
//   - the entrypoint starts the server from the LAYERLENS_* variables, and
//     says what to do when the weights are missing;
//   - docker-compose.yml and the Kubernetes manifests parse, validate against
//     the Kubernetes schemas (kubernetes-models), and reference probe paths,
//     ports, environment variables, Secrets and claims that exist - probe
//     paths checked on a running server.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { test } from 'node:test';
import { parseAllDocuments } from 'yaml';

import { BINARY, BUILD, ROOT, requireShared, startServer } from '../node/serve.mjs';

const read = f => readFileSync(join(ROOT, f), 'utf8');

// ---- Dockerfile ----

// [{op, args, stage}] with continuation lines joined and comments dropped.
function parseDockerfile(text) {
  const out = [];
  let stage = -1, buf = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!buf && (line === '' || line.startsWith('#'))) continue;
    if (line.startsWith('#')) continue; // a comment inside a continued instruction
    if (line.endsWith('\\')) { buf += line.slice(0, -1) + ' '; continue; }
    const full = (buf + line).trim();
    buf = '';
    const m = full.match(/^(\w+)\s+(.*)$/s);
    assert.ok(m, `Dockerfile: cannot parse "${full}"`);
    const op = m[1].toUpperCase();
    if (op === 'FROM') stage++;
    out.push({ op, args: m[2].trim(), stage });
  }
  return out;
}

const dockerfile = parseDockerfile(read('Dockerfile'));
const stages = Math.max(...dockerfile.map(i => i.stage)) + 1;
const inStage = (s, op) => dockerfile.filter(i => i.stage === s && i.op === op);
const buildStage = 0, runStage = stages - 1;

// ARG defaults (global and per stage).
function argDefault(name) {
  for (const i of dockerfile.filter(x => x.op === 'ARG')) {
    const m = i.args.match(/^(\w+)=(?:"([^"]*)"|(\S*))$/);
    if (m && m[1] === name) return m[2] ?? m[3];
  }
  return undefined;
}

// ENV of a stage as a map (the KEY=VALUE form).
function envOf(stage) {
  const env = {};
  for (const i of inStage(stage, 'ENV'))
    for (const m of i.args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env[m[1]] = m[2].replace(/^"|"$/g, '');
  return env;
}

// The Makefile's DEB_PKGS (every := and += line).
function makefilePackages() {
  const text = read('Makefile').replace(/\\\n/g, ' ');
  const pkgs = new Set();
  for (const m of text.matchAll(/^DEB_PKGS\s*(?::=|\+=|=)\s*(.*)$/gm))
    for (const p of m[1].split(/\s+/).filter(Boolean)) pkgs.add(p);
  return pkgs;
}

// The variables `layerlens serve --help` documents, plus the entrypoint's.
function knownEnv() {
  const help = execFileSync(BINARY, ['serve', '--help'], { encoding: 'utf8' });
  const names = new Set(help.match(/LAYERLENS_[A-Z0-9_]+/g));
  names.add('LAYERLENS_FETCH_WEIGHTS'); // deploy/docker-entrypoint.sh
  return names;
}

test('Dockerfile: a Debian build stage and a slim, non-root runtime stage', () => {
  assert.ok(stages >= 2, 'multi-stage');
  const from = i => inStage(i, 'FROM')[0].args;
  assert.match(from(buildStage), /^debian:\S+ AS build$/i);
  assert.match(from(runStage), /^debian:\S+-slim$/);
  const user = inStage(runStage, 'USER').at(-1);
  assert.ok(user, 'a USER line');
  assert.doesNotMatch(user.args, /^(0|root)(:|$)/, 'not root');
  const hc = inStage(runStage, 'HEALTHCHECK')[0];
  assert.ok(hc, 'a HEALTHCHECK');
  assert.match(hc.args, /CMD .*curl .*\/healthz/);
  const env = envOf(runStage);
  const expose = inStage(runStage, 'EXPOSE').map(i => +i.args);
  assert.deepEqual(expose, [+env.LAYERLENS_PORT], 'EXPOSE = LAYERLENS_PORT');
  assert.equal(env.LAYERLENS_HOST, '0.0.0.0', 'reachable from outside the container');
  const known = knownEnv();
  for (const k of Object.keys(env)) assert.ok(known.has(k), `${k} is not a layerlens serve variable`);
  assert.ok(inStage(runStage, 'VOLUME').some(i => i.args.includes('/weights')), 'weights volume');
  assert.match(inStage(runStage, 'ENTRYPOINT')[0].args, /docker-entrypoint\.sh/);
});

test('Dockerfile: build-stage packages are the Makefile\'s, installed by `make deps`', () => {
  const runs = inStage(buildStage, 'RUN').map(i => i.args);
  const deps = runs.find(r => /\bmake deps\b/.test(r));
  assert.ok(deps, 'the build stage runs `make deps`');
  const list = deps.match(/DEB_PKGS="([^"]*)"/)[1].split(/\s+/).filter(Boolean);
  const makefile = makefilePackages();
  for (const p of list) assert.ok(makefile.has(p), `${p} is not in the Makefile's DEB_PKGS`);
  // each pkg-config module the Makefile compiles against comes from one of them
  const mods = read('Makefile').match(/^PKGS\s*:=\s*(.*)$/m)[1].split(/\s+/).filter(Boolean);
  const closure = dependencyClosure(list);
  for (const mod of mods) {
    const pc = realpathSync(execFileSync('pkg-config', ['--path', mod], { encoding: 'utf8' }).trim());
    const owner = packageOf(pc);
    assert.ok(owner && closure.has(owner), `${mod} (${pc}, package ${owner}) is not installed by ${list}`);
  }
});

// The installed packages that `pkgs` pull in through Depends/Pre-Depends.
function dependencyClosure(pkgs) {
  const seen = new Set(), todo = [...pkgs];
  while (todo.length) {
    const p = todo.pop();
    if (seen.has(p)) continue;
    const r = spawnSync('dpkg-query', ['-W', '-f=${Depends}, ${Pre-Depends}', p], { encoding: 'utf8' });
    if (r.status !== 0) continue; // a virtual or absent alternative
    seen.add(p);
    for (const alt of r.stdout.split(',')) {
      for (const choice of alt.split('|')) {
        const name = choice.trim().split(/[\s:(]/)[0];
        if (name) todo.push(name);
      }
    }
  }
  return seen;
}

function packageOf(path) {
  for (const p of [path, path.replace(/^\/usr\/lib\//, '/lib/')]) {
    const r = spawnSync('dpkg-query', ['-S', p], { encoding: 'utf8' });
    if (r.status === 0) return r.stdout.split(':')[0].trim();
  }
  return null;
}

test('Dockerfile: the runtime stage installs the package of every library the binary links', () => {
  const install = inStage(runStage, 'RUN').map(i => i.args).find(r => /apt-get install/.test(r));
  const pkgs = new Set(install.replace(/.*apt-get install\s+/, '').split('&&')[0]
    .split(/\s+/).filter(w => w && !w.startsWith('-')));
  const needed = execFileSync('readelf', ['-d', BINARY], { encoding: 'utf8' })
    .split('\n').map(l => l.match(/Shared library: \[(.*)\]/)).filter(Boolean).map(m => m[1]);
  const ldd = execFileSync('ldd', [BINARY], { encoding: 'utf8' });
  const essential = execFileSync('dpkg-query', ['-W', '-f=${Package} ${Essential}\\n'], { encoding: 'utf8' })
    .split('\n').filter(l => l.endsWith(' yes')).map(l => l.split(' ')[0]);
  const base = dependencyClosure(essential);
  assert.ok(needed.length >= 6, `NEEDED: ${needed}`);
  for (const lib of needed) {
    const path = ldd.match(new RegExp(`^\\s*${lib.replace(/[.+]/g, '\\$&')} => (\\S+)`, 'm'))[1];
    const pkg = packageOf(realpathSync(path)) || packageOf(path);
    assert.ok(pkg, `no package owns ${path}`);
    // what the Essential packages need (libc6) is in every Debian image, slim included
    assert.ok(pkgs.has(pkg) || base.has(pkg), `${lib}: ${pkg} is not installed in the runtime stage`);
  }
  assert.ok(pkgs.has('curl'), 'curl for the HEALTHCHECK');
});

// The context files the COPY instructions of a stage take, minus .dockerignore.
function dockerignore() {
  return read('.dockerignore').split('\n').map(l => l.trim()).filter(l => l && !l.startsWith('#'))
    .map(p => new RegExp('^' + p.replace(/^\*\*\//, '(.*/)?').replace(/\./g, '\\.')
      .replace(/\*/g, '[^/]*').replace(/\/$/, '') + '(/|$)'));
}

test('Dockerfile: replaying the build stage gives the same objects and program', { timeout: 300000 }, () => {
  const ignore = dockerignore();
  const scratch = mkdtempSync(join(tmpdir(), 'layerlens-docker-'));
  try {
    let workdir = scratch;
    for (const i of dockerfile.filter(x => x.stage === buildStage)) {
      if (i.op === 'WORKDIR') workdir = join(scratch, i.args);
      if (i.op === 'COPY') {
        const [src, dst] = i.args.split(/\s+/);
        const into = dst.endsWith('/') && statSync(join(ROOT, src)).isFile() ? join(dst, basename(src)) : dst;
        cpSync(join(ROOT, src), join(workdir, into), {
          recursive: true,
          filter: f => { const rel = relative(ROOT, f); return !rel || !ignore.some(re => re.test(rel)); },
        });
      }
    }
    // every RUN that runs make, except the package step (done on this
    // machine by the Makefile's own deps target)
    const runs = inStage(buildStage, 'RUN').map(i => i.args).filter(r => /^make\b/.test(r) && !/^make deps/.test(r));
    assert.equal(runs.length, 1, `one make RUN line: ${runs}`);
    // the environment of a docker build: none of this make's (or the
    // suite's BUILD) leaks in
    const env = { PATH: process.env.PATH, HOME: process.env.HOME || '/root', ARCHFLAGS: argDefault('ARCHFLAGS') };
    const r = spawnSync('sh', ['-c', runs[0].replace('"$(nproc)"', '2')], { cwd: workdir, encoding: 'utf8', env });
    assert.equal(r.status, 0, `the build stage's make failed:\n${r.stdout}\n${r.stderr}`);
    const objs = d => readdirSync(d).filter(f => f.endsWith('.o')).sort();
    assert.deepEqual(objs(join(workdir, 'build', 'obj')), objs(join(BUILD, 'obj')));
    const help = b => execFileSync(b, ['serve', '--help'], { encoding: 'utf8' });
    assert.equal(help(join(workdir, 'build', 'layerlens')), help(BINARY));
    // COPY --from=build takes what the build made
    const from = inStage(runStage, 'COPY').find(i => i.args.startsWith('--from=build'));
    const srcPath = from.args.split(/\s+/)[1];
    assert.ok(existsSync(join(scratch, srcPath)), `${srcPath} exists after the build`);
    for (const i of inStage(runStage, 'COPY').filter(x => !x.args.startsWith('--from')))
      assert.ok(existsSync(join(ROOT, i.args.split(/\s+/)[0])), `COPY source ${i.args}`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});

// ---- the entrypoint ----

function entrypoint(args, env) {
  return spawn('sh', [join(ROOT, 'deploy', 'docker-entrypoint.sh'), ...args], {
    env: { PATH: `${dirname(BINARY)}:${process.env.PATH}`, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

function collect(child) {
  let out = '';
  child.stdout.on('data', d => { out += d; });
  child.stderr.on('data', d => { out += d; });
  const done = new Promise(res => child.on('exit', code => res(code)));
  return { out: () => out, done };
}

test('entrypoint: missing weights are explained, exit 1', async () => {
  const c = collect(entrypoint(['serve'], { ...envOf(runStage), LAYERLENS_GPT2: '/nonexistent/gpt2' }));
  assert.equal(await c.done, 1);
  assert.match(c.out(), /no gpt2 checkpoint in \/nonexistent\/gpt2/);
});

test('entrypoint: serves from the image\'s environment; SIGTERM exits 0', async t => {
  const shared = requireShared(t);
  if (!shared) return;
  const models = join(shared, 'fixtures', 'models');
  const env = { ...envOf(runStage), LAYERLENS_HOST: '127.0.0.1', LAYERLENS_PORT: '0',
                LAYERLENS_GPT2: join(models, 'gpt2-tiny'), LAYERLENS_CLIP: join(models, 'clip-tiny') };
  const child = entrypoint(['serve'], env);
  const c = collect(child);
  let port = null;
  for (let i = 0; i < 400 && !port; i++) {
    await new Promise(r => setTimeout(r, 50));
    port = c.out().match(/listening on http:\/\/\S*:(\d+)/)?.[1];
  }
  assert.ok(port, `no listening line:\n${c.out()}`);
  let ready = 0;
  for (let i = 0; i < 600 && ready !== 200; i++) {
    ready = (await fetch(`http://127.0.0.1:${port}/readyz`)).status;
    if (ready !== 200) await new Promise(r => setTimeout(r, 50));
  }
  assert.equal(ready, 200);
  assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  child.kill('SIGTERM'); // exec'd: the signal reaches the server itself
  assert.equal(await c.done, 0, c.out());
});

// ---- docker-compose.yml ----

function yamlDocs(file) {
  const docs = parseAllDocuments(read(file));
  for (const d of docs) assert.deepEqual(d.errors, [], `${file}: ${d.errors}`);
  return docs.map(d => d.toJS()).filter(Boolean);
}

test('docker-compose.yml: builds this Dockerfile, publishes the port, mounts the weights', () => {
  const [compose] = yamlDocs('deploy/docker-compose.yml');
  const svc = compose.services.layerlens;
  const ctx = join(ROOT, 'deploy', svc.build.context);
  assert.ok(existsSync(join(ctx, svc.build.dockerfile)), 'the Dockerfile');
  assert.equal(realpathSync(ctx), realpathSync(ROOT));
  const port = svc.environment.LAYERLENS_PORT || envOf(runStage).LAYERLENS_PORT;
  assert.ok(svc.ports.some(p => String(p).endsWith(`:${port}`)), `publishes ${port}`);
  assert.ok(svc.volumes.some(v => v.endsWith(':/weights') || v.endsWith(':/weights:ro')));
  const known = knownEnv();
  for (const k of Object.keys(svc.environment)) assert.ok(known.has(k), `${k} unknown`);
  const grace = parseInt(svc.stop_grace_period, 10);
  assert.ok(grace * 1000 > +svc.environment.LAYERLENS_REQUEST_TIMEOUT_MS, 'grace > request timeout');
});

// ---- Kubernetes ----

const K8S = 'deploy/k8s';
const manifests = () => readdirSync(join(ROOT, K8S)).filter(f => f.endsWith('.yaml'))
  .flatMap(f => yamlDocs(join(K8S, f)).map(doc => ({ file: f, doc })));

async function modelClass(apiVersion, kind) {
  const mod = await import(`kubernetes-models/${apiVersion}/${kind}`);
  return mod[kind];
}

test('k8s: every manifest validates against the Kubernetes schemas', async () => {
  const all = manifests();
  const kinds = new Set();
  for (const { file, doc } of all) {
    if (doc.kind === 'Kustomization') {
      for (const r of doc.resources) assert.ok(existsSync(join(ROOT, K8S, r)), `${file}: ${r}`);
      continue;
    }
    const Model = await modelClass(doc.apiVersion, doc.kind);
    assert.ok(Model, `${file}: no schema for ${doc.apiVersion} ${doc.kind}`);
    assert.doesNotThrow(() => new Model(doc).validate(), `${file}`);
    kinds.add(doc.kind);
  }
  for (const k of ['Deployment', 'Service', 'HorizontalPodAutoscaler', 'Secret'])
    assert.ok(kinds.has(k), `a ${k}`);
  // and the validator does reject a broken one
  const Deployment = await modelClass('apps/v1', 'Deployment');
  assert.throws(() => new Deployment({ metadata: { name: 'x' }, spec: { replicas: 'two' } }).validate());
});

test('k8s: probes, ports, Secret, claim and selectors fit together and fit the server', async t => {
  const all = manifests().map(m => m.doc);
  const one = kind => all.filter(d => d.kind === kind);
  const [dep] = one('Deployment');
  const pod = dep.spec.template.spec;
  const c = pod.containers[0];
  const env = Object.fromEntries(c.env.map(e => [e.name, e]));
  const known = knownEnv();
  for (const name of Object.keys(env)) assert.ok(known.has(name), `${name} is not a layerlens serve variable`);

  const port = c.ports.find(p => p.name === 'http');
  assert.equal(port.containerPort, +env.LAYERLENS_PORT.value, 'containerPort = LAYERLENS_PORT');
  assert.equal(env.LAYERLENS_HOST.value, '0.0.0.0');
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  for (const p of [c.readinessProbe, c.livenessProbe])
    assert.ok(p.httpGet.port === 'http' || p.httpGet.port === port.containerPort);

  // selector -> pod labels, Service -> port name, HPA -> Deployment
  for (const [k, v] of Object.entries(dep.spec.selector.matchLabels))
    assert.equal(dep.spec.template.metadata.labels[k], v);
  const [svc] = one('Service');
  for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(dep.spec.template.metadata.labels[k], v);
  assert.ok(svc.spec.ports.some(p => p.targetPort === 'http' || p.targetPort === port.containerPort));
  const [hpa] = one('HorizontalPodAutoscaler');
  assert.deepEqual([hpa.spec.scaleTargetRef.kind, hpa.spec.scaleTargetRef.name], ['Deployment', dep.metadata.name]);
  assert.ok(hpa.spec.minReplicas >= 1 && hpa.spec.maxReplicas > hpa.spec.minReplicas);

  // the API key comes from a Secret that has that key
  const ref = env.LAYERLENS_API_KEY?.valueFrom?.secretKeyRef;
  assert.ok(ref, 'LAYERLENS_API_KEY from a Secret');
  const secret = one('Secret').find(s => s.metadata.name === ref.name);
  assert.ok(secret && (secret.stringData?.[ref.key] != null || secret.data?.[ref.key] != null));

  // the weights volume: a claim that exists, mounted where the variables point
  const vol = pod.volumes.find(v => v.persistentVolumeClaim);
  assert.ok(one('PersistentVolumeClaim').some(p => p.metadata.name === vol.persistentVolumeClaim.claimName));
  const mount = c.volumeMounts.find(m => m.name === vol.name).mountPath;
  for (const m of ['LAYERLENS_GPT2', 'LAYERLENS_CLIP']) assert.ok(env[m].value.startsWith(mount + '/'));

  // resources: requested memory within the limit; graceful stop fits the request timeout
  const mem = s => { const m = String(s).match(/^(\d+)(Mi|Gi)$/); return +m[1] * (m[2] === 'Gi' ? 1024 : 1); };
  assert.ok(mem(c.resources.requests.memory) <= mem(c.resources.limits.memory));
  assert.ok(c.resources.requests.cpu, 'a CPU request (the HPA scales on its utilisation)');
  assert.ok(pod.terminationGracePeriodSeconds * 1000 > +env.LAYERLENS_REQUEST_TIMEOUT_MS.value);

  // the probe paths answer 200 on a real server
  const shared = requireShared(t);
  if (!shared) return;
  const server = await startServer(shared);
  try {
    for (const p of [c.readinessProbe, c.livenessProbe])
      assert.equal((await fetch(server.url + p.httpGet.path)).status, 200, p.httpGet.path);
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
});

test('nothing here refers to a file that is not in the repository', () => {
  for (const f of ['Dockerfile', '.dockerignore', 'deploy/docker-entrypoint.sh', 'weights/download.sh'])
    assert.ok(statSync(join(ROOT, f)).isFile(), f);
  assert.ok(statSync(join(ROOT, 'deploy/docker-entrypoint.sh')).mode & 0o111, 'entrypoint is executable');
});
