// gRPC end to end: grpc-js, raw node:http2 and grpcurl clients → router
// (routes with `protocol: h2c`) → grpc-js and raw node:http2 backends, all on
// real loopback sockets. The "direct" suite runs the same checks with the
// clients pointed straight at the backends: it is the yardstick that shows the
// peers themselves behave, so a failure through the router is the router's.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import http2, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { randomBytes } from 'node:crypto';
import { Agent, request as undiciRequest } from 'undici';
import { closedPort, run, scrape, startRouter, type Router } from './helpers.ts';
import {
  DETAIL_BIN, INITIAL_BIN, TRAILER_BIN, bidi, clientStream, collect, decodeReply, decodeRequest, encodeReply,
  encodeRequest, findGrpcurl, frame, grpc, grpcClient, grpcurlArgs, h2Request, metadata, parseJsonStream,
  readRequest, serverStream, sha256, startGrpcBackend, startH2Backend, unary, unframe, until,
  type CallResult, type EchoClient, type GrpcBackend, type H2Backend, type H2Handler,
} from './grpc-helpers.ts';

const MB4 = 4 * 1024 * 1024;
const S = grpc.status;
// Spaces, a percent sign, non-ASCII and an emoji: grpc-message is percent-encoded on the wire.
const UNICODE_MESSAGE = 'no such ledger: café ☕ 100% gone — ünïcode ok';
const SERVICE_PATH = '/switchyard.test.Echo';

function firstValue(md: grpc.Metadata | undefined, key: string): string | Buffer | undefined {
  return md?.get(key)[0];
}
function joined(md: grpc.Metadata | undefined, key: string): string {
  return (md?.get(key) ?? []).map(String).join(', ');
}
function show(r: CallResult): string {
  return `code ${r.code} (${S[r.code]}) "${r.details}" after ${r.replies.length} replies in ${Math.round(r.ms)} ms`;
}
function assertOk(r: CallResult, what: string): void {
  assert.equal(r.code, S.OK, `${what}: ${show(r)}`);
}

/** grpc-timeout value → milliseconds. */
function timeoutMs(v: string | string[] | undefined): number {
  const m = /^(\d{1,8})([HMSmun])$/.exec(String(v));
  assert.ok(m, `grpc-timeout ${String(v)} is malformed`);
  const unit: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };
  return Number(m[1]) * unit[m[2]!]!;
}

// ---------------------------------------------------------------------------
// Checks shared by the direct and the proxied suites.
// ---------------------------------------------------------------------------

/** Metadata both ways, :authority, grpc-timeout, initial and trailing metadata. */
async function checkUnaryMetadata(client: EchoClient, backend: string, authority: string): Promise<void> {
  const payload = Buffer.from('hello, switchyard');
  const r = await unary(client, { tag: 'meta', payload }, {
    deadlineMs: 5_000,
    metadata: { 'x-echo': ['one', 'two'], 'x-custom': 'custom value', 'x-blob-bin': Buffer.from([1, 2, 3, 0, 255]) },
  });
  assertOk(r, 'unary');
  const reply = r.replies[0]!;
  assert.equal(reply.backend, backend);
  assert.equal(reply.tag, 'meta');
  assert.ok(reply.payload.equals(payload), 'payload echoed');
  // Request metadata as the server saw it.
  assert.equal(reply.metadata['x-custom'], 'custom value');
  assert.equal(reply.metadata['x-blob-bin'], Buffer.from([1, 2, 3, 0, 255]).toString('base64'));
  assert.equal(reply.metadata['x-echo'], 'one, two');
  assert.match(reply.metadata['user-agent'] ?? '', /grpc-node-js/, 'user-agent forwarded');
  assert.equal(reply.metadata['x-switchyard-backend'], undefined);
  assert.equal(reply.authority, authority, ':authority as the server saw it');
  // grpc-timeout: the server's deadline is the client's, less transit time.
  assert.ok(reply.deadline_ms > 0 && reply.deadline_ms <= 5_000, `server saw ${reply.deadline_ms} ms left of a 5 s deadline (grpc-timeout forwarded)`);
  // Initial metadata from the server.
  assert.equal(firstValue(r.initial, 'x-backend'), backend);
  assert.deepEqual(firstValue(r.initial, 'x-initial-bin'), INITIAL_BIN);
  assert.equal(joined(r.initial, 'x-echo'), 'one, two');
  // Trailing metadata from the server.
  assert.equal(firstValue(r.trailing, 'x-trailer'), `done ${backend}`);
  assert.deepEqual(firstValue(r.trailing, 'x-trailer-bin'), TRAILER_BIN);
  assert.equal(joined(r.trailing, 'x-echo-trailer'), 'one, two');
}

async function checkUnaryLarge(client: EchoClient, backend: string): Promise<void> {
  const payload = randomBytes(MB4);
  const r = await unary(client, { tag: 'big', payload });
  assertOk(r, '4 MB unary');
  assert.equal(r.replies[0]!.backend, backend);
  assert.equal(r.replies[0]!.payload.length, MB4);
  assert.ok(r.replies[0]!.payload.equals(payload), '4 MB payload echoed byte for byte');
}

async function checkServerStream(client: EchoClient, backend: string): Promise<void> {
  const r = await serverStream(client, { tag: 'many', count: 10_000, size: 16 });
  assertOk(r, '10,000-message server stream');
  assert.equal(r.replies.length, 10_000);
  for (let i = 0; i < r.replies.length; i++) {
    if (r.replies[i]!.index !== i) assert.fail(`reply ${i} has index ${r.replies[i]!.index}: out of order`);
  }
  assert.ok(r.replies.every((x) => x.backend === backend && x.payload.length === 16));
  assert.equal(firstValue(r.trailing, 'x-trailer'), `done ${backend}`);

  const large = await serverStream(client, { tag: 'large', count: 3, size: MB4 });
  assertOk(large, 'server stream of 4 MB messages');
  assert.deepEqual(large.replies.map((x) => x.payload.length), [MB4, MB4, MB4]);
}

async function checkClientStream(client: EchoClient, backend: string): Promise<void> {
  const msg = (i: number): Buffer => Buffer.from(`message ${i} `.padEnd(100, '.'));
  const r = await clientStream(client, 10_000, (i) => ({ tag: `c${i}`, payload: msg(i) }));
  assertOk(r, '10,000-message client stream');
  const reply = r.replies[0]!;
  assert.equal(reply.backend, backend);
  assert.equal(reply.index, 10_000, 'messages the server received');
  assert.equal(reply.bytes, 1_000_000);
  assert.equal(reply.tag, 'c9999', 'the last message arrived last');
  assert.equal(reply.digest, sha256(...Array.from({ length: 10_000 }, (_, i) => msg(i))), 'bytes arrived in order, intact');

  const big = [randomBytes(MB4), randomBytes(MB4), randomBytes(MB4)];
  const large = await clientStream(client, big.length, (i) => ({ payload: big[i]! }));
  assertOk(large, 'client stream of 4 MB messages');
  assert.equal(large.replies[0]!.bytes, 3 * MB4);
  assert.equal(large.replies[0]!.digest, sha256(...big));
}

async function checkBidi(client: EchoClient, backend: string): Promise<void> {
  const r = await bidi(client, 10_000, (i) => ({ tag: `b${i}`, payload: Buffer.from(String(i)) }));
  assertOk(r, '10,000-message bidi stream');
  assert.equal(r.replies.length, 10_000);
  for (let i = 0; i < r.replies.length; i++) {
    const x = r.replies[i]!;
    if (x.index !== i || x.tag !== `b${i}` || x.payload.toString() !== String(i)) {
      assert.fail(`reply ${i}: index ${x.index} tag ${x.tag} payload ${x.payload.toString()}`);
    }
  }
  assert.equal(r.replies[0]!.backend, backend);
  assert.equal(firstValue(r.trailing, 'x-trailer'), `done ${backend}`);

  const big = [randomBytes(MB4), randomBytes(MB4), randomBytes(MB4)];
  const large = await bidi(client, big.length, (i) => ({ payload: big[i]! }));
  assertOk(large, 'bidi stream of 4 MB messages');
  assert.equal(large.replies.length, 3);
  for (let i = 0; i < 3; i++) assert.ok(large.replies[i]!.payload.equals(big[i]!), `4 MB message ${i} echoed`);
}

/** The backend's own statuses, messages and trailing metadata, untouched. */
async function checkStatuses(client: EchoClient, backend: string): Promise<void> {
  // Trailers-Only from the server (no reply sent).
  const nf = await unary(client, { status: S.NOT_FOUND, message: UNICODE_MESSAGE });
  assert.equal(nf.code, S.NOT_FOUND, show(nf));
  assert.equal(nf.details, UNICODE_MESSAGE);
  assert.equal(firstValue(nf.trailing, 'x-detail'), `detail from ${backend}`);
  assert.deepEqual(firstValue(nf.trailing, 'x-detail-bin'), DETAIL_BIN);

  // A status in real trailers, after replies.
  const late = await serverStream(client, { status: S.NOT_FOUND, after: 2, message: UNICODE_MESSAGE }, { metadata: { 'x-echo': 'late' } });
  assert.equal(late.code, S.NOT_FOUND, show(late));
  assert.equal(late.details, UNICODE_MESSAGE);
  assert.equal(late.replies.length, 2);
  assert.equal(firstValue(late.initial, 'x-backend'), backend);
  assert.equal(firstValue(late.trailing, 'x-detail'), `detail from ${backend}`);
  assert.deepEqual(firstValue(late.trailing, 'x-detail-bin'), DETAIL_BIN);
  assert.equal(firstValue(late.trailing, 'x-echo-trailer'), 'late');

  const bidiLate = await bidi(client, 4, (i) => (i < 3 ? { tag: `m${i}` } : { status: S.FAILED_PRECONDITION, message: 'not now' }));
  assert.equal(bidiLate.code, S.FAILED_PRECONDITION, show(bidiLate));
  assert.equal(bidiLate.details, 'not now');
  assert.equal(bidiLate.replies.length, 3);

  const cs = await clientStream(client, 2, () => ({ status: S.RESOURCE_EXHAUSTED, message: 'too much' }));
  assert.equal(cs.code, S.RESOURCE_EXHAUSTED, show(cs));
  assert.equal(cs.details, 'too much');

  // Every status a server can send (1..16) comes back as itself.
  const codes = Array.from({ length: 16 }, (_, i) => i + 1);
  const all = await Promise.all(codes.map((code) => unary(client, { status: code, message: `status ${code}` })));
  assert.deepEqual(all.map((r) => [r.code, r.details]), codes.map((c) => [c, `status ${c}`]));
}

/** Client cancels reach the server, and the server's count of open calls returns to where it was. */
async function checkClientCancel(client: EchoClient, be: GrpcBackend): Promise<void> {
  const open0 = be.openCalls;
  // Mid-stream: the server has sent a reply and waits.
  let cancelled0 = be.cancelled;
  const call = client.ServerStream({ count: 1, hang: true }, metadata(), { deadline: Date.now() + 20_000 });
  const done = collect(call, [], true);
  await new Promise<void>((resolve) => call.once('data', () => resolve()));
  call.cancel();
  const r = await done;
  assert.equal(r.code, S.CANCELLED);
  assert.ok(await until(() => be.cancelled === cancelled0 + 1 && be.openCalls === open0, 3_000),
    `server saw the mid-stream cancel: cancelled ${be.cancelled - cancelled0}, open ${be.openCalls - open0}`);

  // Before any response byte: the server holds the call, nothing sent yet.
  cancelled0 = be.cancelled;
  const calls0 = be.calls;
  const u = client.Unary({ hang: true }, metadata(), { deadline: Date.now() + 20_000 }, () => {});
  const ud = collect(u);
  assert.ok(await until(() => be.calls === calls0 + 1, 3_000), 'the hanging call reached the server');
  u.cancel();
  assert.equal((await ud).code, S.CANCELLED);
  assert.ok(await until(() => be.cancelled === cancelled0 + 1 && be.openCalls === open0, 3_000),
    `server saw the cancel before headers: cancelled ${be.cancelled - cancelled0}, open ${be.openCalls - open0}`);

  // A client deadline that expires ends the server's call too.
  cancelled0 = be.cancelled;
  const dl = await unary(client, { hang: true }, { deadlineMs: 300 });
  assert.equal(dl.code, S.DEADLINE_EXCEEDED, show(dl));
  assert.ok(await until(() => be.cancelled === cancelled0 + 1 && be.openCalls === open0, 3_000),
    `server saw the expired call end: cancelled ${be.cancelled - cancelled0}, open ${be.openCalls - open0}`);
}

/**
 * `n` RPCs, each cancelled after its first reply: `perConnection` at a time,
 * each batch on a fresh client connection. One connection must not carry more
 * than ~1,000 cancels in a burst: nghttp2 (so every Node HTTP/2 server, grpc-js
 * servers included) rate-limits incoming RST_STREAM frames per connection
 * (CVE-2023-44487, "rapid reset": 1,000 burst, 33/s) and answers a flood with
 * GOAWAY(INTERNAL_ERROR); the router's entrypoint has the same limit and
 * answers GOAWAY(ENHANCE_YOUR_CALM).
 */
async function cancelMany(connect: () => EchoClient, n: number, perConnection = 500): Promise<void> {
  for (let done = 0; done < n; done += perConnection) {
    const client = connect();
    try {
      const results = await Promise.all(Array.from({ length: Math.min(perConnection, n - done) }, async () => {
        const call = client.ServerStream({ count: 1, hang: true }, metadata(), { deadline: Date.now() + 20_000 });
        const result = collect(call, [], true);
        const first = await Promise.race([
          new Promise<boolean>((resolve) => call.once('data', () => resolve(true))),
          result.then(() => false),
        ]);
        if (first) call.cancel();
        return result;
      }));
      const bad = results.filter((r) => r.code !== S.CANCELLED);
      if (bad.length > 0) assert.fail(`${bad.length} of a batch of ${results.length} did not end CANCELLED; first: ${show(bad[0]!)}`);
    } finally {
      client.close();
    }
  }
}

// --- raw HTTP/2 ------------------------------------------------------------

/**
 * A raw gRPC-shaped backend. By `x-mode`: `trailers-only` answers with one
 * HEADERS frame carrying grpc-status 5; `rst-before-headers`, `rst-mid-stream`
 * and `session-destroy` fail the stream; `http-404` is a plain 404; anything
 * else reads the request (body, trailers), records it and answers with
 * headers, one Reply and trailers.
 */
const rawHandler: H2Handler = (stream, headers, b) => {
  const mode = headers['x-mode'];
  switch (mode) {
    case 'trailers-only':
      stream.respond({
        ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '5',
        'grpc-message': encodeURIComponent(UNICODE_MESSAGE), 'x-detail': 'raw detail',
      }, { endStream: true });
      return;
    case 'rst-before-headers':
      stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      return;
    case 'rst-mid-stream':
    case 'session-destroy':
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
      stream.write(frame(encodeReply({ backend: b.name, index: 0 })));
      setTimeout(() => {
        if (mode === 'session-destroy') stream.session?.destroy();
        else stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      }, 50);
      return;
    case 'http-404':
      stream.respond({ ':status': 404, 'content-type': 'text/plain', 'x-backend': b.name });
      stream.end('nothing here\n');
      return;
  }
  void readRequest(stream).then(({ body, trailers }) => {
    b.seen.push({ headers, trailers, body });
    const tag = body.length > 0 ? decodeRequest(unframe(body)[0]!).tag : '';
    stream.respond({
      ':status': 200, 'content-type': 'application/grpc', 'x-resp': 'r1', 'x-resp-bin': INITIAL_BIN.toString('base64'),
    }, { waitForTrailers: true });
    stream.once('wantTrailers', () => {
      stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'fine', 'x-trailer': 't1', 'x-trailer-bin': TRAILER_BIN.toString('base64') });
    });
    stream.end(frame(encodeReply({ backend: b.name, tag })));
  });
};

/** A plain HTTP service spoken over h2c: echoes what it got as JSON, or `?size=N` bytes. */
const plainHandler: H2Handler = (stream, headers, b) => {
  void readRequest(stream).then(({ body, trailers }) => {
    b.seen.push({ headers, trailers, body });
    const url = new URL(headers[':path'] ?? '/', 'http://x');
    const size = Number(url.searchParams.get('size') ?? 0);
    if (size > 0) {
      stream.respond({ ':status': 200, 'content-type': 'application/octet-stream', 'x-backend': b.name });
      stream.end(Buffer.alloc(size, 0x62));
      return;
    }
    stream.respond({ ':status': url.pathname === '/missing' ? 404 : 200, 'content-type': 'application/json', 'x-backend': b.name });
    stream.end(JSON.stringify({ backend: b.name, headers, bodyLength: body.length, bodyDigest: sha256(body) }));
  });
};

function grpcHeaders(authority: string, method: string, extra: OutgoingHttpHeaders = {}): OutgoingHttpHeaders {
  return {
    ':method': 'POST', ':scheme': 'http', ':authority': authority, ':path': `${SERVICE_PATH}/${method}`,
    'content-type': 'application/grpc', te: 'trailers', ...extra,
  };
}

/** Pseudo-headers, te, grpc-timeout, metadata and trailers both ways, with a raw HTTP/2 client and server. */
async function checkRawExchange(url: string, authority: string, raw: H2Backend, expectAuthority: string): Promise<void> {
  const seen0 = raw.seen.length;
  const res = await h2Request(url, grpcHeaders(authority, 'Unary', {
    'grpc-timeout': '5S', 'user-agent': 'raw-h2-test/1', 'x-custom': 'v1', 'x-blob-bin': DETAIL_BIN.toString('base64'),
    'grpc-accept-encoding': 'identity',
  }), { body: frame(encodeRequest({ tag: 'raw-1' })) });
  assert.equal(res.error, undefined, String(res.error));
  // What the backend got.
  assert.equal(raw.seen.length, seen0 + 1, 'the backend saw the request');
  const h = raw.seen[seen0]!.headers;
  assert.equal(h[':method'], 'POST');
  assert.equal(h[':scheme'], 'http');
  assert.equal(h[':path'], `${SERVICE_PATH}/Unary`);
  assert.equal(h[':authority'], expectAuthority);
  assert.equal(h['content-type'], 'application/grpc');
  assert.equal(h['te'], 'trailers', 'te: trailers forwarded');
  const t = timeoutMs(h['grpc-timeout']);
  assert.ok(t > 3_000 && t <= 5_000, `grpc-timeout forwarded (${String(h['grpc-timeout'])})`);
  assert.equal(h['user-agent'], 'raw-h2-test/1');
  assert.equal(h['x-custom'], 'v1');
  assert.equal(h['x-blob-bin'], DETAIL_BIN.toString('base64'));
  assert.equal(h['grpc-accept-encoding'], 'identity');
  assert.equal(decodeRequest(unframe(raw.seen[seen0]!.body!)[0]!).tag, 'raw-1', 'body intact');
  // What the client got.
  assert.equal(res.headers[':status'], 200);
  assert.equal(res.headers['content-type'], 'application/grpc');
  assert.equal(res.headers['x-resp'], 'r1');
  assert.equal(res.headers['x-resp-bin'], INITIAL_BIN.toString('base64'));
  assert.equal(res.endStreamOnHeaders, false);
  const replies = unframe(res.body).map(decodeReply);
  assert.deepEqual(replies.map((r) => [r.backend, r.tag]), [[raw.name, 'raw-1']]);
  assert.ok(res.trailers !== undefined, 'response trailers arrived');
  assert.equal(res.trailers['grpc-status'], '0');
  assert.equal(res.trailers['grpc-message'], 'fine');
  assert.equal(res.trailers['x-trailer'], 't1');
  assert.equal(res.trailers['x-trailer-bin'], TRAILER_BIN.toString('base64'));
  assert.equal(res.rstCode, 0);
}

async function checkRawRequestTrailers(url: string, authority: string, raw: H2Backend): Promise<void> {
  const seen0 = raw.seen.length;
  const res = await h2Request(url, grpcHeaders(authority, 'Unary'), {
    body: frame(encodeRequest({ tag: 'with-trailers' })), trailers: { 'x-req-trailer': 'rt', 'x-req-trailer-bin': 'AAE=' },
  });
  assert.equal(res.trailers?.['grpc-status'], '0', `response: ${JSON.stringify(res.headers)} ${String(res.error)}`);
  const seen = raw.seen[seen0];
  assert.ok(seen !== undefined, 'the backend saw the request');
  assert.equal(seen.trailers?.['x-req-trailer'], 'rt', 'request trailers forwarded');
  assert.equal(seen.trailers?.['x-req-trailer-bin'], 'AAE=');
  assert.equal(decodeRequest(unframe(seen.body!)[0]!).tag, 'with-trailers');
}

/** A Trailers-Only response: one HEADERS frame with END_STREAM, grpc-status in it, no body, no trailers. */
function assertTrailersOnly(res: { headers: IncomingHttpHeaders; endStreamOnHeaders: boolean; body: Buffer; trailers: IncomingHttpHeaders | undefined }, status: number, what: string): void {
  const desc = `${what}: headers ${JSON.stringify(res.headers)} endStream ${res.endStreamOnHeaders} body ${res.body.length} B trailers ${JSON.stringify(res.trailers)}`;
  assert.equal(res.headers[':status'], 200, `gRPC errors are HTTP 200 — ${desc}`);
  assert.match(String(res.headers['content-type']), /^application\/grpc/, desc);
  assert.equal(res.headers['grpc-status'], String(status), desc);
  assert.equal(res.endStreamOnHeaders, true, `Trailers-Only: END_STREAM on the HEADERS frame — ${desc}`);
  assert.equal(res.body.length, 0, desc);
  assert.equal(res.trailers, undefined, desc);
}

async function checkRawTrailersOnly(url: string, authority: string): Promise<void> {
  const res = await h2Request(url, grpcHeaders(authority, 'Unary', { 'x-mode': 'trailers-only' }), { body: frame(encodeRequest({})) });
  assertTrailersOnly(res, 5, 'upstream Trailers-Only');
  assert.equal(decodeURIComponent(String(res.headers['grpc-message'])), UNICODE_MESSAGE);
  assert.equal(res.headers['x-detail'], 'raw detail');
}

/** The upstream resets / drops the stream: the client gets a status (13 or 14), not a hang. */
async function checkUpstreamReset(client: EchoClient): Promise<void> {
  for (const mode of ['rst-mid-stream', 'session-destroy', 'rst-before-headers']) {
    const r = await serverStream(client, { count: 5 }, { metadata: { 'x-mode': mode }, deadlineMs: 10_000 });
    assert.ok(r.code === S.UNAVAILABLE || r.code === S.INTERNAL, `${mode}: want UNAVAILABLE or INTERNAL, got ${show(r)}`);
    assert.ok(r.replies.length <= 1, `${mode}: ${r.replies.length} replies`);
  }
}

function grpcurlOrFail(): string {
  const bin = findGrpcurl();
  assert.ok(bin !== undefined,
    'grpcurl not found ($GRPCURL, $GOPATH/bin, `go env GOPATH`/bin, ~/go/bin, PATH). ' +
    'Install it: go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4 (bash .ci/run does).');
  return bin;
}

/** grpcurl against 127.0.0.1:port with `authority`; `backend` is who should answer. */
async function checkGrpcurl(port: number, authority: string | undefined, backend: string, headers: string[] = []): Promise<void> {
  const bin = grpcurlOrFail();
  const un = await run(bin, grpcurlArgs(port, 'Unary', { authority, headers, data: '{"tag":"from-grpcurl","payload":"aGVsbG8="}' }));
  assert.equal(un.code, 0, `grpcurl Unary: ${un.stderr}`);
  const [reply] = parseJsonStream(un.stdout);
  assert.equal(reply?.['backend'], backend, un.stdout);
  assert.equal(reply?.['tag'], 'from-grpcurl');
  assert.equal(reply?.['payload'], 'aGVsbG8=');
  assert.match(String((reply?.['metadata'] as Record<string, string>)['user-agent']), /grpcurl/);

  const ss = await run(bin, grpcurlArgs(port, 'ServerStream', { authority, headers, data: '{"count":5,"size":3}' }));
  assert.equal(ss.code, 0, `grpcurl ServerStream: ${ss.stderr}`);
  const replies = parseJsonStream(ss.stdout);
  assert.equal(replies.length, 5, ss.stdout);
  assert.deepEqual(replies.map((r) => r['index'] ?? 0), [0, 1, 2, 3, 4]);

  const cs = await run(bin, grpcurlArgs(port, 'ClientStream', { authority, headers, data: '{"tag":"a"} {"tag":"b"} {"tag":"c"}' }));
  assert.equal(cs.code, 0, `grpcurl ClientStream: ${cs.stderr}`);
  const csReply = parseJsonStream(cs.stdout)[0];
  assert.equal(csReply?.['index'], 3);
  assert.equal(csReply?.['tag'], 'c');

  const bd = await run(bin, grpcurlArgs(port, 'BidiStream', { authority, headers, data: '{"tag":"x"} {"tag":"y"}' }));
  assert.equal(bd.code, 0, `grpcurl BidiStream: ${bd.stderr}`);
  assert.deepEqual(parseJsonStream(bd.stdout).map((r) => r['tag']), ['x', 'y']);

  const nf = await run(bin, grpcurlArgs(port, 'Unary', { authority, headers, data: JSON.stringify({ status: 5, message: UNICODE_MESSAGE }) }));
  assert.notEqual(nf.code, 0);
  assert.match(nf.stderr, /Code: NotFound/, nf.stderr);
  assert.ok(nf.stderr.includes(`Message: ${UNICODE_MESSAGE}`), nf.stderr);
}

// ---------------------------------------------------------------------------
// Direct: the peers themselves.
// ---------------------------------------------------------------------------

describe('gRPC test peers, direct (no router)', () => {
  let be: GrpcBackend, raw: H2Backend, client: EchoClient, rawClient: EchoClient;

  before(async () => {
    be = await startGrpcBackend('direct');
    raw = await startH2Backend('raw-direct', rawHandler);
    client = grpcClient(be.url, 'direct.example.com:8443', { localPool: true });
    rawClient = grpcClient(raw.url, 'raw.example.com', { localPool: true });
  });
  after(async () => {
    client.close();
    rawClient.close();
    be.close();
    await raw.close();
  });

  test('unary: metadata both ways, :authority, deadline', () => checkUnaryMetadata(client, 'direct', 'direct.example.com:8443'));
  test('unary with 4 MB messages', () => checkUnaryLarge(client, 'direct'));
  test('server streaming: 10,000 messages; 4 MB messages', () => checkServerStream(client, 'direct'));
  test('client streaming: 10,000 messages; 4 MB messages', () => checkClientStream(client, 'direct'));
  test('bidi streaming: 10,000 messages; 4 MB messages', () => checkBidi(client, 'direct'));
  test('statuses, grpc-message and trailing metadata', () => checkStatuses(client, 'direct'));
  test('client cancel ends the server call', () => checkClientCancel(client, be));
  test('1,000 cancelled RPCs leave no open call', { timeout: 30_000 }, async () => {
    const c0 = be.cancelled;
    await cancelMany(() => grpcClient(be.url, 'direct.example.com', { localPool: true }), 1_000);
    assert.ok(await until(() => be.openCalls === 0), `open calls: ${be.openCalls}`);
    assert.equal(be.cancelled - c0, 1_000);
  });
  test('raw h2: headers, te, grpc-timeout, metadata and trailers', () => checkRawExchange(raw.url, 'raw.example.com', raw, 'raw.example.com'));
  test('raw h2: request trailers', () => checkRawRequestTrailers(raw.url, 'raw.example.com', raw));
  test('raw h2: Trailers-Only', () => checkRawTrailersOnly(raw.url, 'raw.example.com'));
  test('grpc-js server answers errors Trailers-Only', async () => {
    const res = await h2Request(be.url, grpcHeaders('direct.example.com', 'Unary'), { body: frame(encodeRequest({ status: 5, message: 'x' })) });
    assertTrailersOnly(res, 5, 'grpc-js server');
  });
  test('upstream reset: the client gets a status', () => checkUpstreamReset(rawClient));
  test('grpcurl', () => checkGrpcurl(be.port, undefined, 'direct'));
});

// ---------------------------------------------------------------------------
// Through the router.
// ---------------------------------------------------------------------------

describe('gRPC through the router (protocol: h2c)', () => {
  let old: GrpcBackend, neu: GrpcBackend, metered: GrpcBackend, raw: H2Backend, plain: H2Backend;
  let router: Router, refused: number;
  const clients: EchoClient[] = [];
  /** A client with its own connection to the router, for `host`. */
  const to = (host: string): EchoClient => {
    const c = grpcClient(router.url, host, { localPool: true });
    clients.push(c);
    return c;
  };

  before(async () => {
    old = await startGrpcBackend('old');
    neu = await startGrpcBackend('new');
    metered = await startGrpcBackend('metered');
    raw = await startH2Backend('raw', rawHandler);
    plain = await startH2Backend('plain', plainHandler);
    refused = await closedPort();
    router = await startRouter({
      routes: [
        { name: 'kinds', hosts: ['kinds.example.com'], protocol: 'h2c', backends: [{ name: 'old', url: old.url, weight: 1 }] },
        { name: 'split', hosts: ['split.example.com'], protocol: 'h2c', backends: [
          { name: 'old', url: old.url, weight: 90 },
          { name: 'new', url: neu.url, weight: 10 },
        ] },
        { name: 'canary', hosts: ['canary.example.com'], protocol: 'h2c', backends: [
          { name: 'old', url: old.url, weight: 1 },
          { name: 'new', url: neu.url, weight: 0 },
        ] },
        { name: 'rewrite', hosts: ['rewrite.example.com'], protocol: 'h2c', backends: [
          { name: 'new', url: neu.url, weight: 1, hostHeader: 'new.internal.example' },
        ] },
        { name: 'dark', hosts: ['dark.example.com'], protocol: 'h2c', backends: [
          { name: 'old', url: old.url, weight: 0 },
          { name: 'new', url: neu.url, weight: 0 },
        ] },
        { name: 'down', hosts: ['down.example.com'], protocol: 'h2c', backends: [{ name: 'old', url: `http://127.0.0.1:${refused}`, weight: 1 }] },
        { name: 'slow', hosts: ['slow.example.com'], protocol: 'h2c', timeouts: { response: '300ms' }, backends: [{ name: 'old', url: old.url, weight: 1 }] },
        { name: 'raw', hosts: ['raw.example.com'], protocol: 'h2c', backends: [{ name: 'raw', url: raw.url, weight: 1 }] },
        { name: 'plain', hosts: ['plain.example.com'], protocol: 'h2c', backends: [{ name: 'plain', url: plain.url, weight: 1 }] },
        { name: 'metered', hosts: ['metered.example.com'], protocol: 'h2c', backends: [{ name: 'a', url: metered.url, weight: 1 }] },
      ],
    });
  });

  after(async () => {
    for (const c of clients) c.close();
    await router.close();
    old.close();
    neu.close();
    metered.close();
    await Promise.all([raw.close(), plain.close()]);
  });

  describe('headers, metadata and trailers', () => {
    test('pseudo-headers, te: trailers, grpc-timeout, metadata and trailers both ways (raw HTTP/2 peers)',
      () => checkRawExchange(router.url, 'raw.example.com', raw, 'raw.example.com'));

    test('request trailers are forwarded', () => checkRawRequestTrailers(router.url, 'raw.example.com', raw));

    test('an upstream Trailers-Only response reaches the client as Trailers-Only', () => checkRawTrailersOnly(router.url, 'raw.example.com'));

    test('grpc-js: metadata both ways, :authority kept with its port, grpc-timeout forwarded',
      () => checkUnaryMetadata(to('kinds.example.com:8443'), 'old', 'kinds.example.com:8443'));

    test(':authority is set from hostHeader', async () => {
      const r = await unary(to('rewrite.example.com'), { tag: 'rw' });
      assertOk(r, 'rewrite');
      assert.equal(r.replies[0]!.backend, 'new');
      assert.equal(r.replies[0]!.authority, 'new.internal.example');
    });

    test('the proxy adds X-Forwarded-For; the override header never reaches the backend', async () => {
      const r = await unary(to('canary.example.com'), {}, { metadata: { 'x-switchyard-backend': 'new' } });
      assertOk(r, 'override');
      assert.equal(r.replies[0]!.metadata['x-forwarded-for'], '127.0.0.1');
      assert.equal(r.replies[0]!.metadata['x-switchyard-backend'], undefined);
    });

    test('a non-gRPC HTTP/2 client gets the upstream :status and body', async () => {
      const res = await h2Request(router.url, { ':method': 'GET', ':path': '/x', ':authority': 'raw.example.com', ':scheme': 'http', 'x-mode': 'http-404' });
      assert.equal(res.headers[':status'], 404);
      assert.equal(res.headers['x-backend'], 'raw');
      assert.equal(res.body.toString(), 'nothing here\n');
    });
  });

  describe('the four RPC kinds', { timeout: 60_000 }, () => {
    test('unary with 4 MB messages', () => checkUnaryLarge(to('kinds.example.com'), 'old'));
    test('server streaming: 10,000 messages; 4 MB messages', () => checkServerStream(to('kinds.example.com'), 'old'));
    test('client streaming: 10,000 messages; 4 MB messages', () => checkClientStream(to('kinds.example.com'), 'old'));
    test('bidi streaming: 10,000 messages; 4 MB messages', () => checkBidi(to('kinds.example.com'), 'old'));
    test('all four kinds at once on one connection', async () => {
      const c = to('kinds.example.com');
      const rs = await Promise.all([
        unary(c, { tag: 'u', payload: randomBytes(MB4) }),
        serverStream(c, { count: 2_000, size: 64 }),
        clientStream(c, 2_000, () => ({ payload: Buffer.alloc(64) })),
        bidi(c, 2_000, (i) => ({ tag: String(i) })),
      ]);
      for (const r of rs) assertOk(r, 'concurrent kinds');
      assert.equal(rs[1]!.replies.length, 2_000);
      assert.equal(rs[2]!.replies[0]!.index, 2_000);
      assert.equal(rs[3]!.replies.length, 2_000);
    });
  });

  describe('per-RPC split', () => {
    test('5,000 unary RPCs on one connection split 90/10 (±2%)', { timeout: 60_000 }, async () => {
      const c = to('split.example.com');
      const counts: Record<string, number> = {};
      const served0 = { old: old.byMethod['Unary'] ?? 0, new: neu.byMethod['Unary'] ?? 0 };
      for (let i = 0; i < 5_000; i += 250) {
        const batch = await Promise.all(Array.from({ length: 250 }, () => unary(c, {})));
        for (const r of batch) {
          assertOk(r, 'split RPC');
          const name = r.replies[0]!.backend;
          counts[name] = (counts[name] ?? 0) + 1;
        }
      }
      assert.equal((counts['old'] ?? 0) + (counts['new'] ?? 0), 5_000, JSON.stringify(counts));
      console.log(`FIGURE: 5,000 unary RPCs on one connection at 90/10: old ${counts['old']}, new ${counts['new']}`);
      const share = (counts['new'] ?? 0) / 5_000;
      assert.ok(Math.abs(share - 0.10) <= 0.02, `new got ${counts['new']} of 5,000 (${(share * 100).toFixed(1)}%)`);
      // Smooth weighted round-robin is exact over every window of sum(weights).
      assert.ok(Math.abs((counts['new'] ?? 0) - 500) <= 10, `SWRR should give 500 ± rounding, got ${counts['new']}`);
      // The backends agree with what the client saw.
      assert.equal((old.byMethod['Unary'] ?? 0) - served0.old, counts['old']);
      assert.equal((neu.byMethod['Unary'] ?? 0) - served0.new, counts['new']);
    });

    test('x-switchyard-backend as gRPC metadata picks the backend, even at weight 0', async () => {
      const c = to('canary.example.com');
      const plainRuns = await Promise.all(Array.from({ length: 20 }, () => unary(c, {})));
      assert.deepEqual([...new Set(plainRuns.map((r) => r.replies[0]?.backend))], ['old']);
      const forced = await Promise.all(Array.from({ length: 5 }, () => unary(c, {}, { metadata: { 'x-switchyard-backend': 'new' } })));
      assert.deepEqual(forced.map((r) => r.replies[0]?.backend), ['new', 'new', 'new', 'new', 'new']);
      const stream = await serverStream(c, { count: 3 }, { metadata: { 'x-switchyard-backend': 'new' } });
      assertOk(stream, 'override on a stream');
      assert.deepEqual(stream.replies.map((r) => r.backend), ['new', 'new', 'new']);
    });

    test('an override naming no backend is 3 INVALID_ARGUMENT', async () => {
      const r = await unary(to('canary.example.com'), {}, { metadata: { 'x-switchyard-backend': 'nope' } });
      assert.equal(r.code, S.INVALID_ARGUMENT, show(r));
    });
  });

  describe('errors are gRPC statuses', () => {
    test('no route: 12 UNIMPLEMENTED, as a Trailers-Only response', async () => {
      const r = await unary(to('nowhere.example.com'), {});
      assert.equal(r.code, S.UNIMPLEMENTED, show(r));
      const res = await h2Request(router.url, grpcHeaders('nowhere.example.com', 'Unary'), { body: frame(encodeRequest({})) });
      assertTrailersOnly(res, 12, 'no route');
    });

    test('upstream unreachable: 14 UNAVAILABLE', async () => {
      const c = to('down.example.com');
      const r = await unary(c, {});
      assert.equal(r.code, S.UNAVAILABLE, show(r));
      const s = await serverStream(c, { count: 3 });
      assert.equal(s.code, S.UNAVAILABLE, show(s));
      const res = await h2Request(router.url, grpcHeaders('down.example.com', 'Unary'), { body: frame(encodeRequest({})) });
      assertTrailersOnly(res, 14, 'upstream refused');
    });

    test('upstream response timeout: 4 DEADLINE_EXCEEDED, and the backend call is cancelled', async () => {
      const c0 = old.cancelled;
      // The client's own deadline (30 s) would also give 4: the router must answer well before it.
      const r = await unary(to('slow.example.com'), { hang: true }, { deadlineMs: 30_000 });
      assert.equal(r.code, S.DEADLINE_EXCEEDED, show(r));
      assert.ok(r.ms >= 250 && r.ms < 15_000, `answered after ${Math.round(r.ms)} ms (route timeout 300 ms)`);
      assert.ok(await until(() => old.cancelled > c0, 3_000), 'the timed-out upstream stream was reset');
      const metrics = await scrape(router.adminUrl);
      assert.ok((metrics.get('switchyard_upstream_errors_total{route="slow",backend="old",kind="timeout"}') ?? 0) >= 1);
    });

    test('all weights 0: 14 UNAVAILABLE', async () => {
      const r = await unary(to('dark.example.com'), {});
      assert.equal(r.code, S.UNAVAILABLE, show(r));
    });

    test('proxy errors are Trailers-Only responses (unknown override 3, all weights 0 14)', async () => {
      const unknown = await h2Request(router.url, grpcHeaders('canary.example.com', 'Unary', { 'x-switchyard-backend': 'nope' }), { body: frame(encodeRequest({})) });
      assertTrailersOnly(unknown, 3, 'unknown override');
      const dark = await h2Request(router.url, grpcHeaders('dark.example.com', 'Unary'), { body: frame(encodeRequest({})) });
      assertTrailersOnly(dark, 14, 'all weights 0');
    });

    test("the backend's statuses, grpc-message and trailing metadata pass through untouched", () => checkStatuses(to('kinds.example.com'), 'old'));

    test("the backend's Trailers-Only error stays Trailers-Only", async () => {
      const res = await h2Request(router.url, grpcHeaders('kinds.example.com', 'Unary'), { body: frame(encodeRequest({ status: 5, message: UNICODE_MESSAGE })) });
      assertTrailersOnly(res, 5, 'grpc-js backend error');
      assert.equal(decodeURI(String(res.headers['grpc-message'])), UNICODE_MESSAGE);
      assert.equal(res.headers['x-detail'], 'detail from old');
    });
  });

  describe('cancellation', () => {
    test('client cancel resets the upstream stream (mid-stream, before headers, deadline)', () => checkClientCancel(to('kinds.example.com'), old));

    test('upstream reset or dropped session: the client gets UNAVAILABLE or INTERNAL, not a hang', () => checkUpstreamReset(to('raw.example.com')));
  });

  describe('plain HTTP/1.1 clients on an h2c route', () => {
    test('node:http POST with a chunked body and hop-by-hop headers gets 200 and the body', async () => {
      const seen0 = plain.seen.length;
      const body = randomBytes(300_000);
      const res = await new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
        const req = http.request(`${router.url}/upload?x=1`, {
          method: 'POST',
          agent: false,
          headers: {
            host: 'plain.example.com', connection: 'keep-alive, x-hop', 'x-hop': 'drop me', 'keep-alive': 'timeout=5',
            'proxy-connection': 'keep-alive', te: 'gzip', 'x-keep': 'keep me', 'content-type': 'application/octet-stream',
          },
        }, (r) => {
          const chunks: Buffer[] = [];
          r.on('data', (c: Buffer) => chunks.push(c));
          r.on('end', () => resolve({ status: r.statusCode ?? 0, headers: r.headers, body: Buffer.concat(chunks) }));
          r.on('error', reject);
        });
        req.on('error', reject);
        // Several writes without a length: Transfer-Encoding: chunked.
        for (let i = 0; i < body.length; i += 100_000) req.write(body.subarray(i, i + 100_000));
        req.end();
      });
      assert.equal(res.status, 200, res.body.toString());
      assert.equal(res.headers['x-backend'], 'plain');
      const echo = JSON.parse(res.body.toString()) as { backend: string; headers: Record<string, string>; bodyLength: number; bodyDigest: string };
      assert.equal(echo.bodyLength, body.length);
      assert.equal(echo.bodyDigest, sha256(body));
      assert.equal(plain.seen.length, seen0 + 1);
      const h = echo.headers;
      assert.equal(h[':method'], 'POST');
      assert.equal(h[':path'], '/upload?x=1');
      assert.equal(h[':authority'], 'plain.example.com');
      assert.equal(h['x-keep'], 'keep me');
      assert.equal(h['x-forwarded-for'], '127.0.0.1');
      for (const gone of ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'x-hop', 'host', 'upgrade']) {
        assert.equal(h[gone], undefined, `${gone} must not reach an HTTP/2 upstream`);
      }
      assert.ok(h['te'] === undefined || h['te'] === 'trailers', `te: ${h['te']}`);
    });

    test('undici GET: status, headers and a 2 MB body; a 404 passes through', async () => {
      // An agent of our own, closed at the end: an idle keep-alive socket would keep the process alive.
      const dispatcher = new Agent({ connections: 2 });
      try {
        const res = await undiciRequest(`${router.url}/big?size=${2 * 1024 * 1024}`, { headers: { host: 'plain.example.com' }, dispatcher });
        const body = Buffer.from(await res.body.arrayBuffer());
        assert.equal(res.statusCode, 200);
        assert.equal(res.headers['x-backend'], 'plain');
        assert.equal(body.length, 2 * 1024 * 1024);
        const missing = await undiciRequest(`${router.url}/missing`, { headers: { host: 'plain.example.com' }, dispatcher });
        assert.equal(missing.statusCode, 404);
        assert.equal((JSON.parse(await missing.body.text()) as { backend: string }).backend, 'plain');
      } finally {
        await dispatcher.close();
      }
    });
  });

  describe('metrics', () => {
    test('requests_total counts gRPC calls by grpc-status with protocol="h2c"', async () => {
      const c = to('metered.example.com');
      const key = (code: number): string => `switchyard_requests_total{route="metered",backend="a",protocol="h2c",code="${code}"}`;
      const unmatchedKey = 'switchyard_requests_total{route="unmatched",backend="none",protocol="h2c",code="12"}';
      const before0 = await scrape(router.adminUrl);
      const ok = await Promise.all(Array.from({ length: 7 }, () => unary(c, {})));
      for (const r of ok) assertOk(r, 'metered');
      const nf = await Promise.all([
        unary(c, { status: S.NOT_FOUND, message: 'a' }),
        unary(c, { status: S.NOT_FOUND, message: 'b' }),
        serverStream(c, { status: S.NOT_FOUND, after: 2, message: 'c' }), // status in real trailers
      ]);
      for (const r of nf) assert.equal(r.code, S.NOT_FOUND, show(r));
      assert.equal((await unary(to('unmatched.example.com'), {})).code, S.UNIMPLEMENTED);
      let m = before0;
      const settled = await until(async () => {
        m = await scrape(router.adminUrl);
        return (m.get(key(0)) ?? 0) === 7 && (m.get(key(5)) ?? 0) === 3;
      }, 3_000, 100);
      assert.ok(settled, `code="0": ${m.get(key(0))} (want 7), code="5": ${m.get(key(5))} (want 3)`);
      assert.equal(m.get('switchyard_request_duration_seconds_count{route="metered",backend="a",protocol="h2c"}'), 10);
      assert.equal((m.get(unmatchedKey) ?? 0) - (before0.get(unmatchedKey) ?? 0), 1, 'no-route RPC counted under unmatched/none/h2c/12');
      // No HTTP status leaks into the code label of a gRPC route.
      assert.equal(m.get(key(200)), undefined);
    });
  });

  describe('grpcurl (a client we did not write)', () => {
    test('all four kinds, override as -H, statuses', async () => {
      await checkGrpcurl(router.port, 'kinds.example.com', 'old');
      await checkGrpcurl(router.port, 'canary.example.com', 'new', ['x-switchyard-backend: new']);
    });

    test('no route is Unimplemented; unknown override is InvalidArgument', async () => {
      const bin = grpcurlOrFail();
      const nr = await run(bin, grpcurlArgs(router.port, 'Unary', { authority: 'nowhere.example.com', data: '{}' }));
      assert.notEqual(nr.code, 0);
      assert.match(nr.stderr, /Code: Unimplemented/, nr.stderr);
      const bad = await run(bin, grpcurlArgs(router.port, 'Unary', { authority: 'canary.example.com', headers: ['x-switchyard-backend: nope'], data: '{}' }));
      assert.match(bad.stderr, /Code: InvalidArgument/, bad.stderr);
    });
  });
});

// ---------------------------------------------------------------------------
// Leaks: its own router and backend, so the counts are this test's alone.
// ---------------------------------------------------------------------------

describe('no leaks after 10,000 cancelled RPCs', () => {
  let be: GrpcBackend, router: Router;

  before(async () => {
    be = await startGrpcBackend('leak');
    router = await startRouter({
      routes: [{ name: 'leak', hosts: ['leak.example.com'], protocol: 'h2c', backends: [{ name: 'a', url: be.url, weight: 1 }] }],
      shutdown: { drainDelay: '0s', timeout: '3s' },
    });
  });
  after(async () => {
    await router.close();
    be.close();
  });

  test('every upstream call ends, the router has nothing in flight', { timeout: 300_000 }, async () => {
    const N = 10_000;
    const calls0 = be.calls;
    const cancelled0 = be.cancelled;
    const t0 = performance.now();
    // 20 client connections of 500 RPCs each (see cancelMany on why not one).
    await cancelMany(() => grpcClient(router.url, 'leak.example.com', { localPool: true }), N, 500);
    const secs = (performance.now() - t0) / 1000;
    assert.equal(be.calls - calls0, N, 'every RPC reached the backend');
    assert.ok(await until(() => be.openCalls === 0, 30_000), `backend still has ${be.openCalls} open calls`);
    assert.equal(be.cancelled - cancelled0, N, 'the backend saw every cancel');
    // The router finished (and counted) every exchange...
    let total = 0;
    const counted = await until(async () => {
      total = 0;
      for (const [k, v] of await scrape(router.adminUrl)) if (k.startsWith('switchyard_requests_total{route="leak",')) total += v;
      return total === N;
    }, 30_000, 100);
    assert.ok(counted, `router counted ${total} of ${N} exchanges`);
    // ...and a shutdown finds nothing in flight to cut.
    assert.equal(await router.sy.shutdown(), 0, 'requests cut at shutdown');
    console.log(`10,000 cancelled RPCs took ${secs.toFixed(1)} s`);
  });
});
