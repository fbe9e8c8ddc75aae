// HTTP/2 connection lifecycles on both sides of the proxy: upstream sessions
// (more than one when the peer's stream limit is reached, reconnect on GOAWAY,
// REFUSED_STREAM retried) and downstream max connection age, which is what
// lets long-lived gRPC clients reach replicas an HPA added.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { setTimeout as sleep } from 'node:timers/promises';
import { scrape, spawnRouter, startBalancer, startRouter, writeConfig, type RouterProcess } from './helpers.ts';
import { grpcClient, startGrpcBackend, startH2Backend, unary, type EchoClient } from './grpc-helpers.ts';

const clients: EchoClient[] = [];
after(() => { for (const c of clients) c.close(); });

function client(port: number, authority: string): EchoClient {
  const c = grpcClient(`127.0.0.1:${port}`, authority, { localPool: true });
  clients.push(c);
  return c;
}

describe('upstream HTTP/2 sessions', () => {
  test('more sessions are opened when the peer\'s maxConcurrentStreams is reached', async () => {
    const backend = await startGrpcBackend('small', { serverOptions: { 'grpc.max_concurrent_streams': 10 } });
    let sessions = 0;
    const router = await startRouter({ routes: [{ name: 'g', hosts: ['g.example.com'], protocol: 'h2c', backends: [{ name: 'old', url: backend.url, weight: 1 }] }] });
    try {
      const c = client(router.port, 'g.example.com');
      // Each call holds its stream 3 s: all 50 overlap even if the client is slow to start them.
      const results = await Promise.all(Array.from({ length: 50 }, () => unary(c, { sleep_ms: 3_000 })));
      assert.deepEqual(results.map((r) => r.code).filter((code) => code !== 0), []);
      const m = await scrape(router.adminUrl);
      sessions = m.get('switchyard_upstream_h2_sessions') ?? 0;
      assert.ok(sessions >= 5, `50 concurrent RPCs with a limit of 10 streams per session used ${sessions} sessions`);
    } finally {
      await router.close();
      backend.close();
    }
  });

  test('a backend that sends GOAWAY: the proxy reconnects and no RPC fails', async () => {
    const backend = await startH2Backend('goaway', (stream, _headers, b) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.from([0, 0, 0, 0, 0]));
      // Every 20th stream, ask this connection to go away (graceful GOAWAY).
      if (b.streams % 20 === 0) stream.session?.close();
    });
    let connections = 0;
    backend.server.on('session', () => { connections++; });
    const router = await startRouter({ routes: [{ name: 'g', hosts: ['g.example.com'], protocol: 'h2c', backends: [{ name: 'old', url: backend.url, weight: 1 }] }] });
    try {
      const c = client(router.port, 'g.example.com');
      const codes: number[] = [];
      for (let i = 0; i < 20; i++) {
        const batch = await Promise.all(Array.from({ length: 10 }, () => unary(c, {})));
        codes.push(...batch.map((r) => r.code));
      }
      assert.equal(codes.length, 200);
      assert.deepEqual(codes.filter((code) => code !== 0), []);
      assert.ok(connections >= 5, `only ${connections} upstream connections for 10 GOAWAYs`);
    } finally {
      await router.close();
      await backend.close();
    }
  });

  test('REFUSED_STREAM is retried: nothing reached the backend', async () => {
    let refused = 0;
    const backend = await startH2Backend('refuses', (stream, _headers, b) => {
      if (b.streams % 2 === 1) {
        refused++;
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.from([0, 0, 0, 0, 0]));
    });
    const router = await startRouter({ routes: [{ name: 'g', hosts: ['g.example.com'], protocol: 'h2c', backends: [{ name: 'old', url: backend.url, weight: 1 }] }] });
    try {
      const c = client(router.port, 'g.example.com');
      for (let i = 0; i < 20; i++) assert.equal((await unary(c, { payload: Buffer.from('x') })).code, 0);
      assert.equal(refused, 20);
      const m = await scrape(router.adminUrl);
      assert.equal(m.get('switchyard_upstream_errors_total{route="g",backend="old",kind="reset"}'), 20);
    } finally {
      await router.close();
      await backend.close();
    }
  });
});

describe('max connection age', () => {
  const procs: RouterProcess[] = [];
  after(async () => {
    for (const p of procs) p.child.kill('SIGKILL');
  });

  test('a long-lived gRPC client reaches a replica started later, and no RPC fails', async () => {
    const backend = await startGrpcBackend('svc');
    const config = writeConfig({
      entrypoint: { maxConnectionAge: '1s', maxConnectionAgeGrace: '2s' },
      routes: [{ name: 'svc', hosts: ['svc.example.com'], protocol: 'h2c', backends: [{ name: 'old', url: backend.url, weight: 1 }] }],
    });
    const a = await spawnRouter(config);
    procs.push(a);
    const lb = await startBalancer([a.port]);
    const c = client(lb.port, 'svc.example.com');
    let stop = false;
    const codes: number[] = [];
    const load = (async () => {
      while (!stop) {
        codes.push((await unary(c, {})).code);
        await sleep(5);
      }
    })();
    try {
      await sleep(300);
      // The HPA adds a replica: new connections may now land on it.
      const b = await spawnRouter(config);
      procs.push(b);
      lb.targets = [b.port, a.port];
      const served = async (p: RouterProcess): Promise<number> => {
        const m = await scrape(p.adminUrl);
        return m.get('switchyard_requests_total{route="svc",backend="old",protocol="h2c",code="0"}') ?? 0;
      };
      const t0 = Date.now();
      while ((await served(b)) === 0) {
        assert.ok(Date.now() - t0 < 1.1 * 1000 + 2000 + 1000, 'the new replica got no RPC within max age + grace');
        await sleep(50);
      }
      await sleep(200);
      stop = true;
      await load;
      assert.deepEqual(codes.filter((code) => code !== 0), [], `${codes.length} RPCs`);
      assert.ok(await served(a) > 0);
    } finally {
      stop = true;
      await load;
      await lb.close();
      backend.close();
    }
  });
});
