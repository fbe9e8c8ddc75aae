// The h2c upstream: what a backend receives (header lists from any client),
// and how the router copes with what an HTTP/2 backend may do: tiny windows,
// GOAWAY under load, refused streams, no SETTINGS at all, a client that
// stops reading.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http, { type IncomingMessage } from 'node:http';
import http2, { type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { collectedHeap, metric, paddedBatches, rawHttp1, scrape, settled, startRouter, type Router } from './helpers.ts';
import { readRequest, until } from './grpc-helpers.ts';
import { FLAG, FRAME, frame, hpack, ping, windowUpdate } from './h2-raw.ts';

const MB = 1024 * 1024;

describe('request headers to an h2c backend', () => {
  test('repeated single-value fields from an HTTP/1.1 client reach the backend, never a rejected request', async () => {
    const server = http2.createServer();
    let raw: string[] = [];
    server.on('stream', (stream, _headers, _flags, rawHeaders) => {
      raw = rawHeaders;
      stream.respond({ ':status': 200 });
      stream.end('ok');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const router = await startRouter({ routes: [{ name: 'h', hosts: ['h.test'], protocol: 'h2c', backends: [{ name: 'a', url, weight: 1 }] }] });
    try {
      const answer = await rawHttp1(router.port, 'GET /dup?x=1 HTTP/1.1\r\nHost: h.test\r\nX-Foo: a\r\nX-Foo: b\r\n'
        + 'User-Agent: one\r\nUser-Agent: two\r\nCookie: c=1\r\nCookie: d=2\r\nConnection: close\r\n\r\n');
      assert.match(answer, /^HTTP\/1\.1 200 /);
      assert.match(answer, /\r\n\r\n2\r\nok\r\n0\r\n\r\n$/);
      const values = (name: string): string => {
        const v: string[] = [];
        for (let i = 0; i < raw.length; i += 2) if (raw[i] === name) v.push(raw[i + 1]!);
        return v.join(', ');
      };
      assert.deepEqual(raw.slice(0, 8), [':method', 'GET', ':scheme', 'http', ':authority', 'h.test', ':path', '/dup?x=1']);
      // Two fields or one joined field: the same value to an HTTP reader (RFC 9110 §5.3).
      assert.equal(values('x-foo'), 'a, b');
      assert.equal(values('user-agent'), 'one, two');
      assert.match(values('cookie').replace(/, /g, '; '), /^c=1; d=2$/);
      assert.equal(values('x-forwarded-for'), '127.0.0.1');
      assert.equal(values('host'), '');
      assert.equal(values('connection'), '');
    } finally {
      await router.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

/** A node:http2 backend with its own server settings; `handler` gets each stream and its session's stream count. */
async function h2Backend(settings: http2.Settings, handler: (stream: ServerHttp2Stream, headers: http2.IncomingHttpHeaders, n: number) => void): Promise<{ url: string; sessions: Set<ServerHttp2Session>; close(): Promise<void> }> {
  const server = http2.createServer({ settings });
  const sessions = new Set<ServerHttp2Session>();
  const counts = new WeakMap<object, number>();
  server.on('session', (s) => {
    sessions.add(s);
    s.on('error', () => {});
    s.once('close', () => sessions.delete(s));
  });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    const n = (counts.get(stream.session!) ?? 0) + 1;
    counts.set(stream.session!, n);
    handler(stream, headers, n);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    sessions,
    close: () => new Promise<void>((resolve) => {
      for (const s of sessions) s.destroy();
      server.close(() => resolve());
    }),
  };
}

/** An HTTP/1.1 request through the router; resolves with the status and the body's length and sha256. */
/**
 * A TCP relay on loopback in front of `port`. `wire` joins each accepted
 * client to its connection to `port` (what passes, what is held or recorded)
 * and returns the pair the test inspects; close() cuts every pair.
 */
async function tcpRelay<P extends { client: net.Socket; upstream: net.Socket }>(port: number, wire: (client: net.Socket, upstream: net.Socket) => P): Promise<{ url: string; pairs: P[]; close(): Promise<void> }> {
  const pairs: P[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    client.on('error', () => {});
    upstream.on('error', () => {});
    client.on('close', () => upstream.destroy());
    pairs.push(wire(client, upstream));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    pairs,
    async close() {
      for (const p of pairs) { p.client.destroy(); p.upstream.destroy(); }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function h1(port: number, host: string, method: string, path: string, body?: Buffer): Promise<{ status: number; length: number; sha: string; res: IncomingMessage }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: { host }, agent: false }, (res) => {
      const hash = createHash('sha256');
      let length = 0;
      res.on('data', (c: Buffer) => { hash.update(c); length += c.length; });
      res.on('end', () => resolve({ status: res.statusCode!, length, sha: hash.digest('hex'), res }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Deterministic bytes (not all one value, so a misplaced chunk changes the hash). */
function pattern(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >>> 11)) & 0xff;
  return b;
}

describe('request trailers to an h2c backend', () => {
  test('an HTTP/1.1 chunked body\'s trailers arrive as HTTP/2 trailers, without fields HTTP/2 forbids there', async () => {
    let seen: { body: string; trailers: http2.IncomingHttpHeaders | undefined } | undefined;
    const backend = await h2Backend({}, (stream) => {
      void readRequest(stream).then(({ body, trailers }) => {
        seen = { body: body.toString(), trailers };
        stream.respond({ ':status': 200 });
        stream.end('ok');
      });
    });
    const router = await startRouter({ routes: [{ name: 't', hosts: ['t.test'], protocol: 'h2c', backends: [{ name: 'a', url: backend.url, weight: 1 }] }] });
    try {
      const answer = await rawHttp1(router.port, 'POST /up HTTP/1.1\r\nHost: t.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n'
        + '5\r\nhello\r\n0\r\nX-Checksum: abc\r\nKeep-Alive: timeout=5\r\n\r\n');
      assert.match(answer, /^HTTP\/1\.1 200 /);
      assert.equal(seen?.body, 'hello');
      assert.equal(seen?.trailers?.['x-checksum'], 'abc');
      assert.equal(seen?.trailers?.['keep-alive'], undefined);
    } finally {
      await router.close();
      await backend.close();
    }
  });
});

describe('flow control with an h2c backend', () => {
  test('a backend with tiny windows: a 1 MiB upload and an 8 MiB download pass whole', async () => {
    const down = pattern(8 * MB);
    // 100-byte stream windows and 16 KiB frames: the upload goes out a little at a time.
    const backend = await h2Backend({ initialWindowSize: 100 }, (stream) => {
      void readRequest(stream).then(({ body }) => {
        stream.respond({ ':status': 200, 'x-upload-sha': sha(body), 'x-upload-length': String(body.length) });
        stream.end(down);
      });
    });
    const router = await startRouter({ routes: [{ name: 'w', hosts: ['w.test'], protocol: 'h2c', backends: [{ name: 'a', url: backend.url, weight: 1 }] }] });
    try {
      const up = pattern(MB + 17);
      const results = await Promise.all([0, 1, 2].map(() => h1(router.port, 'w.test', 'POST', '/big', up)));
      for (const r of results) {
        assert.equal(r.status, 200);
        assert.equal(r.res.headers['x-upload-length'], String(up.length));
        assert.equal(r.res.headers['x-upload-sha'], sha(up));
        assert.equal(r.length, down.length);
        assert.equal(r.sha, sha(down));
      }
    } finally {
      await router.close();
      await backend.close();
    }
  });

  test('a client that stops reading holds the backend back; when it reads again, every byte arrives', async () => {
    const TOTAL = 256 * MB;
    let written = 0;
    const backend = await h2Backend({}, (stream) => {
      stream.respond({ ':status': 200 });
      const chunk = pattern(64 * 1024);
      const pump = (): void => {
        while (written < TOTAL) {
          written += chunk.length;
          if (written >= TOTAL) { stream.end(chunk); return; }
          if (!stream.write(chunk)) { stream.once('drain', pump); return; }
        }
      };
      pump();
    });
    const router = await startRouter({ routes: [{ name: 'w', hosts: ['w.test'], protocol: 'h2c', backends: [{ name: 'a', url: backend.url, weight: 1 }] }] });
    try {
      let received = 0;
      const res = await new Promise<IncomingMessage>((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port: router.port, path: '/stream', headers: { host: 'w.test' }, agent: false }, resolve);
        req.on('error', reject);
      });
      res.on('data', (c: Buffer) => { received += c.length; });
      res.pause();
      // Let everything on the way fill up, then check the backend stopped.
      await settled(() => written, 400, 20_000);
      // Far more than every buffer on the way (the router's 1 MiB stream window, two loopback sockets).
      assert.ok(written < 64 * MB, `the backend wrote ${written} bytes ahead of a client that read none`);
      const ended = new Promise((resolve) => res.once('end', resolve));
      res.resume();
      await ended;
      assert.equal(received, TOTAL);
    } finally {
      await router.close();
      await backend.close();
    }
  });
});

describe('a backend that refuses or goes away', () => {
  test('GOAWAY with a last stream id under load: the streams above it are retried, none is lost or done twice', async () => {
    const CALLS = 30;
    const served = new Map<string, number>();
    let goaways = 0;
    let held: { stream: ServerHttp2Stream; id: string }[] = [];
    const answer = (stream: ServerHttp2Stream, id: string): void => {
      served.set(id, (served.get(id) ?? 0) + 1);
      stream.respond({ ':status': 200 });
      stream.end(id);
    };
    const backend = await h2Backend({}, (stream, headers, n) => {
      const id = String(headers['x-call']);
      void readRequest(stream).then(() => {
        // The first connection: once all calls are in, GOAWAY naming its 10th stream
        // as the last it will process, which it then answers; the others it drops.
        if (goaways > 0) { answer(stream, id); return; }
        held.push({ stream, id });
        if (n < CALLS) return;
        goaways++;
        const lastId = held.map((h) => h.stream.id!).sort((a, b) => a - b)[9]!;
        stream.session!.goaway(http2.constants.NGHTTP2_NO_ERROR, lastId);
        for (const h of held) if (h.stream.id! <= lastId) answer(h.stream, h.id);
        held = [];
      });
    });
    const router = await startRouter({ routes: [{ name: 'g', hosts: ['g.test'], protocol: 'h2c', backends: [{ name: 'a', url: backend.url, weight: 1 }] }] });
    try {
      const results = await Promise.all(Array.from({ length: CALLS }, (_, i) => new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: router.port, method: 'POST', path: '/call', headers: { host: 'g.test', 'x-call': String(i) }, agent: false }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => { body += c.toString(); });
          res.on('end', () => resolve({ status: res.statusCode!, body }));
        });
        req.on('error', reject);
        req.end(`body ${i}`);
      })));
      assert.equal(goaways, 1);
      assert.deepEqual(results.map((r) => r.status), Array(CALLS).fill(200));
      assert.deepEqual(results.map((r) => r.body), Array.from({ length: CALLS }, (_, i) => String(i)));
      assert.deepEqual([...served.values()], Array(CALLS).fill(1), 'every call was answered exactly once');
      const m = await scrape(router.adminUrl);
      assert.equal(metric(m, 'switchyard_upstream_errors_total', { route: 'g', backend: 'a', kind: 'reset' }), CALLS - 10);
    } finally {
      await router.close();
      await backend.close();
    }
  });

  test('a backend connection that closes with streams in flight: GETs are retried on a new one, POSTs answered 502', async () => {
    // Holds the streams of a connection until three are in, then drops it; once `drops` is 0, answers.
    let drops = 0;
    let held = 0;
    const backend = await h2Backend({}, (stream) => {
      if (drops === 0) {
        stream.respond({ ':status': 200 });
        stream.end('ok');
        return;
      }
      if (++held < 3) return;
      held = 0;
      drops--;
      stream.session!.destroy();
    });
    const router = await startRouter({ routes: [{ name: 'g', hosts: ['g.test'], protocol: 'h2c', backends: [{ name: 'a', url: backend.url, weight: 1 }] }] });
    try {
      drops = 1;
      const gets = await Promise.all([0, 1, 2].map(() => h1(router.port, 'g.test', 'GET', '/read')));
      assert.deepEqual(gets.map((r) => r.status), [200, 200, 200]);
      drops = 1;
      const posts = await Promise.all([0, 1, 2].map(() => h1(router.port, 'g.test', 'POST', '/write', Buffer.from('x'))));
      assert.deepEqual(posts.map((r) => r.status), [502, 502, 502]);
      const m = await scrape(router.adminUrl);
      assert.equal(metric(m, 'switchyard_upstream_errors_total', { route: 'g', backend: 'a', kind: 'reset' }), 6);
      assert.equal(m.get('switchyard_upstream_h2_streams'), 0);
    } finally {
      await router.close();
      await backend.close();
    }
  });

  test('1,100 clients that leave at once do not cost another client its upstream connection (rapid-reset limits)', async () => {
    // nghttp2 (node:http2) ends a connection after 1,000 RST_STREAM in a burst:
    // with at most 100 streams per upstream connection, the cancels spread out.
    const HELD = 1_100;
    let held = 0;
    let cancelled = 0;
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => { release = resolve; });
    const backend = await h2Backend({}, (stream, headers) => {
      if (headers[':path'] === '/slow') {
        void released.then(() => {
          if (stream.destroyed) return; // its connection was ended
          stream.respond({ ':status': 200 });
          stream.end('still here');
        });
        return;
      }
      held++;
      stream.once('close', () => { cancelled++; });
    });
    const router = await startRouter({ routes: [{ name: 'g', hosts: ['g.test'], protocol: 'h2c', backends: [{ name: 'a', url: backend.url, weight: 1 }] }] });
    const leaving = [0, 1].map(() => http2.connect(router.url));
    try {
      // A POST: were its connection lost, it would not be retried.
      const slow = h1(router.port, 'g.test', 'POST', '/slow', Buffer.from('once'));
      assert.ok(await until(() => backend.sessions.size === 1));
      for (let i = 0; i < HELD; i++) {
        const s = leaving[i % 2]!.request({ ':path': `/hold/${i}`, ':authority': 'g.test' });
        s.on('error', () => {});
        s.end();
      }
      assert.ok(await until(() => held === HELD, 20_000), `${held} of ${HELD} streams reached the backend`);
      for (const c of leaving) c.destroy();
      assert.ok(await until(() => cancelled === HELD, 20_000), `${cancelled} of ${HELD} streams cancelled`);
      release();
      const r = await slow;
      assert.equal(r.status, 200);
      const m = await scrape(router.adminUrl);
      assert.equal(metric(m, 'switchyard_upstream_errors_total', { route: 'g', backend: 'a', kind: 'reset' }), 0);
    } finally {
      for (const c of leaving) c.destroy();
      await router.close();
      await backend.close();
    }
  });

  test('REFUSED_STREAM on an upload: it is sent again, body and all', async () => {
    const bodies: string[] = [];
    const backend = await h2Backend({}, (stream, _headers, n) => {
      if (n === 1) {
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      void readRequest(stream).then(({ body }) => {
        bodies.push(body.toString());
        stream.respond({ ':status': 201 });
        stream.end('made');
      });
    });
    const router = await startRouter({ routes: [{ name: 'g', hosts: ['g.test'], protocol: 'h2c', backends: [{ name: 'a', url: backend.url, weight: 1 }] }] });
    try {
      const r = await h1(router.port, 'g.test', 'POST', '/make', Buffer.from('payload that must arrive once'));
      assert.equal(r.status, 201);
      assert.equal(r.length, 4);
      assert.deepEqual(bodies, ['payload that must arrive once']);
    } finally {
      await router.close();
      await backend.close();
    }
  });

  test('a backend that accepts the connection but never sends SETTINGS: 504 after the connect timeout, no stream opened', async () => {
    const received: Buffer[] = [];
    const sockets = new Set<net.Socket>();
    const server = net.createServer((sock) => {
      sockets.add(sock);
      const i = received.push(Buffer.alloc(0)) - 1;
      sock.on('data', (c: Buffer) => { received[i] = Buffer.concat([received[i]!, c]); });
      sock.on('error', () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const router = await startRouter({ routes: [{ name: 's', hosts: ['s.test'], protocol: 'h2c', timeouts: { connect: '300ms' }, backends: [{ name: 'a', url, weight: 1 }] }] });
    try {
      const r = await h1(router.port, 's.test', 'POST', '/x', Buffer.from('never sent'));
      assert.equal(r.status, 504);
      // Each connection (the retry made a second) got the preface, SETTINGS and
      // WINDOW_UPDATE, never a HEADERS frame with the request.
      assert.ok(received.length >= 1);
      for (const b of received) {
        assert.equal(b.subarray(0, 24).toString('latin1'), 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
        const types: number[] = [];
        for (let off = 24; off + 9 <= b.length; off += 9 + b.readUIntBE(off, 3)) types.push(b[off + 3]!);
        assert.deepEqual(types.filter((t) => t !== 0x4 && t !== 0x8), [], `frame types ${types.join(',')}`);
      }
      const m = await scrape(router.adminUrl);
      assert.ok(metric(m, 'switchyard_upstream_errors_total', { route: 's', backend: 'a', kind: 'timeout' }) >= 1);
      assert.equal(m.get('switchyard_upstream_h2_streams'), 0);
    } finally {
      await router.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('an h2c call that never reached its backend and hit the response timeout', () => {
  // Nothing of the request went out (no stream was opened): the backend cannot
  // have acted on it, so it is retried like a refused connection, any method.
  for (const how of ['the connection never got the backend\'s SETTINGS', 'the backend allows no streams (MAX_CONCURRENT_STREAMS 0)'] as const) {
    test(`${how}: a POST is retried on the other backend`, async () => {
      let stuckStreams = 0;
      const received: Buffer[] = [];
      const sockets = new Set<net.Socket>();
      let stuck: { url: string; close(): Promise<void> };
      if (how.startsWith('the connection')) {
        // Accepts the connection, reads it, never answers: no SETTINGS, so no stream is ever opened.
        const server = net.createServer((sock) => {
          sockets.add(sock);
          const i = received.push(Buffer.alloc(0)) - 1;
          sock.on('data', (c: Buffer) => { received[i] = Buffer.concat([received[i]!, c]); });
          sock.on('error', () => {});
        });
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        stuck = {
          url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
          close: () => new Promise<void>((resolve) => {
            for (const s of sockets) s.destroy();
            server.close(() => resolve());
          }),
        };
      } else {
        stuck = await h2Backend({ maxConcurrentStreams: 0 }, (stream) => {
          stuckStreams++;
          stream.respond({ ':status': 200 });
          stream.end('stuck');
        });
      }
      const good = await h2Backend({}, (stream) => {
        void readRequest(stream).then(({ body }) => {
          stream.respond({ ':status': 201 });
          stream.end(`made ${body.toString()}`);
        });
      });
      const router = await startRouter({ routes: [{
        name: 'g', hosts: ['g.test'], protocol: 'h2c',
        // The connect timeout is longer than the response timeout: the call's own timeout ends the wait.
        timeouts: { connect: '20s', response: '500ms' },
        outlierDetection: { consecutiveFailures: 0 },
        backends: [{ name: 'stuck', url: stuck.url, weight: 1 }, { name: 'good', url: good.url, weight: 1 }],
      }] });
      try {
        for (let i = 0; i < 4; i++) {
          const r = await h1(router.port, 'g.test', 'POST', `/make/${i}`, Buffer.from(`thing ${i}`));
          assert.equal(r.status, 201, `request ${i}`);
          assert.equal(r.length, `made thing ${i}`.length);
        }
        const m = await scrape(router.adminUrl);
        assert.ok(metric(m, 'switchyard_upstream_errors_total', { route: 'g', backend: 'stuck', kind: 'timeout' }) >= 1, 'some went to the stuck backend first');
        assert.equal(metric(m, 'switchyard_requests_total', { route: 'g', backend: 'good', protocol: 'h2c', code: '201' }), 4);
        assert.equal(stuckStreams, 0);
        for (const b of received) {
          const types: number[] = [];
          for (let off = 24; off + 9 <= b.length; off += 9 + b.readUIntBE(off, 3)) types.push(b[off + 3]!);
          assert.deepEqual(types.filter((t) => t !== 0x4 && t !== 0x8), [], `frame types ${types.join(',')}`);
        }
      } finally {
        await router.close();
        await good.close();
        await stuck.close();
      }
    });
  }

  test('a stream that was opened and then got no response in time is not retried (the backend may be acting on it)', async () => {
    let seen = 0;
    const slow = await h2Backend({}, () => { seen++; });
    const good = await h2Backend({}, (stream) => {
      stream.respond({ ':status': 200 });
      stream.end('ok');
    });
    const router = await startRouter({ routes: [{
      name: 'g', hosts: ['g.test'], protocol: 'h2c', timeouts: { response: '300ms' }, outlierDetection: { consecutiveFailures: 0 },
      backends: [{ name: 'slow', url: slow.url, weight: 1 }, { name: 'good', url: good.url, weight: 1 }],
    }] });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) statuses.push((await h1(router.port, 'g.test', 'GET', `/r/${i}`)).status);
      assert.deepEqual(statuses.slice().sort(), [200, 200, 504, 504]);
      assert.equal(seen, 2);
    } finally {
      await router.close();
      await good.close();
      await slow.close();
    }
  });
});

describe('the h2c connection pool', () => {
  test('connections draining after a GOAWAY do not count toward the 16-connection cap', async () => {
    // One stream per connection; the first 15 connections get a GOAWAY that
    // keeps their one stream, so they stay open, draining. Two more calls need
    // two more connections: the cap (16) counts only the ones taking streams.
    const held: ServerHttp2Stream[] = [];
    let released = false;
    const answer = (s: ServerHttp2Stream): void => {
      if (s.closed) return;
      s.respond({ ':status': 200 });
      s.end('ok');
    };
    const backend = await h2Backend({ maxConcurrentStreams: 1 }, (stream) => {
      if (released) return answer(stream);
      held.push(stream);
      if (held.length <= 15) stream.session!.goaway(http2.constants.NGHTTP2_NO_ERROR, stream.id!);
    });
    const router = await startRouter({ routes: [{ name: 'g', hosts: ['g.test'], protocol: 'h2c', backends: [{ name: 'a', url: backend.url, weight: 1 }] }] });
    const calls: Promise<{ status: number }>[] = [];
    const release = (): void => {
      released = true;
      for (const s of held) answer(s);
    };
    try {
      for (let i = 1; i <= 17; i++) {
        calls.push(h1(router.port, 'g.test', 'GET', `/call/${i}`));
        // Each call waits to reach the backend, so every GOAWAY is in before the next call.
        assert.ok(await until(() => held.length === i, 10_000), `call ${i} reached the backend (${held.length} did)`);
      }
      assert.equal(backend.sessions.size, 17);
      release();
      const results = await Promise.all(calls);
      assert.deepEqual(results.map((r) => r.status), Array(17).fill(200));
    } finally {
      release();
      await Promise.allSettled(calls);
      await router.close();
      await backend.close();
    }
  });
});

describe('a backend connection that died silently', () => {
  test('after 10 s without streams, a PING goes first: no ACK within the connect timeout, the call goes to a new connection', async () => {
    const backend = await h2Backend({}, (stream) => {
      stream.respond({ ':status': 200 });
      stream.end('ok');
    });
    const port = Number(new URL(backend.url).port);
    // A TCP relay in front of the backend; `silent` connections swallow whatever comes, both ways
    // (the backend's host gone without a FIN or RST), recording what the router sent into them.
    const relay = await tcpRelay(port, (client, upstream) => {
      const c = { client, upstream, silent: false, swallowed: [] as Buffer[] };
      client.on('data', (b: Buffer) => { if (c.silent) c.swallowed.push(b); else upstream.write(b); });
      upstream.on('data', (b: Buffer) => { if (!c.silent) client.write(b); });
      return c;
    });
    const conns = relay.pairs;
    const url = relay.url;
    const router = await startRouter({ routes: [{ name: 'g', hosts: ['g.test'], protocol: 'h2c', timeouts: { connect: '500ms', response: '5s' }, backends: [{ name: 'a', url, weight: 1 }] }] });
    try {
      assert.equal((await h1(router.port, 'g.test', 'POST', '/one', Buffer.from('x'))).status, 200);
      assert.equal(conns.length, 1);
      conns[0]!.silent = true;
      await sleep(10_500);
      const r = await h1(router.port, 'g.test', 'POST', '/two', Buffer.from('y'));
      assert.equal(r.status, 200);
      assert.equal(conns.length, 2, 'a second connection took the call');
      const sent = Buffer.concat(conns[0]!.swallowed);
      const types: number[] = [];
      for (let off = 0; off + 9 <= sent.length; off += 9 + sent.readUIntBE(off, 3)) types.push(sent[off + 3]!);
      assert.deepEqual(types, [0x6], 'only a PING went into the dead connection');
      const m = await scrape(router.adminUrl);
      assert.equal(m.get('switchyard_upstream_h2_streams'), 0);
    } finally {
      await router.close();
      await relay.close();
      await backend.close();
    }
  });
});

describe('h2c calls that timed out while waiting for a stream', () => {
  // They wait in a backend connection's queue (no room under its
  // MAX_CONCURRENT_STREAMS) or in the pool's (no SETTINGS yet). Once room
  // appears none of them may reach the backend, and they must not stand in a
  // fresh call's way.
  for (const how of ['the backend allows no streams, then raises MAX_CONCURRENT_STREAMS', 'the backend\'s SETTINGS (MAX_CONCURRENT_STREAMS 1) come late'] as const) {
    test(`${how}: the backend sees no stream for the dead calls; a fresh call goes through on the connection there is`, async () => {
      const paths: string[] = [];
      const late = how.includes('late');
      const backend = await h2Backend({ maxConcurrentStreams: late ? 1 : 0 }, (stream, headers) => {
        paths.push(String(headers[':path']));
        stream.respond({ ':status': 200 });
        stream.end('ok');
      });
      // A relay in front of the backend; for 'late' it holds what the backend sends (its SETTINGS) until released.
      let held = late;
      const relay = await tcpRelay(Number(new URL(backend.url).port), (client, upstream) => {
        const p = { client, upstream, waiting: [] as Buffer[] };
        client.pipe(upstream);
        upstream.on('data', (b: Buffer) => { if (held) p.waiting.push(b); else client.write(b); });
        upstream.on('close', () => client.destroy());
        return p;
      });
      const pairs = relay.pairs;
      const router = await startRouter({ routes: [{
        name: 'q', hosts: ['q.test'], protocol: 'h2c', timeouts: { connect: '30s', response: '300ms' }, outlierDetection: { consecutiveFailures: 0 },
        backends: [{ name: 'a', url: relay.url, weight: 1 }],
      }] });
      try {
        const dead = await Promise.all([0, 1, 2, 3].map((i) => h1(router.port, 'q.test', 'POST', `/dead/${i}`, Buffer.from(`call ${i}`))));
        assert.deepEqual(dead.map((r) => r.status), [504, 504, 504, 504]);
        const connections = pairs.length;
        assert.ok(connections >= 1, 'the router connected');
        let fresh: Promise<{ status: number }>;
        if (late) {
          // The fresh call waits behind the dead ones for the one connection's SETTINGS.
          fresh = h1(router.port, 'q.test', 'GET', '/fresh');
          await sleep(100);
          held = false;
          for (const p of pairs) for (const b of p.waiting.splice(0)) p.client.write(b);
        } else {
          // Room appears on every connection; then the fresh call takes one of them.
          for (const s of backend.sessions) s.settings({ maxConcurrentStreams: 100 });
          await sleep(200);
          fresh = h1(router.port, 'q.test', 'GET', '/fresh');
        }
        assert.equal((await fresh).status, 200);
        await sleep(200);
        assert.deepEqual(paths, ['/fresh'], 'only the fresh call reached the backend');
        assert.equal(pairs.length, connections, 'no connection was opened for the dead calls');
      } finally {
        await router.close();
        await relay.close();
        await backend.close();
      }
    });
  }
});

describe('h2c calls that die waiting in a backend connection\'s queue', () => {
  /** A backend that allows no stream until its sessions are told otherwise, behind route q; `paths` reached it. */
  async function noRoomYet(): Promise<{ paths: string[]; backend: Awaited<ReturnType<typeof h2Backend>>; router: Router }> {
    const paths: string[] = [];
    const backend = await h2Backend({ maxConcurrentStreams: 0 }, (stream, headers) => {
      paths.push(String(headers[':path']));
      stream.respond({ ':status': 200 });
      stream.end('ok');
    });
    const router = await startRouter({ routes: [{
      name: 'q', hosts: ['q.test'], protocol: 'h2c', timeouts: { response: '30s' },
      backends: [{ name: 'a', url: backend.url, weight: 1 }],
    }] });
    return { paths, backend, router };
  }

  /** A GET to /left/i whose client will leave before it is answered. */
  function leaving(port: number, i: number): http.ClientRequest {
    const req = http.request({ host: '127.0.0.1', port, path: `/left/${i}`, headers: { host: 'q.test' }, agent: false });
    req.on('error', () => {});
    req.end();
    return req;
  }

  test('a client that leaves while its call waits: the call never reaches the backend once room appears', async () => {
    const { paths, backend, router } = await noRoomYet();
    try {
      const left = [0, 1, 2].map((i) => leaving(router.port, i));
      assert.ok(await until(() => backend.sessions.size >= 1, 10_000), 'the router connected');
      await sleep(200);
      for (const req of left) req.destroy();
      await sleep(200);
      for (const s of backend.sessions) s.settings({ maxConcurrentStreams: 100 });
      await sleep(200);
      assert.equal((await h1(router.port, 'q.test', 'GET', '/fresh')).status, 200);
      await sleep(200);
      assert.deepEqual(paths, ['/fresh']);
    } finally {
      await router.close();
      await backend.close();
    }
  });

  test('the queued-requests gauge counts calls waiting for a stream, and falls back to 0 when they leave or start', async () => {
    const { paths, backend, router } = await noRoomYet();
    const queued = async (): Promise<number> => {
      const v = (await scrape(router.adminUrl)).get('switchyard_upstream_queued_requests{route="q",backend="a",protocol="h2c"}');
      assert.notEqual(v, undefined, 'the queued series exists');
      return v!;
    };
    let seen = -1;
    try {
      assert.equal(await queued(), 0);
      const left = [0, 1].map((i) => leaving(router.port, i));
      const served = [0, 1].map((i) => h1(router.port, 'q.test', 'GET', `/served/${i}`));
      // No stream allowed: all four wait.
      assert.ok(await until(async () => (seen = await queued()) === 4, 10_000), `4 calls queued (gauge ${seen})`);
      for (const req of left) req.destroy();
      assert.ok(await until(async () => (seen = await queued()) === 2, 10_000), `2 left, 2 still queued (gauge ${seen})`);
      for (const s of backend.sessions) s.settings({ maxConcurrentStreams: 100 });
      assert.deepEqual((await Promise.all(served)).map((r) => r.status), [200, 200]);
      assert.ok(await until(async () => (seen = await queued()) === 0, 10_000), `none queued once served (gauge ${seen})`);
      assert.deepEqual(paths.sort(), ['/served/0', '/served/1']);
    } finally {
      await router.close();
      await backend.close();
    }
  });

  test('are let go of at once, not when room appears or the connection retires (5 min)', async () => {
    const heap = (): Promise<number> => collectedHeap();
    // No room, ever: every call waits in a connection's queue until its response timeout.
    const backend = await h2Backend({ maxConcurrentStreams: 0 }, () => {});
    const router = await startRouter({ routes: [{
      name: 'q', hosts: ['q.test'], protocol: 'h2c', timeouts: { response: '200ms' }, outlierDetection: { consecutiveFailures: 0 },
      backends: [{ name: 'a', url: backend.url, weight: 1 }],
    }] });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 100 });
    const batch = paddedBatches(router.port, 'q.test', agent);
    try {
      assert.deepEqual([...new Set(await batch(0, 100))], [504]); // warm up: the pool's connections, JIT
      const before = await heap();
      for (let r = 0; r < 8; r++) assert.deepEqual([...new Set(await batch(1000 * (r + 1), 100))], [504]);
      const after = await heap();
      const growthMb = (after - before) / 1048576;
      assert.ok(growthMb < 3, `heap grew ${growthMb.toFixed(1)} MB over 800 calls that died waiting (6.1 MB of headers)`);
    } finally {
      agent.destroy();
      await router.close();
      await backend.close();
    }
  });
});

describe('an h2c backend that floods frames doing no call\'s work', () => {
  // The router's client role keeps the server role's budgets: frames that do
  // no call's work (100, plus 100 per stream opened and 20 per DATA frame
  // sent), empty frames (1,000), answers piling up unread (1,000). Past one,
  // GOAWAY ENHANCE_YOUR_CALM, and the calls on the connection fail cleanly.
  const { NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;
  const PREFACE_LENGTH = 24;

  interface FloodingBackend {
    readonly url: string;
    /** Error codes of the GOAWAYs the router sent. */
    readonly goaways: number[];
    /** Flood frames written, over all connections. */
    sent: number;
    /** Connections open now. */
    readonly open: number;
    close(): Promise<void>;
  }

  /**
   * A raw h2c backend over net: its SETTINGS, ACKs to the router's; on a
   * request's HEADERS it answers a response head (if `head`), then writes
   * `make(i)` frames, 1,000 a write, as long as the router takes them (at
   * most 2,000,000 a connection). `deaf`: it stops reading meanwhile, so the
   * router's answers pile up on its side.
   */
  async function floodingBackend(make: (sid: number, i: number) => Buffer, opts: { head?: boolean; deaf?: boolean } = {}): Promise<FloodingBackend> {
    const sockets = new Set<net.Socket>();
    const b: FloodingBackend = {
      url: '', goaways: [], sent: 0,
      get open() { return sockets.size; },
      close: async () => {
        for (const s of sockets) s.destroy();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
    const flood = async (socket: net.Socket, sid: number): Promise<void> => {
      if (opts.head === true) socket.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, sid, hpack([[':status', '200'], ['content-type', 'application/grpc']])));
      if (opts.deaf === true) socket.pause();
      for (let n = 0; n < 2_000_000 && !socket.destroyed && socket.writable; n += 1000) {
        const batch = Buffer.concat(Array.from({ length: 1000 }, (_, i) => make(sid, n + i)));
        b.sent += 1000;
        if (!socket.write(batch)) {
          await new Promise<void>((resolve) => {
            const done = (): void => { socket.off('drain', done).off('close', done); resolve(); };
            socket.on('drain', done).on('close', done);
          });
        }
      }
      socket.resume();
    };
    const server = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {});
      socket.write(frame(FRAME.SETTINGS, 0, 0));
      let buf = Buffer.alloc(0);
      let skip = PREFACE_LENGTH;
      let flooding = false;
      socket.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (skip > 0) {
          const n = Math.min(skip, buf.length);
          buf = buf.subarray(n);
          skip -= n;
        }
        while (buf.length >= 9) {
          const len = buf.readUIntBE(0, 3);
          if (buf.length < 9 + len) break;
          const type = buf[3]!;
          const flags = buf[4]!;
          const sid = buf.readUInt32BE(5) & 0x7fffffff;
          const payload = buf.subarray(9, 9 + len);
          buf = buf.subarray(9 + len);
          if (type === FRAME.SETTINGS && (flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
          else if (type === FRAME.GOAWAY) b.goaways.push(payload.readUInt32BE(4));
          else if (type === FRAME.HEADERS && !flooding) {
            flooding = true;
            void flood(socket, sid);
          }
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    (b as { url: string }).url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return b;
  }

  /** A unary gRPC call through the router; resolves with the HTTP status and the grpc-status (headers or trailers). */
  async function grpcCall(port: number, host: string): Promise<{ status: number; grpcStatus: string | undefined }> {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    try {
      return await new Promise((resolve, reject) => {
        const req = session.request({ ':method': 'POST', ':path': '/svc.S/M', ':authority': host, 'content-type': 'application/grpc', te: 'trailers' });
        let status = 0;
        let grpcStatus: string | undefined;
        req.on('response', (h) => { status = Number(h[':status']); grpcStatus ??= h['grpc-status'] as string | undefined; });
        req.on('trailers', (t) => { grpcStatus ??= t['grpc-status'] as string | undefined; });
        req.on('error', reject);
        req.on('close', () => resolve({ status, grpcStatus }));
        req.resume();
        req.end(Buffer.from([0, 0, 0, 0, 0]));
      });
    } finally {
      session.close();
    }
  }

  /** `goaway` false: the router's GOAWAY waits behind what the backend does not read; only the close is seen. `timeout`: the route's response and idle timeouts. */
  async function withRouter(b: FloodingBackend, fn: (port: number) => Promise<void>, goaway = true, timeout = '10s'): Promise<void> {
    const good = await h2Backend({}, (stream) => { stream.respond({ ':status': 200 }); stream.end('ok'); });
    const router = await startRouter({ routes: [
      { name: 'f', hosts: ['f.test'], protocol: 'h2c', backends: [{ name: 'a', url: b.url, weight: 1 }],
        // Without a budget nothing but this ends the call (then 504, not 502).
        timeouts: { response: timeout, idle: timeout }, retries: { attempts: 1 }, outlierDetection: { consecutiveFailures: 0 } },
      { name: 'g', hosts: ['g.test'], protocol: 'h2c', backends: [{ name: 'a', url: good.url, weight: 1 }] },
    ] });
    try {
      await fn(router.port);
      if (goaway) assert.ok(b.goaways.includes(NGHTTP2_ENHANCE_YOUR_CALM), `GOAWAY ENHANCE_YOUR_CALM after ${b.sent} frames (GOAWAYs: ${b.goaways.join(', ') || 'none'})`);
      assert.ok(await until(() => b.open === 0, 10_000), `the router closed the connection after ${b.sent} frames`);
      assert.equal((await h1(router.port, 'g.test', 'GET', '/')).status, 200, 'the router still serves');
    } finally {
      await router.close();
      await b.close();
      await good.close();
    }
  }

  const floods: [string, (sid: number, i: number) => Buffer][] = [
    ['empty SETTINGS (each answered with an ACK)', () => frame(FRAME.SETTINGS, 0, 0)],
    ['SETTINGS ACK (nothing asked for)', () => frame(FRAME.SETTINGS, FLAG.ACK, 0)],
    ['PING ACK (no PING was sent)', () => ping(true)],
    ['WINDOW_UPDATE on the connection', () => windowUpdate(0, 1)],
    ['WINDOW_UPDATE on the open stream', (sid) => windowUpdate(sid, 1)],
    ['frames of an unknown type', (_sid, i) => frame(0x20 + (i % 200), 0, 0, Buffer.alloc(8))],
  ];
  for (const [name, make] of floods) {
    test(`a flood of ${name}: GOAWAY ENHANCE_YOUR_CALM, the call fails 502`, async () => {
      const b = await floodingBackend(make);
      await withRouter(b, async (port) => {
        assert.equal((await h1(port, 'f.test', 'GET', '/')).status, 502);
      });
    });
  }

  test('a flood of empty SETTINGS to a gRPC call: grpc-status 14 (UNAVAILABLE)', async () => {
    const b = await floodingBackend(() => frame(FRAME.SETTINGS, 0, 0));
    await withRouter(b, async (port) => {
      assert.deepEqual(await grpcCall(port, 'f.test'), { status: 200, grpcStatus: '14' });
    });
  });

  test('empty DATA frames after a gRPC response head: the call ends with grpc-status 14 in trailers', async () => {
    const b = await floodingBackend((sid) => frame(FRAME.DATA, 0, sid), { head: true });
    await withRouter(b, async (port) => {
      // The response head went out: the call ends with trailers, grpc-status 14.
      assert.deepEqual(await grpcCall(port, 'f.test'), { status: 200, grpcStatus: '14' });
    });
  });

  test('PINGs from a backend that reads nothing (the ACKs pile up): the call fails 502', async () => {
    const b = await floodingBackend(() => ping(false), { deaf: true });
    await withRouter(b, async (port) => {
      assert.equal((await h1(port, 'f.test', 'GET', '/')).status, 502);
      // The budget trips only once loopback's buffers are full of ACKs (~10 MB): however long that takes here, before the timeout.
    }, false, '120s');
  });
});
