// HTTP/2 abuse against the router run as a process, by a raw frame client:
// rapid reset (CVE-2023-44487), CONTINUATION flood (CVE-2024-27316 class), an
// oversized header block, idle and trickling sessions (h2 slowloris), and
// SETTINGS/PING floods, and floods of frames that do no request's work
// (PRIORITY, WINDOW_UPDATE, SETTINGS, unknown types...) from a client that
// reads its answers. Each must end in a bounded way: the
// offending stream or session is closed, upstream streams are cancelled, and
// the router keeps serving everyone else. Behaviour only; CPU and memory against HAProxy are
// measured by bench/h2-abuse.ts.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { spawnRouter, startBackend, writeConfig, type Backend, type RouterProcess } from './helpers.ts';
import { startH2Backend, type H2Backend } from './grpc-helpers.ts';
import { FLAG, FRAME, RawH2, frame, hpack, ping, requestBlock, rstStream, windowUpdate } from './h2-raw.ts';

const { NGHTTP2_CANCEL, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_NO_ERROR } = http2.constants;
const HOST = 'abuse.example.com';
const H1_HOST = 'h1.example.com';
/** The body of /big: 4 MiB, some 256 DATA frames of 16 KiB. */
const BIG = 4 << 20;

let backend: H2Backend;
let h1Backend: Backend;
/** Streams open on the backend now, and the reset codes of those that were cancelled. */
let open = 0;
const resetCodes: number[] = [];
let router: RouterProcess;

before(async () => {
  // /slow never answers; anything else gets a small 200.
  backend = await startH2Backend('abuse', (stream, headers) => {
    open++;
    stream.once('close', () => {
      open--;
      if (stream.rstCode !== NGHTTP2_NO_ERROR) resetCodes.push(stream.rstCode ?? -1);
    });
    stream.resume();
    if (headers[':path'] === '/slow') return;
    if (headers[':path'] === '/big') {
      stream.respond({ ':status': 200 });
      stream.end(Buffer.alloc(BIG, 'b'));
      return;
    }
    stream.respond({ ':status': 200 });
    stream.end('ok');
  });
  // Answers at once, without reading the request body.
  h1Backend = await startBackend('h1', (_req, res) => res.end('early'));
  router = await spawnRouter(writeConfig({
    entrypoint: { idleTimeout: '1s', headersTimeout: '1s' },
    routes: [
      { name: 'abuse', hosts: [HOST], protocol: 'h2c', backends: [{ name: 'only', url: backend.url, weight: 1 }] },
      { name: 'h1', hosts: [H1_HOST], protocol: 'http', backends: [{ name: 'only', url: h1Backend.url, weight: 1 }] },
    ],
  }));
});

after(async () => {
  router.child.kill('SIGTERM');
  await router.exited;
  await backend.close();
  await h1Backend.close();
});

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Sends `batch` again and again, up to `max` times, until the router sends
 * GOAWAY or closes; returns how many batches went. Each batch ends with a PING,
 * and the next waits for its ACK: writing on while the router closes would
 * fail with EPIPE, and the socket would go before the GOAWAY in it was read.
 */
async function flood(c: RawH2, batch: Buffer, max: number): Promise<number> {
  let sent = 0;
  while (sent < max && !c.isClosed && c.goaway() === undefined) {
    const mark = Buffer.alloc(8);
    mark.writeUInt32BE(++sent);
    c.send(Buffer.concat([batch, ping(false, mark)]));
    await c.until((fs) => fs.some((f) => f.type === FRAME.PING && (f.flags & FLAG.ACK) !== 0 && f.payload.equals(mark)) || c.goaway() !== undefined, 10_000, `the ACK of batch ${sent}`);
  }
  return sent;
}

/** A well-behaved request still gets its answer: the router survived and serves others. */
async function stillServes(): Promise<void> {
  assert.equal(router.child.exitCode, null, 'the router exited');
  const c = await RawH2.connect(router.port);
  try {
    c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, requestBlock(HOST)));
    await c.until((fs) => fs.some((f) => f.type === FRAME.DATA && f.stream === 1 && (f.flags & FLAG.END_STREAM) !== 0), 10_000, 'a response');
    assert.ok(!c.isClosed);
  } finally {
    c.close();
  }
}

describe('HTTP/2 abuse is bounded', () => {
  test('a client reset cancels the upstream stream at once', async () => {
    const c = await RawH2.connect(router.port);
    try {
      const before = resetCodes.length;
      c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, requestBlock(HOST, '/slow', 'POST')));
      await until(() => open === 1, 10_000, 'the backend sees the stream');
      c.send(rstStream(1, NGHTTP2_CANCEL));
      await until(() => open === 0, 5_000, 'the upstream stream is cancelled');
      assert.deepEqual(resetCodes.slice(before), [NGHTTP2_CANCEL]);
    } finally {
      c.close();
    }
  });

  test('a session that dies of a protocol error while a request body is still coming does not take the router down', async () => {
    for (let i = 0; i < 5; i++) {
      const c = await RawH2.connect(router.port);
      try {
        c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, requestBlock(H1_HOST, '/upload', 'POST')));
        c.send(frame(FRAME.DATA, 0, 1, Buffer.alloc(1000)));
        await c.until((fs) => fs.some((f) => f.type === FRAME.HEADERS && f.stream === 1), 10_000, 'the early response');
        // A frame in the middle of a header block: a connection error (RFC 9113 §4.3).
        c.send(Buffer.concat([frame(FRAME.HEADERS, 0, 3, requestBlock(H1_HOST)), frame(FRAME.PRIORITY, 0, 3, Buffer.from([0, 0, 0, 1, 16]))]));
        await c.closed;
      } finally {
        c.close();
      }
    }
    await new Promise((r) => setTimeout(r, 200));
    await stillServes();
  });

  test('rapid reset (CVE-2023-44487): streams opened and reset in a loop end the session; upstream streams do not pile up', async () => {
    const c = await RawH2.connect(router.port);
    const streamsBefore = backend.streams;
    let sent = 0;
    try {
      for (let batch = 0; batch < 100 && !c.isClosed && c.goaway() === undefined; batch++) {
        const frames: Buffer[] = [];
        for (let i = 0; i < 200; i++, sent++) {
          const id = 2 * sent + 1;
          frames.push(frame(FRAME.HEADERS, FLAG.END_HEADERS, id, requestBlock(HOST, '/slow', 'POST')), rstStream(id, NGHTTP2_CANCEL));
        }
        c.send(Buffer.concat(frames));
        await new Promise((r) => setImmediate(r));
      }
      await c.until(() => c.goaway() !== undefined, 10_000, 'GOAWAY');
      // The router's reset limit (nghttp2's: a burst of 1,000, then 33/s) ends the session.
      assert.notEqual(c.goaway()?.code, NGHTTP2_NO_ERROR, `after ${sent} resets`);
      await c.closed;
      await until(() => open === 0, 10_000, 'every upstream stream is cancelled');
      const upstream = backend.streams - streamsBefore;
      assert.ok(upstream < sent, `${upstream} upstream streams for ${sent} client streams`);
    } finally {
      c.close();
    }
    await stillServes();
  });

  test('CONTINUATION flood (CVE-2024-27316 class): a header block without end is cut off', async () => {
    const c = await RawH2.connect(router.port);
    let sent = 0;
    try {
      c.send(frame(FRAME.HEADERS, 0, 1, requestBlock(HOST)));
      const filler = frame(FRAME.CONTINUATION, 0, 1, hpack([['x-filler', 'y'.repeat(1000)]]));
      for (; sent < 10_000 && !c.isClosed && c.goaway() === undefined; sent++) {
        if (!c.send(filler)) await new Promise((r) => setImmediate(r));
      }
      await c.until(() => c.goaway() !== undefined, 10_000, 'GOAWAY');
      await c.closed;
      assert.ok(sent < 10_000, 'the connection was still open after 10,000 CONTINUATION frames');
      assert.equal(open, 0, 'nothing reached the backend');
    } finally {
      c.close();
    }
    await stillServes();
  });

  test('an oversized header block gets 431; the session goes on', async () => {
    // node:http2 as the client; it would refuse to send this much by default.
    const session = http2.connect(router.url, { maxSendHeaderBlockLength: 1 << 20 });
    session.on('error', () => {});
    const send = (bytes: number): Promise<string> => new Promise<string>((resolve) => {
      const req = session.request({ ':authority': HOST, ':path': '/', 'x-big': 'z'.repeat(bytes) }, { endStream: true });
      req.on('response', (h) => resolve(`status ${h[':status']}`));
      req.on('error', (err: NodeJS.ErrnoException) => resolve(`stream error ${err.code}`));
      req.resume();
    });
    try {
      // maxHeaderBytes is 16 KiB. (A compressed block past max(64 KiB, 2 × maxHeaderBytes) ends the connection.)
      assert.equal(await send(32 * 1024), 'status 431');
      assert.equal(open, 0, 'nothing reached the backend');
      const next = await new Promise<string>((resolve, reject) => {
        const req = session.request({ ':authority': HOST, ':path': '/' }, { endStream: true });
        req.on('response', (h) => resolve(String(h[':status'])));
        req.on('error', reject);
        req.resume();
      });
      assert.equal(next, '200', 'the same session serves the next request');
    } finally {
      session.destroy();
    }
  });

  test('h2 slowloris: an idle session is sent GOAWAY and closed, PINGs or not', async () => {
    for (const pinging of [false, true]) {
      const c = await RawH2.connect(router.port);
      const timer = pinging ? setInterval(() => c.send(ping(false)), 200) : undefined;
      try {
        await c.until(() => c.goaway() !== undefined, 10_000, 'GOAWAY');
        assert.equal(c.goaway()?.code, NGHTTP2_NO_ERROR);
        await c.closed;
      } finally {
        clearInterval(timer);
        c.close();
      }
    }
  });

  test('h2 slowloris: a header block trickled in is cut off after headersTimeout', async () => {
    const c = await RawH2.connect(router.port);
    c.send(frame(FRAME.HEADERS, 0, 1, requestBlock(HOST)));
    // One a second: the CONTINUATION cap (8 per block, h2-conn.ts) is far off when headersTimeout (1 s) passes.
    const timer = setInterval(() => c.send(frame(FRAME.CONTINUATION, 0, 1, hpack([['x', 'y']]))), 1000);
    try {
      await c.until(() => c.goaway() !== undefined, 10_000, 'GOAWAY');
      assert.equal(c.goaway()?.code, NGHTTP2_ENHANCE_YOUR_CALM);
      await c.closed;
      assert.equal(open, 0);
    } finally {
      clearInterval(timer);
      c.close();
    }
  });

  for (const [name, make] of [['SETTINGS', () => frame(FRAME.SETTINGS, 0, 0)], ['PING', () => ping(false)]] as const) {
    test(`${name} flood from a client that reads nothing: the session is dropped`, async () => {
      const c = await RawH2.connect(router.port);
      c.socket.pause(); // the answers pile up on the router's side
      const batch = Buffer.concat(Array.from({ length: 1000 }, make));
      let sent = 0;
      try {
        const end = Date.now() + 20_000;
        while (!c.isClosed && sent < 1_000_000 && Date.now() < end) {
          if (!c.send(batch)) await new Promise((r) => setTimeout(r, 5));
          sent += 1000;
        }
        c.socket.resume();
        await Promise.race([c.closed, new Promise((r) => setTimeout(r, 10_000))]);
        assert.ok(c.isClosed, `still open after ${sent} ${name} frames`);
      } finally {
        c.close();
      }
      await stillServes();
    });
  }

  /** A PRIORITY frame on `sid`: depends on stream 0, weight 16. */
  const priority = (sid: number): Buffer => frame(FRAME.PRIORITY, 0, sid, Buffer.from([0, 0, 0, 0, 15]));

  test('PRIORITY frames as browsers send them (a few per stream, some on idle streams) change nothing', async () => {
    const c = await RawH2.connect(router.port);
    try {
      // Firefox's old priority groups: PRIORITY on idle streams 3-11 before any request.
      c.send(Buffer.concat([3, 5, 7, 9, 11].map(priority)));
      for (let i = 0; i < 30; i++) {
        const sid = 13 + 2 * i;
        // One before the request and two after it (reprioritised while it loads).
        c.send(Buffer.concat([priority(sid), frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, sid, requestBlock(HOST)), priority(sid), priority(sid)]));
      }
      await c.until((fs) => fs.filter((f) => f.type === FRAME.DATA && (f.flags & FLAG.END_STREAM) !== 0).length === 30, 10_000, '30 responses');
      assert.equal(c.goaway(), undefined);
      assert.ok(!c.isClosed);
    } finally {
      c.close();
    }
  });

  test('a PRIORITY flood (answered by nothing, so nothing piles up to stop it): GOAWAY ENHANCE_YOUR_CALM', async () => {
    const c = await RawH2.connect(router.port);
    let sent = 0;
    try {
      c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, requestBlock(HOST)));
      await c.until((fs) => fs.some((f) => f.type === FRAME.DATA && f.stream === 1 && (f.flags & FLAG.END_STREAM) !== 0), 10_000, 'a response');
      // On stream 1 (closed) and on idle streams, in turn.
      const batch = Buffer.concat(Array.from({ length: 1000 }, (_, i) => priority(i % 2 === 0 ? 1 : 2 * i + 3)));
      sent = 1000 * await flood(c, batch, 200);
      await c.until(() => c.goaway() !== undefined, 10_000, `GOAWAY after ${sent} PRIORITY frames`);
      assert.equal(c.goaway()?.code, NGHTTP2_ENHANCE_YOUR_CALM);
      await c.closed;
    } finally {
      c.close();
    }
    await stillServes();
  });

  test('a download read as some clients do (WINDOW_UPDATE on the stream and the connection per DATA frame), with SETTINGS, PRIORITY_UPDATE and GREASE frames, is untouched', async () => {
    const c = await RawH2.connect(router.port);
    try {
      // A connection window raised at the start (browsers do), a GREASE frame (type 0x0b + 0x1f·N, RFC 8701 style).
      c.send(Buffer.concat([windowUpdate(0, 1 << 20), frame(0x2a, 0, 0, Buffer.from('grease'))]));
      const priorityUpdate = (sid: number): Buffer => {
        const p = Buffer.alloc(4 + 3);
        p.writeUInt32BE(sid);
        p.write('u=1', 4);
        return frame(0x10, 0, 0, p); // PRIORITY_UPDATE (RFC 9218), on stream 0
      };
      let got = 0;
      let dataFrames = 0;
      let credited = 0;
      const sids = [1, 3, 5];
      c.send(Buffer.concat(sids.flatMap((sid) => [priorityUpdate(sid), frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, sid, requestBlock(HOST, '/big'))])));
      const end = Date.now() + 30_000;
      while (got < sids.length * BIG && !c.isClosed && c.goaway() === undefined) {
        if (Date.now() > end) throw new Error(`${got} of ${sids.length * BIG} bytes within 30 s`);
        // Every DATA frame read is credited back on its stream and on the connection at once.
        const fresh = c.frames.slice(credited);
        credited = c.frames.length;
        const updates: Buffer[] = [];
        for (const f of fresh) {
          if (f.type !== FRAME.DATA || f.payload.length === 0) continue;
          got += f.payload.length;
          // Now and then the client's settings change (grpc-go's do as its BDP estimate grows).
          if (++dataFrames % 50 === 0) updates.push(frame(FRAME.SETTINGS, 0, 0));
          updates.push(windowUpdate(0, f.payload.length));
          if ((f.flags & FLAG.END_STREAM) === 0) updates.push(windowUpdate(f.stream, f.payload.length));
        }
        if (updates.length > 0) c.send(Buffer.concat(updates));
        await new Promise((r) => setTimeout(r, 2));
      }
      assert.equal(c.goaway(), undefined);
      assert.ok(!c.isClosed);
      assert.equal(got, sids.length * BIG);
    } finally {
      c.close();
    }
  });

  /** Floods of frames that do no request's work, from a client that reads every answer. */
  const floods: [string, (i: number) => Buffer][] = [
    ['WINDOW_UPDATE on the connection', () => windowUpdate(0, 1)],
    ['WINDOW_UPDATE on an open stream', () => windowUpdate(1, 1)],
    ['WINDOW_UPDATE on closed streams', (i) => windowUpdate(3 + 2 * (i % 2), 1)],
    ['empty SETTINGS (each answered with an ACK)', () => frame(FRAME.SETTINGS, 0, 0)],
    ['SETTINGS ACK (nothing asked for)', () => frame(FRAME.SETTINGS, FLAG.ACK, 0)],
    ['PING ACK (no PING was sent)', () => ping(true)],
    ['frames of an unknown type', (i) => frame(0x20 + (i % 200), 0, i % 5, Buffer.alloc(8))],
    ['GOAWAY (the client is leaving, again and again, while a stream is open)', () => frame(FRAME.GOAWAY, 0, 0, Buffer.alloc(8))],
  ];
  for (const [name, make] of floods) {
    test(`a flood of ${name} from a client that reads: GOAWAY ENHANCE_YOUR_CALM`, async () => {
      const c = await RawH2.connect(router.port);
      let sent = 0;
      try {
        // Stream 1 stays open (the backend never answers /slow): no idle timeout ends the flood.
        // Streams 3 and 5 are complete.
        c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, requestBlock(HOST, '/slow', 'POST')));
        c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 3, requestBlock(HOST)));
        c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 5, requestBlock(HOST)));
        await c.until((fs) => fs.filter((f) => f.type === FRAME.DATA && (f.flags & FLAG.END_STREAM) !== 0).length === 2, 10_000, 'two responses');
        sent = 1000 * await flood(c, Buffer.concat(Array.from({ length: 1000 }, (_, i) => make(i))), 200);
        await c.until(() => c.goaway() !== undefined, 10_000, `GOAWAY after ${sent} frames`);
        assert.equal(c.goaway()?.code, NGHTTP2_ENHANCE_YOUR_CALM);
        await c.closed;
      } finally {
        c.close();
      }
      await until(() => open === 0, 10_000, 'the open stream is cancelled upstream');
      await stillServes();
    });
  }
});
