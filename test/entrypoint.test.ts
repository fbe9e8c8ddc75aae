// The entrypoint: one port for HTTP/1.1 and h2c prior knowledge, protocol
// sniffing with a preface that arrives in pieces, per-stream weighted split,
// WebSocket pass-through and the sniff timeout. Real clients (undici, node:http,
// node:http2, curl, Node's own WebSocket) against the router in this process.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, Dispatcher1Wrapper, request } from 'undici';
import { WebSocketServer } from 'ws';
import { closedPort, run, scrape, startBackend, startRouter, type Backend, type Router } from './helpers.ts';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const WEB = 'web.example.com';

/** Answers with what it received: method, url, headers, body length and SHA-256. */
function inspect(name: string) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const hash = createHash('sha256');
    let length = 0;
    req.on('data', (c: Buffer) => { length += c.length; hash.update(c); });
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-backend': name });
      res.end(JSON.stringify({ backend: name, method: req.method, url: req.url, headers: req.headers, length, sha256: hash.digest('hex') }));
    });
  };
}

interface Seen { backend: string; method: string; url: string; headers: Record<string, string>; length: number; sha256: string }

/** The JSON object in a raw HTTP/1.1 response (chunk-size lines around it, if any, ignored). */
function bodyJson(raw: string): Seen {
  return JSON.parse(raw.slice(raw.indexOf('{'), raw.lastIndexOf('}') + 1)) as Seen;
}

interface H2Response { status: number; headers: http2.IncomingHttpHeaders; body: Buffer }

function h2Request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined });
    const chunks: Buffer[] = [];
    let head: http2.IncomingHttpHeaders = {};
    stream.on('response', (h) => { head = h; });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve({ status: Number(head[':status']), headers: head, body: Buffer.concat(chunks) }));
    stream.on('error', reject);
    if (body !== undefined) stream.end(body);
  });
}

/** Writes `chunks` to a fresh connection with `gapMs` between them; resolves with everything read until the server closes. */
function rawExchange(port: number, chunks: (string | Buffer)[], gapMs = 40): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.setNoDelay(true);
    let data = '';
    sock.on('data', (c: Buffer) => { data += c.toString('latin1'); });
    sock.on('end', () => resolve(data));
    sock.on('error', reject);
    sock.setTimeout(5000, () => { sock.destroy(); reject(new Error(`no end of response; got ${JSON.stringify(data)}`)); });
    sock.once('connect', async () => {
      for (const [i, c] of chunks.entries()) {
        if (i > 0) await sleep(gapMs);
        sock.write(c);
      }
    });
  });
}

/**
 * A TCP relay in front of the router that passes the first 24 bytes a client
 * sends (the HTTP/2 preface) on in three writes 30 ms apart, then splices.
 */
async function prefaceSplittingRelay(targetPort: number): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.setNoDelay(true);
      s.on('error', () => { client.destroy(); upstream.destroy(); });
      s.once('close', () => { sockets.delete(s); client.destroy(); upstream.destroy(); });
    }
    let pending = Buffer.alloc(0);
    const collect = (c: Buffer): void => { pending = Buffer.concat([pending, c]); };
    client.on('data', collect);
    upstream.once('connect', async () => {
      while (pending.length < PREFACE.length && !client.destroyed) await sleep(2);
      for (const [from, to] of [[0, 5], [5, 15], [15, 24]] as const) {
        upstream.write(pending.subarray(from, to));
        await sleep(30);
      }
      client.off('data', collect);
      upstream.write(pending.subarray(PREFACE.length));
      client.pipe(upstream);
      upstream.pipe(client);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

/** Frames (type, flags, stream id) in a buffer of HTTP/2 frames; a trailing partial frame is ignored. */
function frames(buf: Buffer): { type: number; flags: number; stream: number }[] {
  const out: { type: number; flags: number; stream: number }[] = [];
  for (let i = 0; i + 9 <= buf.length;) {
    const length = buf.readUIntBE(i, 3);
    if (i + 9 + length > buf.length) break;
    out.push({ type: buf[i + 3]!, flags: buf[i + 4]!, stream: buf.readUInt32BE(i + 5) & 0x7fffffff });
    i += 9 + length;
  }
  return out;
}

/**
 * Node's own WebSocket (undici's, bundled with Node) to `ws://HOST:PORT/PATH`,
 * where a DNS lookup override sends the connection to the router on
 * 127.0.0.1, so the handshake carries the route's Host. undici 8's
 * Dispatcher1Wrapper adapts its Agent to the dispatcher API of the undici
 * bundled with Node.
 */
function webSocketVia(port: number, host: string, path: string): { ws: WebSocket; agent: Agent } {
  const agent = new Agent({
    connect: {
      lookup: ((_host: string, opts: { all?: boolean }, cb: (err: Error | null, address: unknown, family?: number) => void) => {
        if (opts.all === true) cb(null, [{ address: '127.0.0.1', family: 4 }]);
        else cb(null, '127.0.0.1', 4);
      }) as unknown as net.LookupFunction,
    },
  });
  const init = { dispatcher: new Dispatcher1Wrapper(agent) };
  return { ws: new WebSocket(`ws://${host}:${port}${path}`, init as unknown as string[]), agent };
}

describe('entrypoint', () => {
  let web: Backend, a: Backend, b: Backend, router: Router;
  let wsServer: http.Server, wss: WebSocketServer;
  const wsCloseCodes: number[] = [];
  const wsHosts: string[] = [];
  // Opened at the start of the suite and left silent; the last test checks that
  // the sniff timeout (10 s) dropped them while the other tests ran.
  const silent: { opened: number; closed: Promise<number>; sock: net.Socket }[] = [];
  const h1Agent = new Agent();

  before(async () => {
    web = await startBackend('web', inspect('web'));
    a = await startBackend('a', inspect('a'));
    b = await startBackend('b', inspect('b'));
    wsServer = http.createServer((_req, res) => { res.writeHead(426); res.end(); });
    wss = new WebSocketServer({ server: wsServer });
    wss.on('connection', (ws, req) => {
      wsHosts.push(req.headers.host ?? '');
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      ws.on('close', (code) => wsCloseCodes.push(code));
    });
    await new Promise<void>((resolve) => wsServer.listen(0, '127.0.0.1', resolve));
    const wsUrl = `http://127.0.0.1:${(wsServer.address() as AddressInfo).port}`;
    const nothing = await closedPort();
    router = await startRouter({
      routes: [
        { name: 'web', hosts: [WEB], protocol: 'http', backends: [{ name: 'web', url: web.url, weight: 1 }] },
        { name: 'split', hosts: ['split.example.com'], protocol: 'http', backends: [
          { name: 'a', url: a.url, weight: 2 },
          { name: 'b', url: b.url, weight: 1 },
        ] },
        { name: 'ws', hosts: ['ws.example.com'], backends: [{ name: 'ws', url: wsUrl, weight: 1 }] },
        { name: 'wsdown', hosts: ['wsdown.example.com'], backends: [{ name: 'old', url: `http://127.0.0.1:${nothing}`, weight: 1 }] },
      ],
    });
    for (const first of [null, PREFACE.subarray(0, 16)]) {
      const sock = net.connect(router.port, '127.0.0.1');
      sock.on('error', () => {});
      const opened = Date.now();
      if (first !== null) sock.write(first); // a preface that never completes
      silent.push({ opened, sock, closed: once(sock, 'close').then(() => Date.now()) });
    }
  });

  after(async () => {
    for (const s of silent) s.sock.destroy();
    await h1Agent.close();
    await router.close();
    wss.close();
    wsServer.closeAllConnections();
    await new Promise<void>((resolve) => wsServer.close(() => resolve()));
    await Promise.all([web.close(), a.close(), b.close()]);
  });

  test('one port: HTTP/1.1 and h2c prior knowledge both reach the HTTP/1.1 backend', async () => {
    const h1 = await request(`${router.url}/via-h1?q=1`, { headers: { host: WEB }, dispatcher: h1Agent });
    assert.equal(h1.statusCode, 200);
    const h1Seen = await h1.body.json() as Seen;
    assert.equal(h1Seen.url, '/via-h1?q=1');
    assert.equal(h1Seen.headers['host'], WEB);

    const session = http2.connect(router.url);
    try {
      const get = await h2Request(session, { ':method': 'GET', ':path': '/via-h2?q=2', ':authority': WEB, 'x-custom': 'yes' });
      assert.equal(get.status, 200);
      assert.equal(get.headers['content-type'], 'application/json');
      assert.equal(get.headers['x-backend'], 'web');
      const seen = JSON.parse(get.body.toString()) as Seen;
      assert.equal(seen.method, 'GET');
      assert.equal(seen.url, '/via-h2?q=2');
      assert.equal(seen.headers['host'], WEB, 'the HTTP/1.1 backend sees :authority as Host');
      assert.equal(seen.headers['x-forwarded-proto'], 'http');
      assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
      assert.equal(seen.headers['x-forwarded-host'], WEB);
      assert.equal(seen.headers['x-custom'], 'yes');
      assert.equal(seen.length, 0);

      const body = randomBytes(1024 * 1024);
      const post = await h2Request(session, { ':method': 'POST', ':path': '/upload', ':authority': WEB, 'content-type': 'application/octet-stream' }, body);
      assert.equal(post.status, 200);
      const posted = JSON.parse(post.body.toString()) as Seen;
      assert.equal(posted.method, 'POST');
      assert.equal(posted.length, body.length);
      assert.equal(posted.sha256, createHash('sha256').update(body).digest('hex'));
    } finally {
      session.close();
    }
    const m = await scrape(router.adminUrl);
    assert.ok((m.get('switchyard_requests_total{route="web",backend="web",protocol="http",code="200"}') ?? 0) >= 3);
  });

  test('curl with --http2-prior-knowledge and with HTTP/1.1 on the same port', async () => {
    const h2 = await run('curl', ['-sv', '--http2-prior-knowledge', '-H', `Host: ${WEB}`, `${router.url}/curl-h2`]);
    assert.equal(h2.code, 0, h2.stderr);
    assert.match(h2.stderr, /^< HTTP\/2 200/m);
    const seen2 = JSON.parse(h2.stdout) as Seen;
    assert.equal(seen2.url, '/curl-h2');
    assert.equal(seen2.headers['host'], WEB);
    const h1 = await run('curl', ['-sv', '--http1.1', '-H', `Host: ${WEB}`, `${router.url}/curl-h1`]);
    assert.equal(h1.code, 0, h1.stderr);
    assert.match(h1.stderr, /^< HTTP\/1\.1 200/m);
    assert.equal((JSON.parse(h1.stdout) as Seen).url, '/curl-h1');
  });

  test('300 streams on one HTTP/2 connection are split per stream: exactly 200/100 at weights 2/1', async () => {
    const session = http2.connect(router.url);
    try {
      const responses = await Promise.all(Array.from({ length: 300 }, (_, i) =>
        h2Request(session, { ':path': `/s/${i}`, ':authority': 'split.example.com' })));
      const counts: Record<string, number> = {};
      for (const r of responses) {
        assert.equal(r.status, 200);
        const name = String(r.headers['x-backend']);
        counts[name] = (counts[name] ?? 0) + 1;
      }
      assert.deepEqual(counts, { a: 200, b: 100 });
      assert.equal(a.hits, 200);
      assert.equal(b.hits, 100);
    } finally {
      session.close();
    }
  });

  test('an HTTP/1.1 request line arriving in pieces is still HTTP/1.1', async () => {
    const head = `HTTP/1.1\r\nHost: ${WEB}\r\nConnection: close\r\n\r\n`;
    // Ten bytes of the request line, then the rest.
    const get = await rawExchange(router.port, ['GET /split', `-h1 ${head}`]);
    assert.match(get, /^HTTP\/1\.1 200 /);
    assert.equal(bodyJson(get).url, '/split-h1');
    // "P" could still start the HTTP/2 preface ("PRI *"): the sniffer must wait, then hand over.
    const post = await rawExchange(router.port, ['P', 'OST /split-post HT', `TP/1.1\r\nHost: ${WEB}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhel`, 'lo']);
    assert.match(post, /^HTTP\/1\.1 200 /);
    const seen = bodyJson(post);
    assert.equal(seen.method, 'POST');
    assert.equal(seen.url, '/split-post');
    assert.equal(seen.sha256, createHash('sha256').update('hello').digest('hex'));
  });

  test('an HTTP/2 preface arriving in three pieces gets HTTP/2 SETTINGS back', async () => {
    const sock = net.connect(router.port, '127.0.0.1');
    sock.setNoDelay(true);
    let received = Buffer.alloc(0);
    sock.on('data', (c: Buffer) => { received = Buffer.concat([received, c]); });
    sock.on('error', () => {});
    await once(sock, 'connect');
    sock.write(PREFACE.subarray(0, 3));
    await sleep(40);
    sock.write(PREFACE.subarray(3, 16));
    await sleep(40);
    sock.write(PREFACE.subarray(16));
    // An empty SETTINGS frame: length 0, type 0x4, flags 0, stream 0.
    sock.write(Buffer.from([0, 0, 0, 0x4, 0, 0, 0, 0, 0]));
    const deadline = Date.now() + 3000;
    while (!frames(received).some((f) => f.type === 0x4 && f.flags === 0x1) && Date.now() < deadline) await sleep(10);
    sock.destroy();
    assert.ok(received.length >= 9, `the server sent ${received.length} bytes`);
    assert.equal(received[3], 0x4, 'the first frame the server sends is SETTINGS');
    assert.equal(received[4]! & 0x1, 0, 'not an ACK');
    const got = frames(received);
    assert.equal(got[0]!.stream, 0);
    assert.ok(got.some((f) => f.type === 0x4 && f.flags === 0x1 && f.stream === 0), 'our SETTINGS is acknowledged');
  });

  test('a whole h2c exchange works when the preface arrives in pieces', async () => {
    const relay = await prefaceSplittingRelay(router.port);
    const session = http2.connect(`http://127.0.0.1:${relay.port}`);
    try {
      const r = await h2Request(session, { ':path': '/through-relay', ':authority': WEB });
      assert.equal(r.status, 200);
      assert.equal((JSON.parse(r.body.toString()) as Seen).url, '/through-relay');
    } finally {
      session.close();
      await relay.close();
    }
  });

  test('WebSocket through the router: 100 echoes including 1 MB, then a clean close', async () => {
    const { ws, agent } = webSocketVia(router.port, 'ws.example.com', '/chat');
    ws.binaryType = 'arraybuffer';
    const inbox: (string | ArrayBuffer)[] = [];
    let wake: (() => void) | undefined;
    ws.onmessage = (e: MessageEvent) => { inbox.push(e.data as string | ArrayBuffer); wake?.(); };
    const closed = new Promise<CloseEvent>((resolve) => { ws.onclose = resolve; });
    try {
      await new Promise<void>((resolve, reject) => {
        ws.onopen = () => resolve();
        ws.onerror = () => reject(new Error('WebSocket failed to open'));
      });
      const next = async (): Promise<string | ArrayBuffer> => {
        const deadline = Date.now() + 5000;
        while (inbox.length === 0) {
          if (Date.now() > deadline) throw new Error('no echo within 5 s');
          await new Promise<void>((resolve) => { wake = resolve; setTimeout(resolve, 100); });
        }
        return inbox.shift()!;
      };
      const big = randomBytes(1024 * 1024);
      for (let i = 0; i < 100; i++) {
        if (i === 50) {
          ws.send(big);
          const echo = await next();
          assert.ok(echo instanceof ArrayBuffer, 'binary comes back binary');
          assert.equal(Buffer.from(echo).equals(big), true, 'the 1 MB message comes back intact');
        } else {
          ws.send(`message ${i}`);
          assert.equal(await next(), `message ${i}`);
        }
      }
      ws.close(1000, 'done');
      const ev = await closed;
      assert.equal(ev.code, 1000);
      assert.equal(ev.wasClean, true);
    } finally {
      await agent.close();
    }
    assert.deepEqual(wsHosts, [`ws.example.com:${router.port}`]);
    for (let i = 0; i < 50 && wsCloseCodes.length === 0; i++) await sleep(10);
    assert.deepEqual(wsCloseCodes, [1000]);
    // The exchange is over and counted once, as a 101.
    let count: number | undefined;
    for (let i = 0; i < 50 && count === undefined; i++) {
      count = (await scrape(router.adminUrl)).get('switchyard_requests_total{route="ws",backend="ws",protocol="http",code="101"}');
      if (count === undefined) await sleep(10);
    }
    assert.equal(count, 1);
  });

  test('a WebSocket upgrade to a backend that is down gets 502, not a hang', async () => {
    const t0 = Date.now();
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1', port: router.port, path: '/chat',
        headers: {
          host: 'wsdown.example.com', connection: 'Upgrade', upgrade: 'websocket',
          'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64'),
        },
      });
      req.setTimeout(5000, () => { req.destroy(new Error('no answer within 5 s')); });
      req.on('response', (res) => { res.resume(); resolve(res.statusCode!); });
      req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res.statusCode!); });
      req.on('error', reject);
      req.end();
    });
    assert.equal(status, 502);
    assert.ok(Date.now() - t0 < 5000, 'answered, not left to the client\'s 5 s timeout');
    // Node's WebSocket sees a failed handshake and closes, rather than waiting.
    const { ws, agent } = webSocketVia(router.port, 'wsdown.example.com', '/chat');
    try {
      const t1 = Date.now();
      const ev = await new Promise<CloseEvent>((resolve) => { ws.onclose = resolve; ws.onerror = () => {}; });
      assert.equal(ev.wasClean, false);
      assert.equal(ev.code, 1006);
      assert.ok(Date.now() - t1 < 3000);
    } finally {
      await agent.close();
    }
    const m = await scrape(router.adminUrl);
    assert.equal(m.get('switchyard_requests_total{route="wsdown",backend="old",protocol="http",code="502"}'), 2);
  });

  test('connections that send nothing, or half a preface, are dropped by the 10 s sniff timeout', async () => {
    assert.equal(silent.length, 2);
    for (const s of silent) {
      const closedAt = await Promise.race([s.closed, sleep(Math.max(0, s.opened + 11_500 - Date.now())).then(() => -1)]);
      assert.notEqual(closedAt, -1, 'a silent connection was still open after 11.5 s');
      const after = closedAt - s.opened;
      assert.ok(after >= 9_500, `dropped after ${after} ms`);
    }
  });
});

// The HTTP/1.1 connection semantics the raw-socket ingress (h1-conn.ts)
// reproduces from node:http, each against real sockets: HTTP/1.0, framing of
// responses without a length, Expect: 100-continue, HEAD, pipelining behind a
// slow response, and the keep-alive idle timeout.
describe('HTTP/1.1 client connections', () => {
  let backend: Backend, router: Router;
  const HOST = 'conn.test';

  before(async () => {
    backend = await startBackend('conn', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        if (req.url === '/nolength') {
          // No Content-Length: node sends it chunked; the router re-frames it for its client.
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write('first,');
          setTimeout(() => res.end('second'), 20);
          return;
        }
        const answer = (): void => {
          res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(body.length + req.url!.length + 1) });
          res.end(req.method === 'HEAD' ? undefined : `${req.url} ${body.toString()}`);
        };
        if (req.url === '/slow') setTimeout(answer, 300);
        else answer();
      });
    });
    router = await startRouter({
      entrypoint: { idleTimeout: '1s' },
      routes: [{ name: 'conn', hosts: [HOST], backends: [{ name: 'conn', url: backend.url, weight: 1 }] }],
    });
  });

  after(async () => {
    await router.close();
    await backend.close();
  });

  /** Opens a connection; `read(n)` waits until `n` bytes-or-more of text arrived in total. */
  async function connect(): Promise<{ sock: net.Socket; text: () => string; until: (f: (t: string) => boolean) => Promise<void>; closed: Promise<number> }> {
    const sock = net.connect(router.port, '127.0.0.1');
    sock.setNoDelay(true);
    sock.on('error', () => {});
    let text = '';
    let wake = (): void => {};
    sock.on('data', (c: Buffer) => { text += c.toString('latin1'); wake(); });
    const closed = once(sock, 'close').then(() => Date.now());
    await once(sock, 'connect');
    return {
      sock, closed, text: () => text,
      until: async (f) => {
        const deadline = Date.now() + 5_000;
        while (!f(text)) {
          if (Date.now() > deadline) throw new Error(`timed out; got ${JSON.stringify(text)}`);
          await new Promise<void>((resolve) => { wake = resolve; setTimeout(resolve, 50); });
        }
      },
    };
  }

  test('HTTP/1.0 without keep-alive: Connection: close, and a body without length is delimited by the close', async () => {
    const c = await connect();
    c.sock.write(`GET /nolength HTTP/1.0\r\nHost: ${HOST}\r\n\r\n`);
    await c.closed;
    const t = c.text();
    assert.match(t, /^HTTP\/1\.1 200 /);
    assert.match(t, /\r\nconnection: close\r\n/i);
    assert.doesNotMatch(t, /transfer-encoding/i);
    assert.ok(t.endsWith('\r\n\r\nfirst,second'), JSON.stringify(t));
  });

  test('HTTP/1.0 with keep-alive: answered with Connection: keep-alive, and the connection serves another request', async () => {
    const c = await connect();
    c.sock.write(`POST /a HTTP/1.0\r\nHost: ${HOST}\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi`);
    await c.until((t) => t.endsWith('/a hi'));
    assert.match(c.text(), /\r\nconnection: keep-alive\r\n/i);
    c.sock.write(`GET /b HTTP/1.0\r\nHost: ${HOST}\r\nConnection: keep-alive\r\n\r\n`);
    await c.until((t) => t.endsWith('/b '));
    c.sock.destroy();
  });

  test('HTTP/1.1: a response without length goes chunked, and the connection stays open', async () => {
    const c = await connect();
    c.sock.write(`GET /nolength HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
    await c.until((t) => t.endsWith('0\r\n\r\n'));
    const t = c.text();
    assert.match(t, /\r\ntransfer-encoding: chunked\r\n/i);
    assert.equal(t.slice(t.indexOf('\r\n\r\n') + 4), '6\r\nfirst,\r\n6\r\nsecond\r\n0\r\n\r\n');
    c.sock.write(`GET /again HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
    await c.until((x) => x.endsWith('/again '));
    c.sock.destroy();
  });

  test('Expect: 100-continue: the client gets 100 Continue before it sends the body, then the answer', async () => {
    const c = await connect();
    c.sock.write(`POST /upload HTTP/1.1\r\nHost: ${HOST}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n`);
    await c.until((t) => t.includes('\r\n\r\n'));
    assert.equal(c.text(), 'HTTP/1.1 100 Continue\r\n\r\n');
    c.sock.write('hello');
    await c.until((t) => t.endsWith('/upload hello'));
    assert.match(c.text().slice(25), /^HTTP\/1\.1 200 /);
    c.sock.destroy();
  });

  test('HEAD: the length is passed on, no body follows, and the next request on the connection is served', async () => {
    const c = await connect();
    c.sock.write(`HEAD /h HTTP/1.1\r\nHost: ${HOST}\r\n\r\nGET /next HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
    await c.until((t) => t.endsWith('/next '));
    const heads = c.text().split('HTTP/1.1 ').slice(1);
    assert.equal(heads.length, 2, c.text());
    assert.match(heads[0]!, /content-length: 3\r\n/i);
    assert.ok(heads[0]!.endsWith('\r\n\r\n'), 'no body after the HEAD response');
    c.sock.destroy();
  });

  test('requests pipelined behind a slow one are answered after it, in order', async () => {
    const c = await connect();
    c.sock.write(`GET /slow HTTP/1.1\r\nHost: ${HOST}\r\n\r\nGET /p2 HTTP/1.1\r\nHost: ${HOST}\r\n\r\nPOST /p3 HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 1\r\n\r\nx`);
    await c.until((t) => t.endsWith('/p3 x'));
    const bodies = c.text().split(/HTTP\/1\.1 200 OK\r\n[^]*?\r\n\r\n/).slice(1);
    assert.deepEqual(bodies, ['/slow ', '/p2 ', '/p3 x']);
    c.sock.destroy();
  });

  test('an idle keep-alive connection is closed after entrypoint.idleTimeout (1 s), not before', async () => {
    const c = await connect();
    c.sock.write(`GET /idle HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
    await c.until((t) => t.endsWith('/idle '));
    const idleFrom = Date.now();
    const closedAt = await Promise.race([c.closed, sleep(10_000).then(() => 0)]);
    assert.ok(closedAt > 0, 'closed');
    assert.ok(closedAt - idleFrom >= 950, `closed after ${closedAt - idleFrom} ms`);
  });
});
