// Hot reload: kubelet's ConfigMap swap, in-place edits, added/removed files,
// SIGHUP, invalid configs, pools kept across reloads, reloads under load.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { Agent, request } from 'undici';
import { createLogger } from '../src/observe/log.ts';
import { Switchyard } from '../src/server.ts';
import { scrape, spawnRouter, startBackend, type Backend } from './helpers.ts';
import { collect, grpcClient, metadata, startGrpcBackend, unary } from './grpc-helpers.ts';

const log = createLogger(process.env['TEST_LOG_LEVEL'] ?? 'silent');

function routeDoc(name: string, host: string, backends: { name: string; url: string; weight: number }[]): string {
  return stringify({ routes: [{ name, hosts: [host], backends }] });
}

const SERVER_DOC = stringify({
  entrypoint: { address: '127.0.0.1:0' },
  admin: { address: '127.0.0.1:0' },
  shutdown: { drainDelay: '0s', timeout: '2s' },
});

/**
 * A directory laid out as kubelet's atomic writer does it: each key a symlink
 * `key -> ..data/key`, `..data` a symlink to a timestamped directory.
 */
class ConfigMapDir {
  readonly dir = mkdtempSync(join(tmpdir(), 'switchyard-cm-'));
  #generation = 0;
  #current: string | undefined;
  #keys = new Set<string>();

  /** kubelet's sequence: write a new generation, swap ..data atomically, fix key links, drop the old generation. */
  write(files: Record<string, string>): void {
    const gen = `..2026_11_26_10_00_00.${String(++this.#generation).padStart(9, '0')}`;
    mkdirSync(join(this.dir, gen));
    for (const [key, text] of Object.entries(files)) writeFileSync(join(this.dir, gen, key), text);
    symlinkSync(gen, join(this.dir, '..data_tmp'));
    renameSync(join(this.dir, '..data_tmp'), join(this.dir, '..data'));
    for (const key of Object.keys(files)) {
      if (!this.#keys.has(key)) symlinkSync(join('..data', key), join(this.dir, key));
    }
    for (const key of this.#keys) {
      if (!(key in files)) unlinkSync(join(this.dir, key));
    }
    this.#keys = new Set(Object.keys(files));
    if (this.#current !== undefined) rmSync(join(this.dir, this.#current), { recursive: true });
    this.#current = gen;
  }
}

async function version(sy: Switchyard): Promise<string> {
  return sy.configStatus().version;
}

// Generous: a loaded machine may take seconds; what a test asserts is that the change arrives, not how fast.
async function waitFor(cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<number> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error('timed out waiting for reload');
    await sleep(10);
  }
  return Date.now() - t0;
}

const agent = new Agent({ connections: 8 });
/** Requests counted per table generation in the reload-under-load tests: enough to judge a 9:1 or 1:3 split. */
const PER_GENERATION = 12;
after(() => agent.close());

async function hit(url: string, host: string): Promise<{ status: number; backend: string }> {
  const res = await request(url, { headers: { host }, dispatcher: agent });
  await res.body.dump();
  return { status: res.statusCode, backend: String(res.headers['x-backend'] ?? '') };
}

async function split(url: string, host: string, n: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = await hit(url, host);
    assert.equal(r.status, 200);
    counts[r.backend] = (counts[r.backend] ?? 0) + 1;
  }
  return counts;
}

describe('reload', () => {
  let old: Backend, neu: Backend;
  before(async () => {
    old = await startBackend('old');
    neu = await startBackend('new');
  });
  after(async () => { await Promise.all([old.close(), neu.close()]); });

  const billing = (o: number, n: number) => routeDoc('billing', 'billing.example.com', [
    { name: 'old', url: old.url, weight: o }, { name: 'new', url: neu.url, weight: n },
  ]);

  test('kubelet atomic swap of one key is picked up by the directory watch', async () => {
    const cm = new ConfigMapDir();
    cm.write({ 'switchyard.yaml': SERVER_DOC + billing(1, 0) });
    const sy = await Switchyard.start(cm.dir, log, { debounceMs: 50, pollMs: 60_000 });
    try {
      const url = `http://127.0.0.1:${sy.addresses.entrypoint.port}`;
      assert.deepEqual(await split(url, 'billing.example.com', 10), { old: 10 });
      const v1 = await version(sy);
      cm.write({ 'switchyard.yaml': SERVER_DOC + billing(0, 1) });
      // The poll is 60 s away: a change seen well before that came through the watch.
      const ms = await waitFor(async () => (await version(sy)) !== v1);
      assert.ok(ms < 30_000, `took ${ms} ms`);
      assert.deepEqual(await split(url, 'billing.example.com', 10), { new: 10 });
    } finally {
      await sy.shutdown();
    }
  });

  test('several keys: each team its own file; keys added and removed by swaps', async () => {
    const cm = new ConfigMapDir();
    cm.write({ 'server.yaml': SERVER_DOC, 'billing.yaml': billing(1, 0) });
    const sy = await Switchyard.start(cm.dir, log, { debounceMs: 50, pollMs: 60_000 });
    try {
      const url = `http://127.0.0.1:${sy.addresses.entrypoint.port}`;
      assert.equal((await hit(url, 'ledger.example.com')).status, 404);
      let v = await version(sy);
      cm.write({ 'server.yaml': SERVER_DOC, 'billing.yaml': billing(1, 0), 'ledger.yaml': routeDoc('ledger', 'ledger.example.com', [{ name: 'new', url: neu.url, weight: 1 }]) });
      await waitFor(async () => (await version(sy)) !== v);
      assert.equal((await hit(url, 'ledger.example.com')).backend, 'new');
      assert.equal(sy.configStatus().config && (sy.configStatus().config as { routes: unknown[] }).routes.length, 2);
      v = await version(sy);
      cm.write({ 'server.yaml': SERVER_DOC, 'ledger.yaml': routeDoc('ledger', 'ledger.example.com', [{ name: 'new', url: neu.url, weight: 1 }]) });
      await waitFor(async () => (await version(sy)) !== v);
      assert.equal((await hit(url, 'billing.example.com')).status, 404);
      assert.equal((await hit(url, 'ledger.example.com')).status, 200);
    } finally {
      await sy.shutdown();
    }
  });

  test('an in-place edit of a plain file is picked up', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-file-'));
    const file = join(dir, 'switchyard.yaml');
    writeFileSync(file, SERVER_DOC + billing(1, 0));
    const sy = await Switchyard.start(file, log, { debounceMs: 50, pollMs: 60_000 });
    try {
      const v = await version(sy);
      writeFileSync(file, SERVER_DOC + billing(0, 1));
      await waitFor(async () => (await version(sy)) !== v);
      assert.deepEqual(await split(`http://127.0.0.1:${sy.addresses.entrypoint.port}`, 'billing.example.com', 5), { new: 5 });
    } finally {
      await sy.shutdown();
    }
  });

  test('the slow poll catches a change the watch did not report', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-poll-'));
    const file = join(dir, 'switchyard.yaml');
    writeFileSync(file, SERVER_DOC + billing(1, 0));
    // A debounce longer than the poll: only the poll can apply the change in time.
    const sy = await Switchyard.start(file, log, { debounceMs: 60_000, pollMs: 200 });
    try {
      const v = await version(sy);
      writeFileSync(file, SERVER_DOC + billing(0, 1));
      // The debounce is 60 s away: a change seen well before that came through the poll.
      const ms = await waitFor(async () => (await version(sy)) !== v);
      assert.ok(ms < 30_000, `took ${ms} ms`);
    } finally {
      await sy.shutdown();
    }
  });

  test('an invalid config keeps the last good one serving, is counted and shown; fixing it recovers', async () => {
    const cm = new ConfigMapDir();
    cm.write({ 'switchyard.yaml': SERVER_DOC + billing(1, 0) });
    const sy = await Switchyard.start(cm.dir, log, { debounceMs: 50, pollMs: 60_000 });
    try {
      const url = `http://127.0.0.1:${sy.addresses.entrypoint.port}`;
      const adminUrl = `http://127.0.0.1:${sy.addresses.admin.port}`;
      const good = await version(sy);
      cm.write({ 'switchyard.yaml': SERVER_DOC + billing(0, 1).replace('weight: 1', 'weigth: 1') });
      await waitFor(() => sy.configStatus().lastError !== null);
      assert.equal(await version(sy), good);
      assert.deepEqual(await split(url, 'billing.example.com', 5), { old: 5 });
      const status = await (await fetch(`${adminUrl}/api/config`)).json() as { version: string; lastError: { issues: { file: string; line: number; path: string; message: string }[] } };
      assert.equal(status.version, good);
      const issue = status.lastError.issues.find((i) => i.path.endsWith('weigth'));
      assert.ok(issue, JSON.stringify(status.lastError));
      assert.match(issue.file, /switchyard\.yaml$/);
      assert.ok(issue.line > 0);
      assert.match(issue.message, /unknown field "weigth"/);
      let m = await scrape(adminUrl);
      assert.equal(m.get('switchyard_config_reloads_total{result="failure"}'), 1);
      assert.equal(m.get(`switchyard_config_info{version="${good}"}`), 1);
      for (const bad of ['routes: [', 'routes:\n  - name: billing\n    hosts: [a.com]\n    backends: []\n']) {
        cm.write({ 'switchyard.yaml': SERVER_DOC + bad });
        await waitFor(async () => (await scrape(adminUrl)).get('switchyard_config_reloads_total{result="failure"}')! > 1);
      }
      assert.equal(await version(sy), good);
      cm.write({ 'switchyard.yaml': SERVER_DOC + billing(0, 1) });
      await waitFor(async () => (await version(sy)) !== good);
      assert.equal(sy.configStatus().lastError, null);
      assert.deepEqual(await split(url, 'billing.example.com', 5), { new: 5 });
      m = await scrape(adminUrl);
      assert.equal(m.get('switchyard_config_reloads_total{result="success"}'), 2);
      assert.equal(m.get('switchyard_backend_weight{route="billing",backend="new"}'), 1);
    } finally {
      await sy.shutdown();
    }
  });

  test('a weights-only change opens no new upstream connections', async () => {
    let connections = 0;
    const counted = await startBackend('counted');
    counted.server.on('connection', () => { connections++; });
    const other = await startBackend('other');
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-pool-'));
    const file = join(dir, 'switchyard.yaml');
    const doc = (a: number, b: number) => SERVER_DOC + routeDoc('r', 'r.example.com', [
      { name: 'counted', url: counted.url, weight: a }, { name: 'other', url: other.url, weight: b },
    ]);
    writeFileSync(file, doc(1, 0));
    const sy = await Switchyard.start(file, log, false);
    try {
      const url = `http://127.0.0.1:${sy.addresses.entrypoint.port}`;
      await split(url, 'r.example.com', 20);
      const before = connections;
      assert.ok(before >= 1);
      for (let i = 0; i < 5; i++) {
        writeFileSync(file, doc(2 + i, 1));
        assert.equal(await sy.reload('test'), true);
        await split(url, 'r.example.com', 20);
      }
      assert.equal(connections, before, 'the pool of the unchanged backend was kept');
    } finally {
      await sy.shutdown();
      await counted.close();
      await other.close();
    }
  });

  test('50 reloads under keep-alive load: zero failed requests, and the split follows each new weight', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-load-'));
    const file = join(dir, 'switchyard.yaml');
    writeFileSync(file, SERVER_DOC + billing(1, 1));
    const sy = await Switchyard.start(file, log, false);
    const url = `http://127.0.0.1:${sy.addresses.entrypoint.port}`;
    const weights = (i: number): [number, number] => (i % 2 === 0 ? [9, 1] : [1, 3]);
    // Responses to requests that started and ended within one generation of
    // the table, by generation: those saw only that generation's weights.
    let generation = -1;
    const seen: { old: number; new: number }[] = Array.from({ length: 50 }, () => ({ old: 0, new: 0 }));
    let stop = false;
    const failures: string[] = [];
    const worker = async (): Promise<void> => {
      while (!stop) {
        const g = generation;
        try {
          const r = await hit(url, 'billing.example.com');
          if (r.status !== 200) failures.push(`status ${r.status}`);
          else if (g >= 0 && g === generation) seen[g]![r.backend as 'old' | 'new']++;
        } catch (err) {
          failures.push(String(err));
        }
      }
    };
    const load = Array.from({ length: 6 }, worker);
    try {
      for (let i = 0; i < 50; i++) {
        generation = -1;
        const [o, n] = weights(i);
        writeFileSync(file, SERVER_DOC + billing(o, n));
        assert.equal(await sy.reload('test'), true);
        generation = i;
        // A generation lasts until it has served enough requests to judge its split, however slow the machine.
        await waitFor(() => seen[i]!.old + seen[i]!.new >= PER_GENERATION, 60_000);
      }
    } finally {
      stop = true;
      await Promise.all(load);
      await sy.shutdown();
    }
    assert.deepEqual(failures, []);
    for (let i = 0; i < 50; i++) {
      const [o, n] = weights(i);
      const { old: a, new: b } = seen[i]!;
      const total = a + b;
      assert.ok(total >= PER_GENERATION, `generation ${i}: only ${total} requests`);
      // Smooth WRR stays within about one pick of the exact share at any point.
      assert.ok(Math.abs(b - (total * n) / (o + n)) <= 2, `generation ${i} (${o}/${n}): old ${a}, new ${b}`);
    }
  });

  test('50 reloads under gRPC load: long-lived streams and per-RPC calls never fail, and the RPC split follows each new weight', async () => {
    const gOld = await startGrpcBackend('old');
    const gNew = await startGrpcBackend('new');
    const ledger = (o: number, n: number) => routeDoc('ledger', 'ledger.example.com', [
      { name: 'old', url: gOld.url, weight: o }, { name: 'new', url: gNew.url, weight: n },
    ]).replace('  - name: ledger\n', '  - name: ledger\n    protocol: h2c\n');
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-grpc-load-'));
    const file = join(dir, 'switchyard.yaml');
    writeFileSync(file, SERVER_DOC + ledger(1, 1));
    const sy = await Switchyard.start(file, log, false);
    const client = grpcClient(`127.0.0.1:${sy.addresses.entrypoint.port}`, 'ledger.example.com', { localPool: true });
    const weights = (i: number): [number, number] => (i % 2 === 0 ? [9, 1] : [1, 3]);
    let generation = -1;
    const seen: { old: number; new: number }[] = Array.from({ length: 50 }, () => ({ old: 0, new: 0 }));
    const failures: string[] = [];
    let stop = false;
    // Streams opened before the first reload and held across all 50: each is
    // one RPC, so it stays on the backend it started on whatever the weights.
    // Each writes one message per generation, so every stream carries traffic across every reload.
    const streams = [0, 1, 2].map(() => {
      const call = client.BidiStream(metadata(), { deadline: Date.now() + 300_000 });
      const done = collect(call, [], true);
      let sent = 0;
      return { call, done, write: () => { call.write({ tag: String(sent++) }); }, sent: () => sent };
    });
    const worker = async (): Promise<void> => {
      while (!stop) {
        const g = generation;
        const r = await unary(client, {});
        if (r.code !== 0) failures.push(`unary ${r.code} ${r.details}`);
        else if (g >= 0 && g === generation) seen[g]![r.replies[0]!.backend as 'old' | 'new']++;
      }
    };
    const load = Array.from({ length: 6 }, worker);
    try {
      for (let i = 0; i < 50; i++) {
        generation = -1;
        const [o, n] = weights(i);
        writeFileSync(file, SERVER_DOC + ledger(o, n));
        assert.equal(await sy.reload('test'), true);
        generation = i;
        for (const s of streams) s.write();
        await waitFor(() => seen[i]!.old + seen[i]!.new >= PER_GENERATION, 60_000);
      }
    } finally {
      stop = true;
      await Promise.all(load);
      for (const s of streams) s.call.end();
    }
    const results = await Promise.all(streams.map((s) => s.done));
    client.close();
    await sy.shutdown();
    gOld.close();
    gNew.close();
    assert.deepEqual(failures, []);
    results.forEach((r, i) => {
      assert.equal(r.code, 0, `stream ${i}: ${r.details}`);
      assert.equal(r.replies.length, streams[i]!.sent(), `stream ${i}: every message echoed`);
      assert.equal(r.replies.length, 50, `stream ${i}: one message per generation`);
      assert.equal(new Set(r.replies.map((x) => x.backend)).size, 1, `stream ${i} stayed on one backend`);
    });
    for (let i = 0; i < 50; i++) {
      const [o, n] = weights(i);
      const { old: a, new: b } = seen[i]!;
      const total = a + b;
      assert.ok(total >= PER_GENERATION, `generation ${i}: only ${total} RPCs`);
      assert.ok(Math.abs(b - (total * n) / (o + n)) <= 2, `generation ${i} (${o}/${n}): old ${a}, new ${b}`);
    }
  });

  test('SIGHUP reloads a router started without the watch', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-hup-'));
    const file = join(dir, 'switchyard.yaml');
    writeFileSync(file, SERVER_DOC + billing(1, 0));
    const child = await spawnRouter(file, ['--no-watch']);
    try {
      assert.deepEqual(await split(child.url, 'billing.example.com', 4), { old: 4 });
      writeFileSync(file, SERVER_DOC + billing(0, 1));
      await sleep(300);
      assert.deepEqual(await split(child.url, 'billing.example.com', 4), { old: 4 }, 'no watch: nothing changes by itself');
      child.child.kill('SIGHUP');
      await waitFor(() => child.logs.some((l) => l['msg'] === 'config reloaded'));
      assert.deepEqual(await split(child.url, 'billing.example.com', 4), { new: 4 });
    } finally {
      child.child.kill('SIGTERM');
      assert.equal(await child.exited, 0);
    }
  });
});
