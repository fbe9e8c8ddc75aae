// What the garbage collector does in switchyard under a fixed-rate load, per
// V8 flag setting: how many scavenges and mark-compacts per 10,000 requests,
// their pause distribution, and the RSS it costs. The counts follow the
// allocation volume and hardly change with machine load, so they hold up on a
// busy machine where latency percentiles do not (pause lengths sit between
// the two: wall-clock, so a busy core stretches them).
//
//   node bench/gc-pauses.ts [--scenario grpc|h1] [--seconds S] [--rounds R]
//                           [--set 'NAME=FLAGS' ...] [--latency]
//
//   --scenario grpc  ghz --rps 2000 (8 connections, 64 workers) to the grpc-go echo backend
//   --scenario h1    bench/go/fixedrate at 5,000 req/s, 50 connections, to nginx
//   --set            a setting: a name and the node flags it adds after --trace-gc
//                    ('default=' is the router as it ships); repeatable
//   --workers N      ghz's concurrent calls (-c; default 64, as in the bench)
//   --alloc-sites    also profile allocation by site (bench/alloc-sites.ts) and
//                    print it after each run (the profiler costs CPU: CPU and
//                    pause columns of such runs are not comparable)
//   --log-dir DIR    keep each run's router log (the GC trace) there
//   --no-defaults    do not drop the flags src/cli/main.ts applies by default
//                    (SWITCHYARD_NODE_DEFAULTS=off is set otherwise, so each
//                    setting is exactly what it names)
//
// Settings alternate within each round, so drift on the machine hits all alike.
// Prints one line per run and a Markdown table of the medians.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { startBackends } from './backends.ts';
import { HOSTS, startPeer, type RunningPeer } from './peers.ts';
import { LOAD_CORE, pinSelf, runCommand, runScript, stopAll, treeCpuSeconds, treeRss } from './procs.ts';
import { buildGoTools, ensureTools } from './tools.ts';
import { median } from './stats.ts';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');

const { values: opts } = parseArgs({
  options: {
    scenario: { type: 'string', default: 'grpc' },
    seconds: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '2' },
    set: { type: 'string', multiple: true },
    root: { type: 'string' },
    latency: { type: 'boolean', default: false },
    'no-defaults': { type: 'boolean', default: false },
    'log-dir': { type: 'string' },
    workers: { type: 'string', default: '64' },
    'alloc-sites': { type: 'boolean', default: false },
  },
});

const scenario = opts.scenario as 'grpc' | 'h1';
if (scenario !== 'grpc' && scenario !== 'h1') throw new Error(`unknown scenario ${scenario}`);
const RATE = scenario === 'grpc' ? 2000 : 5000;
const seconds = Number(opts.seconds);
const rounds = Number(opts.rounds);
const root = resolve(opts.root ?? ROOT);
const settings = (opts.set ?? ['default=']).map((s) => {
  const eq = s.indexOf('=');
  if (eq < 1) throw new Error(`--set NAME=FLAGS, got "${s}"`);
  return { name: s.slice(0, eq), flags: s.slice(eq + 1).split(' ').filter((f) => f !== '') };
});

interface Pause { kind: 'scavenge' | 'mark-compact' | 'other'; ms: number }

/** The pauses in a --trace-gc log. */
export function parsePauses(log: string): Pause[] {
  const pauses: Pause[] = [];
  // e.g. "Scavenge 4.9 (6.0) -> 4.5 (7.0) MB, pooled: 0 MB, 5.58 / 0.00 ms  (average mu ...": the pause is the first figure.
  for (const m of log.matchAll(/ms: (Scavenge|Mark-Compact|Minor Mark-Sweep|Mark-Sweep)[^\n]*? ([\d.]+) \/ [\d.]+ ms/g)) {
    pauses.push({ kind: m[1] === 'Scavenge' ? 'scavenge' : m[1]!.startsWith('Mark-') ? 'mark-compact' : 'other', ms: Number(m[2]) });
  }
  return pauses;
}

function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
}

interface Run {
  setting: string;
  requests: number;
  scavengesPer10k: number;
  markCompactsPer10k: number;
  pauseMax: number;
  pauseP99: number;
  pauseP50: number;
  scavengeMean: number;
  scavengeP99: number;
  markCompactMax: number;
  pauseMsPerS: number;
  cpuUsPerReq: number;
  idleRssMb: number;
  loadRssMb: number;
  latency?: string;
}

const GRPC_WORKERS = Number(opts.workers);

async function load(peer: RunningPeer, secs: number, bin: string, ghz: string): Promise<{ requests: number; latency: string }> {
  if (scenario === 'grpc') {
    const r = await runCommand(ghz, [
      '--insecure', '--proto', join(ROOT, 'bench/proto/bench.proto'), '--call', 'bench.Echo.Unary',
      '-d', JSON.stringify({ payload: Buffer.from('switchyard-bench').toString('base64') }),
      '--connections', '8', '-c', String(GRPC_WORKERS), '--rps', String(RATE), '-z', `${secs}s`, '--timeout', '5s',
      '--authority', HOSTS.grpc, '--format', 'json', `127.0.0.1:${peer.targets.grpc}`,
    ], { core: LOAD_CORE, timeoutMs: (secs + 30) * 1000 });
    const j = JSON.parse(r.stdout) as { count: number; statusCodeDistribution?: Record<string, number>; latencyDistribution?: { percentage: number; latency: number }[] };
    const ok = j.statusCodeDistribution?.['OK'] ?? 0;
    if (ok < j.count - GRPC_WORKERS) throw new Error(`ghz: only ${ok} of ${j.count} OK: ${JSON.stringify(j.statusCodeDistribution)}`);
    const p = (pct: number): string => ((j.latencyDistribution?.find((d) => d.percentage === pct)?.latency ?? 0) / 1e6).toFixed(2);
    return { requests: j.count, latency: `p50 ${p(50)} p99 ${p(99)} ms` };
  }
  const r = await runCommand(join(bin, 'fixedrate'), [
    '-addr', `127.0.0.1:${peer.targets.h1}`, '-host', HOSTS.h1, '-path', '/small',
    '-rate', String(RATE), '-conns', '50', '-warmup', '0s', '-duration', `${secs}s`,
  ], { core: LOAD_CORE, timeoutMs: (secs + 30) * 1000 });
  const j = JSON.parse(r.stdout) as Record<string, number>;
  if ((j['errors'] ?? 0) + (j['non2xx'] ?? 0) > 0) throw new Error(`fixedrate: failures ${r.stdout}`);
  return { requests: j['requests']!, latency: `p99 ${(j['p99Us']! / 1000).toFixed(2)} p99.9 ${(j['p999Us']! / 1000).toFixed(2)} ms` };
}

async function main(): Promise<void> {
  pinSelf(LOAD_CORE);
  const { ghz } = ensureTools([], false);
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-gc-'));
  const runs: Run[] = [];
  try {
    const bin = join(dir, 'bin');
    buildGoTools(ROOT, bin);
    const backends = await startBackends(dir, bin);
    if (opts['no-defaults'] !== true) process.env['SWITCHYARD_NODE_DEFAULTS'] = 'off';
    for (let round = 0; round < rounds; round++) {
      for (const s of settings) {
        const logFile = join(dir, 'switchyard.log');
        writeFileSync(logFile, '');
        const allocOut = join(dir, `alloc-${s.name}-${round + 1}.txt`);
        if (opts['alloc-sites']) process.env['ALLOC_SITES_OUT'] = allocOut;
        const profArgs = opts['alloc-sites'] ? [`--import=${join(ROOT, 'bench/alloc-sites.ts')}`] : [];
        const peer = await startPeer('switchyard', { dir, backends, root, maxConns: 1000, nodeArgs: ['--trace-gc', ...profArgs, ...s.flags] });
        try {
          // Idle: after the config worker's idle end (5 s), before any request.
          await sleep(7000);
          const idleRss = treeRss(peer.pid!);
          await load(peer, 5, bin, ghz); // warm-up: JIT, pools, the young generation grown
          const from = readFileSync(logFile, 'utf8').length;
          const cpu0 = treeCpuSeconds(peer.pid!);
          let maxRss = 0;
          const sampler = setInterval(() => { maxRss = Math.max(maxRss, treeRss(peer.pid!)); }, 250);
          const t0 = performance.now();
          const r = await load(peer, seconds, bin, ghz);
          const secs = (performance.now() - t0) / 1000;
          clearInterval(sampler);
          const cpu = treeCpuSeconds(peer.pid!) - cpu0;
          const pauses = parsePauses(readFileSync(logFile, 'utf8').slice(from));
          const scav = pauses.filter((p) => p.kind === 'scavenge');
          const ms = pauses.map((p) => p.ms);
          const run: Run = {
            setting: s.name,
            requests: r.requests,
            scavengesPer10k: scav.length * 1e4 / r.requests,
            markCompactsPer10k: pauses.filter((p) => p.kind === 'mark-compact').length * 1e4 / r.requests,
            pauseMax: Math.max(0, ...ms),
            pauseP99: quantile(ms, 0.99),
            pauseP50: quantile(ms, 0.5),
            scavengeMean: scav.length === 0 ? 0 : scav.reduce((a, p) => a + p.ms, 0) / scav.length,
            scavengeP99: quantile(scav.map((p) => p.ms), 0.99),
            markCompactMax: Math.max(0, ...pauses.filter((p) => p.kind === 'mark-compact').map((p) => p.ms)),
            pauseMsPerS: ms.reduce((a, b) => a + b, 0) / secs,
            cpuUsPerReq: cpu * 1e6 / r.requests,
            idleRssMb: idleRss / 2 ** 20,
            loadRssMb: maxRss / 2 ** 20,
            ...(opts.latency ? { latency: r.latency } : {}),
          };
          runs.push(run);
          if (opts['alloc-sites']) {
            process.kill(peer.pid!, 'SIGUSR2');
            for (let i = 0; i < 100 && !existsSync(allocOut); i++) await sleep(100);
            await sleep(200);
            console.log(existsSync(allocOut) ? readFileSync(allocOut, 'utf8') : 'alloc-sites: no profile written');
          }
          console.log(`round ${round + 1} ${s.name}: ${r.requests} req, scavenges/10k ${run.scavengesPer10k.toFixed(1)}, ` +
            `mark-compacts/10k ${run.markCompactsPer10k.toFixed(2)}, pause p50/p99/max ${run.pauseP50.toFixed(2)}/${run.pauseP99.toFixed(2)}/${run.pauseMax.toFixed(2)} ms, ` +
            `scavenge mean/p99 ${run.scavengeMean.toFixed(2)}/${run.scavengeP99.toFixed(2)} ms, mark-compact max ${run.markCompactMax.toFixed(1)} ms, ${run.pauseMsPerS.toFixed(1)} ms pause/s, ${run.cpuUsPerReq.toFixed(1)} µs CPU/req, ` +
            `RSS idle ${run.idleRssMb.toFixed(0)} MB, under load ${run.loadRssMb.toFixed(0)} MB${run.latency === undefined ? '' : `, ${run.latency} (indicative)`}`);
        } finally {
          await peer.stop();
          if (opts['log-dir'] !== undefined) copyFileSync(logFile, join(opts['log-dir'], `${scenario}-${s.name}-${round + 1}.log`));
        }
      }
    }
    const f = (xs: number[], d: number): string => median(xs).toFixed(d);
    console.log(`\n${scenario} at ${RATE}/s, ${seconds} s x ${rounds} rounds, medians:\n`);
    console.log('| setting | scavenges / 10k req | mark-compacts / 10k | pause p50 | pause p99 | pause max | scavenge mean | scavenge p99 | mark-compact max | pause ms/s | CPU µs/req | RSS idle | RSS under load |');
    console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const s of settings) {
      const rs = runs.filter((r) => r.setting === s.name);
      const col = (k: keyof Run, d: number): string => f(rs.map((r) => r[k] as number), d);
      console.log(`| ${s.name} \`${s.flags.join(' ') || '(none)'}\` | ${col('scavengesPer10k', 1)} | ${col('markCompactsPer10k', 2)} | ${col('pauseP50', 2)} ms | ` +
        `${col('pauseP99', 2)} ms | ${col('pauseMax', 1)} ms | ${col('scavengeMean', 2)} ms | ${col('scavengeP99', 2)} ms | ${col('markCompactMax', 1)} ms | ${col('pauseMsPerS', 1)} | ${col('cpuUsPerReq', 1)} | ${col('idleRssMb', 0)} MB | ${col('loadRssMb', 0)} MB |`);
    }
  } finally {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

runScript(main);
