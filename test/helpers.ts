// Test peers and harness: real backends on loopback, the router in process or
// as a child process. Nothing here is mocked; every socket is real.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import net, { type AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import v8 from 'node:v8';
import vm from 'node:vm';
import { stringify } from 'yaml';
import { loadConfigSources } from '../src/config/load.ts';
import { ConfigError, type ConfigIssue } from '../src/config/model.ts';
import { createLogger } from '../src/observe/log.ts';
import { Switchyard } from '../src/server.ts';

export const ROOT = new URL('..', import.meta.url).pathname;
export const CLI = join(ROOT, 'src/cli/main.ts');

export interface Backend {
  readonly name: string;
  readonly port: number;
  readonly url: string;
  readonly server: http.Server;
  /** Requests this backend has seen. */
  hits: number;
  close(): Promise<void>;
}

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** By default answers with JSON naming itself and echoing what it received. */
export function echo(name: string): Handler {
  return (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.stringify({
        backend: name, method: req.method, url: req.url, headers: req.headers,
        bodyLength: Buffer.concat(chunks).length,
      });
      res.writeHead(200, { 'content-type': 'application/json', 'x-backend': name });
      res.end(body);
    });
  };
}

export async function startBackend(name: string, handler: Handler = echo(name)): Promise<Backend> {
  const server = http.createServer();
  const backend: Backend = {
    name, port: 0, url: '', server, hits: 0,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
  server.on('request', (req, res) => {
    backend.hits++;
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  Object.assign(backend, { port, url: `http://127.0.0.1:${port}` });
  return backend;
}

/** One HTTP/1.1 request written as is (repeated lines included) to the router on `port`; resolves with the whole answer once the router closes. */
export function rawHttp1(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let out = '';
    sock.on('data', (c: Buffer) => { out += c.toString('latin1'); });
    sock.on('end', () => resolve(out));
    sock.on('error', reject);
    sock.write(head);
  });
}

/** Waits until `value()` has not changed for `quietMs` (a stream held back by backpressure); returns it. */
export async function settled(value: () => number, quietMs = 400, maxMs = 5000): Promise<number> {
  const start = Date.now();
  let last = value();
  let since = Date.now();
  while (Date.now() - start < maxMs) {
    await sleep(50);
    const v = value();
    if (v !== last) { last = v; since = Date.now(); } else if (Date.now() - since >= quietMs) return v;
  }
  throw new Error(`still moving after ${maxMs} ms: ${last}`);
}

/**
 * A sender of GET batches through one keep-alive agent, each request with
 * 8 KB of header (what a queue that keeps dead calls keeps); a batch
 * resolves with the statuses, `from` numbers the paths.
 */
export function paddedBatches(port: number, host: string, agent: http.Agent): (from: number, n: number) => Promise<number[]> {
  const pad = 'p'.repeat(8000);
  const call = (i: number): Promise<number> => new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: `/c/${i}`, headers: { host, 'x-pad': pad }, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end();
  });
  return (from, n) => Promise.all(Array.from({ length: n }, (_, i) => call(from + i)));
}

let gc: (() => void) | undefined;

/**
 * Heap in use (plus ArrayBuffer memory with `withBuffers`) after three full
 * GCs 50 ms apart, so what a test let go of is gone. V8's gc() is taken at run
 * time: the test runner has no --expose-gc.
 */
export async function collectedHeap(withBuffers = false): Promise<number> {
  if (gc === undefined) {
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('gc') as () => void;
  }
  for (let i = 0; i < 3; i++) {
    gc();
    await sleep(50);
  }
  const m = process.memoryUsage();
  return m.heapUsed + (withBuffers ? m.arrayBuffers : 0);
}

/**
 * A loopback port nothing listens on (connections are refused). It is taken
 * below the kernel's ephemeral range (32768+ here), so a `listen(0)` or an
 * outgoing connection elsewhere in a concurrent suite cannot land on it while
 * a test expects it refused.
 */
export async function closedPort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const s = http.createServer();
    const ok = await new Promise<boolean>((resolve) => {
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!ok) continue;
    await new Promise<void>((resolve) => s.close(() => resolve()));
    return port;
  }
}

export interface RouteSpec {
  name: string;
  hosts: string[];
  pathPrefix?: string;
  protocol?: 'http' | 'h2c';
  backends: { name: string; url: string; weight: number; hostHeader?: string }[];
  timeouts?: { connect?: string; response?: string; idle?: string; overall?: string; overallIncludesStreams?: boolean };
  healthCheck?: {
    http?: { path?: string; expectStatus?: [number, number] } | null;
    grpc?: { service?: string } | null;
    interval?: string;
    timeout?: string;
    healthyThreshold?: number;
    unhealthyThreshold?: number;
  };
  outlierDetection?: { consecutiveFailures?: number; ejectionTime?: string; maxEjectionTime?: string };
  allUnhealthy?: 'serve' | 'fail';
  retries?: { attempts?: number; budget?: number; minRetriesPerSecond?: number };
  sticky?: { header: string } | { cookie: string };
  maxBodyBytes?: number;
  /** docs/ramps.md */
  ramp?: Record<string, unknown>;
  mirror?: { to: string; percent?: number; maxBodyBytes?: number; maxInFlight?: number };
}

export interface ConfigSpec {
  routes: RouteSpec[];
  shutdown?: { drainDelay?: string; timeout?: string };
  entrypoint?: { maxConnectionAge?: string; maxConnectionAgeGrace?: string; trustedProxies?: string[]; maxUrlLength?: number; maxHeaderBytes?: number; headersTimeout?: string; idleTimeout?: string; maxConnections?: number; requestIdHeader?: string };
}

/** Writes a config file (ports 0: the OS picks) and returns its path. */
export function writeConfig(spec: ConfigSpec, dir = mkdtempSync(join(tmpdir(), 'switchyard-test-'))): string {
  const doc = {
    entrypoint: { address: '127.0.0.1:0', ...spec.entrypoint },
    admin: { address: '127.0.0.1:0' },
    shutdown: { drainDelay: '0s', timeout: '5s', ...spec.shutdown },
    routes: spec.routes,
  };
  const path = join(dir, 'switchyard.yaml');
  writeFileSync(path, stringify(doc));
  return path;
}

export interface Router {
  readonly sy: Switchyard;
  readonly path: string;
  /** http://127.0.0.1:PORT of the entrypoint. */
  readonly url: string;
  readonly port: number;
  readonly adminUrl: string;
  close(): Promise<void>;
}

/** Starts the router in this process. */
export async function startRouter(spec: ConfigSpec): Promise<Router> {
  const path = writeConfig(spec);
  const sy = await Switchyard.start(path, createLogger(process.env['TEST_LOG_LEVEL'] ?? 'silent'));
  const { entrypoint, admin } = sy.addresses;
  return {
    sy, path, port: entrypoint.port,
    url: `http://127.0.0.1:${entrypoint.port}`,
    adminUrl: `http://127.0.0.1:${admin.port}`,
    close: async () => { await sy.shutdown(); },
  };
}

export interface RouterProcess {
  readonly child: ChildProcess;
  readonly url: string;
  readonly port: number;
  readonly adminUrl: string;
  /** Every JSON log line so far. */
  readonly logs: Record<string, unknown>[];
  /** Resolves with the exit code. */
  readonly exited: Promise<number | null>;
}

/** Starts `switchyard serve` as a child process (Node 24, as the tests run) and waits until it listens. */
export async function spawnRouter(configPath: string, extraArgs: string[] = []): Promise<RouterProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', '--config', configPath, ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Record<string, unknown>[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
  const started = new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let entry: Record<string, unknown>;
      try { entry = JSON.parse(line) as Record<string, unknown>; } catch { return; }
      logs.push(entry);
      if (entry['msg'] === 'switchyard started') resolve(entry);
    });
    void exited.then((code) => reject(new Error(`router exited with ${code}: ${stderr}`)));
  });
  const entry = await started;
  const port = Number(String(entry['entrypoint']).split(':').pop());
  const adminPort = Number(String(entry['admin']).split(':').pop());
  return { child, logs, exited, port, url: `http://127.0.0.1:${port}`, adminUrl: `http://127.0.0.1:${adminPort}` };
}

/** Resident memory of a process in bytes (Linux). */
export async function rssOf(pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  return Number(kb) * 1024;
}

/** Parses a Prometheus text scrape into `name{labels}` → value. */
export async function scrape(adminUrl: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** Runs a command to completion, collecting its output. */
export function run(cmd: string, args: string[], input?: string, env?: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: env === undefined ? undefined : { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

/**
 * Resolves with the first log line of a spawned router whose `msg` is `msg`
 * (one already logged included); rejects after `timeoutMs`.
 */
export async function waitForLog(proc: RouterProcess, msg: string, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const entry = proc.logs.find((e) => e['msg'] === msg);
    if (entry !== undefined) return entry;
    if (Date.now() > deadline) throw new Error(`no log line "${msg}" within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Runs `src/cli/main.ts` with `args` under this Node (24), `env` added to the environment, and collects its exit code and output. */
export function runCli(args: string[], env?: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return run(process.execPath, [CLI, ...args], undefined, env);
}

export interface Balancer {
  readonly port: number;
  /** Where new connections go, in turn; change it to add or remove replicas. */
  targets: number[];
  /** Connections handed to each target port so far. */
  readonly handed: Map<number, number>;
  close(): Promise<void>;
}

/**
 * A round-robin TCP balancer on loopback, as kube-proxy is to a Service: each
 * new connection goes to the next target, and stays there.
 */
export async function startBalancer(targets: number[]): Promise<Balancer> {
  const sockets = new Set<import('node:net').Socket>();
  const { createServer, connect } = await import('node:net');
  let next = 0;
  const b = { port: 0, targets, handed: new Map<number, number>() } as Balancer & { port: number };
  const server = createServer((client) => {
    const port = b.targets[next++ % b.targets.length]!;
    b.handed.set(port, (b.handed.get(port) ?? 0) + 1);
    const upstream = connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
    }
    client.on('error', () => upstream.destroy()).once('close', () => upstream.destroy());
    upstream.on('error', () => client.destroy()).once('close', () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  b.port = (server.address() as AddressInfo).port;
  b.close = () => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  });
  return b;
}

// --- resilience suite helpers ----------------------------------------------

/** Rewrites a running router's config file in place (same directory, same file name). */
export function rewriteConfig(router: Router, spec: ConfigSpec): void {
  writeConfig(spec, dirname(router.path));
}

/** Starts an HTTP backend on a given port (e.g. to bring a killed backend back on its old address). */
export async function startBackendOn(name: string, port: number, handler: Handler = echo(name)): Promise<Backend> {
  const server = http.createServer();
  const backend: Backend = {
    name, port, url: `http://127.0.0.1:${port}`, server, hits: 0,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
  server.on('request', (req, res) => {
    backend.hits++;
    handler(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  return backend;
}

export interface Blackhole {
  readonly port: number;
  readonly url: string;
  close(): void;
}

/**
 * A loopback address whose TCP connects hang (SYNs are dropped), for connect
 * timeouts without leaving 127.0.0.1: a child process listens with a backlog
 * of 1 and then blocks its event loop (Atomics.wait, no CPU), so it never
 * accepts; a few filler connections fill the accept queue, after which Linux
 * drops every new SYN (tcp_conn_request: accept queue full).
 */
export async function startBlackhole(): Promise<Blackhole> {
  const child = spawn(process.execPath, ['-e', `
    const net = require('node:net');
    const s = net.createServer();
    s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
      // Blocked (no CPU) for at most a minute, then gone even if nobody kills it.
      process.stdout.write(s.address().port + '\\n', () => { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000); process.exit(0); });
    });
  `], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`blackhole child exited with ${code}`)));
    child.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
  });
  await new Promise((r) => setTimeout(r, 100));
  const fillers: import('node:net').Socket[] = [];
  const { connect } = await import('node:net');
  for (let i = 0; i < 4; i++) {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => {});
    fillers.push(s);
  }
  await new Promise((r) => setTimeout(r, 200));
  return {
    port, url: `http://127.0.0.1:${port}`,
    close: () => {
      for (const s of fillers) s.destroy();
      child.kill('SIGKILL');
    },
  };
}

/** A metric's value from a scrape, 0 when the series does not exist. */
export function metric(m: Map<string, number>, name: string, labels: Record<string, string>): number {
  const key = `${name}{${Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(',')}}`;
  return m.get(key) ?? 0;
}

/**
 * The issues of one file's text on its own, as `switchyard validate` reports
 * them (no routes is fine: a config may be spread over files).
 */
export function validateConfigText(text: string, file: string): readonly ConfigIssue[] {
  try {
    loadConfigSources([{ file, text }], { guard: false });
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.issues;
    throw err;
  }
}
