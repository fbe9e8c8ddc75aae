// The grpc-go interop suite, a client and server we did not write
// (google.golang.org/grpc/interop/{client,server} v1.85.0, installed by
// .ci/run), through the router as a process on a weighted 90/10 h2c route:
// every standard case, the soak cases, and the empty_stream case on cold
// upstream sessions, where a half-close with no message once got lost.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { closedPort, scrape, spawnRouter, writeConfig, type RouterProcess } from './helpers.ts';
import { findGoTool } from './go-tools.ts';

const INSTALL = 'go install google.golang.org/grpc/interop/{client,server}@v1.85.0, renamed grpc-interop-{client,server} (bash .ci/run does)';

function tool(name: string, envVar: string): string {
  const bin = findGoTool(name, envVar);
  assert.ok(bin !== undefined, `${name} not found ($${envVar}, $GOPATH/bin, ~/go/bin, PATH). Install it: ${INSTALL}`);
  return bin;
}

/** Every case of the interop suite that needs no TLS, credentials or load balancer policy. */
const STANDARD_CASES = [
  'empty_unary', 'large_unary', 'client_streaming', 'server_streaming', 'ping_pong', 'empty_stream',
  'timeout_on_sleeping_server', 'cancel_after_begin', 'cancel_after_first_response', 'custom_metadata',
  'status_code_and_message', 'special_status_message', 'unimplemented_method', 'unimplemented_service',
];

// A call the router loses would hang until its response timeout; this one is
// short so that a hang shows as a failure, not as a slow test.
const RESPONSE_TIMEOUT = '10s';
// A client run that takes this long has hung.
const CLIENT_KILL_MS = 30_000;

interface InteropServer {
  readonly port: number;
  readonly child: ChildProcess;
}

async function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

async function startInteropServer(): Promise<InteropServer> {
  const port = await closedPort();
  const child = spawn(tool('grpc-interop-server', 'GRPC_INTEROP_SERVER'), [`--port=${port}`], { stdio: 'ignore' });
  for (let i = 0; i < 200 && !await listening(port); i++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(await listening(port), 'the interop server did not start listening');
  return { port, child };
}

/** Runs the interop client for one case; resolves with its exit code and output. */
function interopClient(port: number, testCase: string, extra: string[] = []): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(tool('grpc-interop-client', 'GRPC_INTEROP_CLIENT'),
      ['--server_host=127.0.0.1', `--server_port=${port}`, `--test_case=${testCase}`, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { out += c.toString(); });
    const kill = setTimeout(() => { out += `\n(killed after ${CLIENT_KILL_MS} ms: hung)`; child.kill('SIGKILL'); }, CLIENT_KILL_MS);
    child.once('close', (code) => { clearTimeout(kill); resolve({ code, out }); });
  });
}

function routerConfig(old: InteropServer, next: InteropServer): string {
  // The interop client sends :authority = 127.0.0.1:PORT; hosts match without the port.
  return writeConfig({
    routes: [{
      name: 'interop', hosts: ['127.0.0.1'], protocol: 'h2c', timeouts: { response: RESPONSE_TIMEOUT },
      backends: [
        { name: 'old', url: `http://127.0.0.1:${old.port}`, weight: 90 },
        { name: 'new', url: `http://127.0.0.1:${next.port}`, weight: 10 },
      ],
    }],
  });
}

async function stop(router: RouterProcess): Promise<void> {
  router.child.kill('SIGTERM');
  await router.exited;
}

/** grpc.testing.TestService/FullDuplexCall half-closed at once, no message either way (the empty_stream case), by grpc-js. */
function emptyStream(client: grpc.Client, deadlineMs: number): Promise<{ code: number; details: string; messages: number }> {
  return new Promise((resolve) => {
    const call = client.makeBidiStreamRequest('/grpc.testing.TestService/FullDuplexCall',
      (b: Buffer) => b, (b: Buffer) => b, new grpc.Metadata(), { deadline: Date.now() + deadlineMs });
    let messages = 0;
    call.on('data', () => { messages++; });
    call.on('error', () => {});
    call.on('status', (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details, messages }));
    call.end();
  });
}

describe('grpc-go interop suite through a 90/10 h2c route', () => {
  let old: InteropServer;
  let next: InteropServer;
  let config: string;

  before(async () => {
    old = await startInteropServer();
    next = await startInteropServer();
    config = routerConfig(old, next);
  });
  after(() => {
    old?.child.kill();
    next?.child.kill();
  });

  test('empty_stream as the first call on a freshly started router, five times over', async () => {
    for (let i = 0; i < 5; i++) {
      const router = await spawnRouter(config);
      try {
        const r = await interopClient(router.port, 'empty_stream');
        assert.equal(r.code, 0, `run ${i + 1}: ${r.out}`);
      } finally {
        await stop(router);
      }
    }
  });

  test('every standard case, rpc_soak and channel_soak; both backends take part', async () => {
    const router = await spawnRouter(config);
    try {
      const failed: string[] = [];
      for (const c of STANDARD_CASES) {
        const r = await interopClient(router.port, c);
        if (r.code !== 0) failed.push(`${c}: ${r.out.trim().split('\n').slice(-3).join(' | ')}`);
      }
      // Bounded: a few seconds each on a loaded machine.
      const soak = ['--soak_iterations=20', '--soak_overall_timeout_seconds=25', '--soak_per_iteration_max_acceptable_latency_ms=5000'];
      for (const c of ['rpc_soak', 'channel_soak']) {
        const r = await interopClient(router.port, c, soak);
        if (r.code !== 0) failed.push(`${c}: ${r.out.trim().split('\n').slice(-3).join(' | ')}`);
      }
      assert.deepEqual(failed, []);
      const m = await scrape(router.adminUrl);
      for (const backend of ['old', 'new']) {
        const ok = m.get(`switchyard_requests_total{route="interop",backend="${backend}",protocol="h2c",code="0"}`) ?? 0;
        assert.ok(ok > 0, `backend ${backend} answered no RPC with OK`);
      }
    } finally {
      await stop(router);
    }
  });

  test('1,000 empty streams under concurrent load on a fresh router: none hangs', async () => {
    const router = await spawnRouter(config);
    // Separate connections, 250 calls in flight: upstream sessions fill up
    // (100 streams each) and new ones are connecting while calls half-close.
    const clients = Array.from({ length: 5 }, () => new grpc.Client(`127.0.0.1:${router.port}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }));
    try {
      const codes = new Map<string, number>();
      for (let wave = 0; wave < 4; wave++) {
        const results = await Promise.all(Array.from({ length: 250 }, (_, i) => emptyStream(clients[i % clients.length]!, 15_000)));
        for (const r of results) {
          const key = r.code === 0 && r.messages === 0 ? 'ok' : `${r.code} ${r.details} (${r.messages} messages)`;
          codes.set(key, (codes.get(key) ?? 0) + 1);
        }
      }
      assert.deepEqual([...codes], [['ok', 1000]]);
    } finally {
      for (const c of clients) c.close();
      await stop(router);
    }
  });
});
