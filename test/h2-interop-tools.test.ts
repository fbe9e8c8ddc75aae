// HTTP/2 clients we did not write, through the router to real backends:
// curl (--http2-prior-knowledge) moving 8 MiB each way byte-exact to an
// HTTP/1.1 and an h2c backend, h2load's multiplexed load, and ghz's gRPC load
// against a grpc-js backend (grpcurl: test/grpc.test.ts; the grpc-go interop
// client and server: test/grpc-interop.test.ts). Counts and bytes only, never rates.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, startBackend, startRouter, type Backend, type Router } from './helpers.ts';
import { PROTO_DIR, PROTO_FILE, SERVICE, startGrpcBackend, type GrpcBackend } from './grpc-helpers.ts';
import { findGoTool } from './go-tools.ts';

const MB = 1024 * 1024;
const BIG = pattern(8 * MB);

function pattern(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >>> 11)) & 0xff;
  return b;
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

let h1: Backend;
let h2: http2.Http2Server;
let grpcBackend: GrpcBackend;
let router: Router;
let dir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'switchyard-interop-'));
  // GET /big: 8 MiB; POST: the body's length and sha256; anything else: "ok".
  h1 = await startBackend('h1', (req, res) => {
    if (req.url === '/big') { res.end(BIG); return; }
    const hash = createHash('sha256');
    let n = 0;
    req.on('data', (c: Buffer) => { hash.update(c); n += c.length; });
    req.on('end', () => res.end(req.method === 'POST' ? `${n} ${hash.digest('hex')}` : 'ok'));
  });
  h2 = http2.createServer();
  h2.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    if (headers[':path'] === '/big') {
      stream.respond({ ':status': 200 });
      stream.end(BIG);
      return;
    }
    const hash = createHash('sha256');
    let n = 0;
    stream.on('data', (c: Buffer) => { hash.update(c); n += c.length; });
    stream.on('end', () => {
      stream.respond({ ':status': 200 });
      stream.end(headers[':method'] === 'POST' ? `${n} ${hash.digest('hex')}` : 'ok');
    });
  });
  await new Promise<void>((resolve) => h2.listen(0, '127.0.0.1', resolve));
  grpcBackend = await startGrpcBackend('g');
  router = await startRouter({
    routes: [
      { name: 'h1', hosts: ['h1.test'], backends: [{ name: 'a', url: h1.url, weight: 1 }] },
      { name: 'h2', hosts: ['h2.test'], protocol: 'h2c', backends: [{ name: 'a', url: `http://127.0.0.1:${(h2.address() as AddressInfo).port}`, weight: 1 }] },
      { name: 'g', hosts: ['grpc.test'], protocol: 'h2c', backends: [{ name: 'a', url: grpcBackend.url, weight: 1 }] },
    ],
  });
});

after(async () => {
  await router.close();
  await h1.close();
  await new Promise<void>((resolve) => h2.close(() => resolve()));
  grpcBackend.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('curl --http2-prior-knowledge, byte-exact', () => {
  for (const host of ['h1.test', 'h2.test']) {
    test(`8 MiB down and 8 MiB up through ${host}`, async () => {
      const out = join(dir, `${host}.down`);
      const down = await run('curl', ['-sS', '--http2-prior-knowledge', '-H', `Host: ${host}`, '-o', out, '-w', '%{http_version} %{http_code}', `${router.url}/big`]);
      assert.equal(down.code, 0, down.stderr);
      assert.equal(down.stdout, '2 200');
      assert.equal(sha(readFileSync(out)), sha(BIG));
      const file = join(dir, 'up');
      writeFileSync(file, BIG);
      const up = await run('curl', ['-sS', '--http2-prior-knowledge', '-H', `Host: ${host}`, '--data-binary', `@${file}`, `${router.url}/up`]);
      assert.equal(up.code, 0, up.stderr);
      assert.equal(up.stdout, `${BIG.length} ${sha(BIG)}`);
    });
  }
});

describe('h2load', () => {
  for (const host of ['h1.test', 'h2.test']) {
    test(`2,000 requests on 4 connections, 16 streams each, through ${host}: every one 2xx`, async () => {
      const r = await run('h2load', ['-n', '2000', '-c', '4', '-m', '16', '-H', `:authority: ${host}`, `${router.url}/small`]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout/, r.stdout);
      assert.match(r.stdout, /status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx/, r.stdout);
    });
  }
});

describe('ghz', () => {
  test('1,000 unary calls, 8 at a time on 2 connections, to a grpc-js backend: every one OK', async () => {
    const ghz = findGoTool('ghz', 'GHZ');
    assert.ok(ghz !== undefined, 'ghz not found: go install github.com/bojand/ghz/cmd/ghz@latest');
    const before = grpcBackend.calls;
    const r = await run(ghz, ['--insecure', '--import-paths', PROTO_DIR, '--proto', PROTO_FILE, '--call', `${SERVICE}.Unary`,
      '--authority', 'grpc.test', '-d', '{"tag":"ghz","payload":"aGVsbG8="}', '-n', '1000', '-c', '8', '--connections', '2',
      '-O', 'json', `127.0.0.1:${router.port}`]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { count: number; statusCodeDistribution: Record<string, number>; errorDistribution?: Record<string, number> };
    assert.equal(report.count, 1000);
    assert.deepEqual(report.statusCodeDistribution, { OK: 1000 }, JSON.stringify(report.errorDistribution));
    assert.equal(grpcBackend.calls - before, 1000);
  });
});
