// Prometheus metrics (names and labels are part of DESIGN.md's contract).
// Label children are bound once per route/backend/protocol and cached, so the
// request path never builds a label string or hashes a label set.
import { createRequire } from 'node:module';
import type * as PromClient from 'prom-client';
import type { Logger } from 'pino';
import type { UpstreamError, UpstreamErrorKind } from '../errors.ts';

// Upstream failures are logged at most once per backend per interval, with a
// count of the ones folded in: an outage must not turn into a log flood.
const ERROR_LOG_INTERVAL_MS = 5_000;

// The states of switchyard_ramp_state (src/ramp/schedule.ts has the same list; metrics import nothing from ramp).
const RAMP_STATES = ['pending', 'ramping', 'paused', 'halted', 'done'] as const;

// prom-client's files one by one, not its index: that also loads its
// Pushgateway and cluster aggregator, and with them node:https, tls and zlib,
// which the router never uses.
const require = createRequire(import.meta.url);
const Counter = require('prom-client/lib/counter.js') as typeof PromClient.Counter;
const Gauge = require('prom-client/lib/gauge.js') as typeof PromClient.Gauge;
const Registry = require('prom-client/lib/registry.js') as typeof PromClient.Registry;
const collectDefaultMetrics = require('prom-client/lib/defaultMetrics.js') as typeof PromClient.collectDefaultMetrics;
type Registry = PromClient.Registry;
type Gauge<T extends string> = PromClient.Gauge<T>;

// A proxy's own overhead is sub-millisecond: start well below prom-client's 5 ms.
export const DURATION_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

interface CounterChild { inc(v?: number): void }

/** Takes each finished request of one backend (a ramp guard's side). */
export interface OutcomeRecorder {
  outcome(code: number, grpc: boolean, ms: number): void;
}

const UPSTREAM_ERROR_KINDS: readonly UpstreamErrorKind[] = ['connect', 'timeout', 'reset', 'protocol'];

/**
 * The metrics of one (route, backend, protocol); what the request path holds.
 * Requests and durations are counted here in plain numbers and turned into
 * Prometheus series only when scraped: prom-client's labelled observe() and
 * inc() cost about 4% of the proxy's CPU per request (profiled), these cost
 * an array increment and a short bucket scan.
 */
/** The `code` of a gRPC request whose grpc-status is none of the 17 codes: label "unknown". */
export const GRPC_CODE_UNKNOWN = 1000;

export class BackendMetrics {
  readonly route: string;
  readonly backend: string;
  readonly protocol: string;
  /** Requests by status code (HTTP, or grpc-status for gRPC; 499 client gone). */
  readonly byCode: number[] = [];
  /** Durations per bucket (not cumulative), plus the +Inf overflow in the last slot. */
  readonly buckets = new Float64Array(DURATION_BUCKETS.length + 1);
  sum = 0;
  count = 0;
  /** Calls waiting in an upstream pool's queue (for a connection or a stream); kept by the pools, read at scrape time. */
  queued = 0;
  /** Set while a ramp's guard judges this backend; null otherwise (one check per request). */
  outcomes: OutcomeRecorder | null = null;
  readonly #errors: Record<UpstreamErrorKind, CounterChild>;
  readonly #log: Logger | undefined;
  #lastLogged = 0;
  #folded = 0;

  constructor(m: Metrics, route: string, backend: string, protocol: string) {
    this.route = route;
    this.backend = backend;
    this.protocol = protocol;
    this.#log = m.log?.child({ route, backend });
    this.#errors = {
      connect: m.upstreamErrors.labels(route, backend, 'connect'),
      timeout: m.upstreamErrors.labels(route, backend, 'timeout'),
      reset: m.upstreamErrors.labels(route, backend, 'reset'),
      protocol: m.upstreamErrors.labels(route, backend, 'protocol'),
    };
  }

  /** One finished request: `code` is the HTTP status, or the grpc-status for gRPC. */
  done(code: number, seconds: number, grpc: boolean): void {
    if (this.outcomes !== null) this.outcomes.outcome(code, grpc, seconds * 1000);
    this.byCode[code] = (this.byCode[code] ?? 0) + 1;
    let i = 0;
    while (i < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[i]!) i++;
    this.buckets[i]!++;
    this.sum += seconds;
    this.count++;
  }

  /** Counts an upstream failure, and logs it unless one was logged in the last few seconds. */
  upstreamError(err: UpstreamError): void {
    this.#errors[err.kind].inc();
    if (this.#log === undefined) return;
    const now = Date.now();
    if (now - this.#lastLogged < ERROR_LOG_INTERVAL_MS) {
      this.#folded++;
      return;
    }
    this.#log.warn({ kind: err.kind, code: err.code, cause: (err.cause as Error | undefined)?.message, foldedSinceLast: this.#folded }, 'upstream error');
    this.#lastLogged = now;
    this.#folded = 0;
  }
}

/** What the scrape-time gauges read: counts and states kept elsewhere (not updated per request); set by the server. */
interface Sources {
  openStreamsSource: (() => number) | undefined;
  backendUpSource: (() => Iterable<{ route: string; backend: string; up: boolean }>) | undefined;
  rampSource: (() => Iterable<[route: string, ramp: { readonly state: string; readonly step: number }]>) | undefined;
  /** The kubernetes:// config sources: reachable or not, and for how long not. */
  configSourceStatus: (() => Iterable<{ source: string; up: boolean; staleSeconds: number }>) | undefined;
}

/** Every metric but the request metrics (below), each declared once: name, help, labels, what it reads at scrape time. */
function declare(registry: Registry, self: Readonly<Sources>) {
  const registers = [registry];
  // prom-client calls collect() with the metric as `this`.
  const counter = (name: string, help: string, labelNames: readonly string[] = []) => new Counter({ name, help, labelNames, registers });
  const gauge = (name: string, help: string, labelNames: readonly string[] = [], collect?: (this: Gauge<string>) => void) =>
    new Gauge({ name, help, labelNames, registers, ...(collect === undefined ? {} : { collect }) });
  /** A gauge set at scrape time from one value of each kubernetes:// config source. */
  const sourceGauge = (name: string, help: string, value: (s: { up: boolean; staleSeconds: number }) => number) =>
    gauge(name, help, ['source'], function () {
      if (self.configSourceStatus === undefined) return;
      this.reset();
      for (const s of self.configSourceStatus()) this.labels(s.source).set(value(s));
    });
  return {
    upstreamErrors: counter('switchyard_upstream_errors_total', 'Upstream failures by kind: connect, timeout, reset, protocol.', ['route', 'backend', 'kind']),
    backendWeight: gauge('switchyard_backend_weight', 'The weight in force for each backend of each route.', ['route', 'backend']),
    backendUp: gauge('switchyard_backend_up', '1 while a backend takes traffic: not ejected and passing its active health checks.', ['route', 'backend'], function () {
      if (self.backendUpSource === undefined) return;
      this.reset();
      for (const { route, backend, up } of self.backendUpSource()) this.labels(route, backend).set(up ? 1 : 0);
    }),
    configReloads: counter('switchyard_config_reloads_total', 'Config loads and reloads by result.', ['result']),
    configReloadsRefused: counter('switchyard_config_reloads_refused_total', 'Reloads the removal guard refused (they remove every route or too many hosts); also counted as result="failure".'),
    configInfo: gauge('switchyard_config_info', 'Always 1; the version label is the hash of the config in force.', ['version']),
    configLastReload: gauge('switchyard_config_last_reload_timestamp_seconds', 'When the config in force was loaded (Unix time).'),
    configSourceUp: sourceGauge('switchyard_config_source_up',
      '1 while a kubernetes:// config source is reachable (list/watch open), 0 while the API server is not: the last config read stays in force.',
      (s) => (s.up ? 1 : 0)),
    configSourceStale: sourceGauge('switchyard_config_source_stale_seconds',
      'How long a kubernetes:// config source has been unreachable (0 while reachable): changes made since have not been seen.',
      (s) => s.staleSeconds),
    openConnections: gauge('switchyard_open_connections', 'Open client connections by protocol (http = HTTP/1.1, h2c = HTTP/2).', ['protocol']),
    openStreams: gauge('switchyard_open_streams', 'Open HTTP/2 streams from clients.', ['protocol'], function () {
      if (self.openStreamsSource !== undefined) this.labels('h2c').set(self.openStreamsSource());
    }),
    upstreamSessions: gauge('switchyard_upstream_h2_sessions', 'Open HTTP/2 sessions to h2c backends.'),
    upstreamStreams: gauge('switchyard_upstream_h2_streams', 'Open HTTP/2 streams to h2c backends.'),
    rampStep: gauge('switchyard_ramp_step', 'Index of the ramp step in force (0-based; -1 before the first).', ['route'], function () {
      this.reset();
      for (const [route, r] of self.rampSource?.() ?? []) this.labels(route).set(r.step);
    }),
    rampState: gauge('switchyard_ramp_state', '1 for the current state of each route\'s ramp: pending, ramping, paused, halted, done.', ['route', 'state'], function () {
      this.reset();
      for (const [route, r] of self.rampSource?.() ?? []) {
        for (const state of RAMP_STATES) this.labels(route, state).set(r.state === state ? 1 : 0);
      }
    }),
    rampBreaches: counter('switchyard_ramp_breaches_total', 'Guard breaches acted on (rollback or pause), by route.', ['route']),
    mirrorRequests: counter('switchyard_mirror_requests_total',
      'Mirrored copies by answer code (HTTP status or grpc-status), or skipped_body, skipped_busy, error.', ['route', 'backend', 'code']),
  };
}

// The metrics declare() returns, set in the constructor, and the sources they read.
export interface Metrics extends Readonly<ReturnType<typeof declare>>, Sources {}

export class Metrics {
  readonly registry = new Registry();
  /** Where backends log their upstream errors (rate-limited); none in unit tests. */
  readonly log: Logger | undefined;
  readonly #bound = new Map<string, BackendMetrics>();
  /** Label values of the mirror counters created so far, by route: removed with the route. */
  readonly #mirrorLabels = new Map<string, [backend: string, code: string][]>();
  #weights = new Map<string, number>();
  #configVersion: string | undefined;

  constructor(log?: Logger) {
    this.log = log;
    this.registry.registerMetric(requestsMetric(this.#bound) as never);
    this.registry.registerMetric(durationMetric(this.#bound) as never);
    this.registry.registerMetric(queuedMetric(this.#bound) as never);
    Object.assign(this, declare(this.registry, this));
    this.configReloads.labels('success').inc(0);
    this.configReloads.labels('failure').inc(0);
    collectDefaultMetrics({ register: this.registry });
  }

  /** The bound metrics of a (route, backend, protocol), created once and reused across reloads. */
  backend(route: string, backend: string, protocol: string): BackendMetrics {
    const key = `${route}\0${backend}\0${protocol}`;
    let bm = this.#bound.get(key);
    if (bm === undefined) {
      bm = new BackendMetrics(this, route, backend, protocol);
      this.#bound.set(key, bm);
    }
    return bm;
  }

  /** Counts one route's mirrored copies by code; the label children are bound once per code. */
  mirrorCounter(route: string, backend: string): (code: string) => void {
    const children = new Map<string, CounterChild>();
    return (code) => {
      let c = children.get(code);
      if (c === undefined) {
        children.set(code, (c = this.mirrorRequests.labels(route, backend, code)));
        let labels = this.#mirrorLabels.get(route);
        if (labels === undefined) this.#mirrorLabels.set(route, (labels = []));
        labels.push([backend, code]);
      }
      c.inc();
    };
  }

  /**
   * After a (re)load: forgets the metrics of every (route, backend, protocol)
   * the new table does not use, so a removed route or backend leaves no
   * series behind (requests, durations, upstream errors; mirror and ramp
   * breach counts of removed routes).
   */
  retain(used: ReadonlySet<BackendMetrics>): void {
    const kept = new Set<string>();
    const routes = new Set<string>();
    for (const bm of used) {
      kept.add(`${bm.route}\0${bm.backend}`);
      routes.add(bm.route);
    }
    const gone = new Set<string>();
    for (const [key, bm] of this.#bound) {
      if (used.has(bm) || bm.route === 'unmatched') continue;
      this.#bound.delete(key);
      if (!routes.has(bm.route)) gone.add(bm.route);
      if (kept.has(`${bm.route}\0${bm.backend}`)) continue; // the same pair under its other protocol
      for (const kind of UPSTREAM_ERROR_KINDS) this.upstreamErrors.remove(bm.route, bm.backend, kind);
    }
    for (const route of gone) {
      for (const [backend, code] of this.#mirrorLabels.get(route) ?? []) this.mirrorRequests.remove(route, backend, code);
      this.#mirrorLabels.delete(route);
      this.rampBreaches.remove(route);
    }
  }


  /** Publishes the weights in force (only the changed ones); series of backends that are gone are removed. */
  setWeights(weights: Iterable<{ route: string; backend: string; weight: number }>): void {
    const next = new Map<string, number>();
    for (const w of weights) {
      const key = `${w.route}\0${w.backend}`;
      next.set(key, w.weight);
      if (this.#weights.get(key) !== w.weight) this.backendWeight.labels(w.route, w.backend).set(w.weight);
    }
    for (const key of this.#weights.keys()) {
      if (!next.has(key)) {
        const [route, backend] = key.split('\0') as [string, string];
        this.backendWeight.remove(route, backend);
      }
    }
    this.#weights = next;
  }

  configLoaded(version: string): void {
    if (this.#configVersion !== undefined) this.configInfo.remove(this.#configVersion);
    this.configInfo.labels(version).set(1);
    this.#configVersion = version;
    this.configLastReload.set(Date.now() / 1000);
  }
}

// --- request metrics, formatted at scrape time ------------------------------
// prom-client formats any registered object with get() returning name, help,
// type and values; these read the plain counters of every BackendMetrics.

type Labels = Record<string, string>;
interface Value { labels: Labels; value: number; metricName?: string }

/** A metric that prom-client formats from `values()` at scrape time. */
function scraped(name: string, help: string, type: 'counter' | 'gauge' | 'histogram', values: () => Value[]): object {
  return { name, help, type, aggregator: 'sum', get: () => ({ name, help, type, aggregator: 'sum', values: values() }) };
}

function requestsMetric(bound: ReadonlyMap<string, BackendMetrics>): object {
  return scraped('switchyard_requests_total',
    'Requests answered, by route, backend, upstream protocol and status (gRPC: grpc-status; 499: the client went away).', 'counter', () => {
      const values: Value[] = [];
      for (const m of bound.values()) {
        m.byCode.forEach((n, code) => {
          values.push({ labels: { route: m.route, backend: m.backend, protocol: m.protocol, code: code === GRPC_CODE_UNKNOWN ? 'unknown' : String(code) }, value: n });
        });
      }
      return values;
    });
}

function queuedMetric(bound: ReadonlyMap<string, BackendMetrics>): object {
  return scraped('switchyard_upstream_queued_requests',
    'Requests (mirror copies included) waiting in a backend\'s upstream queue: HTTP/1.1 for a free connection, h2c for a stream.', 'gauge', () => {
      const values: Value[] = [];
      for (const m of bound.values()) {
        // Requests with no route or no backend never reach a pool.
        if (m.backend === 'none' || m.route === 'unmatched') continue;
        values.push({ labels: { route: m.route, backend: m.backend, protocol: m.protocol }, value: m.queued });
      }
      return values;
    });
}

function durationMetric(bound: ReadonlyMap<string, BackendMetrics>): object {
  const name = 'switchyard_request_duration_seconds';
  return scraped(name, 'Time from request start to the end of the response.', 'histogram', () => {
    const values: Value[] = [];
    for (const m of bound.values()) {
      if (m.count === 0) continue;
      const labels = { route: m.route, backend: m.backend, protocol: m.protocol };
      let cumulative = 0;
      DURATION_BUCKETS.forEach((le, i) => {
        cumulative += m.buckets[i]!;
        values.push({ metricName: `${name}_bucket`, labels: { le: String(le), ...labels }, value: cumulative });
      });
      values.push({ metricName: `${name}_bucket`, labels: { le: '+Inf', ...labels }, value: m.count });
      values.push({ metricName: `${name}_sum`, labels, value: m.sum });
      values.push({ metricName: `${name}_count`, labels, value: m.count });
    }
    return values;
  });
}
