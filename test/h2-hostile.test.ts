// Hostile HTTP/2 peers on both sides of the router, written frame by frame:
// a backend (raw socket server) whose responses no real server should send,
// and a client whose requests no real client should send. The router must
// answer with a clean error, never pass malformed fields on (an HTTP/1.1
// client would read CR/LF in a value as new header lines), never reveal a
// backend address, and never build what a small header block expands to.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { rawHttp1, scrape, startBackend, startRouter, type Router } from './helpers.ts';
import { FLAG, FRAME, RawH2, frame, hpack, requestBlock } from './h2-raw.ts';
import { startH2Backend } from './grpc-helpers.ts';

const PREFACE_LEN = 24;

/** Writes the response frames for a request on `sid` (the request's header block is not decoded); `sock` to end the connection. */
type Respond = (send: (b: Buffer) => void, sid: number, sock: net.Socket) => void;

/**
 * A raw h2c backend: SETTINGS (and ACKs) as a server should, then each
 * request HEADERS is answered by `respond` with whatever frames it writes.
 */
async function hostileBackend(respond: Respond, settings: Buffer = Buffer.alloc(0)): Promise<{ url: string; port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('error', () => {});
    sock.on('close', () => sockets.delete(sock));
    let buf = Buffer.alloc(0);
    let preface = false;
    const send = (b: Buffer): void => { if (!sock.destroyed) sock.write(b); };
    sock.write(frame(FRAME.SETTINGS, 0, 0, settings));
    sock.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (!preface) {
        if (buf.length < PREFACE_LEN) return;
        buf = buf.subarray(PREFACE_LEN);
        preface = true;
      }
      while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
        const len = buf.readUIntBE(0, 3);
        const type = buf[3]!;
        const flags = buf[4]!;
        const sid = buf.readUInt32BE(5) & 0x7fffffff;
        buf = buf.subarray(9 + len);
        if (type === FRAME.SETTINGS && !(flags & FLAG.ACK)) send(frame(FRAME.SETTINGS, FLAG.ACK, 0));
        if (type === FRAME.HEADERS) respond(send, sid, sock);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

/** HEADERS (split into CONTINUATIONs at 16 KiB) carrying `block`. */
function headerFrames(sid: number, block: Buffer, endStream: boolean): Buffer {
  const parts: Buffer[] = [];
  for (let p = 0; p < block.length || p === 0; p += 16384) {
    const e = Math.min(block.length, p + 16384);
    const flags = (p === 0 && endStream ? FLAG.END_STREAM : 0) | (e === block.length ? FLAG.END_HEADERS : 0);
    parts.push(frame(p === 0 ? FRAME.HEADERS : FRAME.CONTINUATION, flags, sid, block.subarray(p, e)));
    if (e === block.length) break;
  }
  return Buffer.concat(parts);
}

async function withBackend(respond: Respond, fn: (router: Router, backendPort: number) => Promise<void>, timeouts?: Record<string, string>, settings?: Buffer): Promise<void> {
  const backend = await hostileBackend(respond, settings);
  try {
    const router = await startRouter({
      routes: [{ name: 'h', hosts: ['h.test'], protocol: 'h2c', retries: { attempts: 1 }, ...(timeouts === undefined ? {} : { timeouts }), backends: [{ name: 'a', url: backend.url, weight: 1 }] }],
    });
    try {
      await fn(router, backend.port);
      // Whatever the backend did, no upstream stream is left behind.
      const end = Date.now() + 5_000;
      let streams = -1;
      while (Date.now() < end && (streams = (await scrape(router.adminUrl)).get('switchyard_upstream_h2_streams') ?? -1) !== 0) await new Promise((r) => setTimeout(r, 50));
      assert.equal(streams, 0, 'upstream h2 streams left open');
    } finally {
      await router.close();
    }
  } finally {
    await backend.close();
  }
}

const GET = 'GET /x HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n';

describe('a hostile h2c backend', () => {
  test('CR/LF in a response header value: 502, no header line injected into an HTTP/1.1 answer', async () => {
    await withBackend((send, sid) => {
      send(headerFrames(sid, hpack([[':status', '200'], ['x-evil', 'a\r\nset-cookie: pwned=1']]), false));
      send(frame(FRAME.DATA, FLAG.END_STREAM, sid, Buffer.from('body')));
    }, async (router, backendPort) => {
      const answer = await rawHttp1(router.port, GET);
      assert.match(answer, /^HTTP\/1\.1 502 /);
      assert.doesNotMatch(answer, /set-cookie/i);
      assert.ok(!answer.includes(String(backendPort)), 'the answer names the backend');
    });
  });

  test('a NUL in a response trailer, an uppercase response field name: 502 / not passed on', async () => {
    await withBackend((send, sid) => {
      send(headerFrames(sid, hpack([[':status', '200'], ['X-Upper', 'v']]), false));
      send(frame(FRAME.DATA, FLAG.END_STREAM, sid, Buffer.from('body')));
    }, async (router) => {
      assert.match(await rawHttp1(router.port, GET), /^HTTP\/1\.1 502 /);
    });
    await withBackend((send, sid) => {
      send(headerFrames(sid, hpack([[':status', '200']]), false));
      send(frame(FRAME.DATA, 0, sid, Buffer.from('body')));
      send(headerFrames(sid, hpack([['grpc-status', '0\0x']]), true));
    }, async (router) => {
      const c = await RawH2.connect(router.port);
      try {
        c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, requestBlock('h.test', '/x')));
        // Mid-response there is no status to send: the stream is reset, never ended with a bad trailer.
        await c.until((fs) => fs.some((f) => f.stream === 1 && (f.type === FRAME.RST_STREAM || (f.flags & FLAG.END_STREAM) !== 0)), 10_000, 'the end of stream 1');
        const end = c.frames.find((f) => f.stream === 1 && (f.type === FRAME.RST_STREAM || (f.flags & FLAG.END_STREAM) !== 0))!;
        assert.equal(end.type, FRAME.RST_STREAM);
      } finally {
        c.close();
      }
    });
  });

  test('an HPACK bomb (a 4 KB table entry referenced 16,000 times): 502, the list is never built', async () => {
    // First field inserts 4,000 bytes into the table (literal with incremental indexing, new name);
    // each 0xbe byte after it is that entry again (index 62): 16 KB decoding to 64 MB.
    const big = 'b'.repeat(4000);
    // The value's length, 4,000, as an HPACK integer with a 7-bit prefix: 127, then 3,873 in 7-bit groups.
    const block = Buffer.concat([hpack([[':status', '200']]), Buffer.from([0x40, 5]), Buffer.from('x-big'),
      Buffer.from([0x7f, 0xa1, 0x1e]), Buffer.from(big), Buffer.alloc(16_000, 0xbe)]);
    await withBackend((send, sid) => {
      send(headerFrames(sid, block, false));
      send(frame(FRAME.DATA, FLAG.END_STREAM, sid, Buffer.from('body')));
    }, async (router) => {
      const answer = await rawHttp1(router.port, GET);
      assert.match(answer, /^HTTP\/1\.1 502 /);
      assert.ok(answer.length < 4096, `${answer.length} bytes answered`);
    });
  });
});

describe('a misbehaving h2c backend: clean errors, no address revealed, nothing left open', () => {
  const cases: [string, Respond, RegExp][] = [
    ['PUSH_PROMISE (we sent ENABLE_PUSH 0)', (send, sid) => {
      send(frame(FRAME.PUSH_PROMISE, FLAG.END_HEADERS, sid, Buffer.concat([Buffer.from([0, 0, 0, 2]), requestBlock('h.test', '/pushed')])));
    }, /^HTTP\/1\.1 502 /],
    ['a :status that is not three digits', (send, sid) => {
      send(headerFrames(sid, hpack([[':status', '20']]), true));
    }, /^HTTP\/1\.1 502 /],
    ['no :status', (send, sid) => {
      send(headerFrames(sid, hpack([['x', 'y']]), true));
    }, /^HTTP\/1\.1 502 /],
    ['an informational head ending the stream', (send, sid) => {
      send(headerFrames(sid, hpack([[':status', '103']]), true));
    }, /^HTTP\/1\.1 502 /],
    ['103 Early Hints, then the response', (send, sid) => {
      send(headerFrames(sid, hpack([[':status', '103'], ['link', '</a.css>; rel=preload']]), false));
      send(headerFrames(sid, hpack([[':status', '200']]), false));
      send(frame(FRAME.DATA, FLAG.END_STREAM, sid, Buffer.from('fine')));
    }, /^HTTP\/1\.1 200 [^]*\r\n\r\n4\r\nfine\r\n0\r\n\r\n$/],
    ['RST_STREAM REFUSED_STREAM on every stream', (send, sid) => {
      const p = Buffer.alloc(4);
      p.writeUInt32BE(7);
      send(frame(FRAME.RST_STREAM, 0, sid, p));
    }, /^HTTP\/1\.1 502 /],
    ['GOAWAY with last stream 0 on every connection', (send) => {
      send(frame(FRAME.GOAWAY, 0, 0, Buffer.alloc(8)));
    }, /^HTTP\/1\.1 50[23] /],
    ['DATA past the stream window we offered (1 MiB)', (send, sid) => {
      send(headerFrames(sid, hpack([[':status', '200']]), false));
      const chunk = Buffer.alloc(16384, 0x61);
      for (let i = 0; i < 65; i++) send(frame(FRAME.DATA, 0, sid, chunk));
    }, /^HTTP\/1\.1 200 /],
    ['DATA before the response HEADERS', (send, sid) => {
      send(frame(FRAME.DATA, FLAG.END_STREAM, sid, Buffer.from('x')));
    }, /^HTTP\/1\.1 502 /],
    ['a body longer than its content-length', (send, sid) => {
      send(headerFrames(sid, hpack([[':status', '200'], ['content-length', '2']]), false));
      send(frame(FRAME.DATA, FLAG.END_STREAM, sid, Buffer.from('four')));
      // The layer resets the stream at the first DATA, in the read that brought the head:
      // the HTTP/1.1 side had not sent the head yet, so the client gets a 502, never the body.
    }, /^HTTP\/1\.1 502 (?![^]*four)/],
    ['a frame cut off mid-way, then silence (idle timeout)', (send, sid) => {
      send(headerFrames(sid, hpack([[':status', '200']]), false));
      send(frame(FRAME.DATA, 0, sid, Buffer.from('partial')).subarray(0, 12));
    }, /^HTTP\/1\.1 200 (?![^]*0\r\n\r\n$)/],
  ];
  for (const [what, respond, expect] of cases) {
    test(what, async () => {
      await withBackend(respond, async (router, backendPort) => {
        const answer = await rawHttp1(router.port, GET);
        assert.match(answer, expect, answer.slice(0, 300));
        assert.ok(!answer.includes(`:${backendPort}`) && !answer.includes('127.0.0.1'), `the answer names the backend: ${answer.slice(0, 300)}`);
      }, { response: '2s', idle: '500ms' });
    });
  }
});

describe('a backend whose SETTINGS_MAX_CONCURRENT_STREAMS is 0', () => {
  test('calls do not wait forever for room that never comes: answered within the response timeout', async () => {
    const zero = Buffer.alloc(6);
    zero.writeUInt16BE(0x3);
    let requests = 0;
    await withBackend(() => { requests++; }, async (router) => {
      const answer = await Promise.race([
        rawHttp1(router.port, GET),
        new Promise<string>((r) => setTimeout(() => r('no answer within 10 s'), 10_000)),
      ]);
      assert.match(answer, /^HTTP\/1\.1 50[234] /);
      assert.equal(requests, 0);
    }, { response: '1s' }, zero);
  });
});

describe('a backend stream that dies right after its response HEADERS, to an HTTP/1.1 client', () => {
  const rst = (sid: number, code: number): Buffer => {
    const p = Buffer.alloc(4);
    p.writeUInt32BE(code);
    return frame(FRAME.RST_STREAM, 0, sid, p);
  };
  const INTERNAL_ERROR = 2;

  /** GET on a raw socket; `onHead` runs once the client has the response head; resolves with all it got when the router closes. */
  function getWatchingHead(port: number, onHead: () => void): Promise<string> {
    return new Promise((resolve, reject) => {
      const c = net.connect(port, '127.0.0.1');
      let out = '';
      let seen = false;
      c.on('data', (b: Buffer) => {
        out += b.toString('latin1');
        if (!seen && out.includes('\r\n\r\n')) {
          seen = true;
          onHead();
        }
      });
      c.on('end', () => resolve(out));
      c.on('error', reject);
      c.write(GET);
    });
  }

  // The head is corked on the client socket until the end of the tick: a failure
  // read in the same tick (same upstream read) finds nothing sent yet.
  test('HEADERS and RST_STREAM in one read: a 502, not an empty close', async () => {
    await withBackend((send, sid) => {
      send(Buffer.concat([headerFrames(sid, hpack([[':status', '200'], ['content-type', 'text/plain']]), false), rst(sid, INTERNAL_ERROR)]));
    }, async (router, backendPort) => {
      const answer = await rawHttp1(router.port, GET);
      assert.match(answer, /^HTTP\/1\.1 502 [^]*SY_UPSTREAM_RESET/, answer);
      assert.doesNotMatch(answer, /text\/plain\r\n[^]*text\/plain/, 'the backend\'s head leaked into the answer');
      assert.ok(!answer.includes(`:${backendPort}`) && !answer.includes('127.0.0.1'), answer);
    });
  });

  test('HEADERS and a connection error in one read (the connection dropped): a 502', async () => {
    await withBackend((send, sid) => {
      // PING on a stream is a connection error (RFC 9113 §6.7): the router drops the connection at once.
      send(Buffer.concat([headerFrames(sid, hpack([[':status', '200']]), false), frame(FRAME.PING, 0, sid, Buffer.alloc(8))]));
    }, async (router) => {
      assert.match(await rawHttp1(router.port, GET), /^HTTP\/1\.1 502 [^]*SY_UPSTREAM_RESET/);
    });
  });

  test('HEADERS, DATA and RST_STREAM in one read: the head and the bytes go out, then the cut', async () => {
    await withBackend((send, sid) => {
      send(Buffer.concat([headerFrames(sid, hpack([[':status', '200']]), false), frame(FRAME.DATA, 0, sid, Buffer.from('body')), rst(sid, INTERNAL_ERROR)]));
    }, async (router) => {
      // Body bytes were passed on: the response has begun, and only a cut connection
      // (no last chunk) says it failed. What was passed on still leaves first.
      assert.match(await rawHttp1(router.port, GET), /^HTTP\/1\.1 200 [^]*\r\n\r\n4\r\nbody\r\n$/);
    });
  });

  test('RST_STREAM, or the connection closed, after the head went out: the client connection is cut, no last chunk', async () => {
    for (const how of ['reset later', 'FIN later', 'FIN in the same write'] as const) {
      let later: (() => void) | undefined;
      await withBackend((send, sid, sock) => {
        send(headerFrames(sid, hpack([[':status', '200']]), false));
        if (how === 'FIN in the same write') sock.end(); // read after the HEADERS: the head is out by then
        else later = () => (how === 'reset later' ? send(rst(sid, INTERNAL_ERROR)) : sock.end());
      }, async (router) => {
        const answer = await getWatchingHead(router.port, () => later?.());
        assert.match(answer, /^HTTP\/1\.1 200 [^]*transfer-encoding: chunked\r\n[^]*\r\n\r\n$/, `${how}: ${answer}`);
      });
    }
  });
});

describe('a hostile HTTP/2 client', () => {
  /** Sends one request block (and `after`) on stream 1; resolves with what ended stream 1: its RST_STREAM code, or the :status byte run of a response. */
  async function ask(router: Router, block: Buffer, after: Buffer[] = [], endStream = true): Promise<{ rst: number | null; answered: boolean }> {
    const c = await RawH2.connect(router.port);
    try {
      c.send(Buffer.concat([headerFrames(1, block, endStream), ...after]));
      await c.until((fs) => fs.some((f) => f.stream === 1 && (f.type === FRAME.RST_STREAM || f.type === FRAME.HEADERS)), 10_000, 'an answer on stream 1');
      const rst = c.frames.find((f) => f.stream === 1 && f.type === FRAME.RST_STREAM);
      return { rst: rst === undefined ? null : rst.payload.readUInt32BE(0), answered: c.frames.some((f) => f.stream === 1 && f.type === FRAME.HEADERS) };
    } finally {
      c.close();
    }
  }

  async function withRouter(fn: (router: Router, seen: string[]) => Promise<void>): Promise<void> {
    const seen: string[] = [];
    const backend = await startBackend('b', (req, res) => {
      seen.push(`${req.method} ${req.url} host=${req.headers.host}`);
      req.resume();
      req.on('end', () => res.end(req.url === '/big' ? 'x'.repeat(1000) : 'ok'));
    });
    try {
      const router = await startRouter({ routes: [{ name: 'h', hosts: ['h.test'], backends: [{ name: 'b', url: backend.url, weight: 1 }] }] });
      try {
        await fn(router, seen);
      } finally {
        await router.close();
      }
    } finally {
      await backend.close();
    }
  }

  const PROTOCOL_ERROR = 1;

  test('a :path that is not origin-form, an :authority with userinfo, CONNECT: malformed (RST_STREAM), never forwarded', async () => {
    await withRouter(async (router, seen) => {
      // An absolute-form :path would reach an HTTP/1.1 backend as a request line naming another host than the one routed on.
      assert.deepEqual(await ask(router, requestBlock('h.test', 'http://evil.test/x')), { rst: PROTOCOL_ERROR, answered: false });
      assert.deepEqual(await ask(router, requestBlock('h.test', 'x')), { rst: PROTOCOL_ERROR, answered: false });
      assert.deepEqual(await ask(router, requestBlock('evil.test@h.test', '/')), { rst: PROTOCOL_ERROR, answered: false });
      assert.deepEqual(await ask(router, hpack([[':method', 'GET'], [':scheme', 'http'], [':path', '/'], ['host', 'h.test/x']])), { rst: PROTOCOL_ERROR, answered: false });
      assert.deepEqual(await ask(router, requestBlock('h.test', '/', 'CONNECT')), { rst: PROTOCOL_ERROR, answered: false });
      assert.deepEqual(seen, []);
      // What is well formed still goes through.
      assert.deepEqual(await ask(router, requestBlock('h.test:80', '/ok?q=1')), { rst: null, answered: true });
      assert.deepEqual(seen, ['GET /ok?q=1 host=h.test:80']);
    });
  });

  test('a host field that names another authority than :authority: malformed (RST_STREAM), never forwarded (RFC 9113 §8.3.1)', async () => {
    await withRouter(async (router, seen) => {
      assert.deepEqual(await ask(router, requestBlock('h.test', '/a', 'GET', [['host', 'evil.test']])), { rst: PROTOCOL_ERROR, answered: false });
      assert.deepEqual(await ask(router, requestBlock('h.test:8080', '/b', 'GET', [['host', 'h.test']])), { rst: PROTOCOL_ERROR, answered: false });
      // Without :authority, repeated host fields must agree too.
      assert.deepEqual(await ask(router, hpack([[':method', 'GET'], [':scheme', 'http'], [':path', '/c'], ['host', 'h.test'], ['host', 'evil.test']])), { rst: PROTOCOL_ERROR, answered: false });
      assert.deepEqual(seen, []);
      // The same authority written otherwise (case, the scheme's default port, an empty port)
      // is the same entity (RFC 3986 §6.2.3): well formed, routed and sent on as :authority.
      assert.deepEqual(await ask(router, requestBlock('h.test', '/d', 'GET', [['host', 'H.Test:80']])), { rst: null, answered: true });
      assert.deepEqual(await ask(router, requestBlock('h.test', '/e', 'GET', [['host', 'h.test:']])), { rst: null, answered: true });
      assert.deepEqual(await ask(router, hpack([[':method', 'GET'], [':scheme', 'http'], [':path', '/f'], ['host', 'h.test'], ['host', 'h.test']])), { rst: null, answered: true });
      assert.deepEqual(seen, ['GET /d host=h.test', 'GET /e host=h.test', 'GET /f host=h.test']);
    });
  });

  test('node:http2 with a host header that disagrees with :authority: the stream is refused with PROTOCOL_ERROR', async () => {
    await withRouter(async (router, seen) => {
      const client = http2.connect(router.url);
      client.on('error', () => {});
      try {
        const req = client.request({ ':path': '/n', ':authority': 'h.test', host: 'evil.test' });
        req.end();
        const outcome = await new Promise<string>((resolve) => {
          req.on('response', (h) => resolve(`answered ${String(h[':status'])}`));
          req.on('error', (e: Error & { code?: string }) => resolve(String(e.code)));
          req.on('close', () => resolve(`closed ${req.rstCode}`));
        });
        assert.equal(outcome, 'ERR_HTTP2_STREAM_ERROR');
        assert.equal(req.rstCode, http2.constants.NGHTTP2_PROTOCOL_ERROR);
        // The connection goes on: an agreeing request on it is answered.
        const ok = client.request({ ':path': '/m', ':authority': 'h.test', host: 'h.test' });
        ok.end();
        const [h] = await once(ok, 'response') as [http2.IncomingHttpHeaders];
        ok.resume();
        assert.equal(h[':status'], 200);
        assert.deepEqual(seen, ['GET /m host=h.test']);
      } finally {
        client.close();
      }
    });
  });

  test('a SETTINGS frame of 2,000 INITIAL_WINDOW_SIZE entries: the last one counts (applied once, not walked per entry)', async () => {
    await withRouter(async (router) => {
      const c = await RawH2.connect(router.port, [[0x4, 0]]);
      try {
        c.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, requestBlock('h.test', '/big')));
        await c.until((fs) => fs.some((f) => f.type === FRAME.HEADERS && f.stream === 1), 10_000, 'the response head');
        const settings = (values: number[]): Buffer => {
          const p = Buffer.alloc(6 * values.length);
          values.forEach((v, i) => { p.writeUInt16BE(0x4, 6 * i); p.writeUInt32BE(v, 6 * i + 2); });
          return frame(FRAME.SETTINGS, 0, 0, p);
        };
        const data = (): number => c.frames.filter((f) => f.type === FRAME.DATA && f.stream === 1).reduce((n, f) => n + f.payload.length, 0);
        c.send(settings([...Array.from({ length: 1999 }, (_, i) => (i % 2 === 0 ? 5000 : 0)), 10]));
        await c.until(() => data() >= 10, 10_000, '10 bytes of DATA');
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(data(), 10);
        c.send(settings([0, 100_000, 0, 25]));
        await c.until(() => data() >= 25, 10_000, '25 bytes of DATA');
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(data(), 25);
        assert.ok(!c.isClosed);
      } finally {
        c.close();
      }
    });
  });

  test('DATA on a closed stream, from a client that reads nothing: each is answered RST_STREAM; the connection is dropped', async () => {
    await withRouter(async (router) => {
      const c = await RawH2.connect(router.port);
      // Stream 1001 opened: 1 to 999 are closed (never used). The router remembers the last 64
      // streams it reset and ignores their DATA; 500 ids in turn are answered every time.
      c.send(headerFrames(1001, requestBlock('h.test', '/'), true));
      await c.until((fs) => fs.some((f) => f.stream === 1001 && (f.flags & FLAG.END_STREAM) !== 0), 10_000, 'the response');
      c.socket.pause(); // the router's answers pile up on its side
      const batch = Buffer.concat(Array.from({ length: 1000 }, (_, i) => frame(FRAME.DATA, 0, 2 * (i % 500) + 1, Buffer.from('x'))));
      let sent = 0;
      try {
        const end = Date.now() + 20_000;
        while (!c.isClosed && sent < 2_000_000 && Date.now() < end) {
          if (!c.send(batch)) await new Promise((r) => setTimeout(r, 5));
          sent += 1000;
        }
        c.socket.resume();
        await Promise.race([c.closed, new Promise((r) => setTimeout(r, 10_000))]);
        assert.ok(c.isClosed, `still open after ${sent} DATA frames on a closed stream`);
      } finally {
        c.close();
      }
    });
  });

  test('request trailers over maxHeaderBytes: the stream is reset, the request not completed upstream', async () => {
    await withRouter(async (router) => {
      const trailers = headerFrames(1, hpack([['x-t', 'v'.repeat(20_000)]]), true);
      const r = await ask(router, requestBlock('h.test', '/t', 'POST'), [frame(FRAME.DATA, 0, 1, Buffer.from('body')), trailers], false);
      assert.equal(r.answered, false);
      assert.notEqual(r.rst, null);
    });
  });
});

describe('a client that makes the router reset its streams (MadeYouReset, CVE-2025-8671)', () => {
  test('stream errors the client provokes count as resets: past the rapid-reset budget the connection ends', async () => {
    let open = 0;
    const backend = await startH2Backend('slow', (stream) => {
      open++;
      stream.once('close', () => { open--; });
      stream.resume(); // never answers
    });
    try {
      const router = await startRouter({ routes: [{ name: 'h', hosts: ['h.test'], protocol: 'h2c', backends: [{ name: 'b', url: backend.url, weight: 1 }] }] });
      try {
        const c = await RawH2.connect(router.port);
        let sent = 0;
        try {
          const zero = Buffer.alloc(4);
          // Each request is followed by a WINDOW_UPDATE of 0 on its stream: a stream error, so the
          // router resets it (a request routed by then is cancelled upstream). The client never sends RST_STREAM.
          for (let batch = 0; batch < 30 && !c.isClosed && c.goaway() === undefined; batch++) {
            const frames: Buffer[] = [];
            for (let i = 0; i < 100; i++, sent++) {
              const id = 2 * sent + 1;
              frames.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, requestBlock('h.test', '/slow')), frame(FRAME.WINDOW_UPDATE, 0, id, zero));
            }
            c.send(Buffer.concat(frames));
            await new Promise((r) => setImmediate(r));
          }
          await c.until(() => c.goaway() !== undefined, 10_000, `GOAWAY after ${sent} provoked resets`);
          assert.equal(c.goaway()?.code, 11 /* ENHANCE_YOUR_CALM */);
          await c.closed;
        } finally {
          c.close();
        }
        const end = Date.now() + 10_000;
        while (open > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
        assert.equal(open, 0, 'upstream streams left open');
      } finally {
        await router.close();
      }
    } finally {
      await backend.close();
    }
  });
});

describe('a client that opens streams and never reads (zero windows)', () => {
  /** An h2c backend: /small answers "small"; anything else streams 64 KiB chunks for as long as it is let. */
  async function endless(): Promise<{ url: string; written: () => number; close(): Promise<void> }> {
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let written = 0;
    const server = http2.createServer();
    server.on('stream', (s, headers) => {
      s.on('error', () => {});
      s.respond({ ':status': 200 });
      if (headers[':path'] === '/small') { s.end('small'); return; }
      const pump = (): void => {
        while (!s.destroyed && !s.closed) {
          written += chunk.length;
          if (!s.write(chunk)) { s.once('drain', pump); return; }
        }
      };
      pump();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      written: () => written,
      close: () => new Promise<void>((resolve) => {
        server.close(() => resolve());
        (server as unknown as { closeAllSessions?: () => void }).closeAllSessions?.();
      }),
    };
  }

  /** A zero-window client with `n` endless downloads open, once the backend has filled what the router lets it. */
  async function stall(router: Router, n: number): Promise<RawH2> {
    const c = await RawH2.connect(router.port, [[0x4 /* INITIAL_WINDOW_SIZE */, 0]]);
    const frames: Buffer[] = [];
    for (let i = 0; i < n; i++) frames.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 2 * i + 1, requestBlock('h.test', '/big')));
    c.send(Buffer.concat(frames));
    await c.until((fs) => fs.filter((f) => f.type === FRAME.HEADERS).length + fs.filter((f) => f.type === FRAME.RST_STREAM).length >= n, 10_000, 'every stream answered');
    return c;
  }

  async function withEndless(fn: (router: Router, backend: { written: () => number }) => Promise<void>): Promise<void> {
    const backend = await endless();
    try {
      const router = await startRouter({ routes: [{ name: 'h', hosts: ['h.test'], protocol: 'h2c', timeouts: { idle: '60s' }, backends: [{ name: 'a', url: backend.url, weight: 1 }] }] });
      try {
        await fn(router, backend);
      } finally {
        await router.close();
      }
    } finally {
      await backend.close();
    }
  }

  test('its streams do not hold the shared backend connection\'s window: other clients are still served', async () => {
    await withEndless(async (router) => {
      // One backend session carries everyone's streams: 20 stalled streams once held its whole
      // 16 MiB connection window, and nobody else on it got a byte until the idle timeout.
      assert.match(await rawHttp1(router.port, 'GET /small HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200 /);
      const c = await stall(router, 20);
      try {
        await new Promise((r) => setTimeout(r, 500));
        const answer = await Promise.race([
          rawHttp1(router.port, 'GET /small HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n'),
          new Promise<string>((r) => setTimeout(() => r('no answer within 10 s'), 10_000)),
        ]);
        assert.match(answer, /^HTTP\/1\.1 200 [^]*small/);
      } finally {
        c.close();
      }
    });
  });

  test('what the router holds for it is bounded: past its budget its streams are reset, the backend held back', async () => {
    await withEndless(async (router, backend) => {
      const c = await stall(router, 64);
      try {
        // 64 streams with a 1 MiB upstream window each would be 64 MiB held here; the budget is 16 MiB.
        await c.until((fs) => fs.some((f) => f.type === FRAME.RST_STREAM && f.payload.readUInt32BE(0) === 11), 10_000, 'RST_STREAM ENHANCE_YOUR_CALM');
        await new Promise((r) => setTimeout(r, 500));
        const written = backend.written();
        await new Promise((r) => setTimeout(r, 1000));
        // Held back: nothing more is taken from the backend while the client reads nothing.
        assert.ok(backend.written() - written <= 2 * 1024 * 1024, `${backend.written() - written} more bytes written`);
        assert.ok(!c.isClosed, 'the connection itself stays');
      } finally {
        c.close();
      }
    });
  });
});
