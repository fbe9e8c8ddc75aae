// The operator's first hour (issue 13), driven as a new user would: the
// quick start, the removal guard, reload logs, the docs. Processes, real
// files, real CLI output.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { ROOT, closedPort, metric, runCli, scrape, spawnRouter, startBackend, startRouter, type Backend, type RouterProcess } from './helpers.ts';

type Log = Record<string, unknown>;

/** Resolves with the first log line with `msg` after the first `skip` log lines; rejects after `ms`. */
// Generous: on a loaded machine a reload (worker parse, checks) may take seconds.
async function logAfter(logs: readonly Log[], msg: string, skip: number, ms = 30_000): Promise<Log> {
  const deadline = Date.now() + ms;
  for (;;) {
    const entry = logs.slice(skip).find((e) => e['msg'] === msg);
    if (entry !== undefined) return entry;
    if (Date.now() > deadline) throw new Error(`no log line "${msg}" within ${ms} ms; got: ${logs.slice(skip).map((e) => e['msg']).join(' | ')}`);
    await sleep(10);
  }
}

/** GET with a Host header (fetch may not set one) and more headers; resolves with status and body. */
function get(url: string, host: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get(url, { headers: { host, ...headers }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => resolve({ status: res.statusCode!, body }));
    }).on('error', reject);
  });
}

/** `n` requests; the first word of each answer (the demo backends and `answerName` start with the backend name) tallied. */
async function tally(url: string, host: string, n: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const { status, body } = await get(url, host);
    assert.equal(status, 200, body);
    const name = body.split(' ')[0]!.trim();
    counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}

// --- docs -------------------------------------------------------------------

interface SchemaNode {
  type?: string;
  const?: unknown;
  enum?: unknown[];
  default?: unknown;
  pattern?: string;
  properties?: Record<string, SchemaNode>;
  items?: SchemaNode;
}

/** Every property of the config schema as a doc path ("routes[].backends[].weight") → its node. */
function schemaFields(node: SchemaNode, prefix = '', out = new Map<string, SchemaNode>()): Map<string, SchemaNode> {
  for (const [key, child] of Object.entries(node.properties ?? {})) {
    const path = prefix === '' ? key : `${prefix}.${key}`;
    out.set(path, child);
    if (child.properties) schemaFields(child, path, out);
    if (child.items?.properties) schemaFields(child.items, `${path}[]`, out);
  }
  return out;
}

/** The Type column the reference must show for a schema node. */
function docType(node: SchemaNode): string {
  if (node.const !== undefined) return `\`${JSON.stringify(node.const)}\``;
  if (node.enum) return node.enum.map((v) => JSON.stringify(v)).join(' \\| ');
  if (Array.isArray(node.type)) return node.type.join(' \\| ');
  if (node.type === 'string' && node.pattern?.includes('ms|s|m|h')) return 'duration';
  if (node.type === 'array') return node.items?.type === undefined ? 'list' : `list of ${node.items.type === 'object' ? 'objects' : `${node.items.type}s`}`;
  return String(node.type);
}

/** The reference's field rows: `| \`path\` | type | default | meaning |`. */
function docRows(markdown: string): Map<string, { type: string; def: string }> {
  const rows = new Map<string, { type: string; def: string }>();
  for (const line of markdown.split('\n')) {
    const m = /^\| `([^`]+)` \| (.+?) \| (.+?) \| /.exec(line);
    if (!m) continue;
    assert.ok(!rows.has(m[1]!), `docs/configuration.md documents ${m[1]} twice`);
    rows.set(m[1]!, { type: m[2]!, def: m[3]! });
  }
  return rows;
}

describe('npm ci on a fresh machine', () => {
  // npm 11.16+ lists install scripts package.json's allowScripts does not
  // cover, and npm 12 skips them: without the `node` devDependency's
  // preinstall there is no Node 24, and `npm start` on an older system Node
  // fails on the first .ts import.
  test('allowScripts decides on every install script in the lockfile, and lets the node devDependency run its own', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { allowScripts?: Record<string, boolean> };
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { hasInstallScript?: boolean }> };
    const withScripts = Object.entries(lock.packages)
      .filter(([, p]) => p.hasInstallScript === true)
      .map(([path]) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length));
    assert.ok(withScripts.includes('node'), 'the lockfile knows node\'s preinstall');
    const allowed = pkg.allowScripts ?? {};
    assert.deepEqual(withScripts.filter((name) => !(name in allowed)), [], 'install scripts allowScripts does not decide on');
    assert.equal(allowed['node'], true);
  });
});

describe('docs', () => {
  const schema = JSON.parse(readFileSync(join(ROOT, 'config/switchyard.schema.json'), 'utf8')) as SchemaNode;
  const reference = readFileSync(join(ROOT, 'docs/configuration.md'), 'utf8');

  test('docs/configuration.md documents every schema field with its type and default, and nothing else', () => {
    const fields = schemaFields(schema);
    const rows = docRows(reference);
    const missing = [...fields.keys()].filter((f) => !rows.has(f));
    assert.deepEqual(missing, [], `add a row for each of these to docs/configuration.md (| \`field\` | type | default | meaning |): ${missing.join(', ')}`);
    const extra = [...rows.keys()].filter((f) => !fields.has(f));
    assert.deepEqual(extra, [], `docs/configuration.md documents fields the schema does not have: ${extra.join(', ')}`);
    for (const [path, node] of fields) {
      const row = rows.get(path)!;
      assert.equal(row.type, docType(node), `type of ${path} in docs/configuration.md`);
      if (node.default === undefined) {
        assert.equal(row.def, '—', `${path} has no default in the schema`);
      } else {
        assert.match(row.def, /^`.*`$/, `default of ${path} in docs/configuration.md`);
        assert.deepEqual(JSON.parse(row.def.slice(1, -1)), node.default, `default of ${path} in docs/configuration.md`);
      }
    }
  });

  test('the docs index links every page of docs/, and every relative link in README and docs/ resolves inside the repo', () => {
    const pages = readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md') && f !== 'README.md');
    const index = readFileSync(join(ROOT, 'docs/README.md'), 'utf8');
    for (const page of ['configuration.md', 'routing.md', 'metrics.md', 'operations.md', 'contract.md']) {
      assert.ok(pages.includes(page), `docs/${page} exists`);
    }
    for (const page of pages) assert.ok(index.includes(`](${page})`), `docs/README.md links ${page}`);
    const files = ['README.md', ...pages.map((f) => `docs/${f}`), 'docs/README.md'];
    for (const file of files) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target!) || target!.startsWith('#')) continue;
        const path = join(ROOT, file, '..', target!.split('#')[0]!);
        assert.ok(path.startsWith(ROOT), `${file} links ${target}, outside the repository`);
        assert.ok(existsSync(path), `${file} links ${target}, which does not exist`);
      }
    }
  });
});

describe('docs/metrics.md', { timeout: 30_000 }, () => {
  test('every metric and label its PromQL names exists in a real scrape', async () => {
    const backend = await startBackend('old');
    // A pending ramp and a mirror, so their series exist too.
    const router = await startRouter({ routes: [{
      name: 'billing', hosts: ['billing.example.com'], backends: [{ name: 'old', url: backend.url, weight: 1 }, { name: 'new', url: `http://127.0.0.1:${await closedPort()}`, weight: 0 }],
      mirror: { to: 'new' }, ramp: { from: 'old', to: 'new', steps: [1, 100], interval: '1h' },
    }] });
    try {
      assert.equal((await get(`${router.url}/`, 'billing.example.com')).status, 200);
      assert.equal((await get(`${router.url}/`, 'billing.example.com', { 'x-switchyard-backend': 'new' })).status, 502);
      // The mirror's copy leaves after the answer: wait for its count.
      let scrape = '';
      for (let i = 0; i < 100 && !scrape.includes('switchyard_mirror_requests_total{'); i++) {
        scrape = await (await fetch(`${router.adminUrl}/metrics`)).text();
        if (!scrape.includes('switchyard_mirror_requests_total{')) await new Promise((r) => setTimeout(r, 50));
      }
      const labels = new Map<string, Set<string>>();
      for (const line of scrape.split('\n')) {
        const m = /^(switchyard_[a-z0-9_]+)(?:\{([^}]*)\})? /.exec(line);
        if (!m) continue;
        const set = labels.get(m[1]!) ?? new Set<string>();
        for (const l of (m[2] ?? '').matchAll(/([a-z_]+)="/g)) set.add(l[1]!);
        labels.set(m[1]!, set);
      }
      const doc = readFileSync(join(ROOT, 'docs/metrics.md'), 'utf8');
      const blocks = [...doc.matchAll(/```promql\n([\s\S]*?)```/g)].map((b) => b[1]!);
      assert.ok(blocks.length >= 5, 'docs/metrics.md has PromQL examples');
      // Labels Prometheus adds when it scrapes a pod.
      const target = new Set(['namespace', 'pod', 'job', 'instance']);
      for (const block of blocks) {
        for (const [, name, selector] of block.matchAll(/(switchyard_[a-z0-9_]+)(?:\{([^}]*)\})?/g)) {
          assert.ok(labels.has(name!), `docs/metrics.md queries ${name}, which /metrics does not have`);
          for (const [, label] of (selector ?? '').matchAll(/([a-z_]+)\s*(?:=~|!~|!=|=)/g)) {
            assert.ok(target.has(label!) || labels.get(name!)!.has(label!), `${name} has no label ${label} (docs/metrics.md)`);
          }
        }
      }
      // Every metric of the table is exported.
      for (const [, name] of doc.matchAll(/^\| `(switchyard_[a-z0-9_]+)` \|/gm)) {
        assert.ok(labels.has(name!) || labels.has(`${name}_bucket`), `docs/metrics.md lists ${name}, which /metrics does not have`);
      }
    } finally {
      await router.close();
      await backend.close();
    }
  });
});

// --- quick start ------------------------------------------------------------

describe('quick start: `npm start` with nothing else running', { timeout: 90_000 }, () => {
  let dir: string;
  let config: string;
  let npm: ReturnType<typeof spawn>;
  const logs: Log[] = [];
  let stderr = '';
  let entry: string;
  let exited: Promise<number | null>;

  before(async () => {
    // The example itself, on free ports so the test cannot collide with anything.
    dir = mkdtempSync(join(tmpdir(), 'switchyard-quickstart-'));
    config = join(dir, 'example.yaml');
    let text = readFileSync(join(ROOT, 'config/example.yaml'), 'utf8');
    for (const port of ['8080', '9901', '9001', '9002', '9101', '9102']) {
      text = text.replaceAll(`127.0.0.1:${port}`, `127.0.0.1:${await closedPort()}`);
    }
    writeFileSync(config, text);
    npm = spawn('npm', ['start', '--silent', '--', '--config', config], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    exited = new Promise((resolve) => npm.once('exit', (code) => resolve(code)));
    npm.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
    createInterface({ input: npm.stdout! }).on('line', (line) => {
      try { logs.push(JSON.parse(line) as Log); } catch { /* npm's own lines */ }
    });
    const started = await Promise.race([logAfter(logs, 'switchyard started', 0, 30_000), exited.then((code) => { throw new Error(`npm start exited with ${code}: ${stderr}`); })]);
    entry = `http://${String(started['entrypoint'])}`;
  });
  after(async () => {
    if (npm.exitCode === null) npm.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  test('the banner names the demo backends and the first curl', () => {
    assert.match(stderr, /switchyard demo: 4 demo backends \(billing\/old on 127\.0\.0\.1:\d+, billing\/new on 127\.0\.0\.1:\d+, ledger\/old/);
    assert.match(stderr, /curl -s -H 'Host: billing\.migration\.example\.com'/);
  });

  test('the README curls: the 90/10 split answered by old and new, and the override', async () => {
    assert.deepEqual(await tally(`${entry}/`, 'billing.migration.example.com', 10), { old: 9, new: 1 });
    const forced = await get(`${entry}/`, 'billing.migration.example.com', { 'x-switchyard-backend': 'new' });
    assert.equal(forced.status, 200);
    // hostHeader in the example: the new cluster is sent the name its ingress knows.
    assert.match(forced.body, /^new \(route billing; demo backend saw Host: billing\.new-cluster\.example\.com\)/);
  });

  test('the h2c route answers over HTTP/2 prior knowledge, at 100/0 old', async () => {
    const session = http2.connect(entry);
    try {
      const body = await new Promise<string>((resolve, reject) => {
        const s = session.request({ ':path': '/', ':authority': 'ledger.migration.example.com' });
        let data = '';
        s.setEncoding('utf8').on('data', (c: string) => { data += c; }).on('end', () => resolve(data)).on('error', reject);
      });
      assert.match(body, /^old \(route ledger;/);
    } finally {
      session.close();
    }
  });

  test('editing the weights in the file changes the split, and the reload log says old → new', async () => {
    const skip = logs.length;
    writeFileSync(config, readFileSync(config, 'utf8').replace('weight: 90', 'weight: 50').replace('weight: 10\n', 'weight: 50\n'));
    const reloaded = await logAfter(logs, 'config reloaded', skip);
    assert.deepEqual(reloaded['weights'], ['billing/old 90 → 50', 'billing/new 10 → 50']);
    assert.deepEqual(await tally(`${entry}/`, 'billing.migration.example.com', 10), { old: 5, new: 5 });
  });

  test('a second demo on the same ports says which backend cannot listen, in one line, exit 1', async () => {
    const r = await runCli(['demo', '--config', config]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^switchyard demo: cannot start the demo backend billing\/old: 127\.0\.0\.1:\d+ is already in use \(another demo still running\?\)\n$/);
  });

  test('SIGTERM to npm\'s PID stops the router (npm passes it on to node, which the script execs): no orphan left listening', async () => {
    npm.kill('SIGTERM');
    assert.equal(await exited, 0);
    await logAfter(logs, 'stopped', 0, 1000);
    await assert.rejects(get(`${entry}/`, 'billing.migration.example.com'), 'nothing listens on the entrypoint any more');
  });
});

// --- the removal guard, reload logs, /api/config --------------------------------

/** Answers with its name first, as the demo backends do, so `tally` can count. */
async function named(name: string): Promise<Backend> {
  return startBackend(name, (req, res) => { req.resume(); res.end(`${name}\n`); });
}

function routesFor(hosts: readonly string[], backend: Backend): unknown[] {
  return hosts.map((h) => ({ name: h.split('.')[0], hosts: [h], backends: [{ name: 'old', url: backend.url, weight: 1 }] }));
}

const LISTENERS = {
  entrypoint: { address: '127.0.0.1:0' },
  admin: { address: '127.0.0.1:0' },
  shutdown: { drainDelay: '0s', timeout: '2s' },
};

interface ApiConfig {
  version: string;
  files: string[];
  lastError: null | { kind: string; message: string; removedHosts?: string[]; removedRoutes?: string[] };
  routes: { name: string; backends: { name: string; url: string; up: boolean; ejected: boolean; activeCheck: string }[] }[];
}

/** A backend's health as /api/config shows it. */
function healthOf(api: ApiConfig, route: string, backend: string): unknown {
  const b = api.routes.find((r) => r.name === route)?.backends.find((x) => x.name === backend);
  return b === undefined ? undefined : { url: b.url, up: b.up, ejected: b.ejected, activeCheck: b.activeCheck };
}

async function apiConfig(router: RouterProcess): Promise<ApiConfig> {
  return (await fetch(`${router.adminUrl}/api/config`)).json() as Promise<ApiConfig>;
}

describe('removal guard', { timeout: 60_000 }, () => {
  let backend: Backend;
  let dir: string;
  before(async () => {
    backend = await named('old');
    dir = mkdtempSync(join(tmpdir(), 'switchyard-guard-'));
  });
  after(async () => {
    await backend.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('startup with no routes is refused, naming the file and the way out; allowed with allowRouteRemoval: true', async () => {
    const file = join(dir, 'empty.yaml');
    writeFileSync(file, stringify({ ...LISTENERS, routes: [] }));
    const r = await runCli(['serve', '--config', file]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:0:0: routes: no routes: every request would get 404 SY_NO_ROUTE; add routes, or set allowRouteRemoval: true`));
    const v = await runCli(['validate', file]);
    assert.equal(v.code, 1, 'validate refuses it too');
    assert.match(v.stderr, /no routes/);

    writeFileSync(file, stringify({ ...LISTENERS, allowRouteRemoval: true, routes: [] }));
    const router = await spawnRouter(file);
    try {
      assert.equal((await fetch(`${router.adminUrl}/readyz`)).status, 200);
      assert.equal((await get(`${router.url}/`, 'a.example.com')).status, 404);
    } finally {
      router.child.kill('SIGTERM');
      await router.exited;
    }
  });

  test('an empty file and `routes: []` are refused on reload: the old routes keep serving, /readyz stays 200, the refusal is in the log, /api/config and the metrics', async () => {
    const file = join(dir, 'two.yaml');
    const hosts = ['billing.example.com', 'ledger.example.com'];
    writeFileSync(file, stringify({ ...LISTENERS, routes: routesFor(hosts, backend) }));
    const router = await spawnRouter(file);
    try {
      const inForce = (await apiConfig(router)).version;
      let refusals = 0;
      for (const text of ['', '# all commented out\n', stringify({ routes: [] })]) {
        const skip = router.logs.length;
        writeFileSync(file, text);
        router.child.kill('SIGHUP');
        const refused = await logAfter(router.logs, 'config reload refused; the config in force stays', skip);
        refusals++;
        assert.deepEqual(refused['removedHosts'], hosts);
        assert.deepEqual(refused['removedRoutes'], ['billing', 'ledger']);
        assert.equal(refused['level'], 50, 'logged at error');
        assert.deepEqual(await tally(`${router.url}/`, 'ledger.example.com', 3), { old: 3 });
        assert.equal((await fetch(`${router.adminUrl}/readyz`)).status, 200);
        const api = await apiConfig(router);
        assert.equal(api.version, inForce);
        assert.equal(api.lastError?.kind, 'refused');
        assert.deepEqual(api.lastError?.removedHosts, hosts);
        assert.match(api.lastError!.message, /removes every route \(2 routes, 2 hosts: billing\.example\.com, ledger\.example\.com\)/);
        const m = await scrape(router.adminUrl);
        assert.equal(metric(m, 'switchyard_config_reloads_refused_total', {}) || m.get('switchyard_config_reloads_refused_total'), refusals);
        assert.equal(metric(m, 'switchyard_config_reloads_total', { result: 'failure' }), refusals);
      }
    } finally {
      router.child.kill('SIGTERM');
      await router.exited;
    }
  });

  test('removing more than half of the hosts in force is refused; half is allowed and logged with its hosts; allowRouteRemoval lets the rest go', async () => {
    const file = join(dir, 'four.yaml');
    const hosts = ['a.example.com', 'b.example.com', 'c.example.com', 'd.example.com'];
    writeFileSync(file, stringify({ ...LISTENERS, routes: routesFor(hosts, backend) }));
    const router = await spawnRouter(file);
    try {
      let skip = router.logs.length;
      writeFileSync(file, stringify({ ...LISTENERS, routes: routesFor(hosts.slice(0, 1), backend) }));
      router.child.kill('SIGHUP');
      const refused = await logAfter(router.logs, 'config reload refused; the config in force stays', skip);
      assert.deepEqual(refused['removedHosts'], hosts.slice(1));
      assert.match(String(refused['message']), /removes 3 of the 4 hosts in force \(75%, more than removalGuard\.maxRemovedHostsPercent 50%\)/);
      assert.deepEqual(await tally(`${router.url}/`, 'd.example.com', 2), { old: 2 });

      skip = router.logs.length;
      writeFileSync(file, stringify({ ...LISTENERS, routes: routesFor(hosts.slice(0, 2), backend) }));
      router.child.kill('SIGHUP');
      const removed = await logAfter(router.logs, 'routes removed', skip);
      assert.deepEqual(removed['hosts'], hosts.slice(2));
      assert.deepEqual(removed['routes'], ['c', 'd']);
      const reloaded = await logAfter(router.logs, 'config reloaded', skip);
      assert.deepEqual(reloaded['routesRemoved'], ['c', 'd']);
      assert.equal((await get(`${router.url}/`, 'd.example.com')).status, 404);
      assert.equal((await apiConfig(router)).lastError, null);

      skip = router.logs.length;
      writeFileSync(file, stringify({ ...LISTENERS, allowRouteRemoval: true, routes: [] }));
      router.child.kill('SIGHUP');
      const all = await logAfter(router.logs, 'routes removed', skip);
      assert.deepEqual(all['hosts'], hosts.slice(0, 2));
      assert.equal(all['allowRouteRemoval'], true);
      assert.equal((await get(`${router.url}/`, 'a.example.com')).status, 404);
    } finally {
      router.child.kill('SIGTERM');
      await router.exited;
    }
  });

  test('removalGuard.maxRemovedHostsPercent is the operator\'s to set', async () => {
    const file = join(dir, 'strict.yaml');
    const hosts = ['a.example.com', 'b.example.com', 'c.example.com', 'd.example.com'];
    writeFileSync(file, stringify({ ...LISTENERS, removalGuard: { maxRemovedHostsPercent: 20 }, routes: routesFor(hosts, backend) }));
    const router = await spawnRouter(file);
    try {
      const skip = router.logs.length;
      writeFileSync(file, stringify({ ...LISTENERS, removalGuard: { maxRemovedHostsPercent: 20 }, routes: routesFor(hosts.slice(0, 3), backend) }));
      router.child.kill('SIGHUP');
      const refused = await logAfter(router.logs, 'config reload refused; the config in force stays', skip);
      assert.deepEqual(refused['removedHosts'], ['d.example.com']);
      assert.match(String(refused['message']), /\(25%, more than removalGuard\.maxRemovedHostsPercent 20%\)/);
    } finally {
      router.child.kill('SIGTERM');
      await router.exited;
    }
  });
});

describe('reload logs and /api/config', { timeout: 60_000 }, () => {
  test('weights old → new per backend, routes added and removed, a bad file and the recovery from it; /api/config shows files and backend health', async () => {
    const old = await named('old');
    const neu = await named('new');
    const checked = await named('old');
    const down = `http://127.0.0.1:${await closedPort()}`;
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-reloadlog-'));
    const file = join(dir, 'routes.yaml');
    const billing = (o: number, n: number) => ({ name: 'billing', hosts: ['billing.example.com'], backends: [{ name: 'old', url: old.url, weight: o }, { name: 'new', url: neu.url, weight: n }] });
    const ledger = {
      name: 'ledger', hosts: ['ledger.example.com'],
      healthCheck: { http: { path: '/healthz' }, interval: '300ms', timeout: '250ms', healthyThreshold: 1, unhealthyThreshold: 2 },
      backends: [{ name: 'old', url: checked.url, weight: 1 }, { name: 'gone', url: down, weight: 1 }],
    };
    const audit = { name: 'audit', hosts: ['audit.example.com'], backends: [{ name: 'old', url: old.url, weight: 1 }] };
    writeFileSync(file, stringify({ ...LISTENERS, routes: [billing(90, 10), ledger, audit] }));
    const router = await spawnRouter(file);
    try {
      let skip = router.logs.length;
      writeFileSync(file, stringify({ ...LISTENERS, routes: [billing(50, 50), ledger, { ...audit, name: 'audit-v2' }] }));
      router.child.kill('SIGHUP');
      const reloaded = await logAfter(router.logs, 'config reloaded', skip);
      assert.deepEqual(reloaded['weights'], ['billing/old 90 → 50', 'billing/new 10 → 50']);
      assert.deepEqual(reloaded['routesAdded'], ['audit-v2']);
      assert.deepEqual(reloaded['routesRemoved'], ['audit']);
      const goodText = readFileSync(file, 'utf8');
      const good = (await apiConfig(router)).version;

      skip = router.logs.length;
      writeFileSync(file, goodText.replace('weight: 50', 'weight: -5'));
      router.child.kill('SIGHUP');
      const failed = await logAfter(router.logs, 'config reload failed; the previous config stays in force', skip);
      assert.match(JSON.stringify(failed['issues']), /routes\[0\]\.backends\[0\]\.weight/);
      assert.equal((await apiConfig(router)).lastError?.kind, 'invalid');

      skip = router.logs.length;
      writeFileSync(file, goodText);
      router.child.kill('SIGHUP');
      const recovered = await logAfter(router.logs, 'config recovered: the files are back to the config in force', skip);
      assert.equal(recovered['version'], good);
      const api = await apiConfig(router);
      assert.equal(api.lastError, null);
      assert.deepEqual(api.files, [file]);

      // The failing active check takes `gone` out within a few probes; `old` passes them.
      const deadline = Date.now() + 10_000;
      let now = await apiConfig(router);
      while (Date.now() < deadline) {
        if ((healthOf(now, 'ledger', 'gone') as { up: boolean }).up === false && (healthOf(now, 'ledger', 'old') as { up: boolean }).up) break;
        await sleep(50);
        now = await apiConfig(router);
      }
      assert.deepEqual(healthOf(now, 'ledger', 'gone'), { url: down, up: false, ejected: false, activeCheck: 'failing' });
      assert.deepEqual(healthOf(now, 'ledger', 'old'), { url: checked.url, up: true, ejected: false, activeCheck: 'passing' });
      assert.deepEqual(healthOf(now, 'billing', 'old'), { url: old.url, up: true, ejected: false, activeCheck: 'off' });
    } finally {
      router.child.kill('SIGTERM');
      await router.exited;
      await old.close();
      await neu.close();
      await checked.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
