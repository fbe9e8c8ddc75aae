// Large bodies end to end through the HTTP/1.1 path: byte-exact both ways,
// Content-Length and chunked, fast and slow clients (many at once on one
// upstream pool, which reuses its read buffer), a client that stops reading
// (backpressure reaches the backend; other downloads go on meanwhile), and
// an h2c client of an HTTP/1.1 backend. Bodies are a prime-period pattern, so a read buffer's bytes
// delivered twice, late or overwritten show up at their offset.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2 from 'node:http2';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { startBackend, startRouter, type Backend, type Router } from './helpers.ts';

/** The pattern's period: prime, so it never lines up with 64 KiB reads. */
const PERIOD = 1_000_003;
const BLOCK = randomBytes(PERIOD);

/** Bytes [from, from + n) of body `seed`, which starts at its own place in the period. */
function slice(seed: number, from: number, n: number): Buffer {
  const start = (seed * 7_919 + from) % PERIOD;
  if (start + n <= PERIOD) return BLOCK.subarray(start, start + n);
  return Buffer.concat([BLOCK.subarray(start), BLOCK.subarray(0, n - (PERIOD - start))]);
}

/** Checks bytes as they arrive against the pattern; remembers the first wrong offset. */
class Verifier {
  readonly #seed: number;
  length = 0;
  firstBad = -1;

  constructor(seed: number) {
    this.#seed = seed;
  }

  feed(chunk: Buffer): void {
    if (this.firstBad < 0 && !chunk.equals(slice(this.#seed, this.length, chunk.length))) {
      let i = 0;
      const want = slice(this.#seed, this.length, chunk.length);
      while (chunk[i] === want[i]) i++;
      this.firstBad = this.length + i;
    }
    this.length += chunk.length;
  }

  assertBody(size: number, what: string): void {
    assert.equal(this.firstBad, -1, `${what}: first wrong byte at offset ${this.firstBad}`);
    assert.equal(this.length, size, `${what}: length`);
  }
}

/** Backend progress of the responses it streams, by seed: bytes handed to res.write so far. */
const written = new Map<number, number>();

/**
 * GET /bytes?size=N&seed=S&mode=length|chunked: the pattern, in writes of
 * varying size (1 B .. ~150 KB) with backpressure; `chunked` leaves out
 * Content-Length, so node:http sends each write as one chunk.
 * POST: checks the request body against the pattern of ?seed= and answers
 * `ok LENGTH` or `bad OFFSET`.
 */
function patternServer(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://x');
  const seed = Number(url.searchParams.get('seed'));
  if (req.method === 'POST') {
    const v = new Verifier(seed);
    req.on('data', (c: Buffer) => v.feed(c));
    req.on('end', () => res.end(v.firstBad >= 0 ? `bad ${v.firstBad}` : `ok ${v.length}`));
    return;
  }
  const size = Number(url.searchParams.get('size'));
  const chunked = url.searchParams.get('mode') === 'chunked';
  res.writeHead(200, chunked ? { 'content-type': 'application/octet-stream' } : { 'content-length': String(size) });
  let off = 0;
  let step = seed;
  written.set(seed, 0);
  const pump = (): void => {
    while (off < size) {
      step = (step * 1_103_515_245 + 12_345) % 2_147_483_648;
      const n = Math.min(size - off, 1 + (step % 150_000));
      const ok = res.write(slice(seed, off, n));
      off += n;
      written.set(seed, off);
      if (!ok) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
after(() => agent.destroy());

interface Got {
  status: number;
  headers: http.IncomingHttpHeaders;
  v: Verifier;
}

/** GET through the router; `pauseEvery`: stop reading for `pauseMs` after each this many bytes (a slow client). */
async function download(router: Router, path: string, seed: number, opts: { pauseEvery?: number; pauseMs?: number } = {}): Promise<Got> {
  const req = http.get(`${router.url}${path}`, { agent, headers: { host: 'big.test' } });
  const [res] = (await once(req, 'response')) as [IncomingMessage];
  const v = new Verifier(seed);
  let sincePause = 0;
  res.on('data', (c: Buffer) => {
    v.feed(c);
    sincePause += c.length;
    if (opts.pauseEvery !== undefined && sincePause >= opts.pauseEvery) {
      sincePause = 0;
      res.pause();
      setTimeout(() => res.resume(), opts.pauseMs ?? 10);
    }
  });
  await once(res, 'end');
  return { status: res.statusCode ?? 0, headers: res.headers, v };
}

describe('large bodies through HTTP/1.1', () => {
  let backend: Backend, router: Router;

  before(async () => {
    backend = await startBackend('pattern', patternServer);
    router = await startRouter({
      routes: [{ name: 'big', hosts: ['big.test'], backends: [{ name: 'pattern', url: backend.url, weight: 1 }] }],
    });
  });

  after(async () => {
    await router.close();
    await backend.close();
  });

  for (const mode of ['length', 'chunked'] as const) {
    test(`a 5 MB response (${mode === 'length' ? 'Content-Length' : 'chunked'}) arrives byte-exact, framed as the backend framed it`, async () => {
      const size = 5 * 1024 * 1024 + 17;
      const r = await download(router, `/bytes?size=${size}&seed=1&mode=${mode}`, 1);
      assert.equal(r.status, 200);
      if (mode === 'length') assert.equal(r.headers['content-length'], String(size));
      else assert.equal(r.headers['transfer-encoding'], 'chunked');
      r.v.assertBody(size, mode);
    });
  }

  test('40 downloads at once, a third of them slow readers, all byte-exact', async () => {
    const runs = Array.from({ length: 40 }, (_, i) => {
      const seed = 100 + i;
      const size = 300_000 + i * 37_003;
      const mode = i % 2 === 0 ? 'length' : 'chunked';
      const slow = i % 3 === 0 ? { pauseEvery: 128 * 1024, pauseMs: 5 } : {};
      return download(router, `/bytes?size=${size}&seed=${seed}&mode=${mode}`, seed, slow)
        .then((r) => { assert.equal(r.status, 200); r.v.assertBody(size, `download ${i} (${mode}${i % 3 === 0 ? ', slow' : ''})`); });
    });
    await Promise.all(runs);
  });

  for (const mode of ['length', 'chunked'] as const) {
    test(`a client that stops reading holds the backend back (${mode}); what follows, and other downloads meanwhile, byte-exact`, async () => {
      // Kernel buffers on loopback can take tens of MB (tcp_rmem max 32 MB here): well above them.
      const size = 128 * 1024 * 1024;
      const seed = mode === 'length' ? 2 : 3;
      const req = http.get(`${router.url}/bytes?size=${size}&seed=${seed}&mode=${mode}`, { agent, headers: { host: 'big.test' } });
      const [res] = (await once(req, 'response')) as [IncomingMessage];
      res.pause();
      // Wait until the backend can write no more: every buffer between it and the client is full.
      let last = -1;
      for (let stable = 0; stable < 3;) {
        await sleep(150);
        const now = written.get(seed) ?? 0;
        stable = now === last ? stable + 1 : 0;
        last = now;
      }
      assert.ok(last < size / 2, `the backend wrote ${last} of ${size} bytes to a client that read none`);
      // The stalled response's last chunk waits in its client socket's queue,
      // by reference to the read buffer: these reads must land elsewhere.
      await Promise.all(Array.from({ length: 6 }, (_, i) => {
        const other = 200 + i;
        const n = 700_000 + i * 65_537;
        return download(router, `/bytes?size=${n}&seed=${other}&mode=${mode}`, other)
          .then((r) => { assert.equal(r.status, 200); r.v.assertBody(n, `download ${i} during the stall`); });
      }));
      const v = new Verifier(seed);
      res.on('data', (c: Buffer) => v.feed(c));
      res.resume();
      await once(res, 'end');
      v.assertBody(size, mode);
    });
  }

  for (const chunked of [false, true]) {
    test(`a 5 MB upload (${chunked ? 'chunked' : 'Content-Length'}) reaches the backend byte-exact`, async () => {
      const size = 5 * 1024 * 1024 + 3;
      const seed = chunked ? 5 : 4;
      const req = http.request(`${router.url}/up?seed=${seed}`, {
        method: 'POST', agent,
        headers: { host: 'big.test', ...(chunked ? {} : { 'content-length': String(size) }) },
      });
      for (let off = 0; off < size;) {
        const n = Math.min(size - off, 70_001);
        if (!req.write(slice(seed, off, n))) await once(req, 'drain');
        off += n;
      }
      req.end();
      const [res] = (await once(req, 'response')) as [IncomingMessage];
      let text = '';
      for await (const c of res) text += String(c);
      assert.equal(res.statusCode, 200);
      assert.equal(text, `ok ${size}`);
    });
  }

  test('an h2c client of an HTTP/1.1 backend gets large bodies byte-exact', async () => {
    const session = http2.connect(router.url);
    try {
      const runs = [0, 1, 2, 3].map(async (i) => {
        const seed = 200 + i;
        const size = 2 * 1024 * 1024 + i * 1_001;
        const stream = session.request({ ':path': `/bytes?size=${size}&seed=${seed}&mode=${i % 2 === 0 ? 'length' : 'chunked'}`, ':authority': 'big.test' });
        const v = new Verifier(seed);
        stream.on('data', (c: Buffer) => v.feed(c));
        const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
        assert.equal(headers[':status'], 200);
        await once(stream, 'end');
        v.assertBody(size, `h2c download ${i}`);
      });
      await Promise.all(runs);
    } finally {
      session.close();
    }
  });
});
