// switchyard load benchmark: switchyard against direct (no proxy), HAProxy,
// nginx, Caddy and Traefik (built once by bench/traefik.ts), under the same
// conditions, with a Markdown report and an SVG chart.
//
//   npm run bench                      full run (~22 min; the first one also builds Traefik, ~8 min), report in bench/results/
//   npm run bench -- --smoke           ~1.5 min: 1 s warm-up + 1 s per scenario, direct + HAProxy + switchyard,
//                                      report in bench/results/smoke/ (git-ignored); for CI
//   options: --peers a,b,c  --scenarios h1-small,grpc,...  --warmup S  --duration S
//            --no-install (fail instead of installing missing tools)
//            --switchyard DIR (benchmark another checkout of switchyard)
//            --before DIR (one more peer, "switchyard (before)": that checkout, run beside this one, with a
//                          before/after section; a checkout with src/cli.ts, the flat layout, works too)
//            --compare RUN.json (a before/after section against an earlier run's switchyard figures; may be repeated)
//            --report-from RUN.json (no run: writes RUN.md and RUN.svg again from RUN.json, with --compare if given)
//
// Layout (2 cores): the proxy alone on core 1, load generators and backends on
// core 0. One peer runs at a time; every process is killed at the end.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startBackends } from './backends.ts';
import { PEER_NAMES, startPeer, type PeerContext, type PeerName, type RunningPeer } from './peers.ts';
import { LOAD_CORE, killAllNow, pinSelf, stopAll } from './procs.ts';
import { markdown, readRun, svg, verdicts, type Compared, type Run } from './report.ts';
import * as sc from './scenarios.ts';
import type { FreshMemory, Measurement, ScenarioId, Settings } from './scenarios.ts';
import { buildGoTools, ensureTools, fdHardLimit, machine, versions } from './tools.ts';
import { traefikBinary } from './traefik.ts';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');
const ALL_SCENARIOS: ScenarioId[] = ['h1-small', 'h1-1k', 'h1-64k', 'h2c', 'grpc', 'grpc-ghz', 'latency', 'grpc-latency', 'split', 'routes', 'memory'];
const MANY_ROUTES = 10_000;
const IDLE_CONNS = 10_000;

const { values: opts } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    peers: { type: 'string' },
    scenarios: { type: 'string' },
    warmup: { type: 'string' },
    duration: { type: 'string' },
    install: { type: 'boolean', default: true },
    switchyard: { type: 'string' },
    before: { type: 'string' },
    compare: { type: 'string', multiple: true },
    'report-from': { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  allowNegative: true,
});

if (opts.help) {
  process.stdout.write(`usage: npm run bench [-- --smoke] [--peers ${PEER_NAMES.join(',')}] [--scenarios ${ALL_SCENARIOS.join(',')}]
                 [--warmup S] [--duration S] [--no-install] [--switchyard DIR] [--before DIR] [--compare RUN.json]
       npm run bench -- --report-from RUN.json [--compare RUN.json]   (rewrite a run's report, no run)\n`);
  process.exit(0);
}

function list<T extends string>(value: string | undefined, all: readonly T[], fallback: readonly T[]): T[] {
  if (value === undefined) return [...fallback];
  const items = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const bad = items.filter((s) => !(all as readonly string[]).includes(s));
  if (bad.length > 0) throw new Error(`unknown: ${bad.join(', ')} (known: ${all.join(', ')})`);
  return all.filter((a) => items.includes(a)); // the canonical order
}

const smoke = opts.smoke;
// The smoke run keeps one real peer: HAProxy, the HTTP/1.1 reference.
const beforeRoot = opts.before === undefined ? undefined : resolve(opts.before);
if (beforeRoot !== undefined && !existsSync(join(beforeRoot, 'package.json'))) throw new Error(`--before ${beforeRoot}: not a switchyard checkout`);
const peers: PeerName[] = list(opts.peers, PEER_NAMES, smoke ? ['direct', 'haproxy', 'switchyard'] : PEER_NAMES);
// The earlier checkout runs just before this one, so the two sit side by side in every table.
if (beforeRoot !== undefined) peers.splice(peers.includes('switchyard') ? peers.indexOf('switchyard') : peers.length, 0, 'switchyard-before');
const compared = opts.compare?.map((file) => comparedRun(resolve(file)));
const scenarios = list(opts.scenarios, ALL_SCENARIOS, ALL_SCENARIOS);
const warmupS = Number(opts.warmup ?? (smoke ? 1 : 5));
const measureS = Number(opts.duration ?? (smoke ? 1 : 15));
const switchyardRoot = resolve(opts.switchyard ?? ROOT);
if (!Number.isInteger(warmupS) || !Number.isInteger(measureS) || warmupS < 1 || measureS < 1) {
  throw new Error('--warmup and --duration are whole seconds >= 1 (wrk takes no fractions)');
}

/** An earlier run's figures (switchyard's, and direct's to scale them by), for the before/after section. */
function comparedRun(file: string): Compared {
  const old = readRun(file);
  return {
    file: basename(file), startedAt: old.startedAt.toISOString(), version: old.versions['switchyard'] ?? 'unknown',
    results: old.results.filter((m) => m.peer === 'switchyard' || m.peer === 'direct'),
  };
}

/** Which scenarios a peer runs: direct has no proxy (no split, no memory); routes is switchyard's alone. */
function scenariosOf(peer: PeerName): ScenarioId[] {
  return scenarios.filter((s) => {
    if (peer === 'direct') return !['split', 'memory', 'routes'].includes(s);
    if (s === 'routes') return false; // a phase of its own, below
    if (s === 'split') return peer !== 'caddy'; // Caddy 2.6 has no weighted balancing
    return true;
  });
}

/** An upper bound on the whole run: the watchdog kills everything past it. */
function budgetSeconds(): number {
  let runs = 0;
  // (The memory scenario counts twice: a fresh instance of its own, then the loaded one.)
  for (const p of peers) {
    const own = scenariosOf(p);
    runs += own.length + (own.includes('memory') ? 1 : 0) + (p === 'switchyard' && scenarios.includes('routes') ? 2 : 0);
  }
  // A Traefik not built yet is built first (~8 min on 2 quiet cores, more on a busy machine).
  const build = peers.includes('traefik') && !existsSync(traefikBinary()) ? 3600 : 0;
  // Smoke: ~1.5 min on a quiet machine; the budget leaves room for a busy one.
  return (smoke ? 60 + runs * 5 : 180 + runs * (warmupS + measureS + 15)) + build;
}

async function runPeer(peer: RunningPeer, s: Settings, backends: Awaited<ReturnType<typeof startBackends>>, fresh: FreshMemory | Error | undefined): Promise<Measurement[]> {
  const out: Measurement[] = [];
  for (const id of scenariosOf(peer.name)) {
    let m: Measurement;
    switch (id) {
      case 'h1-small': case 'h1-1k': case 'h1-64k': m = await sc.h1(s, peer, id); break;
      case 'h2c': m = await sc.h2c(s, peer); break;
      case 'grpc': m = await sc.grpc(s, peer); break;
      case 'grpc-ghz': m = await sc.grpcGhz(s, peer); break;
      case 'latency': m = await sc.latency(s, peer); break;
      case 'grpc-latency': m = await sc.grpcLatency(s, peer); break;
      case 'split': m = await sc.split(s, peer, backends); break;
      case 'memory': m = await sc.memory(s, peer, fresh); break;
      case 'routes': continue; // its own phase: see main()
    }
    progress(m);
    out.push(m);
  }
  return out;
}

function progress(m: Measurement): void {
  const what = `${m.peer}${m.variant === undefined ? '' : ` (${m.variant})`} ${m.scenario}`.padEnd(34);
  if (!m.ok) {
    console.log(`  ${what} FAILED: ${m.error}`);
    return;
  }
  let figure = `${Math.round(m.rps ?? 0).toLocaleString('en-US')} req/s`;
  if (m.latency !== undefined) figure = `mean ${(m.latency.meanUs / 1000).toFixed(3)} ms, p99 ${(m.latency.p99Us / 1000).toFixed(3)} ms, p99.9 ${(m.latency.p999Us / 1000).toFixed(3)} ms`;
  if (m.split !== undefined) figure += `, a ${m.split.a} / b ${m.split.b}`;
  if (m.memory !== undefined) {
    const f = m.memory.fresh;
    const mb = (b: number): string => (b / 2 ** 20).toFixed(1);
    figure = `${m.memory.conns} conns: ${f === undefined ? '' : `fresh: start ${mb(f.startBytes)}, idle ${mb(f.idleBytes)} → ${mb(f.loadedBytes)} MiB; `}after load: idle ${mb(m.memory.idleBytes)} → ${mb(m.memory.loadedBytes)} MiB`;
  }
  const waited = m.latency === undefined || m.proxyWait === undefined ? '' : `waited for its core ${Math.round(m.proxyWait * 100)}%, `;
  const cpu = m.loadCore === undefined ? '' : `  (${m.proxyCpu === undefined ? '' : `proxy CPU ${Math.round(m.proxyCpu * 100)}%, ${waited}`}load core ${Math.round(m.loadCore * 100)}%)`;
  console.log(`  ${what} ${figure}${cpu}`);
}

function stamp(d: Date): string {
  return d.toISOString().slice(0, 16).replace('T', '-').replace(':', '');
}

async function main(): Promise<number> {
  const startedAt = new Date();
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 24) throw new Error(`Node ${process.version}: the bench needs Node >= 24 — run it through npm (npm run bench), which puts the pinned Node first on the PATH`);
  const mach = machine();
  if (process.platform !== 'linux' || mach.nproc < 2) throw new Error('the bench needs Linux and at least 2 cores (proxy on core 1, load on core 0)');

  console.log(`bench: ${smoke ? 'smoke' : 'full'} run — peers ${peers.join(', ')}; ${warmupS} s warm-up + ${measureS} s per run; budget ${budgetSeconds()} s`);
  const tools = ensureTools(peers, opts.install);
  pinSelf(LOAD_CORE);

  // HAProxy wants 2 fds per connection under the fd limit; every peer gets
  // the same N, so N shrinks when the limit is low (containers).
  const fdLimit = fdHardLimit();
  const fit = Math.floor((fdLimit - 1000) / 2 / 1000) * 1000;
  const idleConns = smoke ? 1000 : Math.min(IDLE_CONNS, fit);
  const idleConnsNote = !smoke && idleConns < IDLE_CONNS
    ? `The open-files hard limit here is ${fdLimit}, and HAProxy reserves 2 fds per connection, so N is ${idleConns} instead of ${IDLE_CONNS}.`
    : undefined;

  const dir = mkdtempSync(join(tmpdir(), 'switchyard-bench-'));
  let keepDir = false;
  try {
    const bin = join(dir, 'bin');
    buildGoTools(ROOT, bin);
    armWatchdog();
    const settings: Settings = { warmupS, measureS, idleConns, dir, bin, ghz: tools.ghz, root: ROOT };
    const backends = await startBackends(dir, bin);
    const results: Measurement[] = [];
    const ctx: PeerContext = { dir, backends, root: switchyardRoot, ...(beforeRoot === undefined ? {} : { beforeRoot }), maxConns: idleConns + 500 };
    for (const name of peers) {
      console.log(`bench: ${name}`);
      const fresh = scenariosOf(name).includes('memory') ? await memoryOfFresh(name, ctx, settings) : undefined;
      let peer: RunningPeer;
      try {
        peer = await startPeer(name, ctx);
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        console.log(`  ${name} did not start: ${error}`);
        for (const id of scenariosOf(name)) results.push({ scenario: id, peer: name, ok: false, error: `did not start: ${error.split('\n')[0]}` });
        keepDir = true;
        continue;
      }
      try {
        results.push(...await runPeer(peer, settings, backends, fresh));
      } finally {
        await peer.stop();
      }
      if (name === 'switchyard' && scenarios.includes('routes')) {
        // Route lookup cost: a fresh router with its few routes, then a fresh
        // one with 10,000 more, so both have had the same warm-up.
        for (const hosts of [1, MANY_ROUTES]) {
          let fresh: RunningPeer | undefined;
          try {
            fresh = await startPeer('switchyard', { ...ctx, extraRoutes: hosts === 1 ? 0 : hosts });
            const m = await sc.routes(settings, fresh, hosts);
            progress(m);
            results.push(m);
          } catch (err) {
            const variant = hosts === 1 ? '1 host' : `${hosts.toLocaleString('en-US')} hosts`;
            results.push({ scenario: 'routes', peer: 'switchyard', variant, ok: false, error: String(err) });
          } finally {
            await fresh?.stop();
          }
        }
      }
    }
    await stopAll();

    const run: Run = {
      startedAt, elapsedS: (Date.now() - startedAt.getTime()) / 1000, smoke, peers,
      settings: { warmupS, measureS, idleConns, ...(idleConnsNote === undefined ? {} : { idleConnsNote }) },
      machine: mach, versions: versions(ROOT, switchyardRoot, peers, tools.ghz, beforeRoot), results,
      ...(compared === undefined ? {} : { compared }),
    };
    writeReport(run);
    const failures = results.filter((m) => !m.ok);
    if (failures.length > 0) keepDir = true;
    console.log(`bench: done in ${Math.round(run.elapsedS)} s; ${results.length - failures.length} figures, ${failures.length} failed`);
    printVerdicts(run);
    return failures.length > 0 ? 1 : 0;
  } catch (err) {
    keepDir = true;
    throw err;
  } finally {
    await stopAll();
    if (keepDir) console.log(`bench: logs and generated configs kept in ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

/** The memory scenario's fresh half: an instance started for it alone, stopped after. */
async function memoryOfFresh(name: PeerName, ctx: PeerContext, s: Settings): Promise<FreshMemory | Error> {
  let fresh: RunningPeer | undefined;
  try {
    fresh = await startPeer(name, ctx);
    return await sc.memoryFresh(s, fresh);
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  } finally {
    await fresh?.stop();
  }
}

function writeReport(run: Run): void {
  const outDir = join(ROOT, smoke ? 'bench/results/smoke' : 'bench/results');
  mkdirSync(outDir, { recursive: true });
  const name = smoke ? 'latest' : stamp(run.startedAt);
  writeFileSync(join(outDir, `${name}.json`), `${JSON.stringify(run, null, 1)}\n`);
  writeFileSync(join(outDir, `${name}.svg`), svg(run));
  writeFileSync(join(outDir, `${name}.md`), markdown(run, `${name}.svg`));
  console.log(`bench: report ${join(outDir, `${name}.md`)}`);
  if (name === 'latest') return;
  // Stable names for README to embed; the dated files keep each run's own.
  // A narrowed run (--peers, --scenarios) leaves them to the last full one.
  if (PEER_NAMES.some((p) => !peers.includes(p)) || scenarios.length < ALL_SCENARIOS.length) {
    console.log('bench: not every peer and scenario ran, so latest.md and latest.svg stay as they were');
    return;
  }
  copyFileSync(join(outDir, `${name}.svg`), join(outDir, 'latest.svg'));
  writeFileSync(join(outDir, 'latest.md'), markdown(run, 'latest.svg'));
}

// Whatever happens, nothing the bench started outlives it.
process.on('exit', killAllNow);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    console.error(`bench: ${signal}, stopping everything`);
    void stopAll().finally(() => process.exit(130));
  });
}
// Armed once the tools are installed and built: on a fresh machine apt-get,
// `go install` and the Go module downloads alone can take longer than a smoke run.
function armWatchdog(): void {
  setTimeout(() => {
    console.error(`bench: over the time budget of ${budgetSeconds()} s, stopping everything`);
    void stopAll().finally(() => process.exit(1));
  }, budgetSeconds() * 1000).unref();
}

function printVerdicts(run: Run): void {
  for (const v of verdicts(run)) console.log(`  target ${v.result.padEnd(12)} ${v.figure.padStart(9)}  ${v.target}${v.miss === undefined ? '' : ` — ${v.miss}`}`);
}

/** --report-from: the report of a recorded run, written again (new report code, or a --compare added). */
function rewriteReport(file: string): number {
  const run: Run = { ...readRun(file), ...(compared === undefined ? {} : { compared }) };
  const base = file.replace(/\.json$/, '');
  writeFileSync(`${base}.svg`, svg(run));
  writeFileSync(`${base}.md`, markdown(run, `${basename(base)}.svg`));
  console.log(`bench: wrote ${base}.md and ${base}.svg`);
  printVerdicts(run);
  return 0;
}

(opts['report-from'] === undefined ? main() : Promise.resolve(rewriteReport(resolve(opts['report-from'])))).then((code) => {
  process.exitCode = code;
}, async (err: unknown) => {
  console.error(`bench: ${err instanceof Error ? err.message : String(err)}`);
  await stopAll();
  process.exitCode = 1;
});
