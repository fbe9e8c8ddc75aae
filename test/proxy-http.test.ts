// End to end over HTTP/1.1: real clients (undici, node:http, curl) → router → real backends.
import { test, after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { Agent, request } from 'undici';
import { closedPort, run, scrape, startBackend, startRouter, type Backend, type Router } from './helpers.ts';

const agent = new Agent({ connections: 16 });
after(() => agent.close());

async function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  const res = await request(url, { method, headers, dispatcher: agent });
  const body = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body };
}

describe('HTTP/1.1 proxying', () => {
  let old: Backend, neu: Backend, slow: Backend, router: Router, refused: number, refused2: number;

  before(async () => {
    old = await startBackend('old');
    neu = await startBackend('new');
    slow = await startBackend('slow', () => { /* never answers */ });
    refused = await closedPort();
    // Health is kept per backend URL: the failover route gets a dead port of its own.
    refused2 = await closedPort();
    router = await startRouter({
      routes: [
        { name: 'billing', hosts: ['billing.example.com', '*.billing.example.com'], backends: [
          { name: 'old', url: old.url, weight: 90 },
          { name: 'new', url: neu.url, weight: 10, hostHeader: 'billing.new.internal' },
        ] },
        { name: 'billing-api', hosts: ['billing.example.com'], pathPrefix: '/api/', backends: [
          { name: 'new', url: neu.url, weight: 1 },
        ] },
        { name: 'canary', hosts: ['canary.example.com'], backends: [
          { name: 'old', url: old.url, weight: 1 },
          { name: 'new', url: neu.url, weight: 0 },
        ] },
        { name: 'dark', hosts: ['dark.example.com'], backends: [
          { name: 'old', url: old.url, weight: 0 },
          { name: 'new', url: neu.url, weight: 0 },
        ] },
        { name: 'down', hosts: ['down.example.com'], backends: [
          { name: 'old', url: `http://127.0.0.1:${refused}`, weight: 1 },
        ] },
        { name: 'failover', hosts: ['failover.example.com'], backends: [
          { name: 'old', url: `http://127.0.0.1:${refused2}`, weight: 1 },
          { name: 'new', url: neu.url, weight: 1 },
        ] },
        { name: 'slow', hosts: ['slow.example.com'], timeouts: { response: '300ms' }, backends: [
          { name: 'old', url: slow.url, weight: 1 },
        ] },
      ],
    });
  });

  after(async () => {
    await router.close();
    await Promise.all([old.close(), neu.close(), slow.close()]);
  });

  test('splits 90/10 per request, exactly over every 100 requests', async () => {
    const counts: Record<string, number> = { old: 0, new: 0 };
    for (let i = 0; i < 2000; i += 50) {
      const batch = await Promise.all(Array.from({ length: 50 }, () => get(`${router.url}/x`, { host: 'billing.example.com' })));
      for (const r of batch) counts[String(r.headers['x-backend'])]!++;
    }
    assert.equal(counts['old']! + counts['new']!, 2000);
    assert.ok(Math.abs(counts['new']! / 2000 - 0.10) < 0.01, `new got ${counts['new']} of 2000`);
  });

  test('1/0 sends nothing to the weight-0 backend; the override reaches it', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) seen.add(String((await get(`${router.url}/`, { host: 'canary.example.com' })).headers['x-backend']));
    assert.deepEqual([...seen], ['old']);
    const forced = await get(`${router.url}/`, { host: 'canary.example.com', 'x-switchyard-backend': 'new' });
    assert.equal(forced.status, 200);
    assert.equal(forced.headers['x-backend'], 'new');
    // The override header is the proxy's, not the backend's.
    assert.equal(JSON.parse(forced.body).headers['x-switchyard-backend'], undefined);
  });

  test('an override naming no backend of the route is 400', async () => {
    const r = await get(`${router.url}/`, { host: 'canary.example.com', 'x-switchyard-backend': 'nope' });
    assert.equal(r.status, 400);
  });

  test('host matching: case-insensitive, port ignored, wildcard is one label, exact host first', async () => {
    assert.equal((await get(`${router.url}/`, { host: 'BILLING.Example.COM:8080', 'x-switchyard-backend': 'old' })).headers['x-backend'], 'old');
    assert.equal((await get(`${router.url}/`, { host: 'eu.billing.example.com', 'x-switchyard-backend': 'old' })).status, 200);
    assert.equal((await get(`${router.url}/`, { host: 'a.eu.billing.example.com' })).status, 404);
    assert.equal((await get(`${router.url}/`, { host: 'example.com' })).status, 404);
    // Longest prefix wins: /api/ goes to billing-api, which has only "new".
    const api = await get(`${router.url}/api/v1`, { host: 'billing.example.com', 'x-switchyard-backend': 'new' });
    assert.equal(JSON.parse(api.body).backend, 'new');
    const metrics = await scrape(router.adminUrl);
    assert.equal(metrics.get('switchyard_requests_total{route="billing-api",backend="new",protocol="http",code="200"}'), 1);
  });

  test('no route is 404', async () => {
    const r = await get(`${router.url}/`, { host: 'unknown.example.com' });
    assert.equal(r.status, 404);
  });

  test('all weights 0 is 503', async () => {
    assert.equal((await get(`${router.url}/`, { host: 'dark.example.com' })).status, 503);
  });

  test('connection refused is 502, never 500', async () => {
    assert.equal((await get(`${router.url}/`, { host: 'down.example.com' })).status, 502);
    assert.equal((await get(`${router.url}/`, { host: 'down.example.com' }, 'POST')).status, 502);
  });

  test('a refused connection is retried once on the other backend', async () => {
    for (let i = 0; i < 10; i++) {
      const r = await get(`${router.url}/`, { host: 'failover.example.com' }, 'POST');
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-backend'], 'new');
    }
    const m = await scrape(router.adminUrl);
    assert.equal(m.get('switchyard_upstream_errors_total{route="failover",backend="old",kind="connect"}'), 5);
  });

  test('response timeout is 504', async () => {
    const t0 = Date.now();
    const r = await get(`${router.url}/`, { host: 'slow.example.com' });
    assert.equal(r.status, 504);
    assert.ok(Date.now() - t0 < 3000);
  });

  /** Sends a raw request with a hand-written head and returns the headers the backend saw. */
  async function rawSeen(port: number, head: string): Promise<Record<string, string>> {
    const raw = await new Promise<string>((resolve, reject) => {
      const sock = net.connect(port, '127.0.0.1', () => sock.write(head));
      let data = '';
      sock.on('data', (c) => { data += c.toString(); });
      sock.on('end', () => resolve(data));
      sock.on('error', reject);
    });
    return JSON.parse(raw.slice(raw.indexOf('{'), raw.lastIndexOf('}') + 1)).headers as Record<string, string>;
  }

  test('hop-by-hop headers are stripped; Host kept or set; X-Forwarded-* replaced from untrusted clients; a request id added', async () => {
    const seen = await rawSeen(router.port, 'GET /hdr HTTP/1.1\r\nHost: canary.example.com\r\nConnection: close, X-Secret\r\n' +
      'X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n' +
      'X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: https\r\nX-Custom: yes\r\n\r\n');
    assert.equal(seen['x-secret'], undefined);
    assert.equal(seen['keep-alive'], undefined);
    assert.equal(seen['te'], undefined);
    assert.equal(seen['proxy-connection'], undefined);
    assert.equal(seen['x-custom'], 'yes');
    assert.equal(seen['host'], 'canary.example.com');
    // 127.0.0.1 is not a trusted proxy here: what it claims is replaced, not appended to.
    assert.equal(seen['x-forwarded-for'], '127.0.0.1');
    assert.equal(seen['x-forwarded-proto'], 'http');
    assert.equal(seen['x-forwarded-host'], 'canary.example.com');
    assert.match(seen['x-request-id']!, /^[0-9a-f-]{36}$/);
    const propagated = await rawSeen(router.port, 'GET / HTTP/1.1\r\nHost: canary.example.com\r\nX-Request-Id: abc-123\r\nConnection: close\r\n\r\n');
    assert.equal(propagated['x-request-id'], 'abc-123');
    const viaHostHeader = await get(`${router.url}/`, { host: 'billing.example.com', 'x-switchyard-backend': 'new' });
    assert.equal(JSON.parse(viaHostHeader.body).headers.host, 'billing.new.internal');
  });

  test('X-Forwarded-* from a trusted proxy are kept, with the client address appended', async () => {
    const trusting = await startRouter({
      entrypoint: { trustedProxies: ['127.0.0.0/8'] },
      routes: [{ name: 'c', hosts: ['canary.example.com'], backends: [{ name: 'old', url: old.url, weight: 1 }] }],
    });
    try {
      const seen = await rawSeen(trusting.port, 'GET / HTTP/1.1\r\nHost: canary.example.com\r\nConnection: close\r\n' +
        'X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example.com\r\n\r\n');
      assert.equal(seen['x-forwarded-for'], '203.0.113.9, 127.0.0.1');
      assert.equal(seen['x-forwarded-proto'], 'https');
      assert.equal(seen['x-forwarded-host'], 'shop.example.com');
    } finally {
      await trusting.close();
    }
  });

  test('conflicting Content-Length and Transfer-Encoding is 400', async () => {
    const sock = net.connect(router.port, '127.0.0.1');
    sock.write('POST / HTTP/1.1\r\nHost: canary.example.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    const [chunk] = await once(sock, 'data') as [Buffer];
    sock.destroy();
    assert.match(chunk.toString(), /^HTTP\/1\.1 400 /);
  });

  test('a client that goes away cancels the upstream request', async () => {
    let upstreamClosed!: () => void;
    const closed = new Promise<void>((r) => { upstreamClosed = r; });
    const hang = await startBackend('hang', (req) => { req.socket.once('close', () => upstreamClosed()); });
    const r2 = await startRouter({ routes: [{ name: 'hang', hosts: ['hang.example.com'], backends: [{ name: 'old', url: hang.url, weight: 1 }] }] });
    try {
      const req = http.request(`${r2.url}/`, { headers: { host: 'hang.example.com' } });
      req.on('error', () => {});
      req.end();
      await once(hang.server, 'request');
      req.destroy();
      await closed; // the upstream socket was closed by the proxy
      await new Promise((r) => setTimeout(r, 50));
      const m = await scrape(r2.adminUrl);
      assert.equal(m.get('switchyard_requests_total{route="hang",backend="old",protocol="http",code="499"}'), 1);
    } finally {
      await r2.close();
      await hang.close();
    }
  });

  test('curl (a client we did not write) gets the same answers', async () => {
    const ok = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Host: canary.example.com', `${router.url}/`]);
    assert.equal(ok.stdout, '200');
    const missing = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Host: nothing.example.com', `${router.url}/`]);
    assert.equal(missing.stdout, '404');
    const post = await run('curl', ['-s', '-H', 'Host: canary.example.com', '--data-binary', '@-', `${router.url}/up`], 'x'.repeat(100_000));
    assert.equal(JSON.parse(post.stdout).bodyLength, 100_000);
  });

  test('metrics count requests by route, backend, protocol and code', async () => {
    const before = await scrape(router.adminUrl);
    const key = 'switchyard_requests_total{route="dark",backend="none",protocol="http",code="503"}';
    for (let i = 0; i < 7; i++) await get(`${router.url}/`, { host: 'dark.example.com' });
    const m = await scrape(router.adminUrl);
    assert.equal((m.get(key) ?? 0) - (before.get(key) ?? 0), 7);
    assert.equal(m.get('switchyard_backend_weight{route="billing",backend="old"}'), 90);
    assert.ok((m.get('switchyard_request_duration_seconds_bucket{le="0.0005",route="dark",backend="none",protocol="http"}') ?? -1) >= 0);
    const unmatched = [...m.keys()].find((k) => k.startsWith('switchyard_requests_total{route="unmatched",backend="none",protocol="http",code="404"}'));
    assert.ok(unmatched, 'unmatched requests are counted');
  });
});

// Nothing on the HTTP/1.1 path waits for data that belongs to someone else:
// the tail-latency work (issue 15, item 3) checked that a response leaves as
// soon as its bytes are in, whatever other connections are doing.
describe('HTTP/1.1 responses are not held back', () => {
  let backend: Backend, router: Router;
  const held: http.ServerResponse[] = [];

  before(async () => {
    backend = await startBackend('b', (req, res) => {
      if (req.url === '/hold') held.push(res);
      else if (req.url === '/head') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.flushHeaders();
        held.push(res);
      } else if (req.url === '/stream') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first');
        held.push(res);
      } else res.end('quick');
    });
    router = await startRouter({ routes: [{ name: 'r', hosts: ['r.example.com'], backends: [{ name: 'b', url: backend.url, weight: 1 }] }] });
  });

  after(async () => {
    for (const res of held.splice(0)) res.destroy();
    await router.close();
    await backend.close();
  });

  /** A raw client connection and everything it has received so far. */
  function client(): { sock: net.Socket; received: () => string; until: (re: RegExp) => Promise<string> } {
    const sock = net.connect(router.port, '127.0.0.1');
    let got = '';
    const waiting: Array<() => void> = [];
    sock.on('data', (c: Buffer) => {
      got += c.toString('latin1');
      for (const w of waiting.splice(0)) w();
    });
    const until = async (re: RegExp): Promise<string> => {
      while (!re.test(got)) {
        if (sock.destroyed) throw new Error(`connection closed; received ${JSON.stringify(got)}`);
        await new Promise<void>((r) => waiting.push(r));
      }
      return got;
    };
    return { sock, received: () => got, until };
  }

  async function heldCount(n: number): Promise<void> {
    while (held.length < n) await new Promise((r) => setTimeout(r, 5));
  }

  test('a response goes out while another connection waits for its backend', { timeout: 10_000 }, async () => {
    const slow = client();
    const fast = client();
    try {
      slow.sock.write('GET /hold HTTP/1.1\r\nHost: r.example.com\r\n\r\n');
      await heldCount(1);
      fast.sock.write('GET /quick HTTP/1.1\r\nHost: r.example.com\r\n\r\n');
      assert.match(await fast.until(/\r\n\r\nquick$/), /^HTTP\/1\.1 200 /);
      assert.equal(slow.received(), '', 'the held request has no answer yet');
      // And the same connection's next request is served too, still past the held one.
      fast.sock.write('GET /quick2 HTTP/1.1\r\nHost: r.example.com\r\n\r\n');
      await fast.until(/quick[^]*quick$/);
      held.shift()!.end('late');
      assert.match(await slow.until(/\r\n\r\nlate$/), /^HTTP\/1\.1 200 /);
    } finally {
      slow.sock.destroy();
      fast.sock.destroy();
    }
  });

  test('a response head and its first body bytes reach the client before the backend ends it', { timeout: 10_000 }, async () => {
    const c = client();
    try {
      c.sock.write('GET /stream HTTP/1.1\r\nHost: r.example.com\r\n\r\n');
      // Chunked (the backend gave no length): the first chunk arrives while the backend still holds the response open.
      const got = await c.until(/\r\n\r\n5\r\nfirst\r\n$/);
      assert.match(got, /^HTTP\/1\.1 200 /);
      assert.equal(held.length, 1, 'the backend has not ended the response');
      held.shift()!.end('last');
      await c.until(/4\r\nlast\r\n0\r\n\r\n$/);
    } finally {
      c.sock.destroy();
    }
  });

  test('a response head alone reaches the client while the backend holds its body back', { timeout: 10_000 }, async () => {
    const c = client();
    try {
      c.sock.write('GET /head HTTP/1.1\r\nHost: r.example.com\r\n\r\n');
      assert.match(await c.until(/\r\n\r\n$/), /^HTTP\/1\.1 200 [^]*transfer-encoding: chunked\r\n/);
      assert.equal(held.length, 1, 'the backend has not sent any body');
      held.shift()!.end('done');
      await c.until(/4\r\ndone\r\n0\r\n\r\n$/);
    } finally {
      c.sock.destroy();
    }
  });
});

describe('an HTTP/1.1 backend whose response breaks in the read that brought its head', () => {
  test('a malformed chunk right after the head: the client gets a 502, not an empty close', async () => {
    const sockets = new Set<net.Socket>();
    const server = net.createServer((sock) => {
      sockets.add(sock);
      sock.on('error', () => {});
      sock.once('data', () => sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const router = await startRouter({ routes: [{ name: 'r', hosts: ['r.example.com'], backends: [{ name: 'b', url: `http://127.0.0.1:${port}`, weight: 1 }] }] });
    try {
      const sock = net.connect(router.port, '127.0.0.1');
      sock.write('GET / HTTP/1.1\r\nHost: r.example.com\r\nConnection: close\r\n\r\n');
      let answer = '';
      sock.on('data', (c: Buffer) => { answer += c.toString('latin1'); });
      await once(sock, 'end');
      assert.match(answer, /^HTTP\/1\.1 502 [^]*SY_UPSTREAM_PROTOCOL/, answer);
      assert.ok(!answer.includes(String(port)), answer);
    } finally {
      await router.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
