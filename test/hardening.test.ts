// Defects a code review found (issue 11), each pinned by a test that failed
// before its fix: backend addresses in error answers, 0s timeouts, health
// shared by routes with different settings, reloads that failed for a
// reason other than the config and were never retried, and metric series
// of removed routes. Real routers, real backends, loopback only.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { request } from 'undici';
import {
  closedPort, metric, rewriteConfig, scrape, spawnRouter, startBackend, startRouter, writeConfig,
  type ConfigSpec,
} from './helpers.ts';
import { h2Request, startH2Backend, until } from './grpc-helpers.ts';

async function get(url: string, host: string, path = '/'): Promise<{ status: number; body: string }> {
  const res = await request(`${url}${path}`, { headers: { host }, signal: AbortSignal.timeout(10_000) });
  return { status: res.statusCode, body: await res.body.text() };
}

describe('error answers never reveal backend addresses', () => {
  test('a refused connect: HTTP/1.1, HTTP/2 and gRPC clients get the code and a short reason; the address is in the log', async () => {
    const dead = await closedPort();
    const url = `http://127.0.0.1:${dead}`;
    const proc = await spawnRouter(writeConfig({
      routes: [
        { name: 'down', hosts: ['down.test'], backends: [{ name: 'old', url, weight: 1 }] },
        { name: 'down-h2', hosts: ['down-h2.test'], protocol: 'h2c', backends: [{ name: 'old', url, weight: 1 }] },
      ],
    }));
    try {
      const leaks = (text: string): boolean => text.includes(String(dead)) || /127\.0\.0\.1|ECONNREFUSED|connect E/.test(text);
      const h1 = await get(proc.url, 'down.test');
      assert.equal(h1.status, 502);
      assert.match(h1.body, /^502 SY_UPSTREAM_CONNECT: /);
      assert.ok(!leaks(h1.body), `HTTP/1.1 body: ${h1.body}`);
      const h2 = await h2Request(proc.url, { ':method': 'GET', ':path': '/', ':authority': 'down.test' });
      assert.equal(h2.headers[':status'], 502);
      assert.ok(!leaks(h2.body.toString()), `HTTP/2 body: ${h2.body.toString()}`);
      const rpc = await h2Request(proc.url, {
        ':method': 'POST', ':path': '/switchyard.test.Echo/Unary', ':authority': 'down-h2.test',
        'content-type': 'application/grpc', te: 'trailers',
      }, { body: Buffer.from([0, 0, 0, 0, 0]) });
      assert.equal(rpc.headers['grpc-status'], '14');
      const message = decodeURIComponent(String(rpc.headers['grpc-message']));
      assert.ok(message.length > 0 && !leaks(message), `grpc-message: ${message}`);
      // The operator still gets the detail: in the log.
      assert.ok(await until(() => proc.logs.some((l) => l['msg'] === 'upstream error' && leaks(JSON.stringify(l)))), 'the log names the cause');
    } finally {
      proc.child.kill('SIGTERM');
      await proc.exited;
    }
  });
});

describe('timeouts of 0s mean no limit, on both upstream protocols', () => {
  test('connect: 0s and response: 0s: a backend that answers after 300 ms is served over HTTP/1.1 and h2c', async () => {
    const slow = await startBackend('slow', (_req, res) => { setTimeout(() => res.end('late'), 300); });
    const slowH2 = await startH2Backend('slow-h2', (stream) => {
      setTimeout(() => {
        if (stream.destroyed) return;
        stream.respond({ ':status': 200 });
        stream.end('late');
      }, 300);
    });
    const timeouts = { connect: '0s', response: '0s' };
    const router = await startRouter({
      routes: [
        { name: 'h1', hosts: ['h1.test'], timeouts, backends: [{ name: 'a', url: slow.url, weight: 1 }] },
        { name: 'h2', hosts: ['h2.test'], protocol: 'h2c', timeouts, backends: [{ name: 'a', url: slowH2.url, weight: 1 }] },
      ],
    });
    try {
      assert.deepEqual(await get(router.url, 'h1.test'), { status: 200, body: 'late' });
      assert.deepEqual(await get(router.url, 'h2.test'), { status: 200, body: 'late' });
    } finally {
      await router.close();
      await Promise.all([slow.close(), slowH2.close()]);
    }
  });
});

describe('health is per backend URL and check settings', () => {
  test('two routes with one backend URL and different health checks each get their own verdict', async () => {
    const shared = await startBackend('shared', (req, res) => {
      res.writeHead(req.url === '/b-health' ? 503 : 200);
      res.end(req.url ?? '');
    });
    // Probe timeouts far above a loaded machine's latency: route a's backend must never look down by accident.
    const hc = (path: string) => ({ http: { path }, interval: '500ms', timeout: '450ms', healthyThreshold: 1, unhealthyThreshold: 2 });
    const router = await startRouter({
      routes: [
        { name: 'a', hosts: ['a.test'], healthCheck: hc('/a-health'), allUnhealthy: 'fail', backends: [{ name: 's', url: shared.url, weight: 1 }] },
        { name: 'b', hosts: ['b.test'], healthCheck: hc('/b-health'), allUnhealthy: 'fail', backends: [{ name: 's', url: shared.url, weight: 1 }] },
      ],
    });
    try {
      const up = async (route: string): Promise<number> => metric(await scrape(router.adminUrl), 'switchyard_backend_up', { route, backend: 's' });
      assert.ok(await until(async () => (await up('b')) === 0, 10_000), 'route b\'s check (503) takes its backend out');
      assert.equal(await up('a'), 1, 'route a\'s check (200) keeps the same URL in');
      assert.equal((await get(router.url, 'a.test', '/x')).status, 200);
      assert.equal((await get(router.url, 'b.test', '/x')).status, 503);
    } finally {
      await router.close();
      await shared.close();
    }
  });
});

describe('reloads', () => {
  // A real config worker, really terminated: Worker.prototype.postMessage is
  // wrapped so that, when armed, the next load kills the worker instead.
  const post = Worker.prototype.postMessage;
  let crashNext = false;
  Worker.prototype.postMessage = function (this: Worker, ...args: Parameters<Worker['postMessage']>): void {
    if (crashNext) {
      crashNext = false;
      void this.terminate();
      return;
    }
    post.apply(this, args);
  };
  after(() => { Worker.prototype.postMessage = post; });

  test('a reload that failed because the config worker died is retried with the same files (SIGHUP, or the next change event)', async () => {
    const a = await startBackend('a');
    const b = await startBackend('b');
    const spec = (url: string): ConfigSpec => ({ routes: [{ name: 'r', hosts: ['r.test'], backends: [{ name: 'x', url, weight: 1 }] }] });
    const router = await startRouter(spec(a.url));
    try {
      assert.equal(JSON.parse((await get(router.url, 'r.test')).body).backend, 'a');
      rewriteConfig(router, spec(b.url));
      crashNext = true;
      assert.equal(await router.sy.reload('test'), false, 'the worker died: the reload failed');
      assert.equal(JSON.parse((await get(router.url, 'r.test')).body).backend, 'a', 'the old config still serves');
      assert.equal(await router.sy.reload('SIGHUP'), true, 'the same files load once the worker is back');
      assert.equal(JSON.parse((await get(router.url, 'r.test')).body).backend, 'b');
    } finally {
      await router.close();
      await Promise.all([a.close(), b.close()]);
    }
  });

  test('a config that fails validation is not parsed again until it changes', async () => {
    const a = await startBackend('a');
    const router = await startRouter({ routes: [{ name: 'r', hosts: ['r.test'], backends: [{ name: 'x', url: a.url, weight: 1 }] }] });
    try {
      writeFileSync(router.path, 'routes: [{ name: r, hosts: [r.test], backends: [{ name: x, url: nope, weight: 1 }] }]\n');
      assert.equal(await router.sy.reload('test'), false);
      const failures = metric(await scrape(router.adminUrl), 'switchyard_config_reloads_total', { result: 'failure' });
      assert.equal(await router.sy.reload('test'), false);
      assert.equal(metric(await scrape(router.adminUrl), 'switchyard_config_reloads_total', { result: 'failure' }), failures, 'counted once');
    } finally {
      await router.close();
      await a.close();
    }
  });

  test('a reload that removes a route drops that route\'s metric series', async () => {
    const a = await startBackend('a');
    const dead = await closedPort();
    const routes = [
      { name: 'keep', hosts: ['keep.test'], backends: [{ name: 'x', url: a.url, weight: 1 }] },
      { name: 'gone', hosts: ['gone.test'], backends: [{ name: 'x', url: a.url, weight: 1 }, { name: 'dead', url: `http://127.0.0.1:${dead}`, weight: 0 }] },
    ];
    const router = await startRouter({ routes });
    try {
      assert.equal((await get(router.url, 'gone.test')).status, 200);
      assert.equal((await get(router.url, 'keep.test')).status, 200);
      const forced = await request(`${router.url}/`, { headers: { host: 'gone.test', 'x-switchyard-backend': 'dead' } });
      await forced.body.dump();
      const gone = (m: Map<string, number>): string[] => [...m.keys()].filter((k) => k.includes('route="gone"'));
      assert.ok(gone(await scrape(router.adminUrl)).length > 0, 'the route has series before the reload');
      rewriteConfig(router, { routes: [routes[0]!] });
      assert.equal(await router.sy.reload('test'), true);
      const m = await scrape(router.adminUrl);
      assert.deepEqual(gone(m), []);
      assert.equal(metric(m, 'switchyard_requests_total', { route: 'keep', backend: 'x', protocol: 'http', code: '200' }), 1, 'other routes keep theirs');
    } finally {
      await router.close();
      await a.close();
    }
  });
});
