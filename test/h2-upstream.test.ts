// The h2c upstream: what a backend receives (header lists from any client),
// and how the router copes with what an HTTP/2 backend may do.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { startRouter } from './helpers.ts';

/** One HTTP/1.1 request written as is (repeated lines included); resolves with the whole answer once the router closes. */
function rawHttp1(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let out = '';
    sock.on('data', (c: Buffer) => { out += c.toString('latin1'); });
    sock.on('end', () => resolve(out));
    sock.on('error', reject);
    sock.write(head);
  });
}

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
