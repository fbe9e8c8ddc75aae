// Memory soak: the router under a modest mixed load for N minutes, its heap
// and RSS every minute, and whether they grow.
//
//   npm run bench:soak -- [--minutes 10] [--root DIR] [--out FILE]
//
// The load (from this process, on the load core; the router on the proxy
// core): HTTP/1.1 on keep-alive connections and on a new connection per
// request, h2c, gRPC unary (grpc-go), gRPC server and bidi streams (grpc-js),
// gRPC calls answered with an error status, HTTP/1.1 requests to a backend
// that refuses connections (502), clients that abort a 64 KiB response after
// its first bytes and gRPC streams cancelled half way, and a config reload
// every 30 s (the split route's weights change, so the reload is real).
//
// Every minute the router is asked (SIGUSR2, answered by a probe preloaded
// with --import) for process.memoryUsage() after a forced full GC
// (--expose-gc, in the soak only), and its RSS is read from /proc. The
// verdict compares the last minute with minute 2 (minute 1 still has the
// start-up and the first connections in it) and fits a slope over minutes 2..N.
import http from 'node:http';
import http2 from 'node:http2';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { startBackends, type Backends } from './backends.ts';
import { LOAD_CORE, PROXY_CORE, freePort, pinSelf, runScript, startProcess, stopAll, stopProcess, treeRss, waitForPort, type Started } from './procs.ts';
import { buildGoTools } from './tools.ts';
import { bidi, grpcClient, serverStream, startGrpcBackend, unary, type EchoClient, type GrpcBackend } from '../test/grpc-helpers.ts';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');

const { values: opts } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    root: { type: 'string' },
    out: { type: 'string' },
    // A heap snapshot at each minute's sample, written into this directory (to diff when the heap grows).
    'heap-snapshots': { type: 'string' },
  },
});
const MINUTES = Number(opts.minutes);
if (!(MINUTES >= 3)) throw new Error('--minutes must be at least 3 (minute 2 is the baseline)');
const SWITCHYARD = resolve(opts.root ?? ROOT);
const RELOAD_EVERY_MS = 30_000;

const HOST = { h1: 'h1.soak', split: 'split.soak', h2c: 'h2c.soak', grpc: 'grpc.soak', stream: 'stream.soak', down: 'down.soak' } as const;

// Preloaded into the router: on SIGUSR2 writes memoryUsage() after a full GC
// to $SOAK_PROBE (through a rename, so the harness never reads half a file).
const PROBE = `data:text/javascript,${encodeURIComponent(`
import { renameSync, writeFileSync } from 'node:fs';
import { getHeapSpaceStatistics, writeHeapSnapshot } from 'node:v8';
let n = 0;
process.on('SIGUSR2', () => {
  globalThis.gc?.();
  if (process.env.SOAK_SNAPSHOTS) writeHeapSnapshot(process.env.SOAK_SNAPSHOTS + '/minute-' + n++ + '.heapsnapshot');
  const m = process.memoryUsage();
  const space = Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, s.space_size]));
  writeFileSync(process.env.SOAK_PROBE + '.tmp', JSON.stringify({ ...m, newSpace: space.new_space, oldSpace: space.old_space }));
  renameSync(process.env.SOAK_PROBE + '.tmp', process.env.SOAK_PROBE);
});
`)}`;

interface Sample {
  readonly minute: number;
  readonly requests: number;
  readonly failures: number;
  readonly rss: number;
  readonly heapUsed: number;
  readonly heapTotal: number;
  readonly external: number;
  readonly arrayBuffers: number;
  /** Committed sizes of V8's young generation and old space (both in heap total). */
  readonly newSpace: number;
  readonly oldSpace: number;
}

/** What each kind of traffic did: calls made, and those that did not end the way that kind should. */
class Tally {
  readonly made = new Map<string, number>();
  readonly bad = new Map<string, number>();
  readonly lastError = new Map<string, string>();
  ok(kind: string): void {
    this.made.set(kind, (this.made.get(kind) ?? 0) + 1);
  }
  fail(kind: string, why: string): void {
    this.ok(kind);
    this.bad.set(kind, (this.bad.get(kind) ?? 0) + 1);
    this.lastError.set(kind, why);
  }
  get total(): number { return [...this.made.values()].reduce((a, b) => a + b, 0); }
  get failures(): number { return [...this.bad.values()].reduce((a, b) => a + b, 0); }
}

function configYaml(port: number, admin: number, b: Backends, stream: GrpcBackend, refused: number, step: number): string {
  // Alternating weights: each reload changes the split route.
  const a = step % 2 === 0 ? 90 : 60;
  return JSON.stringify({
    version: 1,
    entrypoint: { address: `127.0.0.1:${port}` },
    admin: { address: `127.0.0.1:${admin}` },
    shutdown: { drainDelay: '0s', timeout: '2s' },
    routes: [
      { name: 'h1', hosts: [HOST.h1], protocol: 'http', backends: [{ name: 'nginx', url: `http://127.0.0.1:${b.h1}`, weight: 1 }] },
      {
        name: 'split', hosts: [HOST.split], protocol: 'http', backends: [
          { name: 'a', url: `http://127.0.0.1:${b.splitA}`, weight: a },
          { name: 'b', url: `http://127.0.0.1:${b.splitB}`, weight: 100 - a },
        ],
      },
      { name: 'h2c', hosts: [HOST.h2c], protocol: 'h2c', backends: [{ name: 'nginx', url: `http://127.0.0.1:${b.h2c}`, weight: 1 }] },
      { name: 'grpc', hosts: [HOST.grpc], protocol: 'h2c', backends: [{ name: 'go', url: `http://127.0.0.1:${b.grpc}`, weight: 1 }] },
      { name: 'stream', hosts: [HOST.stream], protocol: 'h2c', backends: [{ name: 'js', url: stream.url, weight: 1 }] },
      { name: 'down', hosts: [HOST.down], protocol: 'http', backends: [{ name: 'refused', url: `http://127.0.0.1:${refused}`, weight: 1 }] },
    ],
  }, null, 1);
}

/** One HTTP/1.1 GET; resolves with the status, or rejects. `abortAfterFirstChunk` destroys the response after its first bytes. */
function get(port: number, host: string, path: string, agent: http.Agent | false, abortAfterFirstChunk = false): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers: { host }, agent }, (res) => {
      if (abortAfterFirstChunk) {
        res.once('data', () => { req.destroy(); resolvePromise(res.statusCode ?? 0); });
        return;
      }
      res.resume();
      res.once('end', () => resolvePromise(res.statusCode ?? 0));
      res.once('error', reject);
    });
    req.once('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
  });
}

/** Runs `call` every `everyMs` with at most `inFlight` outstanding until `until`. */
async function loop(until: () => boolean, everyMs: number, inFlight: number, call: () => Promise<void>): Promise<void> {
  let open = 0;
  const pending = new Set<Promise<void>>();
  while (!until()) {
    if (open < inFlight) {
      open++;
      const p = call().finally(() => { open--; pending.delete(p); });
      pending.add(p);
    }
    await sleep(everyMs);
  }
  await Promise.allSettled(pending);
}

const GRPC_MSG = Buffer.from('0a10' + Buffer.from('switchyard-soakmsg').subarray(0, 16).toString('hex'), 'hex');

function rawUnary(client: grpc.Client): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    client.makeUnaryRequest('/bench.Echo/Unary', (b: Buffer) => b, (b: Buffer) => b, GRPC_MSG, { deadline: Date.now() + 10_000 }, (err, reply) => {
      if (err !== null) reject(err);
      else if (reply === undefined || !reply.equals(GRPC_MSG)) reject(new Error('unexpected reply'));
      else resolvePromise();
    });
  });
}

async function drive(port: number, stop: () => boolean, tally: Tally): Promise<void> {
  const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const goClient = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': HOST.grpc });
  const streams: EchoClient = grpcClient(`127.0.0.1:${port}`, HOST.stream);
  let h2: http2.ClientHttp2Session | undefined;
  const h2Session = (): http2.ClientHttp2Session => {
    if (h2 === undefined || h2.closed || h2.destroyed) {
      h2 = http2.connect(`http://127.0.0.1:${port}`);
      h2.on('error', () => {});
    }
    return h2;
  };
  const h2Get = (): Promise<void> => new Promise((resolvePromise, reject) => {
    const s = h2Session().request({ ':path': '/1k', ':authority': HOST.h2c });
    s.setTimeout(10_000, () => s.close(http2.constants.NGHTTP2_CANCEL));
    let status = 0;
    s.on('response', (h) => { status = Number(h[':status']); });
    s.resume();
    s.on('end', () => (status === 200 ? resolvePromise() : reject(new Error(`h2c status ${status}`))));
    s.on('error', reject);
  });
  const expect = (kind: string, p: Promise<unknown>, ok: (v: unknown) => boolean = () => true): Promise<void> =>
    p.then((v) => (ok(v) ? tally.ok(kind) : tally.fail(kind, `unexpected ${JSON.stringify(v)}`)), (err: unknown) => tally.fail(kind, err instanceof Error ? err.message : String(err)));

  try {
    await Promise.all([
      // ~100/s HTTP/1.1 on 8 keep-alive connections, small and 1 KB bodies, and the weighted split.
      loop(stop, 10, 8, () => expect('h1 keep-alive', get(port, HOST.h1, '/small', keepAlive), (s) => s === 200)),
      loop(stop, 40, 4, () => expect('h1 split', get(port, HOST.split, '/1k', keepAlive), (s) => s === 200)),
      // ~20/s on a new connection each.
      loop(stop, 50, 4, () => expect('h1 new connection', get(port, HOST.h1, '/small', false), (s) => s === 200)),
      // ~100/s h2c on one session.
      loop(stop, 10, 16, () => expect('h2c', h2Get())),
      // ~50/s gRPC unary to grpc-go.
      loop(stop, 20, 8, () => expect('grpc unary', rawUnary(goClient))),
      // ~5/s server streams of 20 replies and bidi streams of 10 messages (grpc-js backend).
      loop(stop, 200, 4, () => expect('grpc server stream', serverStream(streams, { count: 20, size: 512 }), (r) => (r as { code: number; replies: unknown[] }).code === 0 && (r as { replies: unknown[] }).replies.length === 20)),
      loop(stop, 200, 4, () => expect('grpc bidi', bidi(streams, 10, () => ({ size: 256 })), (r) => (r as { code: number }).code === 0)),
      // ~5/s gRPC errors from the backend (INTERNAL), and streams cancelled by their deadline half way.
      loop(stop, 200, 4, () => expect('grpc error status', unary(streams, { status: 13, message: 'soak' }), (r) => (r as { code: number }).code === 13)),
      loop(stop, 500, 4, () => expect('grpc cancelled', serverStream(streams, { count: 5, size: 256, hang: true }, { deadlineMs: 300 }), (r) => (r as { code: number }).code === grpc.status.DEADLINE_EXCEEDED)),
      // ~5/s a backend that refuses connections (502; 503 while outlier detection has it ejected), ~5/s clients that leave a 64 KiB response after its first bytes.
      loop(stop, 200, 4, () => expect('h1 backend down', get(port, HOST.down, '/', keepAlive), (s) => s === 502 || s === 503)),
      loop(stop, 200, 4, () => expect('h1 client abort', get(port, HOST.h1, '/64k', false, true), (s) => s === 200)),
    ]);
  } finally {
    keepAlive.destroy();
    goClient.close();
    streams.close();
    h2?.close();
  }
}

async function probe(router: Started, file: string): Promise<Omit<Sample, 'minute' | 'requests' | 'failures'>> {
  rmSync(file, { force: true });
  process.kill(router.pid, 'SIGUSR2');
  for (let i = 0; i < 1200 && !existsSync(file); i++) await sleep(25);
  const m = JSON.parse(readFileSync(file, 'utf8')) as NodeJS.MemoryUsage & { newSpace: number; oldSpace: number };
  return { rss: treeRss(router.pid), heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, newSpace: m.newSpace, oldSpace: m.oldSpace };
}

const mib = (b: number): string => (b / 2 ** 20).toFixed(1);

/** Least-squares slope of ys over xs. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

function report(samples: Sample[], tally: Tally, reloads: number, idle: Sample): string {
  const lines: string[] = [];
  lines.push(`# Memory soak, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`, '');
  lines.push(`\`npm run bench:soak -- --minutes ${MINUTES}\` on ${SWITCHYARD === ROOT ? 'this checkout' : SWITCHYARD}. The router (\`node --expose-gc\`, plus the --max-semi-space-size=8 that serve sets for itself; NODE_COMPILE_CACHE warm as in the image) on one core, the load from the harness on the other: HTTP/1.1 keep-alive (~100/s) and split (~25/s), a new connection per request (~20/s), h2c (~100/s on one session), gRPC unary to grpc-go (~50/s), gRPC server and bidi streams (~5/s each), gRPC error statuses (~5/s), streams cancelled by their deadline (~2/s), a backend refusing connections (502, or 503 while ejected; ~5/s), clients leaving a 64 KiB response after its first bytes (~5/s), a config reload every 30 s. Figures after a forced full GC; RSS of the process.`, '');
  lines.push(`Idle before the load (20 s after start: the config worker has ended): RSS ${mib(idle.rss)} MiB, heap used ${mib(idle.heapUsed)} MiB, heap total ${mib(idle.heapTotal)} MiB (new space ${mib(idle.newSpace)}, old space ${mib(idle.oldSpace)}), external ${mib(idle.external)} MiB. RSS is sampled 28 s after a reload, when the reload's config worker has ended.`, '');
  lines.push('| minute | requests | unexpected | RSS MiB | heap used MiB | heap total MiB | of which new space | of which old space | external MiB | array buffers MiB |');
  lines.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const s of samples) {
    lines.push(`| ${s.minute} | ${s.requests.toLocaleString('en-US')} | ${s.failures} | ${mib(s.rss)} | ${mib(s.heapUsed)} | ${mib(s.heapTotal)} | ${mib(s.newSpace)} | ${mib(s.oldSpace)} | ${mib(s.external)} | ${mib(s.arrayBuffers)} |`);
  }
  const base = samples.find((s) => s.minute === 2)!;
  const last = samples.at(-1)!;
  const tail = samples.filter((s) => s.minute >= 2);
  const xs = tail.map((s) => s.minute);
  const heapSlope = slope(xs, tail.map((s) => s.heapUsed)) / 2 ** 20;
  const rssSlope = slope(xs, tail.map((s) => s.rss)) / 2 ** 20;
  const heapGrowth = (last.heapUsed - base.heapUsed) / 2 ** 20;
  const rssGrowth = (last.rss - base.rss) / 2 ** 20;
  // Growth: more than 2 MiB of live heap or 10 % of RSS from minute 2 to the end.
  const grows = heapGrowth > 2 || rssGrowth > base.rss / 2 ** 20 * 0.1;
  lines.push('', `Minute 2 → minute ${last.minute}: heap used ${heapGrowth >= 0 ? '+' : ''}${heapGrowth.toFixed(2)} MiB (slope ${heapSlope.toFixed(3)} MiB/min), RSS ${rssGrowth >= 0 ? '+' : ''}${rssGrowth.toFixed(1)} MiB (slope ${rssSlope.toFixed(2)} MiB/min); ${reloads} reloads.`);
  lines.push('', `**Verdict: ${grows ? 'grows' : 'no growth'}** (the bar: live heap within 2 MiB and RSS within 10 % of minute 2).`, '');
  lines.push('| traffic | calls | not as expected | last such |', '|---|---:|---:|---|');
  for (const [kind, n] of tally.made) lines.push(`| ${kind} | ${n.toLocaleString('en-US')} | ${tally.bad.get(kind) ?? 0} | ${tally.lastError.get(kind) ?? ''} |`);
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  pinSelf(LOAD_CORE);
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-soak-'));
  let router: Started | undefined;
  let stream: GrpcBackend | undefined;
  try {
    const bin = join(dir, 'bin');
    buildGoTools(ROOT, bin);
    const backends = await startBackends(dir, bin);
    stream = await startGrpcBackend('js');
    const refused = await freePort();
    const [port, admin] = [await freePort(), await freePort()];
    const file = join(dir, 'switchyard.yaml');
    let step = 0;
    writeFileSync(file, configYaml(port, admin, backends, stream, refused, step));
    const probeFile = join(dir, 'probe.json');
    const cache = join(dir, 'compile-cache');
    mkdirSync(cache);
    const snapshots = opts['heap-snapshots'] === undefined ? '' : resolve(opts['heap-snapshots']);
    if (snapshots !== '') mkdirSync(snapshots, { recursive: true });
    const start = async (): Promise<Started> => {
      const p = startProcess('switchyard', process.execPath, ['--expose-gc', '--import', PROBE, join(SWITCHYARD, 'src/cli/main.ts'), 'serve', '--config', file],
        join(dir, 'switchyard.log'), { core: PROXY_CORE, cwd: SWITCHYARD, env: { SWITCHYARD_LOG_LEVEL: 'warn', NODE_ENV: 'production', NODE_COMPILE_CACHE: cache, SOAK_PROBE: probeFile, SOAK_SNAPSHOTS: snapshots } });
      await waitForPort(port, p);
      await waitForPort(admin, p);
      return p;
    };
    // Once to fill the compile cache, as the image's build does; then the measured run.
    await stopProcess(await start());
    router = await start();
    await sleep(20_000); // past the config worker's idle end and V8's first memory-reducing GCs
    const idle: Sample = { minute: 0, requests: 0, failures: 0, ...await probe(router, probeFile) };
    console.log(`idle: RSS ${mib(idle.rss)} MiB, heap used ${mib(idle.heapUsed)} MiB`);

    const tally = new Tally();
    const t0 = Date.now();
    const end = t0 + MINUTES * 60_000;
    const stop = (): boolean => Date.now() >= end;
    let reloads = 0;
    const reloader = setInterval(() => {
      step++;
      writeFileSync(`${file}.tmp`, configYaml(port, admin, backends, stream!, refused, step));
      renameSync(`${file}.tmp`, file);
      reloads++;
    }, RELOAD_EVERY_MS);
    const samples: Sample[] = [];
    const running = drive(port, stop, tally);
    for (let minute = 1; minute <= MINUTES; minute++) {
      await sleep(Math.max(0, t0 + minute * 60_000 - 2_000 - Date.now()));
      const s: Sample = { minute, requests: tally.total, failures: tally.failures, ...await probe(router, probeFile) };
      samples.push(s);
      console.log(`minute ${minute}: ${s.requests} requests (${s.failures} unexpected), RSS ${mib(s.rss)} MiB, heap used ${mib(s.heapUsed)} / total ${mib(s.heapTotal)} MiB (new ${mib(s.newSpace)}, old ${mib(s.oldSpace)}), external ${mib(s.external)} MiB`);
    }
    await running;
    clearInterval(reloader);
    const text = report(samples, tally, reloads, idle);
    process.stdout.write(`\n${text}`);
    if (opts.out !== undefined) writeFileSync(opts.out, text);
  } finally {
    stream?.close();
    if (router !== undefined) await stopProcess(router);
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

runScript(main, { stack: true });
