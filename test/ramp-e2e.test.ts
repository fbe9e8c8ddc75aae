// Ramps through the running router: weights in force follow the schedule on
// the clock, the guard judges real responses, a breach rolls back at once.
import { strict as assert } from 'node:assert';
import { after, describe, it } from 'node:test';
import { request } from 'undici';
import { readFileSync } from 'node:fs';
import { Switchyard } from '../src/server.ts';
import { createLogger } from '../src/observe/log.ts';
import { metric, scrape, startBackend, startRouter, type Backend, type Router } from './helpers.ts';

/** A router (in this process) on an existing config file: a restart. */
async function startRouterAt(path: string): Promise<Router> {
  const sy = await Switchyard.start(path, createLogger('silent'));
  const { entrypoint, admin } = sy.addresses;
  return { sy, path, port: entrypoint.port, url: `http://127.0.0.1:${entrypoint.port}`, adminUrl: `http://127.0.0.1:${admin.port}`, close: async () => { await sy.shutdown(); } };
}

const closers: (() => Promise<void>)[] = [];
after(async () => { for (const c of closers.reverse()) await c(); });

async function get(router: Router, host: string): Promise<{ status: number; backend: string | null }> {
  const res = await request(`${router.url}/`, { headers: { host } });
  await res.body.dump();
  const backend = res.headers['x-backend'];
  return { status: res.statusCode, backend: typeof backend === 'string' ? backend : null };
}

interface RouteState {
  name: string;
  backends: { name: string; configuredWeight: number; weight: number; up: boolean }[];
  ramp: { state: string; step: number; weights: number[]; breaches: number; halted: { at: number; reason: string } | null; verdict: { status: string; kind: string | null } | null } | null;
}

async function routeState(router: Router, name: string): Promise<RouteState> {
  const body = await (await fetch(`${router.adminUrl}/api/config`)).json() as { routes: RouteState[] };
  return body.routes.find((r) => r.name === name)!;
}

async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function backends(failNew = false): Promise<[Backend, Backend]> {
  const old = await startBackend('old');
  const nw = await startBackend('new', (req, res) => {
    req.resume();
    res.writeHead(failNew ? 503 : 200, { 'x-backend': 'new' });
    res.end('new');
  });
  closers.push(() => old.close(), () => nw.close());
  return [old, nw];
}

describe('ramp in the router', () => {
  it('puts each step in force on the clock, split per request, then stays on the last', async () => {
    const [old, nw] = await backends();
    const router = await startRouter({ routes: [{
      name: 'billing', hosts: ['billing.test'],
      backends: [{ name: 'old', url: old.url, weight: 100 }, { name: 'new', url: nw.url, weight: 0 }],
      ramp: { from: 'old', to: 'new', steps: [25, 100], interval: '3s', startedAt: new Date(Date.now() + 1500).toISOString() },
    }] });
    closers.push(() => router.close());
    // Pending until startedAt (a loaded machine may take a while to start the router: then it is ramping already).
    const pending = await routeState(router, 'billing');
    if (pending.ramp?.state === 'pending') assert.deepEqual(pending.backends.map((b) => b.weight), [100, 0]);
    const first = await until('step 0', async () => {
      const s = await routeState(router, 'billing');
      return s.ramp?.state === 'ramping' && s.ramp.step === 0 ? s : undefined;
    });
    assert.deepEqual(first.backends.map((b) => b.weight), [75, 25]);
    assert.deepEqual(first.backends.map((b) => b.configuredWeight), [100, 0]);
    const seen = { old: 0, new: 0 } as Record<string, number>;
    for (let i = 0; i < 40; i++) seen[(await get(router, 'billing.test')).backend!]!++;
    // Smooth WRR at 75:25 over 40 picks: 30/10 give or take the pick that straddles a step boundary.
    assert.ok(seen['new']! >= 8 && seen['new']! <= 40 && seen['old']! <= 32, JSON.stringify(seen));
    const m = await scrape(router.adminUrl);
    assert.equal(metric(m, 'switchyard_ramp_state', { route: 'billing', state: 'ramping' }), 1);
    await until('done', async () => ((await routeState(router, 'billing')).ramp?.state === 'done' ? true : undefined), 10_000);
    const done = await routeState(router, 'billing');
    assert.deepEqual(done.backends.map((b) => b.weight), [0, 100]);
    for (let i = 0; i < 5; i++) assert.equal((await get(router, 'billing.test')).backend, 'new');
    const m2 = await scrape(router.adminUrl);
    assert.equal(metric(m2, 'switchyard_ramp_step', { route: 'billing' }), 1);
    assert.equal(metric(m2, 'switchyard_ramp_state', { route: 'billing', state: 'done' }), 1);
    assert.equal(metric(m2, 'switchyard_backend_weight', { route: 'billing', backend: 'new' }), 100);
  });

  it('rolls back at once when new fails, and says why with both sides', async () => {
    const [old, nw] = await backends(true);
    const router = await startRouter({ routes: [{
      name: 'orders', hosts: ['orders.test'],
      backends: [{ name: 'old', url: old.url, weight: 100 }, { name: 'new', url: nw.url, weight: 0 }],
      retries: { attempts: 1 },
      // No ejection: this is the statistical judge's case (an ejected new halts the ramp on its own).
      outlierDetection: { consecutiveFailures: 0 },
      ramp: { from: 'old', to: 'new', steps: [50, 100], interval: '1m', startedAt: new Date().toISOString(), guard: { minRequests: 20 } },
    }] });
    closers.push(() => router.close());
    let firstBad = 0;
    let rolledBackAt = 0;
    // Traffic until the guard acts (it judges once a second), at most 10 s.
    const deadline = Date.now() + 10_000;
    for (let i = 0; Date.now() < deadline && rolledBackAt === 0; i++) {
      const r = await get(router, 'orders.test');
      if (r.status === 503 && firstBad === 0) firstBad = Date.now();
      if (i % 10 === 9 && (await routeState(router, 'orders')).ramp?.state === 'halted') rolledBackAt = Date.now();
    }
    assert.ok(rolledBackAt > 0, `the guard halted the ramp: ${JSON.stringify(await routeState(router, "orders"))}`);
    const s = await routeState(router, 'orders');
    assert.deepEqual(s.backends.map((b) => b.weight), [100, 0]);
    assert.equal(s.ramp?.breaches, 1);
    assert.equal(s.ramp?.verdict?.kind, 'errors');
    assert.match(s.ramp!.halted!.reason, /^guard: error rate new 100\.00% vs old 0\.00%.* over \d+ requests; old .* over \d+ requests$/);
    for (let i = 0; i < 10; i++) assert.equal((await get(router, 'orders.test')).backend, 'old');
    const m = await scrape(router.adminUrl);
    assert.equal(metric(m, 'switchyard_ramp_breaches_total', { route: 'orders' }), 1);
    assert.equal(metric(m, 'switchyard_ramp_state', { route: 'orders', state: 'halted' }), 1);
    console.log(`# first bad response to rollback seen: ${rolledBackAt - firstBad} ms`);
    // The halt was written into the config file (comments and all), so a restart keeps it.
    const written = await until('the halt in the file', async () => {
      const text = readFileSync(router.path, 'utf8');
      return /halted:/.test(text) ? text : undefined;
    }, 5_000);
    assert.match(written, /reason: .*guard: error rate new 100\.00% vs old 0\.00%/);
    const again = await startRouterAt(router.path);
    closers.push(() => again.close());
    const restarted = await routeState(again, 'orders');
    assert.equal(restarted.ramp?.state, 'halted');
    assert.deepEqual(restarted.backends.map((b) => b.weight), [100, 0]);
  });

  it('judges a mirror step on the copies\' answers, with no client ever sent to new', async () => {
    const [old, nw] = await backends(true);
    const router = await startRouter({ routes: [{
      name: 'dark', hosts: ['dark.test'],
      backends: [{ name: 'old', url: old.url, weight: 100 }, { name: 'new', url: nw.url, weight: 0 }],
      ramp: { from: 'old', to: 'new', steps: ['mirror', 100], interval: '1m', startedAt: new Date().toISOString(), guard: { minRequests: 20 } },
    }] });
    closers.push(() => router.close());
    const deadline = Date.now() + 10_000;
    let halted = false;
    for (let i = 0; Date.now() < deadline && !halted; i++) {
      const r = await get(router, 'dark.test');
      assert.equal(r.backend, 'old');
      assert.equal(r.status, 200);
      if (i % 10 === 9) halted = (await routeState(router, 'dark')).ramp?.state === 'halted';
    }
    assert.ok(halted, 'the guard halted the ramp on mirrored answers');
    const s = await routeState(router, 'dark');
    assert.match(s.ramp!.halted!.reason, /^guard: error rate new 100\.00% vs old 0\.00%/);
    const m = await scrape(router.adminUrl);
    assert.ok(metric(m, 'switchyard_mirror_requests_total', { route: 'dark', backend: 'new', code: '503' }) >= 5);
  });
});
