// What gRPC clients are told when an h2c backend resets a stream (each
// RST_STREAM code maps to the status gRPC's PROTOCOL-HTTP2.md gives it, before
// and after the response started), and how switchyard_requests_total counts
// grpc-status values that are none of the 17 codes.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { scrape, startRouter, type Router } from './helpers.ts';
import { encodeReply, frame, grpcClient, serverStream, startH2Backend, unary, type EchoClient, type H2Backend } from './grpc-helpers.ts';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_INADEQUATE_SECURITY, NGHTTP2_INTERNAL_ERROR } = http2.constants;

const clients: EchoClient[] = [];
const routers: Router[] = [];
const backends: H2Backend[] = [];
after(async () => {
  for (const c of clients) c.close();
  for (const r of routers) await r.close();
  for (const b of backends) await b.close();
});

/**
 * A backend that does what x-mode says: `rst-N` resets the stream with code N
 * before any response; `mid-N` sends headers and one message, then resets
 * with N; `status-S` answers Trailers-Only with grpc-status S.
 */
async function backend(name: string): Promise<H2Backend> {
  const b = await startH2Backend(name, (stream, headers) => {
    const [kind, arg] = String(headers['x-mode']).split(/-(.*)/s) as [string, string];
    stream.resume();
    if (kind === 'rst') {
      stream.close(Number(arg));
    } else if (kind === 'mid') {
      // Waiting for trailers, close(code) sends RST_STREAM alone (no END_STREAM first).
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.write(frame(encodeReply({ tag: 'first' })), () => setTimeout(() => stream.close(Number(arg)), 20));
    } else {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': arg, 'grpc-message': 'as asked' }, { endStream: true });
    }
  });
  backends.push(b);
  return b;
}

async function route(urls: string[]): Promise<{ router: Router; client: EchoClient }> {
  const router = await startRouter({
    routes: [{ name: 'g', hosts: ['g.example.com'], protocol: 'h2c', backends: urls.map((url, i) => ({ name: `b${i}`, url, weight: 1 })) }],
  });
  routers.push(router);
  const client = grpcClient(`127.0.0.1:${router.port}`, 'g.example.com', { localPool: true });
  clients.push(client);
  return { router, client };
}

describe('upstream RST_STREAM codes reach gRPC clients as the right status', () => {
  test('before the response: CANCEL 1, ENHANCE_YOUR_CALM 8, INADEQUATE_SECURITY 7, INTERNAL_ERROR 13', async () => {
    const b = await backend('rst');
    const { client } = await route([b.url]);
    const want: [number, number][] = [[NGHTTP2_CANCEL, 1], [NGHTTP2_ENHANCE_YOUR_CALM, 8], [NGHTTP2_INADEQUATE_SECURITY, 7], [NGHTTP2_INTERNAL_ERROR, 13]];
    for (const [rst, code] of want) {
      const r = await unary(client, {}, { metadata: { 'x-mode': `rst-${rst}` }, deadlineMs: 10_000 });
      assert.equal(r.code, code, `RST_STREAM ${rst}: ${r.code} ${r.details}`);
      assert.doesNotMatch(r.details, /127\.0\.0\.1/);
    }
  });

  test('REFUSED_STREAM is retried on the other backend, then UNAVAILABLE (14)', async () => {
    const a = await backend('refuse-a');
    const b = await backend('refuse-b');
    const { client } = await route([a.url, b.url]);
    const r = await unary(client, {}, { metadata: { 'x-mode': `rst-${NGHTTP2_REFUSED_STREAM}` }, deadlineMs: 10_000 });
    assert.equal(r.code, 14, `${r.code} ${r.details}`);
    assert.equal(a.streams + b.streams, 2, 'one attempt and one retry');
    assert.equal(a.streams, 1);
  });

  test('after the response started: the status comes in trailers (CANCEL 1, ENHANCE_YOUR_CALM 8), the message before it kept', async () => {
    const b = await backend('mid');
    const { client } = await route([b.url]);
    for (const [rst, code] of [[NGHTTP2_CANCEL, 1], [NGHTTP2_ENHANCE_YOUR_CALM, 8]] as const) {
      const r = await serverStream(client, {}, { metadata: { 'x-mode': `mid-${rst}` }, deadlineMs: 10_000 });
      assert.equal(r.code, code, `RST_STREAM ${rst} mid-response: ${r.code} ${r.details}`);
      assert.deepEqual(r.replies.map((x) => x.tag), ['first']);
    }
  });
});

describe('switchyard_requests_total{code} for gRPC', () => {
  test('grpc-status values outside the 17 codes count as "unknown"; no series per value', async () => {
    const b = await backend('status');
    const { router, client } = await route([b.url]);
    for (const s of ['abc', '99', '-1', '1e1', '16', '2', '0']) {
      await unary(client, {}, { metadata: { 'x-mode': `status-${s}` }, deadlineMs: 10_000 });
    }
    const m = await scrape(router.adminUrl);
    const codes = new Map<string, number>();
    for (const [k, v] of m) {
      const code = /^switchyard_requests_total\{route="g",backend="b0",protocol="h2c",code="([^"]*)"\}$/.exec(k)?.[1];
      if (code !== undefined) codes.set(code, v);
    }
    assert.deepEqual(Object.fromEntries(codes), { 0: 1, 2: 1, 16: 1, unknown: 4 });
  });
});
