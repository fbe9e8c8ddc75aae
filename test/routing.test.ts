// The route table and the weighted pick, without sockets: pure functions of a config.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Config, RouteConfig } from '../src/config.ts';
import { Metrics } from '../src/metrics.ts';
import { RouteTable, normalizeHost, type Binder } from '../src/routing.ts';
import { Upstreams } from '../src/upstreams.ts';
import { HealthRegistry } from '../src/health.ts';
import { createLogger } from '../src/log.ts';

const metrics = new Metrics();
const health = new HealthRegistry(createLogger('silent'));
const upstreams = new Upstreams({ sessions: metrics.upstreamSessions, streams: metrics.upstreamStreams });
const binder: Binder = {
  backend: (rc, bc) => ({ upstream: upstreams.get(rc.protocol, bc.url, 1000), metrics: metrics.backend(rc.name, bc.name, rc.protocol), health: health.backend(bc.url) }),
  none: (rc) => metrics.backend(rc.name, 'none', rc.protocol),
};

function route(name: string, hosts: string[], weights: number[], pathPrefix = '/'): RouteConfig {
  return {
    name, hosts, pathPrefix, protocol: 'http', file: 'test.yaml', fingerprint: `${name} ${weights.join('/')} ${hosts.join(',')} ${pathPrefix}`,
    timeouts: { connectMs: 1000, responseMs: 1000, idleMs: 60_000, overallMs: 0, overallIncludesStreams: false },
    healthCheck: null,
    outlier: { consecutiveFailures: 5, ejectionMs: 30_000, maxEjectionMs: 300_000 },
    allUnhealthy: 'serve',
    retry: { attempts: 2, budgetPercent: 20, minPerSecond: 10 },
    sticky: null,
    maxBodyBytes: 0,
    backends: weights.map((weight, i) => ({ name: `b${i}`, url: `http://127.0.0.1:${10000 + i}`, weight })),
  };
}

function table(...routes: RouteConfig[]): Promise<RouteTable> {
  const config: Config = {
    entrypoint: {
      host: '127.0.0.1', port: 0, maxConnectionAgeMs: 0, maxConnectionAgeGraceMs: 0,
      maxConnections: 10_000, maxHeaderBytes: 16_384, maxUrlLength: 8_192, headersTimeoutMs: 10_000, trustedProxies: [], requestIdHeader: 'x-request-id',
    },
    admin: { host: '127.0.0.1', port: 0 },
    shutdown: { drainDelayMs: 0, timeoutMs: 0 },
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
