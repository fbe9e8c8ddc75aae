// Ramps across three router processes reading one config: every replica is on
// the same step at the same moment without talking to the others, under
// HTTP/1.1 and gRPC load, with no failed request.
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { grpcClient, startGrpcBackend, unary, type EchoClient } from './grpc-helpers.ts';
import { spawnRouter, startBackend, writeConfig, type RouterProcess } from './helpers.ts';

const STEPS = [1, 5, 25, 50, 100];
const INTERVAL_MS = 2000;

const closers: (() => Promise<unknown> | void)[] = [];
after(async () => { for (const c of closers.reverse()) await c(); });

interface Observation { replica: number; route: string; state: string; step: number; sentAt: number; receivedAt: number }

/** Polls every replica's /api/config until `stop`, recording each answer's ramp state per route. */
async function watchReplicas(replicas: RouterProcess[], stop: { done: boolean }): Promise<Observation[]> {
  const seen: Observation[] = [];
  await Promise.all(replicas.map(async (r, replica) => {
    while (!stop.done) {
      const sentAt = Date.now();
      const body = await (await request(`${r.adminUrl}/api/config`)).body.json() as { routes: { name: string; ramp: { state: string; step: number } | null }[] };
      const receivedAt = Date.now();
      for (const route of body.routes) if (route.ramp) seen.push({ replica, route: route.name, state: route.ramp.state, step: route.ramp.step, sentAt, receivedAt });
      await sleep(100);
    }
  }));
  return seen;
}

describe('ramp on three replicas', () => {
  it('ramps 1 → 100 % under HTTP/1.1 and gRPC load: no failed request, every step on time on every replica', async () => {
    const webOld = await startBackend('old');
    const webNew = await startBackend('new');
    const rpcOld = await startGrpcBackend('old');
    const rpcNew = await startGrpcBackend('new');
    closers.push(() => webOld.close(), () => webNew.close(), () => rpcOld.close(), () => rpcNew.close());
    const config = (ramp: Record<string, unknown>) => ({ routes: [
      { name: 'web', hosts: ['web.test'], backends: [{ name: 'old', url: webOld.url, weight: 100 }, { name: 'new', url: webNew.url, weight: 0 }], ramp },
      { name: 'rpc', hosts: ['rpc.test'], protocol: 'h2c' as const, backends: [{ name: 'old', url: rpcOld.url, weight: 100 }, { name: 'new', url: rpcNew.url, weight: 0 }], ramp },
    ] });
    const ramp = { from: 'old', to: 'new', steps: STEPS, interval: `${INTERVAL_MS}ms` };
    // Declared and pending; once the replicas run, the start is written as `ramp start` would.
    const path = writeConfig(config(ramp));
    const replicas = await Promise.all([0, 1, 2].map(() => spawnRouter(path)));
    const startedAt = Date.now() + 3000;
    writeConfig(config({ ...ramp, startedAt: new Date(startedAt).toISOString() }), dirname(path));
    for (const r of replicas) closers.push(() => { r.child.kill('SIGKILL'); return r.exited; });
    const clients: EchoClient[] = replicas.map((r) => grpcClient(r.url, 'rpc.test', { localPool: true }));
    for (const c of clients) closers.push(() => c.close());

    const stop = { done: false };
    const failures: string[] = [];
    const served = { http: { old: 0, new: 0 } as Record<string, number>, grpc: { old: 0, new: 0 } as Record<string, number> };
    const httpLoad = replicas.map(async (r) => {
      while (!stop.done) {
        const res = await request(`${r.url}/`, { headers: { host: 'web.test' } });
        const body = await res.body.text();
        if (res.statusCode !== 200) failures.push(`http ${res.statusCode}: ${body}`);
        else served.http[(JSON.parse(body) as { backend: string }).backend]!++;
        await sleep(2);
      }
    });
    const grpcLoad = clients.map(async (c) => {
      while (!stop.done) {
        const res = await unary(c, { tag: 'ramp' });
        if (res.code !== 0) failures.push(`grpc ${res.code}: ${res.details}`);
        else served.grpc[res.replies[0]!.backend]!++;
        await sleep(2);
      }
    });
    const watching = watchReplicas(replicas, stop);
    const end = startedAt + STEPS.length * INTERVAL_MS;
    await sleep(end - Date.now() + 1500);
    stop.done = true;
    const seen = await watching;
    await Promise.all([...httpLoad, ...grpcLoad]);

    assert.deepEqual(failures, [], 'no failed request or RPC');
    let worst = 0;
    for (const replica of [0, 1, 2]) {
      for (const route of ['web', 'rpc']) {
        const mine = seen.filter((o) => o.replica === replica && o.route === route);
        // The order of states and steps each replica went through: pending, every step in order, done.
        const path = mine.map((o) => `${o.state}:${o.step}`).filter((s, i, a) => i === 0 || a[i - 1] !== s);
        assert.deepEqual(path, ['pending:-1', ...STEPS.map((_, i) => `ramping:${i}`), 'done:4'], `replica ${replica} ${route}`);
        STEPS.forEach((_, i) => {
          const due = startedAt + i * INTERVAL_MS;
          const first = mine.find((o) => o.state === 'ramping' && o.step === i)!;
          // Never early: no answer sent before the step was due shows it. Never later than a poll or two.
          assert.ok(!mine.some((o) => o.step >= i && o.state === 'ramping' && o.receivedAt < due), `replica ${replica} ${route} step ${i} early`);
          worst = Math.max(worst, first.receivedAt - due);
        });
      }
    }
    assert.ok(worst < 1500, `a step was seen ${worst} ms after it was due`);
    assert.ok(served.http['new']! > 0 && served.grpc['new']! > 0, JSON.stringify(served));
    console.log(`# 3 replicas, ${STEPS.length} steps of ${INTERVAL_MS} ms: served ${JSON.stringify(served)}, 0 failures; latest first sighting of a step ${worst} ms after it was due (polled every 100 ms)`);
  });

  it('new starts failing at the 25 % step: every replica back to 0 % within 2 s of the verdict, and the halt survives a restart', async () => {
    const old = await startBackend('old');
    let failFrom = Infinity;
    const nw = await startBackend('new', (req, res) => {
      req.resume();
      const failing = Date.now() >= failFrom;
      res.writeHead(failing ? 503 : 200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ backend: 'new' }));
    });
    closers.push(() => old.close(), () => nw.close());
    const config = (ramp: Record<string, unknown>) => ({ routes: [
      { name: 'web', hosts: ['web.test'], backends: [{ name: 'old', url: old.url, weight: 100 }, { name: 'new', url: nw.url, weight: 0 }], ramp },
    ] });
    const ramp = { from: 'old', to: 'new', steps: STEPS, interval: `${INTERVAL_MS}ms`, guard: { minRequests: 50 } };
    const path = writeConfig(config(ramp));
    const replicas = await Promise.all([0, 1, 2].map(() => spawnRouter(path)));
    for (const r of replicas) closers.push(() => { r.child.kill('SIGKILL'); return r.exited; });
    const startedAt = Date.now() + 3000;
    failFrom = startedAt + 2 * INTERVAL_MS; // the 25 % step
    writeConfig(config({ ...ramp, startedAt: new Date(startedAt).toISOString() }), dirname(path));

    const stop = { done: false };
    let firstBad = 0;
    const load = replicas.map(async (r) => {
      while (!stop.done) {
        const res = await request(`${r.url}/`, { headers: { host: 'web.test' } });
        await res.body.dump();
        if (res.statusCode !== 200 && firstBad === 0) firstBad = Date.now();
        await sleep(2);
      }
    });
    // Each replica: when it was first seen halted (new at 0), and the verdict time it reports.
    const haltedSeen: number[] = [0, 0, 0];
    const verdicts: number[] = [];
    await Promise.all(replicas.map(async (r, i) => {
      const end = failFrom + 15_000;
      while (haltedSeen[i] === 0 && Date.now() < end) {
        // Timed from when the poll was sent: the answer's own delay on a loaded machine is not the router's.
        const asked = Date.now();
        const body = await (await request(`${r.adminUrl}/api/config`)).body.json() as { routes: { backends: { weight: number }[]; ramp: { state: string; halted: { at: number } | null } }[] };
        const web = body.routes[0]!;
        if (web.ramp.state === 'halted' && web.backends[1]!.weight === 0) {
          haltedSeen[i] = asked;
          verdicts.push(web.ramp.halted!.at);
        }
        await sleep(50);
      }
    }));
    assert.ok(haltedSeen.every((t) => t > 0), `every replica halted: ${haltedSeen}`);
    const verdictAt = Math.min(...verdicts);
    const spread = Math.max(...haltedSeen) - verdictAt;
    assert.ok(spread <= 2000, `every replica at 0 % within 2 s of the verdict (${spread} ms)`);
    assert.ok(firstBad > 0 && firstBad >= failFrom);

    // Once halted everywhere, nothing goes to new: no more failures.
    stop.done = true;
    await Promise.all(load);
    for (const r of replicas) {
      for (let i = 0; i < 20; i++) {
        const res = await request(`${r.url}/`, { headers: { host: 'web.test' } });
        assert.equal(JSON.parse(await res.body.text()).backend, 'old');
      }
    }
    // The verdict is in the file; a restarted replica starts halted.
    assert.match(readFileSync(path, 'utf8'), /halted:\n\s+at: .*\n\s+reason: .*guard: /);
    replicas[0]!.child.kill('SIGKILL');
    await replicas[0]!.exited;
    const again = await spawnRouter(path);
    closers.push(() => { again.child.kill('SIGKILL'); return again.exited; });
    const body = await (await request(`${again.adminUrl}/api/config`)).body.json() as { routes: { backends: { weight: number }[]; ramp: { state: string } }[] };
    assert.equal(body.routes[0]!.ramp.state, 'halted');
    assert.deepEqual(body.routes[0]!.backends.map((b) => b.weight), [100, 0]);
    console.log(`# new failing from the 25 % step: first bad response ${verdictAt - firstBad} ms before the verdict; every replica at 0 % ${spread} ms after it (${haltedSeen.map((t) => t - verdictAt).join(', ')} ms); first bad response to the last replica at 0 %: ${Math.max(...haltedSeen) - firstBad} ms`);
  });
});
