// The report of a run: Markdown (machine, versions, targets, every figure and
// its ratio to every other peer) and an SVG chart drawn here — a few rects and
// texts need no chart library. Absolute numbers belong to the machine that
// made them; the ratios between peers measured side by side are the headline.
import { readFileSync } from 'node:fs';
import type { PeerName } from './peers.ts';
import { FIXED_RATE, GRPC_FIXED_RATE, SCENARIOS, type Measurement, type ScenarioId } from './scenarios.ts';
import type { Machine } from './tools.ts';

/** An earlier run (--compare): its file, when, which switchyard, and its figures. */
export interface Compared {
  readonly file: string;
  readonly startedAt: string;
  readonly version: string;
  readonly results: readonly Measurement[];
}

export interface Run {
  readonly startedAt: Date;
  readonly elapsedS: number;
  readonly smoke: boolean;
  readonly peers: readonly PeerName[];
  readonly settings: { readonly warmupS: number; readonly measureS: number; readonly idleConns: number; readonly idleConnsNote?: string };
  readonly machine: Machine;
  readonly versions: Record<string, string>;
  readonly results: readonly Measurement[];
  /** Earlier runs (--compare), each with a before/after section. */
  readonly compared?: readonly Compared[];
}

/** A run as run.ts wrote it (bench/results/*.json; every run since 2026-11-26 has this shape). */
export function readRun(file: string): Run {
  const j = JSON.parse(readFileSync(file, 'utf8')) as Run & { startedAt: string };
  if (!Array.isArray(j.results) || !Array.isArray(j.peers) || typeof j.startedAt !== 'string') {
    throw new Error(`${file}: not a bench run (no startedAt, peers, results)`);
  }
  return { ...j, startedAt: new Date(j.startedAt) };
}

const LABEL: Record<PeerName, string> = {
  direct: 'direct', haproxy: 'HAProxy', nginx: 'nginx', caddy: 'Caddy', traefik: 'Traefik', switchyard: 'switchyard', 'switchyard-before': 'switchyard (before)',
};
const COLOR: Record<PeerName, string> = {
  direct: '#9e9e9e', haproxy: '#1f77b4', nginx: '#2ca02c', caddy: '#17becf', traefik: '#9467bd', switchyard: '#ff7f0e', 'switchyard-before': '#ffbb78',
};
/** The fixed-rate scenarios: their rate, and the percentile issue 15 judges them on. */
const LATENCY = {
  latency: { rate: FIXED_RATE, unit: 'req/s', judged: 'p999Us', bar: 1_000, short: 'HTTP/1.1' },
  'grpc-latency': { rate: GRPC_FIXED_RATE, unit: 'RPC/s', judged: 'p99Us', bar: 2_000, short: 'gRPC' },
} as const;
type LatencyId = keyof typeof LATENCY;
const THROUGHPUT: ScenarioId[] = ['h1-small', 'h1-1k', 'h1-64k', 'h2c', 'grpc', 'grpc-ghz'];
/** Short names for the chart's group labels. */
const CHART_LABEL: Partial<Record<ScenarioId, string>> = {
  'h1-small': 'HTTP/1.1, 13 B', 'h1-1k': 'HTTP/1.1, 1 KB', 'h1-64k': 'HTTP/1.1, 64 KB',
  h2c: 'h2c, 13 B', grpc: 'gRPC (h2load)', 'grpc-ghz': 'gRPC (ghz client)',
};
/** Below this share of its core a proxy was not what limited the run. */
const SATURATED = 0.85;
/** The proxy waited for its core more than this share of the time: its latency tail is mostly other processes' work. */
const WAITED = 0.02;

function find(run: Run, scenario: ScenarioId, peer: string, variant?: string): Measurement | undefined {
  return run.results.find((m) => m.scenario === scenario && m.peer === peer && m.variant === variant);
}

/** The measurement, if it succeeded. */
function good(run: Run, scenario: ScenarioId, peer: string, variant?: string): Measurement | undefined {
  const m = find(run, scenario, peer, variant);
  return m?.ok === true ? m : undefined;
}

const int = (n: number): string => Math.round(n).toLocaleString('en-US');
const pct = (n: number | undefined): string => (n === undefined ? '—' : `${Math.round(n * 100)}%`);
const ms = (us: number): string => (us / 1000).toFixed(us < 10_000 ? 3 : 1);
const ratio = (a: number | undefined, b: number | undefined): string =>
  a === undefined || b === undefined || b === 0 ? '—' : `${(a / b).toFixed(2)}×`;
const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
const kib = (bytes: number): string => `${(bytes / 1024).toFixed(1)} KiB`;
/** How far a figure misses its bar, as a share of the bar. */
const missBy = (share: number): string => (share < 0.005 ? '<1%' : `${Math.round(share * 100)}%`);

function peerLabel(p: string): string {
  return LABEL[p as PeerName] ?? p;
}

// --- targets ---------------------------------------------------------------

// Issue 15's bars, all from one run: throughput as ratios to peers measured
// side by side, added latency over direct at a fixed rate, and memory.
const IDLE_RSS_MAX = 80 * 2 ** 20;
const PER_CONN_MAX = 2 * 1024;

export interface Verdict {
  readonly target: string;
  readonly figure: string;
  readonly result: 'met' | 'not met' | 'not measured';
  /** For a missed target: by how much. */
  readonly miss?: string;
  readonly caveat?: string;
}

/** switchyard / peer on a throughput scenario, against a minimum ratio. */
function ratioTarget(run: Run, scenario: ScenarioId, peer: PeerName, min: number): Verdict {
  const target = `${SCENARIOS[scenario].title}: switchyard ≥ ${min.toFixed(1)}× ${LABEL[peer]}`;
  const sy = good(run, scenario, 'switchyard');
  const other = good(run, scenario, peer);
  if (sy?.rps === undefined || other?.rps === undefined) {
    return { target, figure: '—', result: 'not measured' };
  }
  const r = sy.rps / other.rps;
  const held = other.proxyCpu !== undefined && other.proxyCpu < SATURATED;
  return {
    target, figure: `${r.toFixed(2)}×`, result: r >= min ? 'met' : 'not met',
    ...(r >= min ? {} : { miss: `short by ${missBy(1 - r / min)}${beyondDirect(run, scenario, sy, other, min)}` }),
    ...(held ? { caveat: `${LABEL[peer]} used only ${pct(other.proxyCpu)} of its core: something else (the load core, or other work on the machine) held it back, so this ratio flatters switchyard` } : {}),
  };
}

/**
 * For a missed ratio: whether the bar lies above what the load generator can
 * send at all here (direct, no proxy), and then the ratio per proxy core
 * (req/s over the share of its core each proxy used), the one comparison such a
 * run still makes. The verdict stays on the raw ratio.
 */
function beyondDirect(run: Run, scenario: ScenarioId, sy: Measurement, other: Measurement, min: number): string {
  const direct = good(run, scenario, 'direct')?.rps;
  const bar = (other.rps ?? 0) * min;
  if (direct === undefined || direct >= bar) return '';
  const perCore = sy.proxyCpu && other.proxyCpu ? `; per proxy core ${((sy.rps ?? 0) / sy.proxyCpu / ((other.rps ?? 0) / other.proxyCpu)).toFixed(2)}× (switchyard used ${pct(sy.proxyCpu)} of its core)` : '';
  return `; out of reach on this machine: ${min.toFixed(1)}× is ${int(bar)} req/s, and direct (no proxy) makes ${int(direct)}${perCore}`;
}

/** Added latency over direct at a fixed rate, on the percentile the issue names. */
function latencyTarget(run: Run, scenario: LatencyId): Verdict {
  const { rate, unit, judged, bar, short } = LATENCY[scenario];
  const name = judged === 'p99Us' ? 'p99' : 'p99.9';
  const target = `${short} at a fixed ${int(rate)} ${unit}: switchyard adds ≤ ${bar / 1000} ms at ${name} over direct`;
  const sy = good(run, scenario, 'switchyard')?.latency;
  const direct = good(run, scenario, 'direct')?.latency;
  if (sy === undefined || direct === undefined) return { target, figure: '—', result: 'not measured' };
  const added = sy[judged] - direct[judged];
  const lag = Math.max(sy.lagP99Us ?? 0, direct.lagP99Us ?? 0);
  const wait = good(run, scenario, 'switchyard')?.proxyWait ?? 0;
  const caveats = [
    ...(lag > 500 ? [`the client itself started calls up to ${ms(lag)} ms late (p99): the load core was busy, so both figures carry some of the client's delay`] : []),
    ...(wait > WAITED ? [`switchyard waited for its core ${pct(wait)} of the time (other processes on it): its tail carries their work`] : []),
  ];
  return {
    target, figure: `${ms(added)} ms`, result: added <= bar ? 'met' : 'not met',
    ...(added <= bar ? {} : { miss: `${ms(added - bar)} ms over (${missBy((added - bar) / bar)})` }),
    ...(caveats.length > 0 ? { caveat: caveats.join('; ') } : {}),
  };
}

function memoryTargets(run: Run): Verdict[] {
  const m = good(run, 'memory', 'switchyard')?.memory;
  const fresh = m?.fresh;
  const idle = 'Idle RSS of a freshly started switchyard (after one request per route) ≤ 80 MiB';
  const perConn = 'Idle keep-alive connections cost ≤ 2 KiB each (fresh switchyard)';
  if (fresh === undefined) return [{ target: idle, figure: '—', result: 'not measured' }, { target: perConn, figure: '—', result: 'not measured' }];
  const each = (fresh.loadedBytes - fresh.idleBytes) / fresh.conns;
  const opened = fresh.openedBytes === undefined ? '' : `1 s after they opened: ${kib((fresh.openedBytes - fresh.idleBytes) / fresh.conns)}; `;
  const afterLoad = m === undefined ? '' : ` (${opened}after the load scenarios: ${kib((m.loadedBytes - m.idleBytes) / m.conns)})`;
  return [
    {
      target: idle, figure: mib(fresh.idleBytes), result: fresh.idleBytes <= IDLE_RSS_MAX ? 'met' : 'not met',
      ...(fresh.idleBytes <= IDLE_RSS_MAX ? {} : { miss: `${mib(fresh.idleBytes - IDLE_RSS_MAX)} over (${missBy(fresh.idleBytes / IDLE_RSS_MAX - 1)})` }),
    },
    {
      target: perConn, figure: `${kib(each)}${afterLoad}`, result: each <= PER_CONN_MAX ? 'met' : 'not met',
      ...(each <= PER_CONN_MAX ? {} : { miss: `${kib(each - PER_CONN_MAX)} over (${missBy(each / PER_CONN_MAX - 1)})` }),
    },
  ];
}

/** Every issue-15 target with its figure from this run ('not measured' where a peer or scenario did not run). */
export function verdicts(run: Run): Verdict[] {
  const out: Verdict[] = [];
  for (const s of ['h1-small', 'h1-1k'] as const) out.push(ratioTarget(run, s, 'haproxy', 0.6));
  for (const s of ['h2c', 'grpc'] as const) out.push(ratioTarget(run, s, 'nginx', 1.0));
  // Traefik is what the original migration ran: at least twice its throughput on every scenario.
  for (const s of [...THROUGHPUT, 'split'] as const) out.push(ratioTarget(run, s, 'traefik', 2.0));
  out.push(latencyTarget(run, 'latency'), latencyTarget(run, 'grpc-latency'));
  out.push(...memoryTargets(run));
  return out;
}

// --- Markdown --------------------------------------------------------------

/** A Markdown table; figures (every column but the first) right-aligned unless `text`. */
function table(head: string[], rows: string[][], text = false): string {
  const align = head.map((_, i) => (i === 0 || text ? '---' : '---:')).join('|');
  return [`| ${head.join(' | ')} |`, `|${align}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** Whether any peer ran `scenario`. */
function ran(run: Run, scenario: ScenarioId): boolean {
  return run.results.some((m) => m.scenario === scenario);
}

/** "vs X" columns: this row's figure divided by each peer's. */
function ratioCols(run: Run, value: (p: string) => number | undefined, row: string): string[] {
  return run.peers.map((p) => (p === row ? '—' : ratio(value(row), value(p))));
}

function failure(m: Measurement | undefined): string {
  return m === undefined ? 'not run' : `**failed**: ${m.error ?? 'unknown error'}`;
}

function throughputSection(run: Run, scenario: ScenarioId): string {
  if (!ran(run, scenario)) return '';
  const info = SCENARIOS[scenario];
  const rps = (p: string): number | undefined => good(run, scenario, p)?.rps;
  const rows = run.peers.map((p) => {
    const m = find(run, scenario, p);
    if (m?.ok !== true) return [peerLabel(p), failure(m), '', '', '', ...run.peers.map(() => '')];
    // Neither the proxy nor the load core busy at saturation: something waited (a stall), not a CPU limit.
    const stalled = m.proxyCpu !== undefined && m.proxyCpu < 0.5 && (m.loadCore ?? 1) < 0.5 ? ' ⚠ stalled: neither core was busy' : '';
    return [
      peerLabel(p), `${int(m.rps ?? 0)}${stalled}`, (m.mbPerS ?? 0).toFixed(1), pct(m.proxyCpu), pct(m.loadCore),
      ...ratioCols(run, rps, p),
    ];
  });
  return `### ${info.title}\n\n${info.how}.\n\n${table(
    ['peer', 'req/s', 'MB/s', 'proxy CPU', 'load core', ...run.peers.map((p) => `vs ${peerLabel(p)}`)], rows)}\n`;
}

function latencySection(run: Run, scenario: LatencyId): string {
  if (!ran(run, scenario)) return '';
  const info = SCENARIOS[scenario];
  const { rate, unit } = LATENCY[scenario];
  const lat = (p: string) => good(run, scenario, p)?.latency;
  const direct = lat('direct');
  const lagged = run.peers.some((p) => lat(p)?.lagP99Us !== undefined);
  const waited = run.peers.some((p) => good(run, scenario, p)?.proxyWait !== undefined);
  const added = (l: number, d: number | undefined, p: string): string => (d === undefined || p === 'direct' ? '—' : ms(l - d));
  const rows = run.peers.map((p) => {
    const m = find(run, scenario, p);
    const l = m?.ok === true ? m.latency : undefined;
    if (m === undefined || l === undefined) return [peerLabel(p), failure(m), ...Array<string>(10 + (lagged ? 1 : 0) + (waited ? 1 : 0)).fill(''), ...run.peers.map(() => '')];
    return [
      peerLabel(p), int(m.rps ?? 0), ms(l.meanUs), ms(l.p50Us), ms(l.p99Us), ms(l.p999Us), ms(l.maxUs),
      added(l.meanUs, direct?.meanUs, p), added(l.p99Us, direct?.p99Us, p), added(l.p999Us, direct?.p999Us, p),
      pct(m.proxyCpu), ...(waited ? [p === 'direct' ? '—' : pct(m.proxyWait)] : []), pct(m.loadCore), ...(lagged ? [l.lagP99Us === undefined ? '—' : ms(l.lagP99Us)] : []),
      ...run.peers.map((q) => (q === p ? '—' : `${ratio(l.p99Us, lat(q)?.p99Us)} / ${ratio(l.p999Us, lat(q)?.p999Us)}`)),
    ];
  });
  const lagNote = lagged ? ' "client lag p99": how late the client itself started calls against the schedule (not counted in the latencies); large values mean the load core was too busy to keep the schedule.' : '';
  const waitNote = waited ? ' "proxy waited": the share of the time the proxy\'s threads were ready to run but another process had its core; every request that arrived meanwhile waited too, so a tail measured with more than a few percent here is mostly other processes\' work.' : '';
  return `### ${info.title} (${int(rate)} ${unit})\n\n${info.how}. Latencies in ms; "added" is the figure minus direct's; ratio columns: p99 / p99.9 (lower is better).${lagNote}${waitNote}\n\n${table(
    ['peer', `achieved ${unit}`, 'mean', 'p50', 'p99', 'p99.9', 'max', 'added mean', 'added p99', 'added p99.9', 'proxy CPU', ...(waited ? ['proxy waited'] : []), 'load core',
      ...(lagged ? ['client lag p99'] : []), ...run.peers.map((p) => `vs ${peerLabel(p)}`)], rows)}\n`;
}

function splitSection(run: Run): string {
  if (!ran(run, 'split')) return '';
  const info = SCENARIOS.split;
  const peers = run.peers.filter((p) => p !== 'direct');
  const rps = (p: string): number | undefined => good(run, 'split', p)?.rps;
  const rows = peers.map((p) => {
    const m = find(run, 'split', p);
    if (m?.ok !== true || m.split === undefined) return [peerLabel(p), failure(m).replace('not supported', 'no weighted balancing in this version'), '', '', '', ...peers.map(() => '')];
    const total = m.split.a + m.split.b;
    return [peerLabel(p), int(m.rps ?? 0), int(m.split.a), int(m.split.b), total === 0 ? '—' : `${(m.split.b / total * 100).toFixed(2)}%`,
      ...peers.map((q) => (q === p ? '—' : ratio(rps(p), rps(q))))];
  });
  return `### ${info.title}\n\n${info.how}. Weights 90 (a) / 10 (b): b should get 10%.\n\n${table(
    ['peer', 'req/s', 'to a', 'to b', 'b share', ...peers.map((p) => `vs ${peerLabel(p)}`)], rows)}\n`;
}

function routesSection(run: Run): string {
  const info = SCENARIOS.routes;
  const variants = run.results.filter((m) => m.scenario === 'routes');
  if (variants.length === 0) return '';
  const base = variants.find((m) => m.variant === '1 host' && m.ok)?.rps;
  const rows = variants.map((m) => m.ok
    ? [`switchyard, ${m.variant ?? ''}`, int(m.rps ?? 0), pct(m.proxyCpu), ratio(m.rps, base)]
    : [`switchyard, ${m.variant ?? ''}`, failure(m), '', '']);
  return `### ${info.title}\n\n${info.how}. Each config runs on a freshly started router; the 10,000 routes are added to the usual ones, and every request names a different host in turn.\n\n${table(
    ['config', 'req/s', 'proxy CPU', 'vs 1 host'], rows)}\n`;
}

function memorySection(run: Run): string {
  if (!ran(run, 'memory')) return '';
  const info = SCENARIOS.memory;
  const peers = run.peers.filter((p) => p !== 'direct');
  const each = (with_: number, without: number, conns: number): string => kib((with_ - without) / conns);
  const rows = peers.map((p) => {
    const m = find(run, 'memory', p);
    if (m?.ok !== true || m.memory === undefined) return [peerLabel(p), failure(m), '', '', '', '', '', '', '', ''];
    const { conns, idleBytes, loadedBytes, fresh } = m.memory;
    return [
      peerLabel(p), int(conns),
      mib(fresh?.startBytes ?? m.memory.startBytes), fresh === undefined ? '—' : mib(fresh.idleBytes),
      fresh === undefined ? '—' : mib(fresh.loadedBytes), fresh === undefined ? '—' : each(fresh.loadedBytes, fresh.idleBytes, fresh.conns),
      fresh?.openedBytes === undefined ? '—' : each(fresh.openedBytes, fresh.idleBytes, fresh.conns),
      mib(idleBytes), mib(loadedBytes), each(loadedBytes, idleBytes, conns),
    ];
  });
  const note = run.settings.idleConnsNote === undefined ? '' : ` ${run.settings.idleConnsNote}`;
  return `### ${info.title}\n\n${info.how} (N = ${int(run.settings.idleConns)}).${note} "Per connection" is the growth from the idle RSS just before the connections were opened, divided by N; on the fresh instance read once the connections have been idle as long as the idle RSS settled, and also 1 s after they opened (before a proxy that gives memory back once idle has done so). Both memory targets are judged on the fresh instance: after the load scenarios a garbage-collected heap keeps free space from them that absorbs the connections, so the growth there can understate what a connection costs. (Runs up to 2026-11-30 06:46 had no fresh instance: their "RSS at start" is the load instance's, 0.3 s after start.)\n\n${table(
    ['peer', 'N', 'RSS at start', 'fresh: idle RSS', 'fresh: with N connections', 'fresh: per connection', 'fresh: per connection 1 s after they opened',
      'after load: idle RSS', 'after load: with N connections', 'after load: per connection'], rows)}\n`;
}

// --- before/after ------------------------------------------------------------

type Lookup = (scenario: ScenarioId, peer: string, variant?: string) => Measurement | undefined;

interface Row {
  readonly name: string;
  /** 'higher' or 'lower' is better. */
  readonly better: 'higher' | 'lower';
  readonly value: (m: Measurement) => number | undefined;
  readonly show: (v: number) => string;
  readonly scenario: ScenarioId;
  readonly variant?: string;
  /** Throughput rows: also as a share of direct in the same run, which takes out the machine's own speed. */
  readonly ofDirect?: boolean;
}

function beforeAfterRows(): Row[] {
  const rows: Row[] = [];
  for (const s of [...THROUGHPUT, 'split'] as const) {
    rows.push({ name: `${SCENARIOS[s].title}, req/s`, better: 'higher', value: (m) => m.rps, show: int, scenario: s, ofDirect: s !== 'split' });
  }
  for (const variant of ['1 host', '10,000 hosts']) {
    rows.push({ name: `Routes, ${variant}, req/s`, better: 'higher', value: (m) => m.rps, show: int, scenario: 'routes', variant });
  }
  for (const id of ['latency', 'grpc-latency'] as const) {
    const { rate, unit, short } = LATENCY[id];
    for (const [key, label] of [['p99Us', 'p99'], ['p999Us', 'p99.9']] as const) {
      rows.push({ name: `${short} at ${int(rate)} ${unit}, ${label} ms`, better: 'lower', value: (m) => m.latency?.[key], show: ms, scenario: id });
    }
  }
  const mem = (f: (x: NonNullable<Measurement['memory']>) => number | undefined) => (m: Measurement): number | undefined =>
    m.memory === undefined ? undefined : f(m.memory);
  rows.push(
    { name: 'RSS at start (no request yet)', better: 'lower', value: mem((x) => x.fresh?.startBytes ?? x.startBytes), show: mib, scenario: 'memory' },
    { name: 'Idle RSS, fresh, one request per route', better: 'lower', value: mem((x) => x.fresh?.idleBytes), show: mib, scenario: 'memory' },
    { name: 'Per idle connection, fresh', better: 'lower', value: mem((x) => (x.fresh === undefined ? undefined : (x.fresh.loadedBytes - x.fresh.idleBytes) / x.fresh.conns)), show: kib, scenario: 'memory' },
    { name: 'Idle RSS after the load scenarios', better: 'lower', value: mem((x) => x.idleBytes), show: mib, scenario: 'memory' },
    { name: 'Per idle connection, after load', better: 'lower', value: mem((x) => (x.loadedBytes - x.idleBytes) / x.conns), show: kib, scenario: 'memory' },
  );
  return rows;
}

/**
 * switchyard's figures then and now, scenario by scenario (rows neither side
 * measured are left out). Across two runs, throughput is also shown as a
 * share of direct in its own run.
 */
function beforeAfterTable(then: { lookup: Lookup; peer: string }, now: { lookup: Lookup; peer: string }, sameRun: boolean): string {
  const value = (side: typeof then, row: Row): number | undefined => {
    const m = side.lookup(row.scenario, side.peer, row.variant);
    return m?.ok === true ? row.value(m) : undefined;
  };
  const ofDirect = (side: typeof then, row: Row): string => {
    const v = value(side, row);
    const d = side.lookup(row.scenario, 'direct');
    return row.ofDirect !== true || v === undefined || d?.ok !== true || d.rps === undefined ? '—' : `${(v / d.rps).toFixed(2)}×`;
  };
  const rows = beforeAfterRows().flatMap((row) => {
    const a = value(then, row);
    const b = value(now, row);
    if (a === undefined && b === undefined) return [];
    return [[row.name, a === undefined ? '—' : row.show(a), b === undefined ? '—' : row.show(b), ratio(b, a), row.better,
      ...(sameRun ? [] : [ofDirect(then, row), ofDirect(now, row)])]];
  });
  const [was, is] = sameRun ? ['before', 'now'] : ['then', 'now'];
  return table(['figure', was, is, `${is} ÷ ${was}`, 'better is', ...(sameRun ? [] : [`${was} ÷ direct`, `${is} ÷ direct`])], rows);
}

function beforeAfterSections(run: Run): string[] {
  const out: string[] = [];
  const here: Lookup = (scenario, peer, variant) => find(run, scenario, peer, variant);
  if (run.peers.includes('switchyard-before')) {
    out.push(`### Before/after, same run: switchyard (before) → switchyard\n\nBoth checkouts ran in this run under the same conditions, one after the other (before: ${run.versions['switchyard (before)'] ?? 'unknown'}; now: ${run.versions['switchyard'] ?? 'unknown'}). The route-lookup phase runs for the current checkout only.\n\n${beforeAfterTable({ lookup: here, peer: 'switchyard-before' }, { lookup: here, peer: 'switchyard' }, true)}\n`);
  }
  for (const c of run.compared ?? []) {
    const old: Lookup = (scenario, peer, variant) => c.results.find((m) => m.scenario === scenario && m.peer === peer && m.variant === variant);
    const when = c.startedAt.replace('T', ' ').slice(0, 16);
    out.push(`### Before/after against the run of ${when} UTC (${c.file})\n\nThen: switchyard ${c.version}; now: ${run.versions['switchyard'] ?? 'unknown'}. Two runs: the machine and its load may differ between them, so throughput is also given as a share of direct (no proxy) in its own run. "—": not measured in that run (the gRPC fixed-rate scenario and the fresh-instance memory figures are new since 2026-11-30; before them "RSS at start" was taken 0.3 s after start instead of 1 s).\n\n${beforeAfterTable({ lookup: old, peer: 'switchyard' }, { lookup: here, peer: 'switchyard' }, false)}\n`);
  }
  return out;
}

const CAVEATS = [
  'Two cores: the load generator and the backend share one, so a fast proxy can be held back by them (see "proxy CPU" and "load core"); direct shows what that core can do alone.',
  'gRPC at saturation is driven by h2load with gRPC framing because a gRPC client library costs several times more per call than the proxies do (direct ghz tops out far below direct h2load); h2load checks the HTTP status and that each response carries the echoed message, not grpc-status — the ghz scenario checks that end to end.',
  'Fixed-rate latency is open loop: an HTTP/1.1 request delayed because its connection was still busy is timed from when it was due, and every gRPC call is started when due whatever is in flight, so stalls are not hidden (no coordinated omission).',
  'Caddy 2.6 (Debian) has no weighted load balancing, so it has no split figure.',
  'Each figure is one run; on a shared or noisy machine repeat the run before trusting a small difference.',
];

export function markdown(run: Run, svgFile: string): string {
  const when = run.startedAt.toISOString().replace('T', ' ').slice(0, 16);
  const v = verdicts(run);
  const parts = [
    `# switchyard benchmark${run.smoke ? ' (smoke run)' : ''}, ${when} UTC`,
    '',
    `**The absolute numbers are specific to this machine and moment; the headline is the ratio between peers measured side by side in the same run.**${run.smoke ? ' A smoke run is a few seconds per scenario: it shows the harness works, not how fast anything is.' : ''}`,
    '',
    `![chart](${svgFile})`,
    '',
    '## Targets',
    '',
    'Recorded, not asserted.',
    '',
    table(['target', 'figure', 'result'], v.map((t) => [
      t.target, t.figure,
      `${t.result === 'not met' ? '**not met**' : t.result}${t.miss === undefined ? '' : `: ${t.miss}`}${t.caveat === undefined ? '' : ` (⚠ ${t.caveat})`}`,
    ]), true),
    '',
    '## Machine and method',
    '',
    `- CPU: ${run.machine.cpu}; nproc ${run.machine.nproc}; ${run.machine.memory}; ${run.machine.kernel}`,
    '- The proxy under test runs alone on core 1 (`taskset -c 1`, one worker/thread, Caddy and Traefik with GOMAXPROCS=1; Traefik with Prometheus metrics on); load generators and backends share core 0. Loopback only.',
    `- Each figure: ${run.settings.warmupS} s warm-up (not counted), then ${run.settings.measureS} s measured; each run is killed if it overruns.`,
    '- "proxy CPU" is the share of one core the proxy used during the measured run; "load core" how busy core 0 was. A proxy well under 100% while core 0 is full was not the bottleneck: its figure is a floor, and ratios against it flatter the others.',
    '- "direct" is the load generator talking to the backend with no proxy: the ceiling of this machine (a proxy can land slightly above it, since on loopback the kernel does part of the receiving side\'s TCP work on the sender\'s core, which moves some of it to core 1).',
    `- Run took ${Math.round(run.elapsedS)} s.`,
    '',
    '## Versions',
    '',
    table(['tool', 'version'], Object.entries(run.versions).map(([k, val]) => [k, val]), true),
    '',
    '## Results',
    '',
    ...[...THROUGHPUT.map((s) => throughputSection(run, s)), latencySection(run, 'latency'), latencySection(run, 'grpc-latency'),
      splitSection(run), routesSection(run), memorySection(run)]
      .filter((section) => section !== ''),
    ...(() => {
      const sections = beforeAfterSections(run);
      return sections.length === 0 ? [] : ['## Before/after', '', ...sections];
    })(),
    '## Caveats',
    '',
    ...CAVEATS.map((c) => `- ${c}`),
  ];
  return `${parts.join('\n')}\n`;
}

// --- SVG -------------------------------------------------------------------

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

const WIDTH = 960;
const LEFT = 190; // group labels
const BAR_W = 520; // longest bar
const MEM_BAR_W = 360; // longest memory bar: its label is longer
const ROW = 16;

class Svg {
  parts: string[] = [];
  y = 0;
  text(x: number, y: number, s: string, attrs = ''): void {
    this.parts.push(`<text x="${x}" y="${y}" ${attrs}>${esc(s)}</text>`);
  }
  rect(x: number, y: number, w: number, h: number, fill: string, attrs = ''): void {
    this.parts.push(`<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(0, w).toFixed(1)}" height="${h}" fill="${fill}" ${attrs}/>`);
  }
  line(x1: number, y1: number, x2: number, y2: number, stroke: string, attrs = ''): void {
    this.parts.push(`<line x1="${x1.toFixed(1)}" y1="${y1.toFixed(1)}" x2="${x2.toFixed(1)}" y2="${y2.toFixed(1)}" stroke="${stroke}" ${attrs}/>`);
  }
  heading(s: string, sub: string): void {
    this.y += 30;
    this.text(12, this.y, s, 'font-size="15" font-weight="bold"');
    this.y += 16;
    this.text(12, this.y, sub, 'fill="#555"');
    this.y += 10;
  }
}

/** Throughput bars, as a multiple of direct (the ceiling). */
function throughputPanel(svg: Svg, run: Run): void {
  if (!THROUGHPUT.some((id) => ran(run, id))) return;
  svg.heading('Throughput relative to direct (no proxy) — higher is better', 'bar: req/s ÷ direct\'s req/s in the same run; label: ratio and req/s');
  for (const s of THROUGHPUT.filter((id) => ran(run, id))) {
    const direct = good(run, s, 'direct')?.rps;
    svg.y += 8;
    const top = svg.y;
    for (const p of run.peers) {
      const m = good(run, s, p);
      svg.y += ROW;
      if (m?.rps === undefined) {
        svg.text(LEFT + 4, svg.y - 4, `${LABEL[p]}: ${find(run, s, p) === undefined ? 'not run' : 'failed'}`, 'fill="#b00"');
        continue;
      }
      const r = direct === undefined ? undefined : m.rps / direct;
      const w = r === undefined ? 0 : Math.min(r, 1.2) / 1.2 * BAR_W;
      svg.rect(LEFT, svg.y - ROW + 2, w, ROW - 4, COLOR[p]);
      svg.text(LEFT + w + 6, svg.y - 4, `${LABEL[p]}  ${r === undefined ? '' : `${r.toFixed(2)}×  `}${int(m.rps)} req/s`);
    }
    svg.text(12, (top + svg.y) / 2 + 4, CHART_LABEL[s] ?? s, 'font-weight="bold"');
    svg.line(LEFT + BAR_W / 1.2, top + 2, LEFT + BAR_W / 1.2, svg.y, '#999', 'stroke-dasharray="3,3"');
  }
}

/** Latency percentiles on a log axis: a line from p50 to p99.9, ticks at each. */
function latencyPanel(svg: Svg, run: Run, scenario: LatencyId): void {
  const peers = run.peers.filter((p) => good(run, scenario, p)?.latency !== undefined);
  if (peers.length === 0) return;
  const { rate, unit, short } = LATENCY[scenario];
  svg.heading(`${short} latency at ${int(rate)} ${unit}, open loop — lower is better`, 'log scale, ms: ● mean, | p50, p99, p99.9');
  const lo = 0.01;
  const hi = 100;
  const axis = 400;
  const x = (msv: number): number => LEFT + (Math.log10(Math.min(Math.max(msv, lo), hi)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) * axis;
  svg.y += 14;
  for (const t of [0.01, 0.1, 1, 10, 100]) {
    svg.line(x(t), svg.y, x(t), svg.y + peers.length * 20 + 4, '#ddd');
    svg.text(x(t) - 8, svg.y - 2, String(t), 'fill="#555" font-size="10"');
  }
  for (const p of peers) {
    const l = good(run, scenario, p)!.latency!;
    svg.y += 20;
    const cy = svg.y - 6;
    svg.text(12, svg.y - 2, LABEL[p], 'font-weight="bold"');
    svg.line(x(l.p50Us / 1000), cy, x(l.p999Us / 1000), cy, COLOR[p], 'stroke-width="4"');
    for (const v of [l.p50Us, l.p99Us, l.p999Us]) svg.line(x(v / 1000), cy - 7, x(v / 1000), cy + 7, COLOR[p], 'stroke-width="2"');
    svg.parts.push(`<circle cx="${x(l.meanUs / 1000).toFixed(1)}" cy="${cy}" r="4" fill="#000"/>`);
    svg.text(LEFT + axis + 24, svg.y - 2, `mean ${ms(l.meanUs)} · p50 ${ms(l.p50Us)} · p99 ${ms(l.p99Us)} · p99.9 ${ms(l.p999Us)} ms`, 'font-size="11"');
  }
}

/** Idle RSS of a fresh instance (the issue-15 target), and RSS with N idle connections after the load. */
function memoryPanel(svg: Svg, run: Run): void {
  const peers = run.peers.filter((p) => good(run, 'memory', p)?.memory !== undefined);
  if (peers.length === 0) return;
  const mem = (p: PeerName) => good(run, 'memory', p)!.memory!;
  const max = Math.max(...peers.map((p) => mem(p).loadedBytes));
  svg.heading(`Memory: idle, and with ${int(run.settings.idleConns)} idle keep-alive connections — lower is better`,
    'RSS of the proxy process tree; light: idle, a fresh instance after one request per route; whole bar: after the load scenarios, with the connections open');
  svg.y += 6;
  for (const p of peers) {
    svg.y += ROW + 2;
    const m = mem(p);
    const w = m.loadedBytes / max * MEM_BAR_W;
    svg.text(12, svg.y - 4, LABEL[p], 'font-weight="bold"');
    svg.rect(LEFT, svg.y - ROW + 2, w, ROW - 4, COLOR[p]);
    if (m.fresh !== undefined) svg.rect(LEFT, svg.y - ROW + 2, m.fresh.idleBytes / max * MEM_BAR_W, ROW - 4, '#fff', 'fill-opacity="0.55"');
    const fresh = m.fresh === undefined ? '' : `idle ${mib(m.fresh.idleBytes)} (${kib((m.fresh.loadedBytes - m.fresh.idleBytes) / m.fresh.conns)}/conn) · `;
    svg.text(LEFT + w + 6, svg.y - 4, `${fresh}after load ${mib(m.loadedBytes)} (${kib((m.loadedBytes - m.idleBytes) / m.conns)}/conn)`, 'font-size="11"');
  }
}

export function svg(run: Run): string {
  const s = new Svg();
  s.y = 8;
  s.text(12, (s.y += 18), `switchyard benchmark${run.smoke ? ' (smoke)' : ''} — ${run.startedAt.toISOString().slice(0, 10)} — ${run.machine.cpu}, proxy on 1 core`, 'font-size="16" font-weight="bold"');
  s.text(12, (s.y += 16), 'Absolute numbers are specific to this machine; compare the ratios.', 'fill="#555"');
  throughputPanel(s, run);
  latencyPanel(s, run, 'latency');
  latencyPanel(s, run, 'grpc-latency');
  memoryPanel(s, run);
  const height = s.y + 20;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#fff"/>
${s.parts.join('\n')}
</svg>
`;
}
