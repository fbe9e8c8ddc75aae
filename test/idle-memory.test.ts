// Memory given back once the router goes idle (src/idle-memory.ts): when, from
// the coarse clock's ticks (a pure function, every case spelled out); that a
// reduction runs only when the heap grew; and, end to end, that a router left
// with a thousand idle keep-alive connections after a burst gives its young
// generation back no sooner than IDLE_MS after the last request, with every
// connection still open and served.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { GROWTH, IDLE_MS, IdleWatch, giveBackMemory } from '../src/idle-memory.ts';
import { spawnRouter, startBackend, waitForLog, writeConfig, type Backend, type RouterProcess } from './helpers.ts';

describe('IdleWatch', () => {
  test('says idle once, quietTicks after the last activity, and not before any activity', () => {
    const w = new IdleWatch(4);
    // A fresh process with no traffic is left to V8.
    for (let t = 1; t <= 10; t++) assert.equal(w.tick(t, 0, 0), false);
    assert.equal(w.tick(11, 1, 0), false); // a request
    assert.equal(w.tick(12, 1, 0), false);
    assert.equal(w.tick(14, 1, 0), false);
    assert.equal(w.tick(15, 1, 0), true); // 4 ticks quiet
    for (let t = 16; t <= 30; t++) assert.equal(w.tick(t, 1, 0), false, 'once per quiet spell');
  });

  test('any new accept or request, or anything in flight, starts the quiet time again', () => {
    const w = new IdleWatch(4);
    assert.equal(w.tick(1, 5, 0), false);
    assert.equal(w.tick(4, 6, 0), false); // more activity at 4
    assert.equal(w.tick(7, 6, 0), false);
    assert.equal(w.tick(8, 6, 0), true);
    assert.equal(w.tick(9, 7, 1), false); // a long request: in flight, no new activity after its start
    for (let t = 10; t <= 20; t++) assert.equal(w.tick(t, 7, 1), false, 'never while something is in flight');
    assert.equal(w.tick(21, 7, 0), false); // it ended between 20 and 21
    assert.equal(w.tick(23, 7, 0), false);
    assert.equal(w.tick(24, 7, 0), true); // 4 ticks after the last one that saw it in flight
  });
});

describe('giveBackMemory', () => {
  test('runs when V8\'s resident heap grew by GROWTH since the last run, and not again without growth', () => {
    // This test process has grown its heap far past GROWTH by now, so the first call reduces.
    const first = giveBackMemory();
    assert.ok(first !== undefined, 'the first call reduces');
    assert.ok(first.newSpaceAfter <= first.newSpaceBefore, JSON.stringify(first));
    assert.ok(first.heapAfter <= first.heapBefore, JSON.stringify(first));
    assert.equal(giveBackMemory(), undefined, 'no growth since: nothing to do');
    // Grown by more than GROWTH (held live, so the heap cannot shrink below it): worth another run.
    const held = Array.from({ length: (2 * GROWTH) / 1024 }, (_, i) => `${i}`.padEnd(1000));
    assert.ok(giveBackMemory() !== undefined);
    assert.ok(held.length > 0);
  });
});

/** `n` connections that each had one answer, held open. */
async function idleConnections(port: number, host: string, n: number): Promise<net.Socket[]> {
  const one = (): Promise<net.Socket> => new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    s.on('error', reject);
    s.on('data', (c: Buffer) => {
      got += c.toString('latin1');
      if (/\r\n\r\n/.test(got) && got.startsWith('HTTP/1.1 200')) {
        s.removeAllListeners('data');
        resolve(s);
      }
    });
    s.write(`GET / HTTP/1.1\r\nhost: ${host}\r\n\r\n`);
  });
  const out: net.Socket[] = [];
  for (let i = 0; i < n; i += 100) out.push(...await Promise.all(Array.from({ length: Math.min(100, n - i) }, one)));
  return out;
}

/** One more request on a held connection: its status line. */
function again(s: net.Socket, host: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    s.on('error', reject);
    s.on('data', (c: Buffer) => {
      got += c.toString('latin1');
      if (got.includes('\r\n')) resolve(got.slice(0, got.indexOf('\r\n')));
    });
    s.write(`GET / HTTP/1.1\r\nhost: ${host}\r\n\r\n`);
  });
}

describe('a router after a burst of connections that stay idle', () => {
  let backend: Backend;
  let router: RouterProcess | undefined;
  const sockets: net.Socket[] = [];
  after(async () => {
    for (const s of sockets) s.destroy();
    router?.child.kill('SIGKILL');
    await backend?.close();
  });

  test('gives its young generation back IDLE_MS after the last request, and serves every connection after', async () => {
    backend = await startBackend('a', (req, res) => { req.resume(); res.end('hello'); });
    router = await spawnRouter(writeConfig({ routes: [{ name: 'r', hosts: ['a.test'], backends: [{ name: 'a', url: backend.url, weight: 1 }] }] }));
    sockets.push(...await idleConnections(router.port, 'a.test', 1000));
    const lastAnswer = Date.now();
    const entry = await waitForLog(router, 'idle: memory given back', IDLE_MS + 20_000);
    // Never early: the clock counts whole ticks of quiet after the tick that saw the last request.
    assert.ok(Number(entry['time']) >= lastAnswer + IDLE_MS - 50, `${Number(entry['time']) - lastAnswer} ms after the last answer`);
    // The burst grew the young generation; the reduction took it back below that.
    assert.ok(Number(entry['newSpaceAfter']) < Number(entry['newSpaceBefore']), JSON.stringify(entry));
    assert.ok(Number(entry['heapAfter']) < Number(entry['heapBefore']), JSON.stringify(entry));
    // Nothing was cut: every connection is open and answers.
    const statuses = await Promise.all(sockets.map((s) => again(s, 'a.test')));
    assert.deepEqual(new Set(statuses), new Set(['HTTP/1.1 200 OK']));
  });
});
