// The HTTP/2 server side on the frame layer (src/ingress/h2-conn.ts, h2.ts),
// driven by a raw frame client against the router in this process: the
// connection and stream gauges, what it advertises, the header-list limit at
// its exact boundary, flow control toward
// slow and tiny-window clients (with the backend held back, not buffered),
// request validation, and a response complete before its request.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http2 from 'node:http2';
import { setTimeout as sleep } from 'node:timers/promises';
import { scrape, startBackend, startRouter, type Backend, type Router } from './helpers.ts';
import { FLAG, FRAME, RawH2, frame, hpack, requestBlock, type Frame } from './h2-raw.ts';

const {
  NGHTTP2_NO_ERROR, NGHTTP2_PROTOCOL_ERROR, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE: INITIAL_WINDOW,
  NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS: MAX_STREAMS, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
} = http2.constants;
const HOST = 'h2.example.com';
const MAX_HEADER_BYTES = 4096;
const BIG = 24 * 1024 * 1024;
const SMALL = Buffer.from('0123456789'.repeat(10));

let backend: Backend;
let router: Router;
/** Whether the backend's response to /big has been written out completely. */
let bigFinished = false;
/** Answers /hold when called. */
const held: (() => void)[] = [];

before(async () => {
  const chunk = Buffer.alloc(64 * 1024, 'x');
  backend = await startBackend('b', (req, res) => {
    if (req.url === '/big') {
      // Written as fast as the router takes it: held back only by backpressure.
      res.writeHead(200, { 'content-length': String(BIG) });
      let left = BIG;
      const more = (): void => {
        while (left > 0) {
          left -= chunk.length;
          if (!res.write(chunk)) { res.once('drain', more); return; }
        }
        res.end(() => { bigFinished = true; });
      };
      more();
      return;
    }
    if (req.url === '/hold') {
      held.push(() => res.end('held'));
      return;
    }
    if (req.url === '/early') {
      res.end('early'); // without reading the request body
      return;
    }
    req.resume();
    req.on('end', () => res.end(SMALL));
  });
  router = await startRouter({
    entrypoint: { maxHeaderBytes: MAX_HEADER_BYTES },
    routes: [{ name: 'h2', hosts: [HOST], backends: [{ name: 'b', url: backend.url, weight: 1 }] }],
  });
});

after(async () => {
  await router.close();
  await backend.close();
});

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function settings(pairs: [number, number][]): Buffer {
  const p = Buffer.alloc(6 * pairs.length);
  pairs.forEach(([id, v], i) => { p.writeUInt16BE(id, 6 * i); p.writeUInt32BE(v, 6 * i + 2); });
  return frame(FRAME.SETTINGS, 0, 0, p);
}

function dataOf(fs: Frame[], stream: number): Frame[] {
  return fs.filter((f) => f.type === FRAME.DATA && f.stream === stream);
}

function bytesOf(fs: Frame[], stream: number): number {
  return dataOf(fs, stream).reduce((n, f) => n + f.payload.length, 0);
}

function ended(fs: Frame[], stream: number): boolean {
  return fs.some((f) => (f.type === FRAME.DATA || f.type === FRAME.HEADERS) && f.stream === stream && (f.flags & FLAG.END_STREAM) !== 0);
}

function status(fs: Frame[], stream: number): string | undefined {
  // The router's encoder sends :status first, as a static-table index or a literal with indexed name.
  const h = fs.find((f) => f.type === FRAME.HEADERS && f.stream === stream);
  if (h === undefined) return undefined;
  const b = h.payload[0]!;
  const indexed: Record<number, string> = { 0x88: '200', 0x89: '204', 0x8a: '206', 0x8b: '304', 0x8c: '400', 0x8d: '404', 0x8e: '500' };
  if (indexed[b] !== undefined) return indexed[b];
  return h.payload.subarray(2, 2 + h.payload[1]!).toString('latin1');
}

function rstCode(fs: Frame[], stream: number): number | undefined {
  return fs.find((f) => f.type === FRAME.RST_STREAM && f.stream === stream)?.payload.readUInt32BE(0);
}

/** The h2c connection and stream gauges, once they read `conns` and `streams` (within 5 s). */
async function gauges(conns: number, streams: number): Promise<void> {
  const end = Date.now() + 5000;
  for (;;) {
    const m = await scrape(router.adminUrl);
    const got = [m.get('switchyard_open_connections{protocol="h2c"}') ?? 0, m.get('switchyard_open_streams{protocol="h2c"}') ?? 0];
    if (got[0] === conns && got[1] === streams) return;
    assert.ok(Date.now() < end, `h2c connections/streams ${got.join('/')}, expected ${conns}/${streams}`);
    await sleep(20);
  }
}

describe('HTTP/2 server side', () => {
  test('open connections and streams are counted while open (switchyard_open_connections / _open_streams, h2c)', async () => {
    await gauges(0, 0);
    const c = await RawH2.connect(router.port);
    try {
      await gauges(1, 0);
      c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, requestBlock(HOST, '/hold')));
      for (const end = Date.now() + 10_000; held.length === 0; await sleep(10)) assert.ok(Date.now() < end, 'the request reached the backend');
      await gauges(1, 1);
      held.shift()!();
      await c.until((fs) => ended(fs, 1), 10_000, 'the answer');
      await gauges(1, 0);
    } finally {
      c.close();
    }
    await gauges(0, 0);
  });

  test('SETTINGS advertise the stream limit, window and header-list size; the list limit holds at its exact boundary (431 past it)', async () => {
    const c = await RawH2.connect(router.port);
    try {
      const s = c.frames.find((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0)!;
      const got = new Map<number, number>();
      for (let p = 0; p < s.payload.length; p += 6) got.set(s.payload.readUInt16BE(p), s.payload.readUInt32BE(p + 2));
      assert.equal(got.get(MAX_HEADER_LIST), MAX_HEADER_BYTES);
      assert.equal(got.get(MAX_STREAMS), 1000);
      assert.equal(got.get(INITIAL_WINDOW), 1 << 20);
      // RFC 9113 §6.5.2: name + value + 32 per field.
      const base: [string, string][] = [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', HOST]];
      const baseSize = base.reduce((n, [k, v]) => n + k.length + v.length + 32, 0);
      const pad = (extra: number): [string, string][] => [...base, ['x-pad', 'p'.repeat(MAX_HEADER_BYTES - baseSize - 32 - 'x-pad'.length + extra)]];
      const hits = backend.hits;
      c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, hpack(pad(0))));
      c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 3, hpack(pad(1))));
      await c.until((fs) => ended(fs, 1) && ended(fs, 3), 10_000, 'both answers');
      assert.equal(status(c.frames, 1), '200');
      assert.equal(status(c.frames, 3), '431');
      assert.equal(backend.hits, hits + 1, 'the list over the limit did not reach the backend');
      assert.ok(!c.isClosed, 'the connection goes on');
    } finally {
      c.close();
    }
  });

  test('a client that reads slowly gets a large response as its windows allow; the backend is held back meanwhile', async () => {
    bigFinished = false;
    // Default windows (65,535 for the stream and the connection), none given back yet.
    const c = await RawH2.connect(router.port);
    try {
      c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, requestBlock(HOST, '/big')));
      await c.until((fs) => bytesOf(fs, 1) >= 65_535, 10_000, 'a window of data');
      await sleep(500);
      assert.equal(bytesOf(c.frames, 1), 65_535, 'not a byte past the window');
      for (const f of dataOf(c.frames, 1)) assert.ok(f.payload.length <= 16_384, 'frames within the default max frame size');
      assert.equal(bigFinished, false, 'the backend could write its whole response while the client read nothing');
      // Give back what arrives, as a reader would, until the end.
      let granted = 65_535;
      while (!ended(c.frames, 1)) {
        const got = bytesOf(c.frames, 1);
        if (got === granted) {
          const more = 1024 * 1024;
          c.send(Buffer.concat([frame(FRAME.WINDOW_UPDATE, 0, 0, u32(more)), frame(FRAME.WINDOW_UPDATE, 0, 1, u32(more))]));
          granted += more;
        }
        assert.ok(got <= granted, `${got} bytes received with ${granted} granted`);
        await c.until((fs) => bytesOf(fs, 1) > got || ended(fs, 1), 10_000, 'more data');
      }
      assert.equal(bytesOf(c.frames, 1), BIG);
      const digest = createHash('sha256');
      for (const f of dataOf(c.frames, 1)) digest.update(f.payload);
      assert.equal(digest.digest('hex'), createHash('sha256').update(Buffer.alloc(BIG, 'x')).digest('hex'));
    } finally {
      c.close();
    }
  });

  test('tiny windows: one byte at a time, then a larger SETTINGS_INITIAL_WINDOW_SIZE mid-stream releases the rest', async () => {
    const c = await RawH2.connect(router.port, [[INITIAL_WINDOW, 1]]);
    try {
      c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, requestBlock(HOST, '/small')));
      for (let i = 1; i <= 10; i++) {
        await c.until((fs) => bytesOf(fs, 1) >= i, 10_000, `byte ${i}`);
        await sleep(i === 1 ? 200 : 0);
        assert.equal(bytesOf(c.frames, 1), i, 'one byte per byte of window');
        if (i < 10) c.send(frame(FRAME.WINDOW_UPDATE, 0, 1, u32(1)));
      }
      // The stream's window moves by the difference (RFC 9113 §6.9.2): 1 → 1000 gives it 999.
      c.send(settings([[INITIAL_WINDOW, 1000]]));
      await c.until((fs) => ended(fs, 1), 10_000, 'the end of the response');
      const body = Buffer.concat(dataOf(c.frames, 1).map((f) => f.payload));
      assert.deepEqual(body, SMALL);
      assert.ok(dataOf(c.frames, 1).slice(0, 10).every((f) => f.payload.length === 1));
    } finally {
      c.close();
    }
  });

  test('malformed requests are reset (PROTOCOL_ERROR), never reach the backend, and the connection serves on', async () => {
    const bad: [string, string][][] = [
      [['x-Upper', 'a']],
      [['x-crlf', 'a\r\nx-injected: 1']],
      [['connection', 'keep-alive']],
      [['te', 'gzip']],
      [['content-length', 'ten']],
    ];
    const c = await RawH2.connect(router.port);
    try {
      const hits = backend.hits;
      let id = 1;
      for (const extra of bad) {
        c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, requestBlock(HOST, '/', 'GET', extra)));
        id += 2;
      }
      // A space in :path would split an HTTP/1.1 request line; a pseudo-header after a regular one; no :path.
      c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, requestBlock(HOST, '/a b')));
      c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id + 2, hpack([[':method', 'GET'], [':scheme', 'http'], ['x-a', 'b'], [':path', '/'], [':authority', HOST]])));
      c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id + 4, hpack([[':method', 'GET'], [':scheme', 'http'], [':authority', HOST]])));
      const last = id + 4;
      await c.until((fs) => fs.filter((f) => f.type === FRAME.RST_STREAM).length >= bad.length + 3, 10_000, 'the resets');
      for (let s = 1; s <= last; s += 2) assert.equal(rstCode(c.frames, s), NGHTTP2_PROTOCOL_ERROR, `stream ${s}`);
      assert.equal(backend.hits, hits);
      c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, last + 2, requestBlock(HOST, '/ok')));
      await c.until((fs) => ended(fs, last + 2), 10_000, 'a valid request after them');
      assert.equal(status(c.frames, last + 2), '200');
    } finally {
      c.close();
    }
  });

  test('a response complete before its request body: RST_STREAM NO_ERROR after the answer stops the body', async () => {
    const c = await RawH2.connect(router.port);
    try {
      c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, requestBlock(HOST, '/early', 'POST')));
      c.send(frame(FRAME.DATA, 0, 1, Buffer.alloc(1000)));
      await c.until((fs) => rstCode(fs, 1) !== undefined, 10_000, 'RST_STREAM');
      assert.equal(status(c.frames, 1), '200');
      assert.equal(Buffer.concat(dataOf(c.frames, 1).map((f) => f.payload)).toString(), 'early');
      assert.ok(ended(c.frames, 1), 'the response ended first');
      const rstAt = c.frames.findIndex((f) => f.type === FRAME.RST_STREAM);
      const endAt = c.frames.findIndex((f) => f.stream === 1 && (f.flags & FLAG.END_STREAM) !== 0 && f.type !== FRAME.RST_STREAM);
      assert.ok(endAt < rstAt);
      assert.equal(rstCode(c.frames, 1), NGHTTP2_NO_ERROR);
    } finally {
      c.close();
    }
  });
});
