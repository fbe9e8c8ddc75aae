// Expect (RFC 9110 §10.1.1): on HTTP/1.1 an expectation other than
// 100-continue is answered 417 and never reaches a backend, as node:http did
// before the raw ingress; 100-continue (any case) still gets its interim 100;
// HTTP/1.0 expectations are ignored. On HTTP/2 the field is not forwarded.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import { run, startBackend, startRouter, type Backend, type Router } from './helpers.ts';

let router: Router;
let backend: Backend;
let lastHeaders: http.IncomingHttpHeaders | undefined;
let lastBody = '';
before(async () => {
  backend = await startBackend('b', (req, res) => {
    lastHeaders = req.headers;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      lastBody = Buffer.concat(chunks).toString();
      res.end('from backend');
    });
  });
  router = await startRouter({ routes: [{ name: 'r', hosts: ['e.test'], backends: [{ name: 'b', url: backend.url, weight: 1 }] }] });
});
after(async () => {
  await router?.close();
  await backend?.close();
});

/** Writes `bytes` on one connection and reads until `responses` whole answers (by Content-Length) arrived, or the close. */
async function talk(bytes: string, responses: number): Promise<{ text: string; closed: boolean }> {
  const s = net.connect(router.port, '127.0.0.1');
  let text = '';
  let closed = false;
  const done = new Promise<void>((resolve) => {
    s.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      if (countResponses(text) >= responses) resolve();
    });
    s.on('close', () => { closed = true; resolve(); });
  });
  s.write(bytes);
  await done;
  // A close right behind the last answer is part of what is checked: wait for it a moment.
  if (!closed) await Promise.race([once(s, 'close').then(() => { closed = true; }), new Promise((r) => setTimeout(r, 200))]);
  s.destroy();
  return { text, closed };
}

function countResponses(text: string): number {
  let n = 0;
  let at = 0;
  for (;;) {
    const end = text.indexOf('\r\n\r\n', at);
    if (end < 0) return n;
    const head = text.slice(at, end);
    if (/^HTTP\/1\.1 1\d\d /.test(head)) { at = end + 4; continue; }
    const len = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? 0);
    if (text.length < end + 4 + len) return n;
    at = end + 4 + len;
    n++;
  }
}

describe('HTTP/1.1', () => {
  test('Expect other than 100-continue: 417 with a Date, the backend never sees it, the connection stays usable', async () => {
    const hits = backend.hits;
    const { text, closed } = await talk(
      'GET /a HTTP/1.1\r\nHost: e.test\r\nExpect: foo\r\n\r\nGET /b HTTP/1.1\r\nHost: e.test\r\n\r\n', 2);
    assert.match(text, /^HTTP\/1\.1 417 Expectation Failed\r\n/);
    assert.match(text, /\r\ndate: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\r\n/i);
    assert.match(text, /SY_EXPECTATION_FAILED/);
    // The request behind it on the same connection is served.
    assert.match(text, /\r\n\r\n[^]*HTTP\/1\.1 200 OK\r\n[^]*from backend$/);
    assert.equal(closed, false);
    assert.equal(backend.hits, hits + 1, 'only the second request reached the backend');
  });

  test('with a body (curl, any case, also listed next to 100-continue): 417, never forwarded', async () => {
    const hits = backend.hits;
    for (const expect of ['Foo', 'bar=baz', '100-continue, foo']) {
      const res = await run('curl', ['-sS', '-i', '-H', 'Host: e.test', '-H', `Expect: ${expect}`, '--data-binary', 'hello', `${router.url}/up`]);
      assert.equal(res.code, 0, res.stderr);
      assert.match(res.stdout, /^HTTP\/1\.1 417 /, `Expect: ${expect}`);
    }
    // Two Expect fields: the one that is not 100-continue still counts.
    const { text } = await talk('POST / HTTP/1.1\r\nHost: e.test\r\nExpect: 100-continue\r\nExpect: foo\r\nContent-Length: 2\r\n\r\nhi', 1);
    assert.match(text, /^HTTP\/1\.1 417 /);
    assert.equal(backend.hits, hits);
  });

  test('Expect: 100-CONTINUE (any case) gets its 100 and is forwarded without Expect', async () => {
    const { text } = await talk('POST /c HTTP/1.1\r\nHost: e.test\r\nExpect: 100-CONTINUE\r\nContent-Length: 5\r\n\r\n', 0);
    assert.match(text, /^HTTP\/1\.1 100 Continue\r\n\r\n$/);
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request({ port: router.port, host: '127.0.0.1', method: 'POST', path: '/c', agent: false, headers: { host: 'e.test', expect: '100-Continue' } }, (r) => {
        let body = '';
        r.on('data', (c: Buffer) => { body += c.toString(); });
        r.on('end', () => resolve({ status: r.statusCode!, body }));
      });
      req.on('continue', () => req.end('hello'));
      req.on('error', reject);
    });
    assert.equal(res.status, 200);
    assert.equal(res.body, 'from backend');
    assert.equal(lastBody, 'hello');
    assert.equal(lastHeaders?.['expect'], undefined);
  });

  test('HTTP/1.0: an expectation is ignored (as node:http did), the request served', async () => {
    const hits = backend.hits;
    const { text } = await talk('GET /old HTTP/1.0\r\nHost: e.test\r\nExpect: foo\r\n\r\n', 1);
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.equal(backend.hits, hits + 1);
    assert.equal(lastHeaders?.['expect'], undefined);
  });
});

describe('HTTP/2', () => {
  test('Expect is not forwarded to the backend (hop-by-hop here, as on HTTP/1.1); the request is served', async () => {
    const session = http2.connect(router.url);
    try {
      const req = session.request({ ':method': 'POST', ':path': '/h2', ':authority': 'e.test', expect: 'foo' });
      req.end('hello');
      let body = '';
      req.on('data', (c: Buffer) => { body += c.toString(); });
      const [headers] = await once(req, 'response') as [http2.IncomingHttpHeaders];
      await once(req, 'end');
      assert.equal(headers[':status'], 200);
      assert.equal(body, 'from backend');
      assert.equal(lastBody, 'hello');
      assert.equal(lastHeaders?.['expect'], undefined);
    } finally {
      session.close();
    }
  });
});
