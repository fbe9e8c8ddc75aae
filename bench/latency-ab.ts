// HTTP/1.1 tail latency of switchyard checkouts, A/B: the latency scenario
// of the bench (bench/go/fixedrate, 50 connections, open loop, nginx backend,
// the router on core 1), each run on a freshly started router, and the
// medians. On a shared machine one run's p99.9 is mostly the neighbours, so
// every run also reports how long the router's main thread waited for its
// core ("run-queue wait", from /proc/PID/task/PID/schedstat): a tail is only
// the router's own where that is near zero.
//
//   npm run bench:latency -- --a DIR [--b DIR] [--rounds 4] [--rate 5000] [--warmup 3] [--duration 10]
//                                  [--together] [--probe] [--threads] [--keep]
//                                  [--node-options='--trace-gc-nvp'] [--env-a K=V] [--env-b K=V]
//
// Rounds run A B A B ...; --together runs A and B at the same time instead
// (each with its own fixedrate, both routers on core 1), so both see the same
// neighbours at the same moment: on a busy machine the fairer comparison.
// --probe loads bench/latency-probe.ts into the routers: per run the event
// loop's worst delay, the longest stretch of main-thread CPU between two
// 1 ms timer ticks (GC or JavaScript; unlike wall-clock delays not stretched
// by other processes) and the GC pauses, over the measured seconds.
// --threads: CPU by thread name (main, V8 workers, libuv). --keep leaves the
// run directory (router logs: --trace-gc output, probe files).
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { startBackends, type Backends } from './backends.ts';
import { HOSTS, startPeer } from './peers.ts';
import { LOAD_CORE, pinSelf, runCommand, runScript, stopAll } from './procs.ts';
import { median } from './stats.ts';
import { buildGoTools } from './tools.ts';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');

const { values: opts } = parseArgs({
  options: {
    a: { type: 'string' },
    b: { type: 'string' },
    rounds: { type: 'string', default: '4' },
    rate: { type: 'string', default: '5000' },
    warmup: { type: 'string', default: '3' },
    duration: { type: 'string', default: '10' },
    probe: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    threads: { type: 'boolean', default: false },
    together: { type: 'boolean', default: false },
    'node-options': { type: 'string' },
    'env-a': { type: 'string', multiple: true },
    'env-b': { type: 'string', multiple: true },
  },
});

const sides = [opts.a ?? ROOT, ...(opts.b === undefined ? [] : [opts.b])].map((d) => resolve(d));
const envs = [opts['env-a'] ?? [], opts['env-b'] ?? []].map((l) => Object.fromEntries(l.map((kv) => kv.split('=', 2) as [string, string])));
const rounds = Number(opts.rounds);
const warmupS = Number(opts.warmup);
const measureS = Number(opts.duration);

interface Figures { p50: number; p99: number; p999: number; max: number; waitMs: number; burstMax?: number; eldMax?: number; gcMax?: number; gcMs?: number }

/** The router's main thread: ns on the CPU and ns runnable but waiting for it (another process had the core). */
function schedstat(pid: number): [number, number] {
  try {
    const [run, wait] = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ').map(Number);
    return [run!, wait!];
  } catch {
    return [0, 0];
  }
}

/** CPU ns so far of each of the router's threads, by thread name (V8's GC and compiler threads share the core with the main thread). */
function threadCpu(pid: number): Map<string, number> {
  const by = new Map<string, number>();
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
        const name = tid === String(pid) ? 'main' : comm;
        const run = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
        by.set(name, (by.get(name) ?? 0) + run);
      } catch { /* exited */ }
    }
  } catch { /* exited */ }
  return by;
}

function probeFigures(file: string, from: number): Pick<Figures, 'burstMax' | 'eldMax' | 'gcMax' | 'gcMs'> {
  if (!existsSync(file)) return {};
  const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { t: number; burstMax: number; eldMax: number; gcMax: number; gcMs: number});
  const measured = lines.filter((l) => l.t > from + 1000);
  return {
    burstMax: Math.max(...measured.map((l) => l.burstMax)),
    eldMax: Math.max(...measured.map((l) => l.eldMax)),
    gcMax: Math.max(...measured.map((l) => l.gcMax)),
    gcMs: measured.reduce((s, l) => s + l.gcMs, 0) / Math.max(1, measured.length),
  };
}

type Peer = Awaited<ReturnType<typeof startPeer>>;

async function start(i: number, round: number, dir: string, backends: Backends): Promise<{ peer: Peer; probeOut: string }> {
  const probeOut = join(dir, `probe-${round}-${i}.jsonl`);
  const nodeArgs = [...(opts.probe ? ['--import', join(ROOT, 'bench/latency-probe.ts')] : []), ...(opts['node-options'] ?? '').split(' ').filter((a) => a !== '')];
  const env = { ...envs[i], SWITCHYARD_PROBE_OUT: probeOut };
  for (const [k, v] of Object.entries(env)) process.env[k] = v;
  try {
    // Its own name: with --together both run at once and must not share a log or config file.
    return { peer: await startPeer(i === 0 ? 'switchyard' : 'switchyard-before', { dir, backends, root: sides[i]!, beforeRoot: sides[i]!, maxConns: 1000, nodeArgs }), probeOut };
  } finally {
    for (const k of Object.keys(env)) delete process.env[k];
  }
}

async function measure(i: number, round: number, peer: Peer, probeOut: string, bin: string): Promise<Figures> {
  const t0 = Date.now() + warmupS * 1000;
  let s0: [number, number] = [0, 0];
  let c0 = new Map<string, number>();
  const mark = sleep(warmupS * 1000).then(() => { s0 = schedstat(peer.pid!); c0 = threadCpu(peer.pid!); });
  const r = await runCommand(join(bin, 'fixedrate'), ['-addr', `127.0.0.1:${peer.targets.h1}`, '-host', HOSTS.h1, '-path', '/small',
    '-rate', opts.rate!, '-conns', '50', '-warmup', `${warmupS}s`, '-duration', `${measureS}s`], { core: LOAD_CORE, timeoutMs: (warmupS + measureS + 30) * 1000 });
  await mark;
  const s1 = schedstat(peer.pid!);
  const c1 = threadCpu(peer.pid!);
  const j = JSON.parse(r.stdout) as Record<string, number>;
  const side = String.fromCharCode(65 + i);
  if (Number(j['errors']) + Number(j['non2xx']) > 0) {
    console.log(`  ${side}: ${j['errors']} errors, ${j['non2xx']} non-2xx${j['lastError'] === undefined ? '' : ` (last error: ${j['lastError']})`}`);
  }
  const f: Figures = {
    p50: j['p50Us']! / 1000, p99: j['p99Us']! / 1000, p999: j['p999Us']! / 1000, max: j['maxUs']! / 1000,
    waitMs: (s1[1] - s0[1]) / 1e6 / measureS, ...probeFigures(probeOut, t0),
  };
  const probe = f.eldMax === undefined ? '' : `  longest CPU burst ${f.burstMax!.toFixed(1)} ms, loop delay max ${f.eldMax.toFixed(1)} ms, GC max ${f.gcMax!.toFixed(1)} ms, GC ${f.gcMs!.toFixed(1)} ms/s`;
  console.log(`round ${round + 1} ${side}: p50 ${f.p50.toFixed(3)}  p99 ${f.p99.toFixed(3)}  p99.9 ${f.p999.toFixed(3)}  max ${f.max.toFixed(1)} ms  run-queue wait ${f.waitMs.toFixed(0)} ms/s, CPU ${((s1[0] - s0[0]) / 1e7 / measureS).toFixed(0)}%${probe}`);
  if (opts.threads) console.log(`  threads: ${[...c1].map(([k, v]) => `${k} ${((v - (c0.get(k) ?? 0)) / 1e7 / measureS).toFixed(1)}%`).join(', ')}`);
  return f;
}

async function main(): Promise<void> {
  pinSelf(LOAD_CORE);
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-lat-'));
  try {
    const bin = join(dir, 'bin');
    buildGoTools(ROOT, bin);
    const backends = await startBackends(dir, bin);
    const figs = sides.map(() => [] as Figures[]);
    for (let round = 0; round < rounds; round++) {
      if (opts.together) {
        // One after the other: each start sets its own environment.
        const started: Awaited<ReturnType<typeof start>>[] = [];
        for (const i of sides.keys()) started.push(await start(i, round, dir, backends));
        try {
          await sleep(500);
          const fs = await Promise.all(started.map(({ peer, probeOut }, i) => measure(i, round, peer, probeOut, bin)));
          fs.forEach((f, i) => figs[i]!.push(f));
        } finally {
          await Promise.all(started.map(({ peer }) => peer.stop()));
        }
        continue;
      }
      for (const i of sides.keys()) {
        const { peer, probeOut } = await start(i, round, dir, backends);
        try {
          await sleep(500);
          figs[i]!.push(await measure(i, round, peer, probeOut, bin));
        } finally {
          await peer.stop();
        }
      }
    }
    console.log(`\nmedians over ${rounds} rounds (ms), ${opts.rate} req/s${opts.together ? ', both checkouts at once' : ''}:`);
    if (sides.length === 2) {
      // Round by round, the two runs closest in time: on a busy machine a count says more than medians of runs that differ 10x.
      const wins = figs[0]!.filter((f, r) => f.p999 < figs[1]![r]!.p999).length;
      console.log(`  A's p99.9 lower than B's in ${wins} of ${rounds} rounds`);
    }
    for (const [i, root] of sides.entries()) {
      const m = (k: keyof Figures): string => median(figs[i]!.map((f) => f[k] ?? NaN)).toFixed(3);
      console.log(`  ${String.fromCharCode(65 + i)} ${root}: p50 ${m('p50')}  p99 ${m('p99')}  p99.9 ${m('p999')}  max ${m('max')}  run-queue wait ${m('waitMs')} ms/s${opts.probe ? `  CPU burst max ${m('burstMax')}  loop delay max ${m('eldMax')}  GC max ${m('gcMax')}` : ''}`);
    }
  } finally {
    await stopAll();
    if (opts.keep) console.log(`kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

runScript(main);
