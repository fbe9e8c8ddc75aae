// The Date header (RFC 9110 §6.6.1): every answer the router gives itself
// carries one, over HTTP/1.1 (node:http, raw sockets, curl) and HTTP/2
// (node:http2, plain and gRPC); a proxied response keeps the backend's Date
// as it was, and one without a Date gets none added.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http, { type IncomingHttpHeaders } from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import { httpDate } from '../src/ingress/date.ts';
import { closedPort, run, startBackend, startRouter, type Backend, type Router } from './helpers.ts';

const OLD_DATE = 'Tue, 01 Jan 2019 00:00:00 GMT';
const IMF_FIXDATE = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$/;

/** A Date the router made: IMF-fixdate, and now (the bound only catches a wrong clock or a stale cache, not speed). */
function assertFreshDate(value: unknown, what: string): void {
  assert.equal(typeof value, 'string', `${what}: no date header`);
  assert.match(value as string, IMF_FIXDATE, what);
  assert.ok(Math.abs(Date.parse(value as string) - Date.now()) < 60_000, `${what}: date ${String(value)} is not now`);
}

let router: Router;
let plain: Backend;
let dated: Backend;
before(async () => {
  // node:http adds a Date unless told not to: this backend sends none.
  plain = await startBackend('plain', (_req, res) => {
    res.sendDate = false;
    res.end('plain');
  });
  dated = await startBackend('dated', (_req, res) => {
    res.setHeader('date', OLD_DATE);
    res.end('dated');
  });
  const refused = `http://127.0.0.1:${await closedPort()}`;
  router = await startRouter({
    routes: [
      { name: 'plain', hosts: ['plain.test'], backends: [{ name: 'b', url: plain.url, weight: 1 }] },
      { name: 'dated', hosts: ['dated.test'], backends: [{ name: 'b', url: dated.url, weight: 1 }] },
      { name: 'zero', hosts: ['zero.test'], backends: [{ name: 'b', url: plain.url, weight: 0 }] },
      { name: 'down', hosts: ['down.test'], backends: [{ name: 'b', url: refused, weight: 1 }] },
      { name: 'grpc', hosts: ['grpc.test'], protocol: 'h2c', backends: [{ name: 'b', url: refused, weight: 1 }] },
    ],
  });
});
after(async () => {
  await router?.close();
  await plain?.close();
  await dated?.close();
});

function get(host: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    http.get({ port: router.port, host: '127.0.0.1', path: '/', headers: { host, ...headers }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers }));
    }).on('error', reject);
  });
}

/** Raw bytes in, the whole answer out (the router closes these connections). */
async function raw(bytes: string): Promise<string> {
  const s = net.connect(router.port, '127.0.0.1');
  let got = '';
  s.on('data', (c: Buffer) => { got += c.toString('latin1'); });
  s.write(bytes);
  await once(s, 'close');
  return got;
}

function headerOf(response: string, name: string): string | undefined {
  const head = response.slice(0, response.indexOf('\r\n\r\n'));
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (line.slice(0, colon).toLowerCase() === name) return line.slice(colon + 1).trim();
  }
  return undefined;
}

describe('HTTP/1.1', () => {
  test('error answers carry a fresh Date: 404, 503, 502, 400', async () => {
    for (const [host, status] of [['nowhere.test', 404], ['zero.test', 503], ['down.test', 502]] as const) {
      const res = await get(host);
      assert.equal(res.status, status, host);
      assertFreshDate(res.headers['date'], `${status}`);
    }
    const twoHosts = await raw('GET / HTTP/1.1\r\nHost: plain.test\r\nHost: dated.test\r\n\r\n');
    assert.match(twoHosts, /^HTTP\/1\.1 400 /);
    assertFreshDate(headerOf(twoHosts, 'date'), '400 (two Hosts)');
  });

  test('a head the parser refuses (400, connection closed) carries a Date too', async () => {
    const res = await raw('POST / HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab');
    assert.match(res, /^HTTP\/1\.1 400 /);
    assertFreshDate(headerOf(res, 'date'), '400 (refused head)');
  });

  test('a HEAD answered with an error carries a Date', async () => {
    const res = await run('curl', ['-sS', '-I', '-H', 'Host: nowhere.test', `${router.url}/`]);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /^HTTP\/1\.1 404 /);
    assertFreshDate(/^date: (.*)\r$/im.exec(res.stdout)?.[1], 'HEAD 404 (curl)');
  });

  test('a proxied response keeps its own Date, and gets none if it had none', async () => {
    const d = await get('dated.test');
    assert.equal(d.status, 200);
    assert.equal(d.headers['date'], OLD_DATE);
    const p = await get('plain.test');
    assert.equal(p.status, 200);
    assert.equal(p.headers['date'], undefined);
  });
});

describe('HTTP/2', () => {
  async function h2(host: string, extra: Record<string, string> = {}): Promise<http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader> {
    const session = http2.connect(router.url);
    try {
      const req = session.request({ ':path': '/', ':authority': host, ...extra });
      req.resume();
      req.end();
      const [headers] = await once(req, 'response') as [http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader];
      await once(req, 'close');
      return headers;
    } finally {
      session.close();
    }
  }

  test('error answers carry a fresh Date: 404, 503, 502', async () => {
    for (const [host, status] of [['nowhere.test', 404], ['zero.test', 503], ['down.test', 502]] as const) {
      const h = await h2(host);
      assert.equal(h[':status'], status, host);
      assertFreshDate(h['date'], `h2 ${status}`);
    }
  });

  test('a gRPC error (Trailers-Only) carries a Date', async () => {
    const h = await h2('grpc.test', { ':method': 'POST', 'content-type': 'application/grpc', te: 'trailers' });
    assert.equal(h[':status'], 200);
    assert.equal(h['grpc-status'], '14');
    assertFreshDate(h['date'], 'gRPC Trailers-Only');
  });

  test('a proxied response keeps its own Date, and gets none if it had none', async () => {
    assert.equal((await h2('dated.test'))['date'], OLD_DATE);
    assert.equal((await h2('plain.test'))['date'], undefined);
  });
});

test('httpDate() is the current second as an IMF-fixdate', () => {
  const before = new Date().toUTCString();
  const d = httpDate();
  const after = new Date().toUTCString();
  assert.ok(d === before || d === after, `${d} is neither ${before} nor ${after}`);
  assert.match(d, IMF_FIXDATE);
});
