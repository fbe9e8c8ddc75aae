// What gRPC clients are told when an h2c backend resets a stream (each
// RST_STREAM code maps to the status gRPC's PROTOCOL-HTTP2.md gives it, before
// and after the response started), and how switchyard_requests_total counts
// grpc-status values that are none of the 17 codes; and the grpc-message of
// the router's own errors, encoded exactly as gRPC's PROTOCOL-HTTP2.md says.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { grpcMessage } from '../src/ingress/h2.ts';
import { metric, run, scrape, startRouter, type Router } from './helpers.ts';
import {
  encodeReply, encodeRequest, findGrpcurl, frame, grpcClient, grpcurlArgs, h2Request, SERVICE, serverStream, startH2Backend, unary,
  type EchoClient, type H2Backend,
} from './grpc-helpers.ts';

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

describe('grpc-message of the router\'s own gRPC errors: percent-encoded as PROTOCOL-HTTP2.md says, no more', () => {
  const UNARY = `/${SERVICE}/Unary`;
  const call = (authority: string, extra: Record<string, string> = {}) => ({
    ':method': 'POST', ':path': UNARY, ':authority': authority, 'content-type': 'application/grpc', te: 'trailers', ...extra,
  });

  test('Trailers-Only answers: the wire value is the message itself; grpc-js and grpcurl read it back as written', async () => {
    const b = await backend('msg');
    const { router } = await route([b.url]);
    const cases: { authority: string; extra: Record<string, string>; code: number; grpcurlCode: string; message: string }[] = [
      { authority: 'nowhere.example.com', extra: {}, code: 12, grpcurlCode: 'Unimplemented', message: 'no route for this host and path' },
      { authority: 'g.example.com', extra: { 'x-switchyard-backend': 'nope' }, code: 3, grpcurlCode: 'InvalidArgument', message: 'x-switchyard-backend names no backend of this route' },
    ];
    for (const c of cases) {
      const res = await h2Request(router.url, call(c.authority, c.extra), { body: frame(encodeRequest({})) });
      assert.equal(res.endStreamOnHeaders, true);
      assert.equal(res.headers['grpc-status'], String(c.code));
      assert.equal(res.headers['grpc-message'], c.message, 'spaces are sent as they are');

      const client = grpcClient(`127.0.0.1:${router.port}`, c.authority, { localPool: true });
      clients.push(client);
      const r = await unary(client, {}, { metadata: c.extra, deadlineMs: 10_000 });
      assert.equal(r.code, c.code);
      assert.equal(r.details, c.message);

      const bin = findGrpcurl();
      assert.ok(bin !== undefined, 'grpcurl not found ($GRPCURL, ~/go/bin, PATH)');
      const headers = Object.entries(c.extra).map(([k, v]) => `${k}: ${v}`);
      const g = await run(bin, grpcurlArgs(router.port, 'Unary', { authority: c.authority, headers, data: '{}' }));
      assert.notEqual(g.code, 0);
      assert.match(g.stderr, new RegExp(`Code: ${c.grpcurlCode}\\n\\s*Message: ${c.message}\\n`), g.stderr);
    }
  });

  test('an error in the trailers of a started response: the same exact message', async () => {
    const b = await backend('msg-mid');
    const { router, client } = await route([b.url]);
    const res = await h2Request(router.url, { ...call('g.example.com'), 'x-mode': `mid-${NGHTTP2_ENHANCE_YOUR_CALM}` }, { body: frame(encodeRequest({})) });
    assert.equal(res.trailers?.['grpc-status'], '8');
    assert.equal(res.trailers?.['grpc-message'], 'upstream reset error');
    const r = await serverStream(client, {}, { metadata: { 'x-mode': `mid-${NGHTTP2_ENHANCE_YOUR_CALM}` }, deadlineMs: 10_000 });
    assert.equal(r.code, 8);
    assert.equal(r.details, 'upstream reset error');
  });

  test('the encoding: UTF-8 bytes outside 0x20-0x7E and "%" only, upper-case hex', () => {
    assert.equal(grpcMessage('no route for this host and path'), 'no route for this host and path');
    assert.equal(grpcMessage('it\'s "quoted" ~ {x}/y?z#w'), 'it\'s "quoted" ~ {x}/y?z#w');
    assert.equal(grpcMessage('100% sure'), '100%25 sure');
    assert.equal(grpcMessage('tab\there\nnew\x7f'), 'tab%09here%0Anew%7F');
    assert.equal(grpcMessage('Grüße ✓ 🚀'), 'Gr%C3%BC%C3%9Fe %E2%9C%93 %F0%9F%9A%80');
    // What clients do with it: decode the percent-escapes as UTF-8.
    for (const s of ['100% sure', 'Grüße ✓ 🚀', 'a\r\nb']) assert.equal(decodeURIComponent(grpcMessage(s)), s);
  });
});

describe('a gRPC request whose header list is over entrypoint.maxHeaderBytes', () => {
  test('is answered Trailers-Only with grpc-status 8 RESOURCE_EXHAUSTED (HTTP 431 for others); the backend sees none', async () => {
    const b = await backend('big-metadata');
    const router = await startRouter({
      entrypoint: { maxHeaderBytes: 4096 },
      routes: [{ name: 'g', hosts: ['g.example.com'], protocol: 'h2c', backends: [{ name: 'b0', url: b.url, weight: 1 }] }],
    });
    routers.push(router);
    const big = 'v'.repeat(6000);
    const message = 'request headers over entrypoint.maxHeaderBytes';
    // content-type first or after the large field: either way the request is gRPC.
    for (const order of ['first', 'last']) {
      const h = order === 'first'
        ? { ':method': 'POST', ':path': `/${SERVICE}/Unary`, ':authority': 'g.example.com', 'content-type': 'application/grpc', 'x-big': big, te: 'trailers' }
        : { ':method': 'POST', ':path': `/${SERVICE}/Unary`, ':authority': 'g.example.com', 'x-big': big, te: 'trailers', 'content-type': 'application/grpc+proto' };
      const res = await h2Request(router.url, h, { body: frame(encodeRequest({})) });
      assert.equal(res.headers[':status'], 200, order);
      assert.equal(res.endStreamOnHeaders, true, order);
      assert.equal(res.headers['content-type'], 'application/grpc', order);
      assert.equal(res.headers['grpc-status'], '8', order);
      assert.equal(res.headers['grpc-message'], message, order);
    }
    const client = grpcClient(`127.0.0.1:${router.port}`, 'g.example.com', { localPool: true });
    clients.push(client);
    const r = await unary(client, {}, { metadata: { 'x-big': big }, deadlineMs: 10_000 });
    assert.equal(r.code, 8);
    assert.equal(r.details, message);
    // Not gRPC: the HTTP status.
    const plain = await h2Request(router.url, { ':method': 'GET', ':path': '/', ':authority': 'g.example.com', 'x-big': big });
    assert.equal(plain.headers[':status'], 431);
    assert.equal(b.streams, 0);
    const m = await scrape(router.adminUrl);
    assert.equal(metric(m, 'switchyard_requests_total', { route: 'unmatched', backend: 'none', protocol: 'h2c', code: '8' }), 3);
    assert.equal(metric(m, 'switchyard_requests_total', { route: 'unmatched', backend: 'none', protocol: 'h2c', code: '431' }), 1);
  });
});
