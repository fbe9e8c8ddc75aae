// `serve --config listeners.yaml --config kubernetes://NS/routes` against a
// real kube-apiserver: the router reads its routes through the API with the
// reader's credentials, bound by a Role to that one ConfigMap (as the chart
// does). Patches apply; invalid ones are kept out and raise an Event; an API
// server restart (with etcd compacted meanwhile: 410 Gone) loses no change and
// never stops traffic; three replicas converge on 50 successive changes made
// with `switchyard weights`, and `switchyard status` says so.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { loadCredentials, type KubeCredentials } from '../src/kube/credentials.ts';
import { ConfigError } from '../src/config/model.ts';
import { loadConfigSources } from '../src/config/load.ts';
import { readSourcesOnce } from '../src/config/sources.ts';
import { KubeClient } from '../src/kube/client.ts';
import { pino, type Logger } from 'pino';
import { createLogger } from '../src/observe/log.ts';
import { Switchyard } from '../src/server.ts';
import { DEFAULT_WATCH } from '../src/config/watch.ts';
import {
  commandWeights, convergence, percentile, routesYaml, setUpRoutes, startReplica, stopReplica, type Replica,
} from '../bench/kube-convergence.ts';
import { runCli, scrape, startBackend, type Backend } from './helpers.ts';
import { compactEtcd, startApiServer, until, type ApiServer } from './kube-apiserver.ts';

let api: ApiServer;
let reader: KubeCredentials;
let old: Backend;
let neu: Backend;
let backends: { old: string; new: string };
const log = createLogger(process.env['TEST_LOG_LEVEL'] ?? 'silent');

before(async () => {
  api = await startApiServer();
  reader = await loadCredentials({ kubeconfig: api.readerKubeconfig });
  [old, neu] = await Promise.all([startBackend('old'), startBackend('new')]);
  backends = { old: old.url, new: neu.url };
});
after(async () => {
  await Promise.all([old?.close(), neu?.close()]);
  await api?.stop();
});

interface ApiConfig {
  version: string;
  lastError: { issues: { file: string; line: number; path: string }[] } | null;
  config: { routes: { name: string; backends: { name: string; weight: number }[] }[] };
  sources: ({ kind: 'files'; path: string } | {
    kind: 'kubernetes'; source: string; resourceVersion: string | null; latestResourceVersion: string | null;
    up: boolean; staleSeconds: number; watch: { lists: number; gone: number; failures: number };
  })[];
}

async function apiConfig(sy: Switchyard): Promise<ApiConfig> {
  return (await (await fetch(`http://127.0.0.1:${sy.addresses.admin.port}/api/config`)).json()) as ApiConfig;
}

function kubeSource(s: ApiConfig): Extract<ApiConfig['sources'][number], { kind: 'kubernetes' }> {
  const k = s.sources.find((x) => x.kind === 'kubernetes');
  assert.ok(k && k.kind === 'kubernetes');
  return k;
}

function get(sy: Switchyard): Promise<{ status: number; backend: string }> {
  return getAt(sy.addresses.entrypoint.port);
}

function getAt(port: number): Promise<{ status: number; backend: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', headers: { host: 'billing.example.com' }, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => { body += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode!, backend: res.statusCode === 200 ? (JSON.parse(body) as { backend: string }).backend : '' }));
    }).on('error', reject);
  });
}

async function startInProcess(namespace: string, listeners: string, instance: string, logger = log): Promise<Switchyard> {
  return Switchyard.start([listeners, `kubernetes://${namespace}/routes`], logger, DEFAULT_WATCH, {
    kubernetes: { credentials: reader, instance, watch: { backoffBaseMs: 100, backoffMaxMs: 1000 }, events: { burst: 20, refillMs: 100 }, staleLogMs: 400 },
  });
}

/** A logger that keeps its JSON lines. */
function capturingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => { lines.push(JSON.parse(line) as Record<string, unknown>); } });
  return { logger, lines };
}

async function events(namespace: string, reason: string): Promise<{ message: string; source?: { host?: string }; type: string }[]> {
  return (await api.admin.listEvents(namespace, `involvedObject.name=routes,reason=${reason}`)).items;
}

describe('kubernetes:// config source', () => {
  test('routes from the API, listeners from a file: a patch applies, /api/config names the ConfigMap and its resourceVersion, ConfigApplied is recorded', async () => {
    const { namespace, listeners } = await setUpRoutes(api, backends);
    const sy = await startInProcess(namespace, listeners, 'replica-a');
    try {
      assert.equal((await get(sy)).backend, 'old');
      const first = kubeSource(await apiConfig(sy));
      assert.equal(first.source, `kubernetes://${namespace}/routes`);
      assert.equal(first.up, true);
      const { sources } = await apiConfig(sy);
      assert.deepEqual(sources[0], { kind: 'files', path: listeners });

      const cm = await api.admin.patchConfigMapData(namespace, 'routes', { 'routes.yaml': routesYaml(backends, 0, 1) });
      await until(async () => kubeSource(await apiConfig(sy)).resourceVersion === cm.metadata.resourceVersion, 10_000, 'the patch in force');
      for (let i = 0; i < 5; i++) assert.equal((await get(sy)).backend, 'new');
      const s = await apiConfig(sy);
      assert.deepEqual(s.config.routes[0]!.backends.map((b) => b.weight), [0, 1]);
      assert.equal(s.lastError, null);
      await until(async () => (await events(namespace, 'ConfigApplied')).some((e) => e.message.includes(`resourceVersion ${cm.metadata.resourceVersion} `)), 10_000, 'ConfigApplied');
      const applied = await events(namespace, 'ConfigApplied');
      assert.ok(applied.every((e) => e.source?.host === 'replica-a' && e.type === 'Normal' && e.message.startsWith('replica-a: ')));
      assert.ok(applied.some((e) => e.message.includes(s.version)), 'names the config version');
    } finally {
      await sy.shutdown();
    }
  });

  test('an invalid patch is kept out: the old routes serve, /api/config and a ConfigRejected Event name file:line:field', async () => {
    const { namespace, listeners } = await setUpRoutes(api, backends);
    const sy = await startInProcess(namespace, listeners, 'replica-b');
    try {
      const before = await apiConfig(sy);
      const bad = routesYaml(backends, 1, 0).replace('weight: 1', 'weight: -5');
      const cm = await api.admin.patchConfigMapData(namespace, 'routes', { 'routes.yaml': bad });
      await until(async () => (await apiConfig(sy)).lastError !== null, 10_000, 'the rejection');
      const s = await apiConfig(sy);
      assert.equal(s.version, before.version, 'the previous config stays in force');
      assert.equal(kubeSource(s).resourceVersion, before.sources.length && kubeSource(before).resourceVersion, 'the resourceVersion in force is still the old one');
      assert.equal(kubeSource(s).latestResourceVersion, cm.metadata.resourceVersion);
      const issue = s.lastError!.issues[0]!;
      assert.equal(issue.file, `kubernetes://${namespace}/routes/routes.yaml`);
      assert.equal(issue.path, 'routes[0].backends[0].weight');
      const line = bad.split('\n').findIndex((l) => l.includes('weight: -5')) + 1;
      assert.equal(issue.line, line);
      assert.equal((await get(sy)).backend, 'old');
      assert.equal((await scrape(`http://127.0.0.1:${sy.addresses.admin.port}`)).get('switchyard_config_reloads_total{result="failure"}'), 1);
      await until(async () => (await events(namespace, 'ConfigRejected')).length > 0, 10_000, 'ConfigRejected');
      const [rejected] = await events(namespace, 'ConfigRejected');
      assert.equal(rejected!.type, 'Warning');
      assert.ok(rejected!.message.includes(`kubernetes://${namespace}/routes/routes.yaml:${line}:`), rejected!.message);
      assert.ok(rejected!.message.includes('routes[0].backends[0].weight'), rejected!.message);
      assert.ok(rejected!.message.includes(`resourceVersion ${cm.metadata.resourceVersion}`), rejected!.message);
      // A ConfigMap deleted by mistake is a failed reload too, not an empty routing table.
      await api.admin.request('DELETE', `/api/v1/namespaces/${namespace}/configmaps/routes`);
      await until(async () => /does not exist/.test(JSON.stringify((await apiConfig(sy)).lastError)), 10_000, 'the deletion noticed');
      assert.equal((await get(sy)).backend, 'old');
      // And a good one applies.
      const fixed = await api.admin.createConfigMap(namespace, { metadata: { name: 'routes' }, data: { 'routes.yaml': routesYaml(backends, 0, 1) } });
      await until(async () => kubeSource(await apiConfig(sy)).resourceVersion === fixed.metadata.resourceVersion, 10_000, 'the fix in force');
      assert.equal((await apiConfig(sy)).lastError, null);
      assert.equal((await get(sy)).backend, 'new');
    } finally {
      await sy.shutdown();
    }
  });

  test('readSourcesOnce (validate, migration commands): a file and a ConfigMap merge into one config; the ConfigMap comes with its resourceVersion', async () => {
    const { namespace, listeners } = await setUpRoutes(api, backends);
    const client = new KubeClient(reader);
    try {
      const snaps = await readSourcesOnce([listeners, `kubernetes://${namespace}/routes`], client);
      assert.deepEqual(snaps.map((x) => x.files.map((f) => f.file)), [[listeners], [`kubernetes://${namespace}/routes/routes.yaml`]]);
      const cm = await api.admin.getConfigMap(namespace, 'routes');
      assert.equal(snaps[1]!.configMap?.object.metadata.resourceVersion, cm.metadata.resourceVersion);
      const { config } = loadConfigSources(snaps.flatMap((x) => x.files));
      assert.equal(config.routes[0]!.name, 'billing');
      assert.equal(config.admin.port, 0);
      // Missing (as the admin sees it) is a config error; forbidden (the reader) is the API's answer.
      const missing = await readSourcesOnce([`kubernetes://${namespace}/nope`], api.admin).catch((e: unknown) => e);
      assert.ok(missing instanceof ConfigError && /does not exist/.test(missing.message), String(missing));
      await assert.rejects(readSourcesOnce([`kubernetes://${namespace}/nope`], client), /forbidden/);
    } finally {
      await client.close();
    }
  });

  test('an invalid ConfigMap at startup: the router does not start, and says why in a ConfigRejected Event', async () => {
    const { namespace, listeners } = await setUpRoutes(api, backends);
    await api.admin.patchConfigMapData(namespace, 'routes', { 'routes.yaml': 'routes:\n  - name: Bad Name\n' });
    await assert.rejects(startInProcess(namespace, listeners, 'replica-s'), (e: unknown) => e instanceof ConfigError && e.message.includes(`kubernetes://${namespace}/routes/routes.yaml:2:`));
    const [ev] = await events(namespace, 'ConfigRejected');
    assert.ok(ev && ev.message.startsWith('replica-s: ') && ev.message.endsWith('; not started'), ev?.message);
  });

  test('RBAC: the router\'s credentials cannot read another ConfigMap; starting on one fails with a clear error', async () => {
    const { namespace, listeners } = await setUpRoutes(api, backends);
    await api.admin.createConfigMap(namespace, { metadata: { name: 'other' }, data: { 'routes.yaml': routesYaml(backends, 1, 1) } });
    const err = await Switchyard.start([listeners, `kubernetes://${namespace}/other`], log, DEFAULT_WATCH, {
      kubernetes: { credentials: reader, startTimeoutMs: 2000, watch: { backoffBaseMs: 100, backoffMaxMs: 500 } },
    }).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof ConfigError, String(err));
    assert.match(err.message, new RegExp(`kubernetes://${namespace}/other:0:0: \\(root\\): cannot read ConfigMap ${namespace}/other .*forbidden`));
    // The same through the CLI: exit 1 with the reason on stderr; a malformed source is a usage error.
    const cli = await runCliEnv(['serve', '--config', listeners, '--config', `kubernetes://${namespace}/other`], { KUBECONFIG: api.readerKubeconfig, SWITCHYARD_LOG_LEVEL: 'silent' });
    assert.equal(cli.code, 1, cli.stderr);
    assert.match(cli.stderr, /forbidden/);
    const usage = await runCli(['serve', '--config', 'kubernetes://Bad_NS']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /expected kubernetes:\/\/NAMESPACE\/CONFIGMAP/);
  });

  test('API server restarted mid-run (etcd compacted meanwhile: 410 Gone): traffic and /readyz continue, staleness is reported, the watch resumes and no change is lost', async () => {
    const { namespace, listeners } = await setUpRoutes(api, backends);
    const { logger, lines } = capturingLogger();
    const sy = await startInProcess(namespace, listeners, 'replica-c', logger);
    const admin = `http://127.0.0.1:${sy.addresses.admin.port}`;
    let stop = false;
    const failures: string[] = [];
    let served = 0;
    // Steady traffic through the whole outage.
    const traffic = (async () => {
      while (!stop) {
        const r = await get(sy).catch((e: unknown) => ({ status: 0, backend: String(e) }));
        if (r.status === 200) served++;
        else failures.push(`${r.status} ${r.backend}`);
        await new Promise((res) => setTimeout(res, 20));
      }
    })();
    try {
      const source = `kubernetes://${namespace}/routes`;
      await api.stopApiServer();
      await until(async () => !kubeSource(await apiConfig(sy)).up, 10_000, 'the outage noticed');
      await new Promise((r) => setTimeout(r, 1200));
      const m = await scrape(admin);
      assert.equal(m.get(`switchyard_config_source_up{source="${source}"}`), 0);
      assert.ok(m.get(`switchyard_config_source_stale_seconds{source="${source}"}`)! >= 1, 'stale for at least a second');
      assert.equal((await fetch(`${admin}/readyz`)).status, 200, 'still ready');
      // The log says it, and (here every 400 ms) for how long.
      assert.ok(lines.some((l) => l['msg'] === 'config source unreachable: serving the last config read from it' && l['source'] === source));
      assert.ok(lines.some((l) => l['msg'] === 'config source still unreachable' && (l['staleSeconds'] as number) >= 1), 'periodic staleness log');
      const servedDuringOutage = served;
      assert.ok(servedDuringOutage > 0);
      // Throw away etcd's history: the watch's resourceVersion is now too old to resume from.
      await compactEtcd(api.etcdUrl);
      await api.startApiServer();
      // Written the moment the server is back, while the router may still be backing off.
      await api.admin.patchConfigMapData(namespace, 'routes', { 'routes.yaml': routesYaml(backends, 1, 1) });
      const last = await api.admin.patchConfigMapData(namespace, 'routes', { 'routes.yaml': routesYaml(backends, 0, 1) });
      await until(async () => kubeSource(await apiConfig(sy)).resourceVersion === last.metadata.resourceVersion, 20_000, 'the change made after the restart');
      const s = kubeSource(await apiConfig(sy));
      assert.equal(s.up, true);
      assert.equal(s.staleSeconds, 0);
      assert.ok(s.watch.gone >= 1 && s.watch.lists >= 2, `relisted after 410 Gone: ${JSON.stringify(s.watch)}`);
      assert.equal((await scrape(admin)).get(`switchyard_config_source_up{source="${source}"}`), 1);
      assert.equal((await get(sy)).backend, 'new');
      assert.ok(lines.some((l) => l['msg'] === 'config source reachable again' && (l['staleSeconds'] as number) >= 1));
    } finally {
      stop = true;
      await traffic;
      await sy.shutdown();
    }
    assert.deepEqual(failures, [], 'no request failed during the outage');
    assert.ok(served > 20);
  });

  // The issue's acceptance: 50 changes made as an operator makes them, with
  // `switchyard weights`, each in force on all three (old and new weights and
  // the resourceVersion in each replica's /api/config), then `switchyard
  // status` confirming it. The command runs in this process through its own
  // run() (argument parsing, ConfigMap read, whole-config validation,
  // conditional patch): 50 Node starts would take minutes here and bury the
  // convergence time; cli.test.ts runs it as a process. `status` runs as one.
  test('three replicas follow 50 changes made with switchyard weights: each is in force on all three, and status shows them converged (p50/p99 printed)', { timeout: 300_000 }, async (t) => {
    const { namespace, listeners } = await setUpRoutes(api, backends);
    const source = `kubernetes://${namespace}/routes`;
    const env = { KUBECONFIG: api.adminKubeconfig };
    const replicas: Replica[] = [];
    try {
      for (const name of ['sy-0', 'sy-1', 'sy-2']) replicas.push(await startReplica(api, name, [listeners, source]));
      const samples = await convergence(replicas, commandWeights(api, namespace, listeners), 50);
      assert.equal(samples.length, 50);
      // The command edited the key in place: the comment above the routes survived 50 edits.
      assert.match((await api.admin.getConfigMap(namespace, 'routes')).data!['routes.yaml']!, /^# weights moved by the convergence run\n/);
      const sorted = [...samples].sort((a, b) => a - b);
      t.diagnostic(`switchyard weights -> in force on all 3 replicas: p50 ${percentile(sorted, 50).toFixed(0)} ms, p99 ${percentile(sorted, 99).toFixed(0)} ms, max ${sorted.at(-1)!.toFixed(0)} ms`);
      const admins = replicas.flatMap((r) => ['--admin', r.adminUrl]);
      const status = await runCliEnv(['status', 'billing', '--config', listeners, '--config', source, ...admins], env);
      assert.equal(status.code, 0, status.stdout + status.stderr);
      assert.match(status.stdout, /\nbilling +ramping 50% +old=50 new=50 +same +same +same\n/);
      assert.match(status.stdout, /\nconverged: all 3 replicas run version [0-9a-f]{12}\n$/);
      // Every replica routes real traffic by the last weights (old=50 new=50: both backends).
      for (const r of replicas) {
        const seen = new Set<string>();
        for (let i = 0; i < 4; i++) {
          const res = await getAt(Number(new URL(r.url).port));
          assert.equal(res.status, 200);
          seen.add(res.backend);
        }
        assert.deepEqual([...seen].sort(), ['new', 'old'], r.name);
      }
      // Every replica said what it applied, under its own name.
      await until(async () => {
        const hosts = new Set((await events(namespace, 'ConfigApplied')).map((e) => e.source?.host));
        return ['sy-0', 'sy-1', 'sy-2'].every((h) => hosts.has(h));
      }, 20_000, 'ConfigApplied from every replica');
    } finally {
      await Promise.all(replicas.map(stopReplica));
    }
  });
});

async function runCliEnv(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    return await runCli(args);
  } finally {
    for (const k of Object.keys(env)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}
