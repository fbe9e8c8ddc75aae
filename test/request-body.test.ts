// The request body from the client connection to the upstream (src/ingress/body.ts):
// replay for retries within the kept limit, the client given back only what an
// upstream took, the body limit, and the same through the router with real
// HTTP/1.1 and HTTP/2 clients and an h2c backend.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import http2, { type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { Writable } from 'node:stream';
import { RequestBody, type BodyReader } from '../src/ingress/body.ts';
import { settled, startRouter } from './helpers.ts';

const KB = 1024;
const MB = 1024 * KB;

/** A feed that records what the body asks of the client connection. */
function feed(): { wanted: number; taken: number; bodyWanted(): void; bodyTaken(_b: RequestBody, n: number): void } {
  return {
    wanted: 0,
    taken: 0,
    bodyWanted() { this.wanted++; },
    bodyTaken(_b, n) { this.taken += n; },
  };
}

/** A reader that collects what it gets and says false once it holds `pauseAt` bytes (0: never). */
function reader(pauseAt = 0): BodyReader & { got: Buffer[]; bytes: number; ended: boolean; err: Error | null } {
  return {
    got: [], bytes: 0, ended: false, err: null,
    bodyData(chunk) { this.got.push(chunk); this.bytes += chunk.length; return pauseAt === 0 || this.bytes < pauseAt; },
    bodyEnd() { this.ended = true; },
    bodyError(err) { this.err = err; },
  };
}

function pattern(n: number, seed = 0): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed + (i >> 8)) & 0xff;
  return b;
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

describe('RequestBody', () => {
  test('a second reader gets the whole body again from its start; the client is given back each byte once', () => {
    const f = feed();
    const body = new RequestBody(f);
    const a = reader(3 * KB);
    body.read(a);
    assert.equal(f.wanted, 1, 'the first reader asks the client for bytes (100 Continue is due then)');
    for (let i = 0; i < 5; i++) assert.equal(body.push(pattern(KB, i)), true);
    // a paused after 3 KiB: only what it took is given back.
    assert.equal(a.bytes, 3 * KB);
    assert.equal(f.taken, 3 * KB);
    body.end();
    assert.equal(a.ended, false);
    const b = reader();
    body.read(b);
    body.resume(a); // the old reader gets nothing more
    assert.equal(a.bytes, 3 * KB);
    assert.equal(b.bytes, 5 * KB);
    assert.equal(b.ended, true);
    assert.equal(f.taken, 5 * KB);
    assert.equal(sha(Buffer.concat(b.got)), sha(Buffer.concat([0, 1, 2, 3, 4].map((i) => pattern(KB, i)))));
    assert.equal(body.replayable, true);
    assert.equal(body.kept()!.length, 5 * KB);
  });

  test('past 64 KiB taken, the body is not replayable: no new reader, no kept copy', () => {
    const f = feed();
    const body = new RequestBody(f);
    const a = reader();
    body.read(a);
    for (let i = 0; i < 5; i++) body.push(pattern(16 * KB, i));
    body.end();
    assert.equal(a.bytes, 80 * KB);
    assert.equal(a.ended, true);
    assert.equal(body.replayable, false);
    assert.equal(body.kept(), null);
    const b = reader();
    body.read(b);
    assert.equal(b.bytes, 0);
    assert.ok(b.err !== null, 'a reader never gets a body with a hole');
  });

  test('bytes nobody took yet are kept whatever their size: a retry before they went out still replays', () => {
    const body = new RequestBody(feed());
    for (let i = 0; i < 4; i++) body.push(pattern(32 * KB, i));
    assert.equal(body.replayable, true);
    const a = reader(40 * KB);
    body.read(a);
    assert.equal(a.bytes, 64 * KB);
    assert.equal(body.replayable, true);
    const b = reader();
    body.read(b);
    assert.equal(b.bytes, 128 * KB);
    assert.equal(body.replayable, false);
  });

  test('backpressure: past 64 KiB not taken the client connection is told to stop, and to go on once a reader took them', () => {
    const f = feed();
    const body = new RequestBody(f);
    const a = reader(16 * KB);
    body.read(a);
    let ok = true;
    let pushed = 0;
    while (ok) {
      ok = body.push(pattern(8 * KB));
      pushed += 8 * KB;
    }
    assert.equal(a.bytes, 16 * KB);
    assert.equal(pushed, 16 * KB + 64 * KB);
    assert.equal(f.taken, 16 * KB);
    const wanted = f.wanted;
    a.bodyData = function (chunk) { this.got.push(chunk); this.bytes += chunk.length; return true; };
    body.resume(a);
    assert.equal(a.bytes, pushed);
    assert.equal(f.wanted, wanted + 1, 'the connection reads on once the backlog is taken');
  });

  test('limit: past it the body is cut once and nothing more is taken in', () => {
    const body = new RequestBody(feed());
    let cut = 0;
    body.limit = 10 * KB;
    body.onLimit = () => { cut++; };
    const a = reader();
    body.read(a);
    assert.equal(body.push(pattern(8 * KB)), true);
    assert.equal(body.push(pattern(8 * KB)), false);
    assert.equal(body.push(pattern(8 * KB)), false);
    body.end();
    assert.equal(cut, 1);
    assert.equal(a.bytes, 8 * KB);
    assert.equal(a.ended, false);
    assert.equal(body.kept(), null);
  });

  test('a body that broke off: the reader is told, and so is any later one', () => {
    const body = new RequestBody(feed());
    const a = reader();
    body.read(a);
    body.push(pattern(KB));
    body.fail(new Error('gone'));
    assert.equal(a.err?.message, 'gone');
    const b = reader();
    body.read(b);
    assert.equal(b.err?.message, 'gone');
    assert.equal(body.kept(), null);
  });
});

async function h2Backend(handler: (stream: ServerHttp2Stream, n: number) => void): Promise<{ url: string; close(): Promise<void> }> {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  let n = 0;
  server.on('session', (s) => {
    sessions.add(s);
    s.on('error', () => {});
    s.once('close', () => sessions.delete(s));
  });
  server.on('stream', (stream) => {
    stream.on('error', () => {});
    handler(stream, ++n);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of sessions) s.destroy();
    }),
  };
}

function readAll(stream: ServerHttp2Stream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c)).on('end', () => resolve(Buffer.concat(chunks))).on('error', reject);
  });
}

/** A POST from an HTTP/2 client through the router: status and body. */
async function h2Post(url: string, host: string, body: Buffer, headers: http2.OutgoingHttpHeaders = {}): Promise<{ status: number; body: Buffer }> {
  const client = http2.connect(url);
  client.on('error', () => {});
  try {
    return await new Promise((resolve, reject) => {
      const req = client.request({ ':method': 'POST', ':path': '/up', ':authority': host, ...headers });
      let status = 0;
      const chunks: Buffer[] = [];
      req.on('response', (h) => { status = Number(h[':status']); });
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => resolve({ status, body: Buffer.concat(chunks) }));
      req.on('error', reject);
      req.end(body);
    });
  } finally {
    client.close();
  }
}

describe('request bodies through the router to an h2c backend', () => {
  for (const [size, retried] of [[48 * KB, true], [200 * KB, false]] as const) {
    test(`a POST the backend read whole and then refused (REFUSED_STREAM), ${size / KB} KiB: ${retried ? 'sent again, body and all' : 'past the kept 64 KiB, not retried: 502'}`, async () => {
      const seen: string[] = [];
      const backend = await h2Backend((stream, n) => {
        void readAll(stream).then((b) => {
          seen.push(sha(b));
          if (n === 1) stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
          else {
            stream.respond({ ':status': 200 });
            stream.end(`got ${b.length}`);
          }
        });
      });
      const router = await startRouter({ routes: [{ name: 'r', hosts: ['r.test'], protocol: 'h2c', retries: { attempts: 3 }, backends: [{ name: 'a', url: backend.url, weight: 1 }] }] });
      try {
        const up = pattern(size, 7);
        const r = await h2Post(router.url, 'r.test', up);
        if (retried) {
          assert.equal(r.status, 200);
          assert.equal(r.body.toString(), `got ${size}`);
          assert.deepEqual(seen, [sha(up), sha(up)], 'both attempts carried the whole body');
        } else {
          assert.equal(r.status, 502);
          assert.deepEqual(seen, [sha(up)], 'one attempt only');
        }
      } finally {
        await router.close();
        await backend.close();
      }
    });
  }

  test('an HTTP/2 upload past maxBodyBytes without content-length: 413', async () => {
    const backend = await h2Backend((stream) => {
      stream.respond({ ':status': 200 });
      stream.end('read nothing');
    });
    const router = await startRouter({ routes: [{ name: 'l', hosts: ['l.test'], protocol: 'h2c', maxBodyBytes: 100_000, backends: [{ name: 'a', url: backend.url, weight: 1 }] }] });
    try {
      const r = await h2Post(router.url, 'l.test', pattern(300 * KB));
      assert.equal(r.status, 413);
    } finally {
      await router.close();
      await backend.close();
    }
  });

  for (const client of ['HTTP/1.1', 'HTTP/2'] as const) {
    test(`a backend that does not read holds back a fast ${client} uploader; once it reads, every byte arrives`, async () => {
      const TOTAL = 96 * MB;
      let release: () => void = () => {};
      const released = new Promise<void>((resolve) => { release = resolve; });
      let received: Promise<Buffer> | undefined;
      const backend = await h2Backend((stream) => {
        stream.pause();
        received = released.then(() => {
          stream.resume();
          return readAll(stream);
        });
        void received.then((b) => {
          stream.respond({ ':status': 200, 'x-sha': sha(b) });
          stream.end(String(b.length));
        });
      });
      const router = await startRouter({ routes: [{ name: 'u', hosts: ['u.test'], protocol: 'h2c', backends: [{ name: 'a', url: backend.url, weight: 1 }] }] });
      const chunk = pattern(64 * KB, 3);
      const hash = createHash('sha256');
      let written = 0;
      try {
        let done!: Promise<{ status: number; sha: string; body: string }>;
        // The request as a writable stream, whichever client sent it.
        let upload!: Writable;
        if (client === 'HTTP/1.1') {
          const req = http.request({ host: '127.0.0.1', port: router.port, method: 'POST', path: '/up', headers: { host: 'u.test', 'content-length': TOTAL }, agent: false });
          done = new Promise((resolve, reject) => {
            req.on('response', (res) => {
              let body = '';
              res.on('data', (c: Buffer) => { body += c.toString(); }).on('end', () => resolve({ status: res.statusCode!, sha: String(res.headers['x-sha']), body }));
            });
            req.on('error', reject);
          });
          upload = req;
        } else {
          const session = http2.connect(router.url);
          session.on('error', () => {});
          const req = session.request({ ':method': 'POST', ':path': '/up', ':authority': 'u.test' });
          done = new Promise((resolve, reject) => {
            let status = 0;
            let s = '';
            let body = '';
            req.on('response', (h) => { status = Number(h[':status']); s = String(h['x-sha']); });
            req.on('data', (c: Buffer) => { body += c.toString(); });
            req.on('end', () => { session.close(); resolve({ status, sha: s, body }); });
            req.on('error', reject);
          });
          upload = req;
        }
        const pump = (): void => {
          while (written < TOTAL) {
            written += chunk.length;
            hash.update(chunk);
            if (written >= TOTAL) { upload.end(chunk); return; }
            if (!upload.write(chunk)) { upload.once('drain', pump); return; }
          }
        };
        pump();
        // Let every buffer on the way fill up, then check the uploader is held.
        await settled(() => written, 400, 20_000);
        assert.ok(written < 48 * MB, `the client wrote ${written} bytes ahead of a backend that read none`);
        release();
        const r = await done;
        assert.equal(r.status, 200);
        assert.equal(r.body, String(TOTAL));
        assert.equal(r.sha, hash.digest('hex'));
      } finally {
        release();
        await router.close();
        await backend.close();
      }
    });
  }
});
