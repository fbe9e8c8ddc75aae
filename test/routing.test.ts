// The route table and the weighted pick, without sockets: pure functions of a config.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Config, RouteConfig } from '../src/config/model.ts';
import { Metrics } from '../src/observe/metrics.ts';
import type { Binder } from '../src/routing/route.ts';
import { RouteTable, normalizeHost } from '../src/routing/table.ts';
import { Upstreams } from '../src/upstream/registry.ts';
import { HealthRegistry, healthKey } from '../src/health/registry.ts';
import { createLogger } from '../src/observe/log.ts';
import { UpstreamError } from '../src/errors.ts';
import { mayRetry } from '../src/proxy/retry.ts';
import { RetryBudget } from '../src/routing/retry-budget.ts';

const metrics = new Metrics();
const health = new HealthRegistry(createLogger('silent'));
const upstreams = new Upstreams({ sessions: metrics.upstreamSessions, streams: metrics.upstreamStreams });
const binder: Binder = {
  backend: (rc, bc) => ({ upstream: upstreams.get(rc.protocol, bc.url, 1000), metrics: metrics.backend(rc.name, bc.name, rc.protocol), health: health.backend(healthKey(bc.url, rc), bc.url) }),
  none: (rc) => metrics.backend(rc.name, 'none', rc.protocol),
};

function route(name: string, hosts: string[], weights: number[], pathPrefix = '/', extra: Partial<RouteConfig> & { basePort?: number } = {}): RouteConfig {
  const { basePort = 10000, ...overrides } = extra;
  return {
    name, hosts, pathPrefix, protocol: 'http',
    timeouts: { connect: '1s', response: '1s', idle: '60s', overall: '0s', overallIncludesStreams: false },
    outlierDetection: { consecutiveFailures: 5, ejectionTime: '30s', maxEjectionTime: '5m' },
    allUnhealthy: 'serve',
    retries: { attempts: 2, budget: 20, minRetriesPerSecond: 10 },
    maxBodyBytes: 0,
    backends: weights.map((weight, i) => ({ name: `b${i}`, url: `http://127.0.0.1:${basePort + i}`, weight })),
    ...overrides,
  };
}

function table(...routes: RouteConfig[]): Promise<RouteTable> {
  const config: Config = {
    entrypoint: {
      host: '127.0.0.1', port: 0, maxConnectionAgeMs: 0, maxConnectionAgeGraceMs: 0,
      maxConnections: 10_000, maxHeaderBytes: 16_384, maxUrlLength: 8_192, headersTimeoutMs: 10_000, idleTimeoutMs: 65_000, trustedProxies: [], requestIdHeader: 'x-request-id',
    },
    admin: { host: '127.0.0.1', port: 0 },
    shutdown: { drainDelayMs: 0, timeoutMs: 0 },
    removal: { allowRouteRemoval: false, maxRemovedHostsPercent: 50 },
    routes,
  };
  return RouteTable.build(config, binder);
}

test('normalizeHost drops the port and a trailing dot, lowercases, keeps IPv6 brackets', async () => {
  assert.equal(normalizeHost('API.Example.com.:8080'), 'api.example.com');
  assert.equal(normalizeHost('api.example.com'), 'api.example.com');
  assert.equal(normalizeHost('[::1]:8080'), '[::1]');
  assert.equal(normalizeHost('127.0.0.1:80'), '127.0.0.1');
});

test('exact hosts beat wildcards; wildcards cover exactly one label', async () => {
  const t = await table(
    route('exact', ['api.example.com'], [1]),
    route('wild', ['*.example.com'], [1]),
  );
  assert.equal(t.match('api.example.com', '/')?.name, 'exact');
  assert.equal(t.match('API.EXAMPLE.COM:443', '/')?.name, 'exact');
  assert.equal(t.match('web.example.com', '/')?.name, 'wild');
  assert.equal(t.match('example.com', '/'), undefined);
  assert.equal(t.match('a.b.example.com', '/'), undefined);
  assert.equal(t.match(undefined, '/'), undefined);
});

test('the longest path prefix wins; the exact host falls through to the wildcard', async () => {
  const t = await table(
    route('root', ['shop.example.com'], [1]),
    route('api', ['shop.example.com'], [1], '/api/'),
    route('api-v2', ['shop.example.com'], [1], '/api/v2/'),
    route('only-admin', ['admin.example.com'], [1], '/admin'),
    route('wild', ['*.example.com'], [1]),
  );
  assert.equal(t.match('shop.example.com', '/api/v2/x')?.name, 'api-v2');
  assert.equal(t.match('shop.example.com', '/api/v1')?.name, 'api');
  assert.equal(t.match('shop.example.com', '/apix')?.name, 'root');
  assert.equal(t.match('admin.example.com', '/admin/users')?.name, 'only-admin');
  assert.equal(t.match('admin.example.com', '/other')?.name, 'wild');
});

async function split(weights: number[], n: number): Promise<number[]> {
  const r = (await table(route('r', ['r.example.com'], weights))).match('r.example.com', '/')!;
  const counts = weights.map(() => 0);
  for (let i = 0; i < n; i++) counts[Number(r.pick()!.name.slice(1))]!++;
  return counts;
}

test('smooth weighted round-robin is exact over every window of sum(weights)', async () => {
  assert.deepEqual(await split([90, 10], 1000), [900, 100]);
  assert.deepEqual(await split([99, 1], 100), [99, 1]);
  assert.deepEqual(await split([1, 0], 500), [500, 0]);
  assert.deepEqual(await split([0, 3, 1], 400), [0, 300, 100]);
  assert.deepEqual(await split([1, 1], 2), [1, 1]);
});

test('smooth weighted round-robin interleaves: 90/10 never sends the canary twice in a row', async () => {
  const r = (await table(route('r', ['r.example.com'], [90, 10]))).match('r.example.com', '/')!;
  let last = '';
  for (let i = 0; i < 1000; i++) {
    const name = r.pick()!.name;
    assert.ok(!(name === 'b1' && last === 'b1'));
    last = name;
  }
});

test('all weights 0 picks nothing; the override still finds a weight-0 backend', async () => {
  const r = (await table(route('r', ['r.example.com'], [0, 0]))).match('r.example.com', '/')!;
  assert.equal(r.pick(), undefined);
  assert.equal(r.byName('b1')?.weight, 0);
  assert.equal(r.byName('zz'), undefined);
});

test('a retry prefers another backend with weight', async () => {
  const r = (await table(route('r', ['r.example.com'], [1, 0, 1]))).match('r.example.com', '/')!;
  assert.equal(r.retryTarget(r.backends[0]!).name, 'b2');
  const single = (await table(route('s', ['s.example.com'], [1]))).match('s.example.com', '/')!;
  assert.equal(single.retryTarget(single.backends[0]!).name, 'b0');
});

test('a new table reuses the upstream pool of an unchanged backend URL', async () => {
  const a = (await table(route('r', ['r.example.com'], [1]))).match('r.example.com', '/')!;
  const b = (await table(route('r', ['r.example.com'], [5]))).match('r.example.com', '/')!;
  assert.equal(a.backends[0]!.upstream, b.backends[0]!.upstream);
});

const OUTLIER = { consecutiveFailures: 2, ejectionMs: 60_000, maxEjectionMs: 60_000 };

test('an ejected backend sits out and its share goes to the others', async () => {
  const r = (await table(route('h', ['h.example.com'], [1, 1, 1], '/', { basePort: 20000 }))).match('h.example.com', '/')!;
  r.backends[1]!.health.failure(OUTLIER);
  assert.equal(r.backends[1]!.health.up, true, 'one failure is not enough');
  r.backends[1]!.health.failure(OUTLIER);
  assert.equal(r.backends[1]!.health.up, false);
  const counts = [0, 0, 0];
  for (let i = 0; i < 200; i++) counts[Number(r.pick()!.name.slice(1))]!++;
  assert.deepEqual(counts, [100, 0, 100]);
  assert.equal(r.retryTarget(r.backends[0]!).name, 'b2', 'a retry avoids the down backend');
});

test('all backends down: the least bad one (serve), or none (fail)', async () => {
  const serve = (await table(route('s', ['s.example.com'], [1, 1], '/', { basePort: 20100 }))).match('s.example.com', '/')!;
  serve.backends[1]!.health.failure(OUTLIER);
  serve.backends[1]!.health.failure(OUTLIER);
  await new Promise((r) => setTimeout(r, 5));
  serve.backends[0]!.health.failure(OUTLIER);
  serve.backends[0]!.health.failure(OUTLIER);
  assert.equal(serve.backends[0]!.health.up || serve.backends[1]!.health.up, false);
  assert.equal(serve.pick()!.name, 'b1', 'the backend whose ejection ends first');
  const fail = (await table(route('f', ['f.example.com'], [1, 1], '/', { basePort: 20100, allUnhealthy: 'fail' }))).match('f.example.com', '/')!;
  assert.equal(fail.pick(), undefined);
});

test('sticky keys stay put, split by weight, and only move old -> new as the new weight rises', async () => {
  const at = async (weights: number[]) => (await table(route('k', ['k.example.com'], weights, '/', { basePort: 20200, sticky: { header: 'x-user' } }))).match('k.example.com', '/')!;
  const users = Array.from({ length: 2000 }, (_, i) => `user-${i}`);
  const assign = (r: Awaited<ReturnType<typeof at>>) => users.map((u) => r.stickyPick(u)!.name);
  const r10 = await at([90, 10]);
  const a10 = assign(r10);
  assert.deepEqual(assign(r10), a10, 'the same key always gets the same backend');
  assert.deepEqual(assign(await at([90, 10])), a10, 'another replica (a new table) agrees');
  const share = (a: string[]) => a.filter((n) => n === 'b1').length / a.length;
  assert.ok(Math.abs(share(a10) - 0.1) < 0.03, `share on new at 10%: ${share(a10)}`);
  const a30 = assign(await at([70, 30]));
  const a60 = assign(await at([40, 60]));
  assert.ok(Math.abs(share(a60) - 0.6) < 0.04, `share on new at 60%: ${share(a60)}`);
  for (let i = 0; i < users.length; i++) {
    if (a10[i] === 'b1') assert.equal(a30[i], 'b1', `${users[i]} went back from new to old at 30%`);
    if (a30[i] === 'b1') assert.equal(a60[i], 'b1', `${users[i]} went back from new to old at 60%`);
  }
});

test('a route reads its config in place and derives its durations in ms once', async () => {
  const rc = route('d', ['d.example.com'], [1], '/', {
    timeouts: { connect: '250ms', response: '1.5s', idle: '0s', overall: '2m', overallIncludesStreams: true },
    outlierDetection: { consecutiveFailures: 3, ejectionTime: '10s', maxEjectionTime: '1h' },
  });
  const r = (await table(rc)).match('d.example.com', '/')!;
  assert.equal(r.config, rc);
  assert.equal(r.backends[0]!.config, rc.backends[0]);
  assert.deepEqual(r.timeouts, { connectMs: 250, responseMs: 1_500, idleMs: 0, overallMs: 120_000, overallIncludesStreams: true });
  assert.deepEqual(r.ejection, { consecutiveFailures: 3, ejectionMs: 10_000, maxEjectionMs: 3_600_000 });
});

test('routes naming one URL share health state when their health settings mean the same, however written', () => {
  const outlier = (ejectionTime: string) => ({ consecutiveFailures: 5, ejectionTime, maxEjectionTime: '5m' });
  const check = (interval: string) => ({ http: { path: '/healthz', expectStatus: [200, 399] as const }, interval, timeout: '1s', healthyThreshold: 2, unhealthyThreshold: 3 });
  const url = 'http://127.0.0.1:1';
  assert.equal(healthKey(url, { outlierDetection: outlier('30s') }), healthKey(url, { outlierDetection: outlier('30000ms') }));
  assert.notEqual(healthKey(url, { outlierDetection: outlier('30s') }), healthKey(url, { outlierDetection: outlier('31s') }));
  assert.equal(healthKey(url, { outlierDetection: outlier('30s'), healthCheck: check('5s') }), healthKey(url, { outlierDetection: outlier('30s'), healthCheck: check('5000ms') }));
  assert.notEqual(healthKey(url, { outlierDetection: outlier('30s'), healthCheck: check('5s') }), healthKey(url, { outlierDetection: outlier('30s') }));
});

test('the retry budget: a percentage of requests over 10 s, with a floor per second', () => {
  const floor = new RetryBudget({ attempts: 2, budget: 0, minRetriesPerSecond: 1 });
  let granted = 0;
  for (let i = 0; i < 50; i++) if (floor.take()) granted++;
  assert.equal(granted, 10, '1 per second over a 10 s window');
  const pct = new RetryBudget({ attempts: 2, budget: 20, minRetriesPerSecond: 0 });
  for (let i = 0; i < 100; i++) pct.request();
  granted = 0;
  for (let i = 0; i < 50; i++) if (pct.take()) granted++;
  assert.equal(granted, 20);
});

test('only safe failures are retried', () => {
  const cfg = { attempts: 2, budget: 100, minRetriesPerSecond: 100 };
  const budget = new RetryBudget(cfg);
  const refused = new UpstreamError('connect', true, new Error('refused'));
  const reset = new UpstreamError('reset', false, new Error('reset'));
  const timeout = new UpstreamError('timeout', false, new Error('slow'));
  assert.equal(mayRetry(cfg, budget, { attempt: 0, method: 'POST', err: refused, responseStarted: false, bodyReplayable: true, clientGone: false }), true, 'nothing sent: any method');
  assert.equal(mayRetry(cfg, budget, { attempt: 0, method: 'GET', err: reset, responseStarted: false, bodyReplayable: true, clientGone: false }), true, 'idempotent reset');
  assert.equal(mayRetry(cfg, budget, { attempt: 0, method: 'POST', err: reset, responseStarted: false, bodyReplayable: true, clientGone: false }), false, 'POST reset: maybe processed');
  assert.equal(mayRetry(cfg, budget, { attempt: 0, method: 'GET', err: timeout, responseStarted: false, bodyReplayable: true, clientGone: false }), false, 'a timeout is not retried');
  assert.equal(mayRetry(cfg, budget, { attempt: 0, method: 'GET', err: reset, responseStarted: true, bodyReplayable: true, clientGone: false }), false, 'response started');
  assert.equal(mayRetry(cfg, budget, { attempt: 0, method: 'POST', err: refused, responseStarted: false, bodyReplayable: false, clientGone: false }), false, 'body not replayable');
  assert.equal(mayRetry(cfg, budget, { attempt: 0, method: 'GET', err: reset, responseStarted: false, bodyReplayable: true, clientGone: true }), false, 'client gone');
  assert.equal(mayRetry(cfg, budget, { attempt: 1, method: 'GET', err: refused, responseStarted: false, bodyReplayable: true, clientGone: false }), false, 'attempts used up');
});
