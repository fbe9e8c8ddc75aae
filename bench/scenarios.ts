// The scenarios and the load tools that drive them. Each measured run has a
// warm-up before it that is not counted, is bounded in time, and records how
// busy the proxy (its process tree) and the load core were meanwhile.
//
// Load tools, all on the load core:
//   wrk        HTTP/1.1 keep-alive at saturation (one thread, 64 connections)
//   h2load     h2c, multiplexed (8 connections x 32 streams); also gRPC-framed
//              unary calls at saturation (a gRPC client library costs ~7x more per call)
//   ghz        real gRPC unary calls (grpc-go client, 8 connections, 64 workers)
//   fixedrate  HTTP/1.1 or gRPC unary at a fixed rate, open loop, with latency
//              percentiles (bench/go/fixedrate)
//   the harness itself, for the memory scenario's idle connections
import { writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import net, { type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Backends, BodyPath } from './backends.ts';
import { HOSTS, type RunningPeer } from './peers.ts';
import { CpuMeter, LOAD_CORE, runCommand, treeRss } from './procs.ts';

export type ScenarioId = 'h1-small' | 'h1-1k' | 'h1-64k' | 'h2c' | 'grpc' | 'grpc-ghz' | 'latency' | 'grpc-latency' | 'split' | 'routes' | 'memory';

export interface ScenarioInfo {
  readonly title: string;
  /** How it is driven, for the report. */
  readonly how: string;
}

export const SCENARIOS: Record<ScenarioId, ScenarioInfo> = {
  'h1-small': { title: 'HTTP/1.1 keep-alive, 13 B body', how: 'wrk -t1 -c64, saturation' },
  'h1-1k': { title: 'HTTP/1.1 keep-alive, 1 KB body', how: 'wrk -t1 -c64, saturation' },
  'h1-64k': { title: 'HTTP/1.1 keep-alive, 64 KB body', how: 'wrk -t1 -c64, saturation' },
  h2c: { title: 'h2c multiplexed, 13 B body', how: 'h2load -t1 -c8 -m32, saturation; h2c upstream' },
  grpc: { title: 'gRPC unary, saturation', how: 'h2load -t1 -c8 -m32 posting gRPC-framed requests to bench.Echo/Unary; grpc-go backend; responses without the echoed message count as failures' },
  'grpc-ghz': { title: 'gRPC unary, real client (ghz)', how: 'ghz --connections 8 -c 64 (grpc-go client); ghz itself is costly per call, so this figure is bounded by the client — it checks the real gRPC path (status in trailers) end to end' },
  latency: { title: 'HTTP/1.1 latency at a fixed rate', how: 'bench/go/fixedrate, 50 connections, open loop (no coordinated omission)' },
  'grpc-latency': {
    title: 'gRPC unary latency at a fixed rate',
    how: 'bench/go/fixedrate -grpc: grpc-go client, 8 h2c connections, each call started when due whatever is in flight (open loop, no coordinated omission); calls whose echo is wrong count as failures',
  },
  split: { title: 'Weighted split 90/10 under load', how: 'wrk -t1 -c64 on split.bench; each backend counts what it got' },
  routes: { title: 'Route lookup cost: 1 vs 10,000 hosts', how: 'wrk -t1 -c64 with a Lua request table cycling over the hosts (switchyard only)' },
  memory: { title: 'Memory: idle RSS and idle keep-alive connections', how: 'RSS of the proxy process tree. A freshly started proxy (an instance of its own, before the load scenarios): RSS 1 s after start, then idle RSS once it settled (20 s in a full run; the config worker idles out and V8 shrinks its heap) after one request on each route (HTTP/1.1, split, h2c, gRPC), then with N idle connections (one request each, then held open), read 1 s after they opened and again once they have been idle as long as the idle RSS settled (20 s in a full run; the per-connection figure is the settled one from 2026-11-30 17:30 UTC on, the 1 s one before). The instance that ran the load scenarios: idle RSS after them, then with N idle connections. switchyard starts with Node\'s compile cache filled the way its image\'s build fills it (Dockerfile; runs from 2026-11-30 11:30 UTC on), so that, like the image, it neither strips types at start nor loads the type stripper' },
};

export const FIXED_RATE = 5000;
/** Issue 15's gRPC tail-latency rate. */
export const GRPC_FIXED_RATE = 2000;
const GRPC_LATENCY_CONNS = 8;
const WRK_CONNS = 64;

export interface Settings {
  readonly warmupS: number;
  readonly measureS: number;
  readonly idleConns: number;
  readonly dir: string;
  /** Where the Go tools were built. */
  readonly bin: string;
  readonly ghz: string;
  readonly root: string;
}

/** Memory of a freshly started proxy (no load scenarios before it). */
export interface FreshMemory {
  readonly conns: number;
  /** 1 s after start, no request yet. */
  readonly startBytes: number;
  /** After one request on each route, once settled (up to 20 s): the idle RSS the issue-15 target is judged on. */
  readonly idleBytes: number;
  /** With `conns` idle keep-alive connections open, settled as long as `idleBytes` was (1 s in runs before 2026-11-30 17:30 UTC). */
  readonly loadedBytes: number;
  /** The same connections 1 s after they opened (runs from 2026-11-30 17:30 UTC on). */
  readonly openedBytes?: number;
}

export interface Latency {
  readonly meanUs: number; readonly p50Us: number; readonly p90Us: number;
  readonly p99Us: number; readonly p999Us: number; readonly maxUs: number;
  /** gRPC mode: how late the client started calls against the schedule (its own delay, not charged to the server). */
  readonly lagP99Us?: number;
}

export interface Measurement {
  readonly scenario: ScenarioId;
  readonly peer: string;
  /** A variant within the scenario (routes: "1 host" / "10,000 hosts"). */
  readonly variant?: string;
  readonly ok: boolean;
  readonly error?: string;
  readonly requests?: number;
  /** Failed requests: socket errors, non-2xx, gRPC errors. */
  readonly failures?: number;
  readonly rps?: number;
  readonly mbPerS?: number;
  readonly latency?: Latency;
  readonly split?: { readonly a: number; readonly b: number };
  /**
   * RSS right after start (the instance that ran the load), after the other scenarios' load (idle), and with the
   * idle connections open; `fresh`: the same on a freshly started instance (absent in runs up to 2026-11-30 06:46).
   */
  readonly memory?: {
    readonly conns: number; readonly startBytes: number; readonly idleBytes: number; readonly loadedBytes: number;
    readonly fresh?: FreshMemory;
  };
  /** Share of one core the proxy used during the measured run. */
  readonly proxyCpu?: number;
  /** Seconds per second the proxy's threads waited for a core another process had (absent in runs before 2026-11-30 11:30). */
  readonly proxyWait?: number;
  /** Share of the load core (generator + backend) that was busy. */
  readonly loadCore?: number;
}

/** A measurement failed if it has no requests or more than 0.1% failures. */
function judged(m: Omit<Measurement, 'ok'>): Measurement {
  if (m.error !== undefined) return { ...m, ok: false };
  const requests = m.requests ?? 0;
  const failures = m.failures ?? 0;
  if (requests === 0) return { ...m, ok: false, error: 'no successful requests' };
  if (failures > requests / 1000) return { ...m, ok: false, error: `${failures} of ${requests} requests failed` };
  return { ...m, ok: true };
}

function failed(scenario: ScenarioId, peer: string, err: unknown, variant?: string): Measurement {
  const error = err instanceof Error ? err.message : String(err);
  return { scenario, peer, ok: false, error: error.split('\n').slice(0, 6).join(' / '), ...(variant === undefined ? {} : { variant }) };
}

// --- wrk -------------------------------------------------------------------

// wrk reports through this Lua hook as one JSON line, so nothing is scraped
// from its human-readable output.
const WRK_DONE = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\n{"requests":%d,"durationUs":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout))
end
`;

/**
 * A request table cycling over `hosts` hosts (n = 1: the h1 route only). The
 * order is a fixed permutation (k * 7919 mod n), so consecutive requests do
 * not hit neighbouring hosts.
 */
function hostTableScript(hosts: number): string {
  const host = hosts === 1 ? `"${HOSTS.h1}"` : `"svc-" .. ((k * 7919) % ${hosts}) .. ".bench"`;
  return `
local reqs = {}
local i = 0
init = function(args)
  for k = 0, ${hosts - 1} do
    reqs[k + 1] = wrk.format("GET", "/small", { Host = ${host} })
  end
end
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
${WRK_DONE}`;
}

interface WrkRun { port: number; host: string; path: BodyPath; script?: string }

async function wrk(s: Settings, run: WrkRun, seconds: number): Promise<{ requests: number; failures: number; rps: number; mbPerS: number }> {
  const script = join(s.dir, `wrk-${Math.random().toString(36).slice(2)}.lua`);
  writeFileSync(script, run.script ?? WRK_DONE);
  const r = await runCommand('wrk', [
    '-t1', `-c${WRK_CONNS}`, `-d${seconds}s`, '--timeout', '5s', '-s', script,
    '-H', `Host: ${run.host}`, `http://127.0.0.1:${run.port}${run.path}`,
  ], { core: LOAD_CORE, timeoutMs: (seconds + 15) * 1000 });
  const line = r.stdout.split('\n').reverse().find((l) => l.startsWith('{"requests"'));
  if (line === undefined) throw new Error(`wrk failed (exit ${r.code}${r.timedOut ? ', timed out' : ''}): ${(r.stderr || r.stdout).trim().slice(-500)}`);
  const j = JSON.parse(line) as Record<string, number>;
  const secs = j['durationUs']! / 1e6;
  const failures = j['connect']! + j['read']! + j['write']! + j['status']! + j['timeout']!;
  return { requests: j['requests']!, failures, rps: (j['requests']! - j['status']!) / secs, mbPerS: j['bytes']! / secs / 1e6 };
}

/** Warm-up run (discarded), then the measured run with the CPU meter on. */
async function saturateH1(s: Settings, peer: RunningPeer, scenario: ScenarioId, run: WrkRun, variant?: string): Promise<Measurement> {
  try {
    await wrk(s, run, s.warmupS);
    const meter = new CpuMeter(peer.pid);
    meter.start();
    const r = await wrk(s, run, s.measureS);
    return judged({ scenario, peer: peer.name, ...(variant === undefined ? {} : { variant }), ...r, ...meter.stop() });
  } catch (err) {
    return failed(scenario, peer.name, err, variant);
  }
}

export function h1(s: Settings, peer: RunningPeer, scenario: 'h1-small' | 'h1-1k' | 'h1-64k'): Promise<Measurement> {
  const path: BodyPath = scenario === 'h1-small' ? '/small' : scenario === 'h1-1k' ? '/1k' : '/64k';
  return saturateH1(s, peer, scenario, { port: peer.targets.h1, host: HOSTS.h1, path });
}

/** Switchyard with 1 route (the normal config) or with 10,000 more: same Lua request path either way. */
export function routes(s: Settings, peer: RunningPeer, hosts: number): Promise<Measurement> {
  const variant = hosts === 1 ? '1 host' : `${hosts.toLocaleString('en-US')} hosts`;
  return saturateH1(s, peer, 'routes', { port: peer.targets.h1, host: HOSTS.h1, path: '/small', script: hostTableScript(hosts) }, variant);
}

export async function split(s: Settings, peer: RunningPeer, backends: Backends): Promise<Measurement> {
  const port = peer.targets.split;
  if (port === undefined) return failed('split', peer.name, 'not supported');
  try {
    const run: WrkRun = { port, host: HOSTS.split, path: '/small' };
    await wrk(s, run, s.warmupS);
    await backends.resetSplitCounts();
    const meter = new CpuMeter(peer.pid);
    meter.start();
    const r = await wrk(s, run, s.measureS);
    const cpu = meter.stop();
    const counts = await backends.splitCounts();
    return judged({ scenario: 'split', peer: peer.name, ...r, ...cpu, split: counts });
  } catch (err) {
    return failed('split', peer.name, err);
  }
}

// --- h2load ----------------------------------------------------------------

/** One gRPC unary request message as it goes on the wire: bench.Msg{payload: "switchyard-bench"}, length-prefixed. */
const GRPC_MESSAGE = Buffer.from('0a10' + Buffer.from('switchyard-bench').toString('hex'), 'hex');
const GRPC_FRAME = Buffer.concat([Buffer.from([0, 0, 0, 0, GRPC_MESSAGE.length]), GRPC_MESSAGE]);

interface H2Run {
  readonly port: number;
  readonly authority: string;
  readonly path: string;
  readonly headers?: readonly string[];
  readonly bodyFile?: string;
  /** DATA bytes every good response carries (the echoed gRPC frame), to catch bodiless gRPC errors that h2load counts as 200s. */
  readonly bytesPerResponse?: number;
}

interface H2Result { requests: number; failures: number; rps: number; mbPerS: number }

async function h2loadRun(run: H2Run, seconds: number): Promise<H2Result> {
  // -H ':authority: …' sets the pseudo-header (a `host` header would be sent as a second, conflicting one).
  const args = ['-t1', '-c8', '-m32', '-D', `${seconds}s`, '-H', `:authority: ${run.authority}`];
  for (const h of run.headers ?? []) args.push('-H', h);
  if (run.bodyFile !== undefined) args.push('-d', run.bodyFile);
  args.push(`http://127.0.0.1:${run.port}${run.path}`);
  const r = await runCommand('h2load', args, { core: LOAD_CORE, timeoutMs: (seconds + 15) * 1000 });
  const finished = /finished in [\d.]+\w+, ([\d.]+) req\/s, ([\d.]+)(\w*B)\/s/.exec(r.stdout);
  const reqs = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(r.stdout);
  const codes = /status codes: (\d+) 2xx/.exec(r.stdout);
  const traffic = /traffic: .*, [\d.]+\w*B \((\d+)\) data/.exec(r.stdout);
  if (finished === null || reqs === null || codes === null || traffic === null) {
    throw new Error(`h2load failed (exit ${r.code}${r.timedOut ? ', timed out' : ''}): ${(r.stderr || r.stdout).trim().slice(-500)}`);
  }
  const unit = { B: 1e-6, KB: 1024 / 1e6, MB: 1024 * 1024 / 1e6, GB: 1024 ** 3 / 1e6 }[finished[3]!] ?? 0;
  const done = Number(reqs[3]);
  // (done can be below the 2xx count: h2load counts a status when the response head arrives, and stops
  // with some of those responses unfinished; that made the failures of earlier runs negative.)
  let failures = Number(reqs[5]) + Number(reqs[6]) + Number(reqs[7]) + Math.max(0, done - Number(codes[1]));
  if (run.bytesPerResponse !== undefined) {
    // A response without its message (a Trailers-Only gRPC error) is still a 200 to h2load.
    // (Why the warm-up is a run of its own: h2load's --warm-up-time does not reset the byte counters.)
    failures = Math.max(failures, done - Math.floor(Number(traffic[1]) / run.bytesPerResponse));
  }
  const good = Math.max(0, done - failures);
  return { requests: done, failures, rps: Number(finished[1]) * (done > 0 ? good / done : 0), mbPerS: Number(finished[2]) * unit };
}

async function h2load(s: Settings, peer: RunningPeer, scenario: ScenarioId, run: H2Run): Promise<Measurement> {
  try {
    await h2loadRun(run, s.warmupS);
    const meter = new CpuMeter(peer.pid);
    meter.start();
    const r = await h2loadRun(run, s.measureS);
    return judged({ scenario, peer: peer.name, ...r, ...meter.stop() });
  } catch (err) {
    return failed(scenario, peer.name, err);
  }
}

export function h2c(s: Settings, peer: RunningPeer): Promise<Measurement> {
  return h2load(s, peer, 'h2c', { port: peer.targets.h2c, authority: HOSTS.h2c, path: '/small' });
}

/**
 * gRPC unary calls at saturation: h2load posting a real gRPC request (a
 * length-prefixed bench.Msg, the gRPC headers) to bench.Echo/Unary. h2load
 * costs far less per call than a gRPC client library, so the proxy, not the
 * load generator, is what limits the run; the grpc-ghz scenario checks the
 * same path with a real client.
 */
export function grpc(s: Settings, peer: RunningPeer): Promise<Measurement> {
  const bodyFile = join(s.dir, 'grpc-request.bin');
  writeFileSync(bodyFile, GRPC_FRAME);
  return h2load(s, peer, 'grpc', {
    port: peer.targets.grpc, authority: HOSTS.grpc, path: '/bench.Echo/Unary',
    headers: ['content-type: application/grpc', 'te: trailers'], bodyFile, bytesPerResponse: GRPC_FRAME.length,
  });
}

// --- ghz -------------------------------------------------------------------

const GHZ_WORKERS = 64;

async function ghzRun(s: Settings, port: number, seconds: number): Promise<{ requests: number; failures: number; rps: number }> {
  const r = await runCommand(s.ghz, [
    '--insecure', '--proto', join(s.root, 'bench/proto/bench.proto'), '--call', 'bench.Echo.Unary',
    '-d', JSON.stringify({ payload: Buffer.from('switchyard-bench').toString('base64') }),
    '--connections', '8', '-c', String(GHZ_WORKERS), '-z', `${seconds}s`, '--timeout', '5s',
    '--authority', HOSTS.grpc, '--format', 'json', `127.0.0.1:${port}`,
  ], { core: LOAD_CORE, timeoutMs: (seconds + 20) * 1000 });
  let j: { count?: number; rps?: number; statusCodeDistribution?: Record<string, number>; errorDistribution?: Record<string, number> };
  try {
    j = JSON.parse(r.stdout) as typeof j;
  } catch {
    throw new Error(`ghz failed (exit ${r.code}${r.timedOut ? ', timed out' : ''}): ${(r.stderr || r.stdout).trim().slice(-500)}`);
  }
  const count = j.count ?? 0;
  const ok = j.statusCodeDistribution?.['OK'] ?? 0;
  const errors = Object.entries(j.errorDistribution ?? {});
  if (ok === 0 && errors.length > 0) throw new Error(`ghz: ${errors.map(([e, n]) => `${n} x ${e}`).join('; ').slice(0, 400)}`);
  // When the time is up ghz cuts the calls in flight and counts them as
  // errors (Unavailable: "use of closed network connection"), one per worker.
  return { requests: count, failures: Math.max(0, count - ok - GHZ_WORKERS), rps: (j.rps ?? 0) * (count > 0 ? ok / count : 0) };
}

export async function grpcGhz(s: Settings, peer: RunningPeer): Promise<Measurement> {
  try {
    await ghzRun(s, peer.targets.grpc, s.warmupS);
    const meter = new CpuMeter(peer.pid);
    meter.start();
    const r = await ghzRun(s, peer.targets.grpc, s.measureS);
    return judged({ scenario: 'grpc-ghz', peer: peer.name, ...r, ...meter.stop() });
  } catch (err) {
    return failed('grpc-ghz', peer.name, err);
  }
}

// --- fixed-rate latency ----------------------------------------------------

/** Runs bench/go/fixedrate (warm-up included) with the CPU meter on for the measured part. */
async function fixedRate(s: Settings, peer: RunningPeer, scenario: 'latency' | 'grpc-latency', args: string[]): Promise<Measurement> {
  try {
    const meter = new CpuMeter(peer.pid);
    const measuring = sleep(s.warmupS * 1000 + 100).then(() => meter.start());
    const r = await runCommand(join(s.bin, 'fixedrate'), [...args, '-warmup', `${s.warmupS}s`, '-duration', `${s.measureS}s`],
      { core: LOAD_CORE, timeoutMs: (s.warmupS + s.measureS + 20) * 1000 });
    await measuring;
    const cpu = meter.stop();
    let j: Record<string, number | string>;
    try {
      j = JSON.parse(r.stdout) as typeof j;
    } catch {
      throw new Error(`fixedrate failed (exit ${r.code}${r.timedOut ? ', timed out' : ''}): ${(r.stderr || r.stdout).trim().slice(-500)}`);
    }
    if (j['meanUs'] === undefined) throw new Error(`fixedrate: no successful requests (${j['lastError'] ?? 'no error reported'})`);
    const n = (k: string): number => Number(j[k]);
    return judged({
      scenario, peer: peer.name, requests: n('requests'), failures: n('errors') + n('non2xx'), rps: n('achievedRps'),
      latency: {
        meanUs: n('meanUs'), p50Us: n('p50Us'), p90Us: n('p90Us'), p99Us: n('p99Us'), p999Us: n('p999Us'), maxUs: n('maxUs'),
        ...(j['lagP99Us'] === undefined ? {} : { lagP99Us: n('lagP99Us') }),
      },
      ...cpu,
    });
  } catch (err) {
    return failed(scenario, peer.name, err);
  }
}

export function latency(s: Settings, peer: RunningPeer): Promise<Measurement> {
  return fixedRate(s, peer, 'latency', [
    '-addr', `127.0.0.1:${peer.targets.h1}`, '-host', HOSTS.h1, '-path', '/small', '-rate', String(FIXED_RATE), '-conns', '50',
  ]);
}

/**
 * gRPC at issue 15's fixed 2,000 RPC/s. Not ghz --rps: without --async it
 * paces ghz's -c workers, each of which waits for its call before taking the
 * next tick, so a stall holds back the calls behind it and they are timed
 * from when they were finally sent (coordinated omission). ghz --async would
 * be open loop too; fixedrate also reports how late the client itself was,
 * and costs less per call on the shared load core (raw bytes, no dynamic
 * protobuf messages).
 */
export function grpcLatency(s: Settings, peer: RunningPeer): Promise<Measurement> {
  return fixedRate(s, peer, 'grpc-latency', [
    '-grpc', '-addr', `127.0.0.1:${peer.targets.grpc}`, '-host', HOSTS.grpc, '-path', '/bench.Echo/Unary',
    '-rate', String(GRPC_FIXED_RATE), '-conns', String(GRPC_LATENCY_CONNS),
  ]);
}

// --- memory ----------------------------------------------------------------

/** Opens a connection, makes one request on it, and resolves with the socket kept open (idle). */
function idleConnection(port: number, host: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let head = '';
    const fail = (err: Error): void => { socket.destroy(); reject(err); };
    socket.setTimeout(15_000, () => fail(new Error('no response within 15 s')));
    socket.on('error', fail);
    socket.once('connect', () => socket.write(`GET /small HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head.slice(0, end))?.[1] ?? NaN);
      if (!head.startsWith('HTTP/1.1 200')) return fail(new Error(`response: ${head.slice(0, head.indexOf('\r\n'))}`));
      if (Number.isNaN(length) || head.length < end + 4 + length) return; // body not complete yet (or chunked: wait for more)
      socket.removeAllListeners('data').removeAllListeners('timeout').setTimeout(0);
      socket.off('error', fail).on('error', () => {});
      resolve(socket);
    });
  });
}

/** One request on each route the peer carries, so lazily built state (upstream pools, h2 sessions) exists. */
async function touchRoutes(peer: RunningPeer): Promise<void> {
  const h1 = async (port: number, host: string): Promise<void> => {
    (await idleConnection(port, host)).destroy();
  };
  await h1(peer.targets.h1, HOSTS.h1);
  if (peer.targets.split !== undefined) await h1(peer.targets.split, HOSTS.split);
  await h2Request(peer.targets.h2c, HOSTS.h2c, '/small', {}, undefined);
  await h2Request(peer.targets.grpc, HOSTS.grpc, '/bench.Echo/Unary', { 'content-type': 'application/grpc', te: 'trailers' }, GRPC_FRAME);
}

/** One h2c request; throws unless it is answered 200 (and, for gRPC, with grpc-status 0). */
async function h2Request(port: number, authority: string, path: string, headers: Record<string, string>, body: Buffer | undefined): Promise<void> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  try {
    await new Promise<void>((resolve, reject) => {
      session.once('error', reject);
      const req = session.request({ ':method': body === undefined ? 'GET' : 'POST', ':path': path, ':authority': authority, ...headers });
      let status = 0;
      let grpcStatus: string | undefined;
      req.setTimeout(15_000, () => req.close(http2.constants.NGHTTP2_CANCEL));
      req.on('response', (h) => { status = Number(h[':status']); grpcStatus = h['grpc-status'] as string | undefined; });
      req.on('trailers', (t) => { grpcStatus = t['grpc-status'] as string | undefined; });
      req.on('error', reject);
      req.on('end', () => {
        if (status !== 200 || (headers['te'] !== undefined && grpcStatus !== '0')) reject(new Error(`${authority}${path}: status ${status}, grpc-status ${grpcStatus}`));
        else resolve();
      });
      req.resume();
      req.end(body);
    });
  } finally {
    session.destroy();
  }
}

/** Opens `n` idle keep-alive connections (one request each) to `port`. */
async function openIdle(port: number, n: number, sockets: Socket[]): Promise<void> {
  // 200 in flight at a time: fast, without overrunning accept queues.
  for (let i = 0; i < n; i += 200) {
    const batch = await Promise.allSettled(Array.from({ length: Math.min(200, n - i) }, () => idleConnection(port, HOSTS.h1)));
    for (const r of batch) if (r.status === 'fulfilled') sockets.push(r.value);
    const rejected = batch.find((r) => r.status === 'rejected');
    if (rejected !== undefined) throw rejected.reason;
  }
}

async function closeAll(sockets: Socket[]): Promise<void> {
  for (const socket of sockets) socket.destroy();
  await sleep(500);
}

/**
 * Memory of a freshly started proxy (an instance started for this alone):
 * RSS 1 s after start, idle RSS after one request per route once it settled,
 * and RSS with N idle connections. Throws on failure.
 */
export async function memoryFresh(s: Settings, peer: RunningPeer): Promise<FreshMemory> {
  if (peer.pid === undefined) throw new Error('no proxy process');
  const sockets: Socket[] = [];
  try {
    await sleep(1000);
    const startBytes = treeRss(peer.pid);
    await touchRoutes(peer);
    // Read 1 s after the requests, a router still holds its config worker and
    // the heap the start grew (~20 MiB more than it keeps); idle means settled.
    const settleMs = Math.max(1, Math.min(20, s.warmupS + s.measureS)) * 1000;
    await sleep(settleMs);
    const idleBytes = treeRss(peer.pid);
    await openIdle(peer.targets.h1, s.idleConns, sockets);
    // Idle connections, settled the same way: 1 s after they opened, a garbage-
    // collected proxy still holds the young generation the burst of handshakes
    // grew (~15 MiB at 9,000), which it gives back once idle (src/idle-memory.ts).
    await sleep(1000);
    const openedBytes = treeRss(peer.pid);
    await sleep(Math.max(0, settleMs - 1000));
    return { conns: sockets.length, startBytes, idleBytes, loadedBytes: treeRss(peer.pid), openedBytes };
  } catch (err) {
    throw new Error(`fresh instance, ${sockets.length} connections open, then: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    await closeAll(sockets);
  }
}

/** Memory of the instance that ran the load scenarios, with the fresh instance's figures (or why they are missing) attached. */
export async function memory(s: Settings, peer: RunningPeer, fresh: FreshMemory | Error | undefined): Promise<Measurement> {
  if (peer.pid === undefined) return failed('memory', peer.name, 'no proxy process');
  if (fresh instanceof Error) return failed('memory', peer.name, fresh);
  const sockets: Socket[] = [];
  try {
    await sleep(500);
    const idleBytes = treeRss(peer.pid);
    await openIdle(peer.targets.h1, s.idleConns, sockets);
    await sleep(1000); // let the proxy settle (and collect garbage) with the connections idle
    const loadedBytes = treeRss(peer.pid);
    return judged({
      scenario: 'memory', peer: peer.name, requests: sockets.length, failures: 0,
      memory: { conns: sockets.length, startBytes: peer.startRss, idleBytes, loadedBytes, ...(fresh === undefined ? {} : { fresh }) },
    });
  } catch (err) {
    return failed('memory', peer.name, `${sockets.length} connections open, then: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    await closeAll(sockets);
  }
}
