// One route at run time: its backends with their upstreams, health and
// metrics, and the weighted and sticky picks.
import type { BackendConfig, RouteConfig } from '../config/model.ts';
import { parseDuration } from '../config/parse.ts';
import type { BackendHealth, Ejection } from '../health/backend.ts';
import type { Exchange } from '../ingress/exchange.ts';
import type { BackendMetrics, OutcomeRecorder } from '../observe/metrics.ts';
import type { Timeouts, Upstream } from '../upstream/upstream.ts';
import { RetryBudget } from './retry-budget.ts';

/** What a backend is bound to at run time. */
interface Bound {
  readonly upstream: Upstream;
  readonly metrics: BackendMetrics;
  /** Shared by every route naming the same URL with the same health settings, and kept across reloads. */
  readonly health: BackendHealth;
}

/** Copies of a route's requests to one backend (proxy/mirror.ts). */
export interface RouteMirror {
  readonly to: Backend;
  /** A ramp's mirror step is in force (mirrors even without a `mirror:` block). */
  step: boolean;
  /** Where the copies' answers are recorded (the guard's `to` side during a mirror step), or null. */
  recorder: OutcomeRecorder | null;
  offer(ex: Exchange): void;
}

/** One backend of a route at run time: its config and what it is bound to. */
export class Backend implements Bound {
  readonly config: BackendConfig;
  readonly upstream: Upstream;
  readonly metrics: BackendMetrics;
  readonly health: BackendHealth;

  constructor(config: BackendConfig, bound: Bound) {
    this.config = config;
    this.upstream = bound.upstream;
    this.metrics = bound.metrics;
    this.health = bound.health;
  }

  get name(): string {
    return this.config.name;
  }

  /** The configured weight; the one in force may differ (a ramp): Route.weightOf. */
  get weight(): number {
    return this.config.weight;
  }
}

/** What the table builder needs from the rest of the router: upstreams, health and bound metrics. */
export interface Binder {
  backend(route: RouteConfig, backend: BackendConfig): Bound;
  /** Metrics for requests of this route that reached no backend (label backend="none"). */
  none(route: RouteConfig): BackendMetrics;
}

/**
 * One route. The split is smooth weighted round-robin (nginx's algorithm):
 * over every window of sum(weights) picks each backend gets exactly its weight,
 * interleaved evenly (90/10 sends 1 in 10, not 10 in a row). Exact per replica
 * means exact in aggregate however many replicas serve a host, and tests are
 * deterministic; a random pick only converges, and at 99/1 a replica can go
 * hundreds of requests without touching the canary. Unhealthy backends sit
 * out, and their share goes to the others. The state is a few numbers per
 * route, kept while the route's config is unchanged.
 */
export class Route {
  readonly config: RouteConfig;
  /** The config's durations in ms, derived once: the request path reads these. */
  readonly timeouts: Timeouts;
  readonly ejection: Ejection;
  readonly backends: readonly Backend[];
  readonly retryBudget: RetryBudget;
  /** Metrics of this route's requests that reached no backend. */
  readonly none: BackendMetrics;
  /** Weights in force: the configured ones, or a ramp's step (setWeights). */
  readonly #weights: Int32Array;
  readonly #current: Float64Array;
  #total: number;
  /** Set by the router when the route mirrors (a `mirror:` block or a ramp with a mirror step). */
  mirror: RouteMirror | null = null;

  static build(rc: RouteConfig, bind: Binder): Route {
    return new Route(rc, rc.backends.map((bc) => new Backend(bc, bind.backend(rc, bc))), bind.none(rc));
  }

  constructor(cfg: RouteConfig, backends: readonly Backend[], none: BackendMetrics) {
    this.config = cfg;
    const { timeouts: t, outlierDetection: o } = cfg;
    this.timeouts = {
      connectMs: parseDuration(t.connect), responseMs: parseDuration(t.response), idleMs: parseDuration(t.idle),
      overallMs: parseDuration(t.overall), overallIncludesStreams: t.overallIncludesStreams,
    };
    this.ejection = { consecutiveFailures: o.consecutiveFailures, ejectionMs: parseDuration(o.ejectionTime), maxEjectionMs: parseDuration(o.maxEjectionTime) };
    this.none = none;
    this.retryBudget = new RetryBudget(cfg.retries);
    this.backends = backends;
    this.#weights = Int32Array.from(backends, (b) => b.weight);
    this.#current = new Float64Array(backends.length);
    this.#total = backends.reduce((s, b) => s + b.weight, 0);
  }

  /**
   * The next healthy backend by weight. When every weighted backend is down:
   * the least bad of them (allUnhealthy: serve — a 503 for everyone helps no
   * one when the health signal itself may be wrong), or undefined (fail).
   * Undefined too when every weight is 0.
   */
  pick(): Backend | undefined {
    if (this.#total === 0) return undefined;
    const w = this.#weights;
    const cur = this.#current;
    const b = this.backends;
    let best = -1;
    let total = 0;
    for (let i = 0; i < w.length; i++) {
      if (w[i] === 0 || !b[i]!.health.up) continue;
      cur[i] += w[i]!;
      total += w[i]!;
      if (best < 0 || cur[i]! > cur[best]!) best = i;
    }
    if (best < 0) return this.config.allUnhealthy === 'serve' ? this.#leastBad() : undefined;
    cur[best] -= total;
    return b[best];
  }

  /**
   * Puts other weights in force (a ramp's step, in backend order). Called at
   * step boundaries, never per request; the smooth round-robin starts over.
   */
  setWeights(weights: readonly number[]): void {
    let total = 0;
    for (let i = 0; i < this.#weights.length; i++) {
      this.#weights[i] = weights[i] ?? 0;
      total += this.#weights[i]!;
    }
    this.#current.fill(0);
    this.#total = total;
  }

  get name(): string {
    return this.config.name;
  }

  /** The weight in force of backend i. */
  weightOf(i: number): number {
    return this.#weights[i]!;
  }

  /** Of the weighted backends, the one whose ejection ends first. */
  #leastBad(): Backend | undefined {
    let best: Backend | undefined;
    for (let i = 0; i < this.backends.length; i++) {
      const b = this.backends[i]!;
      if (this.#weights[i]! > 0 && (best === undefined || b.health.ejectedUntil < best.health.ejectedUntil)) best = b;
    }
    return best;
  }

  /**
   * Sticky canaries: the key's hash is a point in [0, sum of weights), and
   * backends own consecutive ranges in config order. Raising a later
   * backend's weight widens its range downwards into the earlier ones', so
   * users only ever move from old to new, never back; every replica agrees,
   * since the hash depends on nothing but the key. A backend that is down
   * falls back to the weighted pick.
   */
  stickyPick(key: string): Backend | undefined {
    if (this.#total === 0) return undefined;
    let point = (hashKey(key) / 0x1_0000_0000) * this.#total;
    for (let i = 0; i < this.backends.length; i++) {
      const b = this.backends[i]!;
      const w = this.#weights[i]!;
      if (w === 0) continue;
      point -= w;
      if (point < 0) return b.health.up ? b : this.pick();
    }
    return this.pick();
  }

  /** The backend named by an override header (weight 0 included). */
  byName(name: string): Backend | undefined {
    for (const b of this.backends) if (b.name === name) return b;
    return undefined;
  }

  /** Where a retry goes: another healthy backend with weight if there is one, else the same. */
  retryTarget(failed: Backend): Backend {
    for (let i = 0; i < this.backends.length; i++) {
      const b = this.backends[i]!;
      if (b !== failed && this.#weights[i]! > 0 && b.health.up) return b;
    }
    return failed;
  }
}

/**
 * FNV-1a over the key, then murmur3's finaliser: FNV alone leaves the high
 * bits of similar keys ("user-1", "user-2") correlated, and the high bits are
 * what place a key in the weight space. No crypto is needed to place users.
 */
function hashKey(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
