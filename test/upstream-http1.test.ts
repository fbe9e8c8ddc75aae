// The raw HTTP/1.1 upstream: the response parser fed byte by byte and in one
// piece, and the connection pool against real backends on loopback (node:http,
// and raw TCP servers that answer with exact bytes, well-formed or not).
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { RequestBody } from '../src/ingress/body.ts';
import type { ResponseHeaders } from '../src/ingress/exchange.ts';
import { ParseError, ResponseParser, type ResponseSink } from '../src/upstream/http1-parser.ts';
import { H1Pool, type H1Call, type H1Connection, type SendOptions } from '../src/upstream/http1-pool.ts';
import { DEFAULT_HTTP_UPSTREAM } from '../src/upstream/http1.ts';
import { until } from './grpc-helpers.ts';
import { collectedHeap, metric, paddedBatches, scrape, startBackend, startRouter, type Router } from './helpers.ts';

/** A request body as a client connection feeds it: `chunks`, each after `gapMs` (0: all at once), then its end. */
function bodyOf(chunks: Buffer[], gapMs = 0): RequestBody {
  const body = new RequestBody({ bodyWanted() {}, bodyTaken() {} });
  if (gapMs === 0) {
    for (const c of chunks) body.push(c);
    body.end();
    return body;
  }
  let i = 0;
  const next = (): void => {
    if (i === chunks.length) body.end();
    else {
      body.push(chunks[i++]!);
      setTimeout(next, gapMs);
    }
  };
  setTimeout(next, gapMs);
  return body;
}

// --- parser ------------------------------------------------------------------

interface Parsed { status: number; headers: ResponseHeaders; body: string; ended: boolean; keepAlive: boolean; used: number }

function parse(raw: string, opts: { head?: boolean; upgrade?: boolean; split?: boolean; eof?: boolean } = {}): Parsed {
  const out: Parsed = { status: 0, headers: {}, body: '', ended: false, keepAlive: false, used: 0 };
  const sink: ResponseSink = {
    onHead(status, headers) { out.status = status; out.headers = headers; },
    onData(chunk) { out.body += chunk.toString('latin1'); },
    onEnd() { out.ended = true; },
  };
  const p = new ResponseParser(sink);
  p.start(opts.head ?? false, opts.upgrade ?? false);
  const buf = Buffer.from(raw, 'latin1');
  if (opts.split === true) {
    // One byte at a time: every state must survive a buffer boundary.
    for (let i = 0; i < buf.length && !p.done; i++) out.used += p.execute(buf.subarray(i, i + 1));
  } else {
    out.used = p.execute(buf);
  }
  if (opts.eof === true) p.eof();
  out.keepAlive = p.keepAlive;
  return out;
}

function both(raw: string, opts: { head?: boolean; upgrade?: boolean; eof?: boolean } = {}): Parsed {
  const whole = parse(raw, opts);
  const split = parse(raw, { ...opts, split: true });
  assert.deepEqual({ ...split, used: 0 }, { ...whole, used: 0 }, 'byte-by-byte parse differs from whole');
  return whole;
}

describe('HTTP/1.1 response parser', () => {
  test('Content-Length body, headers lowercased, repeated headers as arrays', () => {
    const r = both('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 5\r\n\r\nhello');
    assert.equal(r.status, 200);
    assert.equal(r.body, 'hello');
    assert.ok(r.ended);
    assert.ok(r.keepAlive);
    assert.equal(r.headers['content-type'], 'text/plain');
    assert.deepEqual(r.headers['set-cookie'], ['a=1', 'b=2']);
  });

  test('optional whitespace around values is trimmed; empty values kept; no reason phrase', () => {
    const r = both('HTTP/1.1 204\r\nX-A:   v  \r\nX-Empty:\r\n\r\n');
    assert.equal(r.status, 204);
    assert.equal(r.headers['x-a'], 'v');
    assert.equal(r.headers['x-empty'], '');
    assert.ok(r.ended);
  });

  test('hop-by-hop headers and those Connection names are left out, except on a 101', () => {
    const r = both('HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nUpgrade: h2c\r\nX-End: 2\r\nContent-Length: 0\r\n\r\n');
    assert.deepEqual({ ...r.headers }, { 'x-end': '2', 'content-length': '0' });
    const up = parse('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n', { upgrade: true });
    assert.deepEqual({ ...up.headers }, { connection: 'Upgrade', upgrade: 'websocket' });
  });

  test('field names that are object properties elsewhere are plain fields here', () => {
    const r = both('HTTP/1.1 200 OK\r\n__proto__: a\r\nconstructor: b\r\nconstructor: c\r\ntoString: d\r\nContent-Length: 0\r\n\r\n');
    assert.equal(r.headers['__proto__'], 'a');
    assert.deepEqual(r.headers['constructor'], ['b', 'c']);
    assert.equal(r.headers['tostring'], 'd');
    assert.deepEqual(Object.keys(r.headers), ['__proto__', 'constructor', 'tostring', 'content-length']);
  });

  test('chunked body with extensions and trailers', () => {
    const r = both('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n');
    assert.equal(r.body, 'hello, world');
    assert.ok(r.ended);
    assert.ok(r.keepAlive);
  });

  test('stops at the end of the response and reports the bytes it used', () => {
    const raw = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA';
    const r = parse(raw);
    assert.equal(r.body, 'ok');
    assert.equal(r.used, raw.length - 'EXTRA'.length);
  });

  test('interim 1xx responses are skipped', () => {
    const r = both('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n');
    assert.equal(r.status, 201);
    assert.equal(r.headers['link'], undefined);
    assert.ok(r.ended);
  });

  test('HEAD, 204 and 304 have no body whatever the headers say', () => {
    const head = both('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n', { head: true });
    assert.ok(head.ended);
    assert.ok(head.keepAlive);
    assert.ok(both('HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n').ended);
  });

  test('close-delimited body ends at EOF, connection not kept', () => {
    const open = parse('HTTP/1.1 200 OK\r\n\r\nsome body');
    assert.equal(open.ended, false);
    const r = both('HTTP/1.1 200 OK\r\n\r\nsome body', { eof: true });
    assert.equal(r.body, 'some body');
    assert.ok(r.ended);
    assert.equal(r.keepAlive, false);
  });

  test('Connection: close, and HTTP/1.0 without keep-alive, end the connection', () => {
    assert.equal(both('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n').keepAlive, false);
    assert.equal(both('HTTP/1.1 200 OK\r\nConnection: foo, Close\r\nContent-Length: 0\r\n\r\n').keepAlive, false);
    assert.equal(both('HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n').keepAlive, false);
    assert.equal(both('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n').keepAlive, true);
  });

  test('Transfer-Encoding with Content-Length: chunked wins, connection not kept', () => {
    const r = both('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n');
    assert.equal(r.body, 'ok');
    assert.equal(r.keepAlive, false);
  });

  test('101 only when the request asked to upgrade; the bytes after it are left', () => {
    const raw = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi';
    const r = parse(raw, { upgrade: true });
    assert.equal(r.status, 101);
    assert.equal(r.used, raw.length - 4);
    assert.throws(() => parse(raw), ParseError);
  });

  const malformed: Array<[string, string]> = [
    ['bad version', 'HTTP/2.0 200 OK\r\n\r\n'],
    ['not HTTP', 'HTTX/1.1 200 OK\r\n\r\n'],
    ['two-digit status', 'HTTP/1.1 20 OK\r\n\r\n'],
    ['status 600', 'HTTP/1.1 600 X\r\n\r\n'],
    ['space before colon', 'HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n'],
    ['obs-fold', 'HTTP/1.1 200 OK\r\nX-A: a\r\n  b\r\nContent-Length: 0\r\n\r\n'],
    ['no colon', 'HTTP/1.1 200 OK\r\nX-A\r\n\r\n'],
    ['bare LF in a header line', 'HTTP/1.1 200 OK\r\nX-A: a\nX-B: b\r\n\r\n'],
    ['NUL in a value', 'HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n'],
    ['conflicting Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n'],
    ['Content-Length list', 'HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n'],
    ['signed Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n'],
    ['bad chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'],
    ['chunk longer than its size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokk\r\n'],
    ['bare LF after chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n'],
    ['huge chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n'],
    ['interim response with a body', 'HTTP/1.1 100 Continue\r\nContent-Length: 2\r\n\r\n'],
  ];
  for (const [what, raw] of malformed) {
    test(`refuses ${what}`, () => {
      assert.throws(() => parse(raw), ParseError);
      assert.throws(() => parse(raw, { split: true }), ParseError);
    });
  }

  test('refuses a head over the size limit', () => {
    const big = `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(70 * 1024)}\r\n\r\n`;
    assert.throws(() => parse(big), ParseError);
    assert.throws(() => parse(big.slice(0, 68 * 1024)), ParseError);
  });
});

// --- pool --------------------------------------------------------------------

/** A call that records what the connection reports. */
class Recorder implements H1Call {
  queuedIn: H1Pool | null = null;
  readonly queue = { queued: 0 };
  status = 0;
  headers: ResponseHeaders = {};
  body: Buffer[] = [];
  error: (Error & { code?: string }) | undefined;
  responseStarted = false;
  upgraded: Socket | undefined;
  conn: H1Connection | undefined;
  readonly done: Promise<void>;
  #resolve!: () => void;
  readonly #head: string;
  readonly #opts: SendOptions;
  /** Pause after this many chunks (backpressure test). */
  pauseAfter = Infinity;

  constructor(head: string, opts: Partial<SendOptions> = {}) {
    this.#head = head;
    this.#opts = { body: null, chunked: false, head: false, upgrade: false, responseMs: 0, idleMs: 0, ...opts };
    this.done = new Promise((resolve) => { this.#resolve = resolve; });
  }

  waitDeadline(): number {
    return 0; // waits as long as it takes
  }

  onConnection(conn: H1Connection): boolean {
    this.conn = conn;
    conn.send(this, Buffer.from(this.#head, 'latin1'), this.#opts);
    return true;
  }

  onConnectError(err: Error): void {
    this.error = err;
    this.#resolve();
  }

  onResponse(status: number, headers: ResponseHeaders): void {
    this.status = status;
    this.headers = headers;
  }

  onData(chunk: Buffer): boolean {
    this.body.push(Buffer.from(chunk));
    return this.body.length < this.pauseAfter;
  }

  holds(): boolean {
    return false; // onData copies
  }

  onEnd(): void {
    this.#resolve();
  }

  onError(err: Error, responseStarted: boolean): void {
    this.error = err;
    this.responseStarted = responseStarted;
    this.#resolve();
  }

  onUpgrade(headers: ResponseHeaders, socket: Socket): void {
    this.status = 101;
    this.headers = headers;
    this.upgraded = socket;
    this.#resolve();
  }

  text(): string {
    return Buffer.concat(this.body).toString();
  }
}

/** Dispatches a call on `p` and waits until it is over. */
async function send(p: H1Pool, head: string, opts: Partial<SendOptions> = {}): Promise<Recorder> {
  const call = new Recorder(head, opts);
  p.dispatch(call);
  await call.done;
  return call;
}

function get(path: string, extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nhost: test\r\n${extra}\r\n`;
}

async function listen(server: net.Server | http.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

/** A TCP server that answers each request (whatever its bytes) with `answer(n)`, n counting from 0 per server. */
async function rawServer(answer: (n: number, socket: Socket) => string | undefined): Promise<{ port: number; server: net.Server; connections: number }> {
  let n = 0;
  const state = { port: 0, server: net.createServer(), connections: 0 };
  state.server.on('connection', (socket) => {
    state.connections++;
    socket.on('error', () => {});
    socket.on('data', () => {
      const out = answer(n++, socket);
      if (out !== undefined) socket.write(out);
    });
  });
  state.port = await listen(state.server);
  return state;
}

function pool(port: number, over: Partial<{ connections: number; connectTimeoutMs: number; keepAliveTimeoutMs: number }> = {}): H1Pool {
  return new H1Pool({ host: '127.0.0.1', port, connections: 4, connectTimeoutMs: 2000, keepAliveTimeoutMs: 4000, ...over });
}

describe('HTTP/1.1 upstream pool', () => {
  const servers: Array<net.Server | http.Server> = [];
  const pools: H1Pool[] = [];
  after(async () => {
    await Promise.all(pools.map((p) => p.destroy()));
    for (const s of servers) {
      (s as http.Server).closeAllConnections?.();
      s.close();
    }
  });

  test('keep-alive: sequential requests share one connection; bodies both ways', async () => {
    let connections = 0;
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c)).on('end', () => {
        res.setHeader('x-method', req.method!);
        res.end(`${req.url} ${Buffer.concat(chunks).toString()} ${req.headers['transfer-encoding'] ?? 'cl'}`);
      });
    });
    server.on('connection', () => connections++);
    servers.push(server);
    const p = pool(await listen(server));
    pools.push(p);
    for (let i = 0; i < 5; i++) {
      const call = await send(p, get(`/r${i}`));
      assert.equal(call.status, 200);
      assert.equal(call.text(), `/r${i}  cl`);
    }
    const post = await send(p, 'POST /p HTTP/1.1\r\nhost: test\r\ncontent-length: 5\r\n\r\n', { body: bodyOf([Buffer.from('he'), Buffer.from('llo')]) });
    assert.equal(post.text(), '/p hello cl');
    const chunked = await send(p, 'POST /c HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n', { body: bodyOf([Buffer.from('a'), Buffer.alloc(0), Buffer.from('bc')]), chunked: true });
    assert.equal(chunked.text(), '/c abc chunked');
    assert.equal(connections, 1);
    assert.equal(p.size, 1);
  });

  test('bounded: calls beyond the limit wait for a free connection', async () => {
    const pending: http.ServerResponse[] = [];
    const server = http.createServer((_req, res) => { pending.push(res); });
    servers.push(server);
    const p = pool(await listen(server), { connections: 2 });
    pools.push(p);
    const calls = [0, 1, 2, 3].map((i) => new Recorder(get(`/${i}`)));
    for (const c of calls) p.dispatch(c);
    while (pending.length < 2) await new Promise((r) => setTimeout(r, 10));
    assert.equal(p.size, 2);
    for (let answered = 0; answered < 4; answered++) {
      while (pending.length === 0) await new Promise((r) => setTimeout(r, 10));
      pending.shift()!.end('ok');
    }
    await Promise.all(calls.map((c) => c.done));
    assert.deepEqual(calls.map((c) => c.status), [200, 200, 200, 200]);
    assert.equal(p.size, 2);
  });

  test('a response whose last bytes met backpressure leaves its connection reading for the next call', async () => {
    // The whole response comes in one read; the call asks to pause on it (its
    // client is slow) and is complete at once, so nobody resumes the socket:
    // the next call on that connection must still get its answer.
    const s = await rawServer((n) => n === 0 ? 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello' : 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    servers.push(s.server);
    const p = pool(s.port, { connections: 1 });
    pools.push(p);
    const first = new Recorder(get('/slow-client'));
    first.pauseAfter = 1;
    p.dispatch(first);
    await first.done;
    assert.equal(first.text(), 'hello');
    const next = await send(p, get('/next'), { responseMs: 1000 });
    assert.equal(next.error, undefined, `the next call: ${next.error?.message}`);
    assert.equal(next.text(), 'ok');
    assert.equal(s.connections, 1, 'the connection was reused');
  });

  test('connect refused: onConnectError with ECONNREFUSED', async () => {
    const s = net.createServer();
    const port = await listen(s);
    await new Promise((r) => s.close(r));
    const p = pool(port);
    pools.push(p);
    const call = await send(p, get('/'));
    assert.equal(call.error?.code, 'ECONNREFUSED');
  });

  test('response timeout (native and coarse clock) and idle timeout between chunks', async () => {
    const server = http.createServer((req, res) => {
      if (req.url === '/trickle') {
        res.write('a');
        return; // then nothing
      }
      // never answers
    });
    servers.push(server);
    const p = pool(await listen(server));
    pools.push(p);
    const short = await send(p, get('/silent'), { responseMs: 200 });
    assert.equal(short.error?.code, 'SY_RESPONSE_TIMEOUT');
    assert.equal(short.responseStarted, false);
    const long = new Recorder(get('/silent'), { responseMs: 2000 });
    const t0 = Date.now();
    p.dispatch(long);
    await long.done;
    assert.equal(long.error?.code, 'SY_RESPONSE_TIMEOUT');
    assert.ok(Date.now() - t0 >= 2000, 'the coarse clock never fires early');
    const idle = await send(p, get('/trickle'), { idleMs: 200 });
    assert.equal(idle.status, 200);
    assert.equal(idle.error?.code, 'UND_ERR_BODY_TIMEOUT');
    assert.equal(idle.responseStarted, true);
  });

  test('the response timeout counts from the end of the request body, not its start', async () => {
    const server = http.createServer((req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => { n += c.length; }).on('end', () => res.end(String(n)));
    });
    servers.push(server);
    const p = pool(await listen(server));
    pools.push(p);
    const trickle = bodyOf(Array.from({ length: 6 }, () => Buffer.from('x')), 100);
    const call = await send(p, 'POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 6\r\n\r\n', { body: trickle, responseMs: 250 });
    assert.equal(call.error, undefined);
    assert.equal(call.text(), '6');
  });

  test('backend closes before answering: a reset error, nothing started', async () => {
    const s = await rawServer((_n, socket) => { socket.destroy(); return undefined; });
    servers.push(s.server);
    const p = pool(s.port);
    pools.push(p);
    const call = await send(p, get('/'));
    assert.ok(['UND_ERR_SOCKET', 'ECONNRESET'].includes(call.error?.code ?? ''), String(call.error?.code));
    assert.equal(call.responseStarted, false);
  });

  test('a response cut short is an error after the response started', async () => {
    const s = await rawServer((_n, socket) => {
      socket.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc');
      return undefined;
    });
    servers.push(s.server);
    const p = pool(s.port);
    pools.push(p);
    const call = await send(p, get('/'));
    assert.equal(call.status, 200);
    assert.equal(call.error?.code, 'UND_ERR_SOCKET');
    assert.equal(call.responseStarted, true);
  });

  test('a malformed response fails the call and the connection is not reused', async () => {
    const s = await rawServer((n) => (n === 0 ? 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx' : 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'));
    servers.push(s.server);
    const p = pool(s.port);
    pools.push(p);
    const bad = await send(p, get('/'));
    assert.equal(bad.error?.code, 'SY_UPSTREAM_PARSE');
    const good = await send(p, get('/'));
    assert.equal(good.text(), 'ok');
    assert.equal(s.connections, 2);
  });

  test('bytes after a complete response: it is delivered, the connection dropped', async () => {
    const s = await rawServer(() => 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
    servers.push(s.server);
    const p = pool(s.port);
    pools.push(p);
    for (let i = 0; i < 2; i++) {
      const call = await send(p, get('/'));
      assert.equal(call.text(), 'ok');
    }
    assert.equal(s.connections, 2);
  });

  test('close-delimited and Connection: close responses are complete; the next call opens a new connection', async () => {
    const s = await rawServer((n, socket) => {
      if (n === 0) socket.end('HTTP/1.1 200 OK\r\n\r\nuntil close');
      else socket.end('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\ndone');
      return undefined;
    });
    servers.push(s.server);
    const p = pool(s.port);
    pools.push(p);
    const a = await send(p, get('/'));
    assert.equal(a.error, undefined);
    assert.equal(a.text(), 'until close');
    const b = await send(p, get('/'));
    assert.equal(b.text(), 'done');
    assert.equal(s.connections, 2);
  });

  test('idle connections close before the keep-alive timeout; a backend-closed idle connection is not reused', async () => {
    let connections = 0;
    const server = http.createServer((_req, res) => res.end('ok'));
    server.keepAliveTimeout = 60_000;
    server.on('connection', () => connections++);
    servers.push(server);
    const p = pool(await listen(server), { keepAliveTimeoutMs: 600 });
    pools.push(p);
    assert.equal((await send(p, get('/'))).status, 200);
    assert.equal(p.idle, 1);
    await new Promise((r) => setTimeout(r, 1200));
    assert.equal(p.size, 0);
    assert.equal((await send(p, get('/'))).status, 200);
    server.closeIdleConnections();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(p.size, 0, 'the FIN of an idle connection takes it out of the pool');
    const c = await send(p, get('/'));
    assert.equal(c.text(), 'ok');
    assert.equal(connections, 3);
  });

  test('backpressure: a paused call stops reading until resume()', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024, 'x');
    const server = http.createServer((_req, res) => res.end(big));
    servers.push(server);
    const p = pool(await listen(server));
    pools.push(p);
    const call = new Recorder(get('/'));
    call.pauseAfter = 1;
    p.dispatch(call);
    while (call.body.length === 0) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(call.body.length, 1, 'no data while paused');
    call.pauseAfter = Infinity;
    call.conn!.resume();
    await call.done;
    assert.equal(Buffer.concat(call.body).length, big.length);
  });

  test('101 hands the socket over with the bytes that followed the head', async () => {
    const s = await rawServer((_n, socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nfirst');
      socket.removeAllListeners('data');
      socket.on('data', (d) => socket.write(d));
      return undefined;
    });
    servers.push(s.server);
    const p = pool(s.port);
    pools.push(p);
    const call = await send(p, get('/', 'connection: upgrade\r\nupgrade: echo\r\n'), { upgrade: true });
    assert.equal(call.status, 101);
    assert.equal(call.headers['upgrade'], 'echo');
    assert.equal(p.size, 0, 'an upgraded socket leaves the pool');
    const socket = call.upgraded!;
    let got = '';
    socket.on('data', (d: Buffer) => { got += d.toString(); });
    socket.resume();
    socket.write('-echoed');
    while (got !== 'first-echoed') await new Promise((r) => setTimeout(r, 10));
    socket.destroy();
  });

  test('close() waits for busy connections; destroy() cuts them', async () => {
    let answer: (() => void) | undefined;
    const server = http.createServer((_req, res) => { answer = () => res.end('late'); });
    servers.push(server);
    const p = pool(await listen(server));
    const call = new Recorder(get('/'));
    p.dispatch(call);
    while (answer === undefined) await new Promise((r) => setTimeout(r, 10));
    let closed = false;
    const closing = p.close().then(() => { closed = true; });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(closed, false);
    const refused = await send(p, get('/'));
    assert.equal(refused.error?.code, 'UND_ERR_CLOSED');
    answer();
    await call.done;
    assert.equal(call.text(), 'late');
    await closing;
    assert.equal(p.size, 0);
  });
});

describe('HTTP/1.1 calls that die waiting for a backend connection', () => {
  // Every connection the pool may open (DEFAULT_HTTP_UPSTREAM.connections) is
  // held by a slow request; the calls behind them wait in the pool's queue.
  // One that dies there (its client left, or the overall timeout answered
  // 504) must leave the queue at once: not reach the backend, not take a
  // connection when one frees up, not stay in memory until then.
  const CAP = DEFAULT_HTTP_UPSTREAM.connections;

  interface SlowBackend {
    readonly port: number;
    /** Request paths received, in order. */
    readonly paths: string[];
    /** Connections accepted. */
    connections: number;
    /** Sockets whose /hold/ request is not answered yet. */
    readonly held: Socket[];
    close(): Promise<void>;
  }

  /** A backend that holds requests to /hold/* until told, and answers others at once. */
  async function slowBackend(): Promise<SlowBackend> {
    const server = net.createServer();
    const sockets = new Set<Socket>();
    const b: SlowBackend = {
      port: 0, paths: [], connections: 0, held: [],
      close: async () => {
        for (const s of sockets) s.destroy();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
    server.on('connection', (socket) => {
      b.connections++;
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {});
      let buf = '';
      socket.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        let end: number;
        while ((end = buf.indexOf('\r\n\r\n')) >= 0) {
          const path = buf.slice(0, end).split(' ')[1]!;
          buf = buf.slice(end + 4);
          b.paths.push(path);
          if (path.startsWith('/hold/')) b.held.push(socket);
          else socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
        }
      });
    });
    (b as { port: number }).port = await listen(server);
    return b;
  }

  /** A client connection to the router that sends one GET; `answer` resolves with the response's status line ('' if none). */
  function client(router: Router, host: string, path: string): { socket: Socket; answer: Promise<string> } {
    const socket = net.connect(router.port, '127.0.0.1');
    socket.on('error', () => {});
    socket.write(`GET ${path} HTTP/1.1\r\nhost: ${host}\r\n\r\n`);
    let got = '';
    const answer = new Promise<string>((resolve) => {
      const line = (): string => got.slice(0, Math.max(0, got.indexOf('\r\n')));
      socket.on('data', (d: Buffer) => {
        got += d.toString('latin1');
        if (got.includes('\r\n\r\n')) resolve(line());
      });
      socket.on('close', () => resolve(line()));
    });
    return { socket, answer };
  }

  /** Two routes to one backend (so one pool): 'hold.test' with no response timeout, 'q.test' with `timeouts`. */
  function routes(port: number, timeouts?: Record<string, string>): Parameters<typeof startRouter>[0] {
    const backends = [{ name: 'a', url: `http://127.0.0.1:${port}`, weight: 1 }];
    const common = { backends, outlierDetection: { consecutiveFailures: 0 }, retries: { attempts: 1 } };
    return { routes: [
      { name: 'hold', hosts: ['hold.test'], ...common, timeouts: { response: '0s' } },
      { name: 'q', hosts: ['q.test'], ...common, ...(timeouts === undefined ? {} : { timeouts }) },
    ] };
  }

  /** Fills every backend connection the router may open with a held request. */
  async function fill(router: Router, b: SlowBackend): Promise<Socket[]> {
    const holders = Array.from({ length: CAP }, (_, i) => client(router, 'hold.test', `/hold/${i}`).socket);
    assert.ok(await until(() => b.held.length === CAP, 20_000), `the backend holds ${CAP} requests (${b.held.length})`);
    return holders;
  }

  /** The router's gauge of calls of `route` waiting for a connection to `backend`; the series must exist. */
  async function queued(router: Router, route: string, backend = 'a'): Promise<number> {
    const v = (await scrape(router.adminUrl)).get(`switchyard_upstream_queued_requests{route="${route}",backend="${backend}",protocol="http"}`);
    assert.notEqual(v, undefined, 'the queued series exists');
    return v!;
  }

  // Long enough to see the calls in the queue (the gauge) before they expire, however loaded the machine.
  const timeoutsFor = {
    'their clients leave': undefined,
    'the overall timeout answers them 504': { overall: '2s' },
    // As on h2c: waiting for a connection counts against the response timeout (expiry by the queue bound).
    'their response timeout answers them 504': { response: '2s' },
  } as const;
  for (const how of Object.keys(timeoutsFor) as (keyof typeof timeoutsFor)[]) {
    test(`${how}: the backend never sees them, and no connection is opened for them when slots free up`, { timeout: 30_000 }, async () => {
      const b = await slowBackend();
      const timeout = how.includes('timeout');
      const router = await startRouter(routes(b.port, timeoutsFor[how]));
      let holders: Socket[] = [];
      const dead: Socket[] = [];
      try {
        holders = await fill(router, b);
        assert.equal(await queued(router, 'q'), 0);
        const calls = [0, 1, 2, 3].map((i) => client(router, 'q.test', `/dead/${i}`));
        dead.push(...calls.map((c) => c.socket));
        let seen = -1;
        assert.ok(await until(async () => (seen = await queued(router, 'q')) === 4, 10_000), `4 calls queued for a connection (gauge ${seen})`);
        // The holders got their connections: they never queued.
        assert.equal(await queued(router, 'hold'), 0);
        if (timeout) {
          assert.deepEqual(await Promise.all(calls.map((c) => c.answer)), Array(4).fill('HTTP/1.1 504 Gateway Timeout'));
          // Counted as h2c counts a call that found no stream in time: an upstream timeout.
          if (how.includes('response')) assert.equal(metric(await scrape(router.adminUrl), 'switchyard_upstream_errors_total', { route: 'q', backend: 'a', kind: 'timeout' }), 4);
        } else {
          for (const s of dead) s.destroy();
        }
        assert.ok(await until(async () => (seen = await queued(router, 'q')) === 0, 10_000), `the queue is empty again (gauge ${seen})`);
        assert.equal(b.connections, CAP);
        // The slow requests end, each closing its connection: every slot frees up.
        for (const s of b.held.splice(0)) s.end('HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 4\r\n\r\nslow');
        await sleep(300);
        const fresh = client(router, 'q.test', '/fresh');
        assert.equal(await fresh.answer, 'HTTP/1.1 200 OK');
        fresh.socket.destroy();
        assert.deepEqual(b.paths.filter((p) => !p.startsWith('/hold/')), ['/fresh'], 'only the fresh call reached the backend');
        assert.equal(b.connections, CAP + 1, 'one connection for the fresh call, none for the dead ones');
      } finally {
        for (const s of [...holders, ...dead]) s.destroy();
        await router.close();
        await b.close();
      }
    });
  }

  test('are let go of at once, not when a connection frees up', async () => {
    const heap = (): Promise<number> => collectedHeap();
    const b = await slowBackend();
    const router = await startRouter(routes(b.port, { overall: '200ms' }));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 100 });
    const batch = paddedBatches(router.port, 'q.test', agent);
    let holders: Socket[] = [];
    try {
      holders = await fill(router, b);
      assert.deepEqual([...new Set(await batch(0, 100))], [504]); // warm up: client connections, JIT
      const before = await heap();
      for (let r = 0; r < 8; r++) assert.deepEqual([...new Set(await batch(1000 * (r + 1), 100))], [504]);
      const after = await heap();
      const growthMb = (after - before) / 1048576;
      assert.ok(growthMb < 3, `heap grew ${growthMb.toFixed(1)} MB over 800 calls that died waiting (6.1 MB of headers)`);
      assert.deepEqual(b.paths.filter((p) => !p.startsWith('/hold/')), [], 'none reached the backend');
    } finally {
      agent.destroy();
      for (const s of holders) s.destroy();
      await router.close();
      await b.close();
    }
  });

  test('mirror copies to a backend with no free connection are dropped after 30 s, never sent late, and let go of', { timeout: 90_000 }, async (t) => {
    // Copies keep their bodies (Buffers) and exchanges (headers, on the heap).
    const memory = (): Promise<number> => collectedHeap(true);
    const shadow = await slowBackend();
    const old = await startBackend('old');
    const shadowUrl = `http://127.0.0.1:${shadow.port}`;
    const common = { outlierDetection: { consecutiveFailures: 0 }, retries: { attempts: 1 } };
    // 'hold.test' takes every connection to the shadow backend and keeps it; 'm.test' mirrors to it.
    const router = await startRouter({ routes: [
      { name: 'hold', hosts: ['hold.test'], ...common, timeouts: { response: '0s' }, backends: [{ name: 'new', url: shadowUrl, weight: 1 }] },
      {
        name: 'm', hosts: ['m.test'], ...common,
        backends: [{ name: 'old', url: old.url, weight: 1 }, { name: 'new', url: shadowUrl, weight: 0 }],
        mirror: { to: 'new', maxInFlight: 5000 },
      },
    ] });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 50 });
    const pad = 'p'.repeat(8000);
    const body = Buffer.alloc(8000, 'b');
    const call = (i: number): Promise<number> => new Promise((resolve, reject) => {
      const req = http.request({ method: 'POST', host: '127.0.0.1', port: router.port, path: `/m/${i}`, headers: { host: 'm.test', 'x-pad': pad, 'content-length': body.length }, agent }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      });
      req.on('error', reject);
      req.end(body);
    });
    const mirrored = async (code: string): Promise<number> => metric(await scrape(router.adminUrl), 'switchyard_mirror_requests_total', { route: 'm', backend: 'new', code });
    const N = 1000;
    let holders: Socket[] = [];
    try {
      holders = await fill(router, shadow);
      // Warm up (client connections, JIT); the baseline holds these 50 copies, still waiting.
      const start = Date.now();
      assert.deepEqual([...new Set(await Promise.all(Array.from({ length: 50 }, (_, i) => call(i))))], [200]);
      const before = await memory();
      assert.deepEqual([...new Set(await Promise.all(Array.from({ length: N }, (_, i) => call(100 + i))))], [200]);
      const held = await memory();
      assert.equal(await mirrored('error'), 0, 'the copies wait for a connection');
      let seen = -1;
      assert.ok(await until(async () => (seen = await queued(router, 'm', 'new')) === 50 + N, 10_000), `${N + 50} copies queued (gauge ${seen})`);
      assert.ok(await until(async () => await mirrored('error') === 50 + N, 50_000, 500), `${N + 50} copies dropped (${await mirrored('error')})`);
      assert.equal(await queued(router, 'm', 'new'), 0, 'the queue is empty once they are dropped');
      assert.ok(Date.now() - start >= 29_000, `dropped after ${Date.now() - start} ms, not before 30 s`);
      const after = await memory();
      const heldMb = (held - before) / 1048576;
      const leftMb = (after - before) / 1048576;
      t.diagnostic(`${N} waiting copies held ${heldMb.toFixed(1)} MB; ${leftMb.toFixed(1)} MB left once dropped`);
      assert.ok(heldMb > 8, `${N} waiting copies held ${heldMb.toFixed(1)} MB (the test must measure what they hold)`);
      assert.ok(leftMb < 3, `${leftMb.toFixed(1)} MB left after ${N} copies were dropped (${heldMb.toFixed(1)} MB while they waited)`);
      // The held requests end, each closing its connection: a copy still queued would be sent now.
      for (const s of shadow.held.splice(0)) s.end('HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 4\r\n\r\nslow');
      await sleep(500);
      assert.deepEqual(shadow.paths.filter((p) => !p.startsWith('/hold/')), [], 'no copy reached the shadow backend');
      assert.equal(shadow.connections, CAP, 'no connection was opened for a dropped copy');
    } finally {
      agent.destroy();
      for (const s of holders) s.destroy();
      await router.close();
      await shadow.close();
      await old.close();
    }
  });
});
