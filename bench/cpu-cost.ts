// CPU cost per request of switchyard checkouts, A/B, at a fixed request count:
// what a change costs or saves, measured in a way that holds up on a busy
// machine (throughput there is noise; CPU time per request much less so).
//
//   node bench/cpu-cost.ts --a DIR [--b DIR] [--scenario h1|h1-1k|h1-64k|h2c|grpc] [--requests N] [--rounds R] [--gc] [--alloc]
//                          [--node-options='--cpu-prof --cpu-prof-dir=/tmp/prof'] [--node-options-b='--max-semi-space-size=2']
//
// Each round starts each checkout afresh (alternating A and B, so drift hits
// both alike), warms it with N/5 requests, waits for the config worker thread
// to end (it exits ~5 s after the startup load and writes Node's compile
// cache as it goes: 0.3-4% of a 64 KB round's samples, at a random point of
// it), then sends N with h2load and reads the router's utime+stime from /proc
// before and after. Prints µs of CPU per request per round and the medians;
// --gc adds --trace-gc and sums the collector's pause time over the measured
// requests; --alloc adds
// --trace-gc-nvp instead and reports bytes allocated per request (V8's
// `allocated` of each collection, summed over the measured requests: exact
// up to the bytes since the last collection), scavenges per 10,000 requests
// and their pause, of it the ArrayBuffer sweep, and other collections
// (mark-compacts: ArrayBuffers' external memory brings those on).
// --node-options-b gives B its own node flags instead of --node-options' (--a
// and --b may then be the same checkout: a flag A/B).
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startBackends } from './backends.ts';
import { HOSTS, startPeer, type RunningPeer } from './peers.ts';
import { LOAD_CORE, pinSelf, runCommand, runScript, stopAll, treeCpuSeconds } from './procs.ts';
import { buildGoTools } from './tools.ts';
import { median } from './stats.ts';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');

const { values: opts } = parseArgs({
  options: {
    a: { type: 'string' },
    b: { type: 'string' },
    scenario: { type: 'string', default: 'h1' },
    requests: { type: 'string', default: '100000' },
    rounds: { type: 'string', default: '3' },
    clients: { type: 'string', default: '50' },
    gc: { type: 'boolean', default: false },
    alloc: { type: 'boolean', default: false },
    'node-options': { type: 'string' },
    'node-options-b': { type: 'string' },
  },
});

type Scenario = 'h1' | 'h1-1k' | 'h1-64k' | 'h2c' | 'grpc';
const scenario = opts.scenario as Scenario;
if (!['h1', 'h1-1k', 'h1-64k', 'h2c', 'grpc'].includes(scenario)) throw new Error(`unknown scenario ${scenario}`);
const requests = Number(opts.requests);
const rounds = Number(opts.rounds);
const checkouts = [opts.a ?? ROOT, ...(opts.b === undefined ? [] : [opts.b])].map((d) => resolve(d));

const GRPC_MESSAGE = Buffer.from('0a10' + Buffer.from('switchyard-bench').toString('hex'), 'hex');
const GRPC_FRAME = Buffer.concat([Buffer.from([0, 0, 0, 0, GRPC_MESSAGE.length]), GRPC_MESSAGE]);

/** The bench backend's files (bench/backends.ts BODIES) each HTTP/1.1 scenario asks for. */
const H1_PATHS = { h1: 'small', 'h1-1k': '1k', 'h1-64k': '64k' } as const;

function h2loadArgs(peer: RunningPeer, n: number, dir: string): string[] {
  const clients = Number(opts.clients);
  switch (scenario) {
    case 'h1': case 'h1-1k': case 'h1-64k':
      return ['--h1', '-t1', `-c${clients}`, '-m1', `-n${n}`, '-H', `:authority: ${HOSTS.h1}`,
        `http://127.0.0.1:${peer.targets.h1}/${H1_PATHS[scenario]}`];
    case 'h2c':
      return ['-t1', '-c8', '-m32', `-n${n}`, '-H', `:authority: ${HOSTS.h2c}`, `http://127.0.0.1:${peer.targets.h2c}/small`];
    case 'grpc': {
      const body = join(dir, 'grpc-request.bin');
      writeFileSync(body, GRPC_FRAME);
      return ['-t1', '-c8', '-m32', `-n${n}`, '-H', `:authority: ${HOSTS.grpc}`, '-H', 'content-type: application/grpc',
        '-H', 'te: trailers', '-d', body, `http://127.0.0.1:${peer.targets.grpc}/bench.Echo/Unary`];
    }
  }
}

async function load(peer: RunningPeer, n: number, dir: string): Promise<void> {
  const r = await runCommand('h2load', h2loadArgs(peer, n, dir), { core: LOAD_CORE, timeoutMs: 600_000 });
  const ok = /status codes: (\d+) 2xx/.exec(r.stdout);
  if (ok === null || Number(ok[1]) !== n) throw new Error(`h2load: not all ${n} requests succeeded:\n${r.stdout.slice(-600)}${r.stderr.slice(-300)}`);
}

/**
 * Resolves once the router has no thread named WorkerThread (its config
 * worker) any more, at once for a checkout that never has one, or after 20 s.
 */
async function configWorkerGone(pid: number): Promise<void> {
  const until = Date.now() + 20_000;
  while (Date.now() < until) {
    let worker = false;
    try {
      for (const t of readdirSync(`/proc/${pid}/task`)) {
        if (readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim() === 'WorkerThread') worker = true;
      }
    } catch { /* a thread exited meanwhile: look again */ worker = true; }
    if (!worker) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Sum of the pause times in a --trace-gc log, ms. */
function gcMs(log: string, from: number): { ms: number; count: number } {
  let ms = 0;
  let count = 0;
  // e.g. "Scavenge 4.9 (6.0) -> 4.5 (7.0) MB, pooled: 0 MB, 5.58 / 0.00 ms  (average mu ...": the pause is the first figure.
  for (const m of log.slice(from).matchAll(/: (?:Scavenge|Mark-Compact|Minor Mark-Sweep)[^\n]*? ([\d.]+) \/ [\d.]+ ms/g)) {
    ms += Number(m[1]);
    count++;
  }
  return { ms, count };
}

/** What --trace-gc-nvp says about the collections in a log from `from` on. */
function allocation(log: string, from: number): { bytes: number; scavenges: number; others: number; pauseMs: number; sweepMs: number } {
  let bytes = 0, scavenges = 0, others = 0, pauseMs = 0, sweepMs = 0;
  for (const line of log.slice(from).split('\n')) {
    const allocated = / allocated=(\d+)/.exec(line);
    if (allocated === null) continue;
    bytes += Number(allocated[1]);
    if (!/ gc=s /.test(line)) {
      others++;
      continue;
    }
    scavenges++;
    pauseMs += Number(/ pause=([\d.]+)/.exec(line)?.[1] ?? 0);
    sweepMs += Number(/ scavenge\.sweep_array_buffers=([\d.]+)/.exec(line)?.[1] ?? 0);
  }
  return { bytes, scavenges, others, pauseMs, sweepMs };
}

async function main(): Promise<void> {
  pinSelf(LOAD_CORE);
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-cpu-'));
  try {
    const bin = join(dir, 'bin');
    buildGoTools(ROOT, bin);
    const backends = await startBackends(dir, bin);
    const perReq = checkouts.map(() => [] as number[]);
    const gc = checkouts.map(() => [] as string[]);
    const allocs = checkouts.map(() => [] as number[]);
    for (let round = 0; round < rounds; round++) {
      for (const [i, root] of checkouts.entries()) {
        const own = i === 1 && opts['node-options-b'] !== undefined ? opts['node-options-b'] : opts['node-options'] ?? '';
        const nodeArgs = [...(opts.alloc ? ['--trace-gc-nvp'] : opts.gc ? ['--trace-gc'] : []), ...own.split(' ').filter((a) => a !== '')];
        const peer = await startPeer('switchyard', { dir, backends, root, maxConns: 1000, nodeArgs });
        try {
          await load(peer, Math.max(1000, Math.floor(requests / 5)), dir);
          await configWorkerGone(peer.pid!);
          const logFile = join(dir, 'switchyard.log');
          const logFrom = readFileSync(logFile, 'utf8').length;
          const cpu0 = treeCpuSeconds(peer.pid!);
          await load(peer, requests, dir);
          const us = (treeCpuSeconds(peer.pid!) - cpu0) * 1e6 / requests;
          perReq[i]!.push(us);
          let gcNote = '';
          if (opts.alloc) {
            const a = allocation(readFileSync(logFile, 'utf8'), logFrom);
            allocs[i]!.push(a.bytes / requests);
            gcNote = `, ${(a.bytes / requests).toFixed(0)} B allocated/req, ${(a.scavenges * 1e4 / requests).toFixed(1)} scavenges/10k req, ` +
              `${(a.others * 1e4 / requests).toFixed(1)} other collections (mark-compacts)/10k, scavenge mean ${(a.pauseMs / Math.max(1, a.scavenges)).toFixed(2)} ms (ArrayBuffer sweep ${(a.sweepMs / Math.max(1, a.scavenges)).toFixed(2)})`;
          } else if (opts.gc) {
            const g = gcMs(readFileSync(logFile, 'utf8'), logFrom);
            gcNote = `, GC ${(g.ms * 1000 / requests).toFixed(2)} µs/req (${g.count} pauses, ${g.ms.toFixed(0)} ms)`;
            gc[i]!.push(gcNote);
          }
          console.log(`round ${round + 1} ${String.fromCharCode(65 + i)} ${root}: ${us.toFixed(2)} µs CPU/request${gcNote}`);
        } finally {
          await peer.stop();
          writeFileSync(join(dir, 'switchyard.log'), '');
        }
      }
    }
    console.log(`\n${scenario}, ${requests.toLocaleString('en-US')} requests x ${rounds} rounds; CPU per 100,000 requests (median):`);
    const meds = perReq.map(median);
    for (const [i, root] of checkouts.entries()) {
      console.log(`  ${String.fromCharCode(65 + i)} ${root}: ${(meds[i]! / 10).toFixed(2)} s  [${perReq[i]!.map((x) => (x / 10).toFixed(2)).join(', ')}]`);
    }
    if (meds.length === 2) console.log(`  B/A = ${(meds[1]! / meds[0]!).toFixed(3)}`);
    if (opts.alloc) {
      console.log('bytes allocated per request (median):');
      for (const [i, root] of checkouts.entries()) {
        console.log(`  ${String.fromCharCode(65 + i)} ${root}: ${median(allocs[i]!).toFixed(0)} B  [${allocs[i]!.map((x) => x.toFixed(0)).join(', ')}]`);
      }
    }
  } finally {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

runScript(main);
