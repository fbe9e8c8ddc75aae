// Correctness of the frame-level proxy prototype (bench/frame-proxy/proxy.ts),
// with peers we did not write:
//   1. the bench's gRPC unary call (bench.Echo/Unary on the grpc-go echo
//      backend of bench/go): 2,000 calls over one node:http2 connection,
//      each answer checked for status 200, the echoed message and grpc-status 0;
//   2. the grpc-go interop client's standard cases through a 90/10 split over
//      two grpc-go interop servers (the cases test/grpc-interop.test.ts runs);
//   3. h2spec against the proxy in front of a node:http2 h2c backend.
//
//   node bench/frame-proxy/verify.ts
//
// Prints one line per check and a summary; exits 1 if a gRPC check fails
// (h2spec failures are counted, not fatal: they are part of the decision).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildGoTools } from '../tools.ts';
import { findGoTool } from '../../test/go-tools.ts';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '../..');
const PROXY = join(ROOT, 'bench/frame-proxy/proxy.ts');
const CASES = [
  'empty_unary', 'large_unary', 'client_streaming', 'server_streaming', 'ping_pong', 'empty_stream',
  'timeout_on_sleeping_server', 'cancel_after_begin', 'cancel_after_first_response', 'custom_metadata',
  'status_code_and_message', 'special_status_message', 'unimplemented_method', 'unimplemented_service',
];

const children: ChildProcess[] = [];

function tool(name: string, env: string): string {
  const bin = findGoTool(name, env);
  if (bin === undefined) throw new Error(`${name} not found (~/go/bin, $GOPATH/bin, PATH)`);
  return bin;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function listening(port: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); r(true); });
      s.once('error', () => r(false));
    });
    if (ok) return;
    await sleep(25);
  }
  throw new Error(`nothing listens on ${port}`);
}

async function startServer(cmd: string, args: string[], port: number): Promise<ChildProcess> {
  const child = spawn(cmd, args, { stdio: 'ignore' });
  children.push(child);
  await listening(port);
  return child;
}

/** Starts the prototype in front of `backends` (HOST:PORT=WEIGHT); resolves with its port. */
async function startProxy(backends: string[]): Promise<{ port: number; child: ChildProcess; out: () => string }> {
  const child = spawn(process.execPath, [PROXY, '--listen', '127.0.0.1:0', ...backends.flatMap((b) => ['--backend', b])],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stderr!.on('data', (c: Buffer) => { out += c.toString(); });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /listening (\d+)/.exec(out);
      if (m !== null) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`proxy exited ${code}:\n${out}`)));
  });
  return { port, child, out: () => out };
}

function runTool(cmd: string, args: string[], killMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { out += c.toString(); });
    const kill = setTimeout(() => { out += '\n(killed: hung)'; child.kill('SIGKILL'); }, killMs);
    child.once('close', (code) => { clearTimeout(kill); resolve({ code, out }); });
  });
}

const MESSAGE = Buffer.from('0a10' + Buffer.from('switchyard-bench').toString('hex'), 'hex');
const FRAME = Buffer.concat([Buffer.from([0, 0, 0, 0, MESSAGE.length]), MESSAGE]);

/** `n` bench unary calls, 64 at a time, over one connection; returns how many were answered exactly right. */
async function benchCalls(port: number, n: number): Promise<number> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  let ok = 0;
  const call = (): Promise<void> => new Promise((resolve) => {
    const req = session.request({
      ':method': 'POST', ':path': '/bench.Echo/Unary', ':authority': 'grpc.bench', 'content-type': 'application/grpc', te: 'trailers',
    });
    let status = 0;
    const body: Buffer[] = [];
    let grpcStatus: unknown;
    req.on('response', (h) => { status = Number(h[':status']); });
    req.on('trailers', (t) => { grpcStatus = t['grpc-status']; });
    req.on('data', (c: Buffer) => body.push(c));
    req.on('close', () => {
      if (status === 200 && grpcStatus === '0' && Buffer.concat(body).equals(FRAME)) ok++;
      resolve();
    });
    req.on('error', () => {});
    req.end(FRAME);
  });
  for (let done = 0; done < n; done += 64) await Promise.all(Array.from({ length: Math.min(64, n - done) }, call));
  session.close();
  return ok;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'frame-verify-'));
  let failed = false;
  try {
    // 1. The bench's unary call.
    buildGoTools(ROOT, join(dir, 'bin'));
    const echoPort = await freePort();
    await startServer(join(dir, 'bin/grpc-backend'), ['-addr', `127.0.0.1:${echoPort}`], echoPort);
    const p1 = await startProxy([`127.0.0.1:${echoPort}`]);
    const n = 2000;
    const ok = await benchCalls(p1.port, n);
    console.log(`bench.Echo/Unary: ${ok} of ${n} answered with the echoed message and grpc-status 0`);
    if (ok !== n) failed = true;

    // 2. The grpc-go interop suite, 90/10.
    const [a, b] = [await freePort(), await freePort()];
    const server = tool('grpc-interop-server', 'GRPC_INTEROP_SERVER');
    await startServer(server, [`--port=${a}`], a);
    await startServer(server, [`--port=${b}`], b);
    const p2 = await startProxy([`127.0.0.1:${a}=90`, `127.0.0.1:${b}=10`]);
    const client = tool('grpc-interop-client', 'GRPC_INTEROP_CLIENT');
    let passed = 0;
    for (const c of CASES) {
      const r = await runTool(client, ['--server_host=127.0.0.1', `--server_port=${p2.port}`, `--test_case=${c}`], 30_000);
      const line = r.code === 0 ? 'pass' : `FAIL (exit ${r.code}): ${r.out.trim().split('\n').slice(-2).join(' | ')}`;
      console.log(`interop ${c}: ${line}`);
      if (r.code === 0) passed++;
      else failed = true;
    }
    console.log(`interop: ${passed} of ${CASES.length} cases pass`);

    // 3. h2spec, in front of a node:http2 backend (several cases need a body of at least 5 bytes).
    const h2 = http2.createServer((req, res) => { req.resume(); req.on('end', () => res.end('a body for h2spec to read\n')); });
    await new Promise<void>((r) => h2.listen(0, '127.0.0.1', r));
    const p3 = await startProxy([`127.0.0.1:${(h2.address() as net.AddressInfo).port}`]);
    const r = await runTool(tool('h2spec', 'H2SPEC'), ['-h', '127.0.0.1', '-p', String(p3.port), '-o', '3'], 600_000);
    const summary = /(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed/.exec(r.out);
    const failures: string[] = [];
    let section = '';
    for (const line of r.out.slice(Math.max(0, r.out.indexOf('Failures:'))).split('\n')) {
      const s = /^\s*(\d+(?:\.\d+)*)\. /.exec(line);
      if (s !== null) section = s[1]!;
      const c = /^\s*× (\d+):\s*(.*)/.exec(line);
      if (c !== null) failures.push(`${section} #${c[1]} ${c[2]}`);
    }
    console.log(`h2spec: ${summary?.[0] ?? 'no summary'}`);
    for (const f of failures) console.log(`  h2spec failure ${f}`);
    console.log(`proxy still running after h2spec: ${p3.child.exitCode === null}`);
    h2.close();
  } finally {
    for (const c of children) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
  if (failed) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack : String(err));
  for (const c of children) c.kill('SIGKILL');
  process.exitCode = 1;
});
