// Routing: the immutable host table built from a config, and the weighted pick.
// A RouteTable is built whole on every (re)load and swapped as one reference;
// a request looks its route up in the table it started with.
import { setImmediate } from 'node:timers/promises';
import type { Config, Protocol, RouteConfig } from './config.ts';
import type { BackendMetrics } from './metrics.ts';
import type { Upstream } from './upstreams.ts';

export interface Backend {
  readonly name: string;
  readonly weight: number;
  /** Host / :authority sent upstream; undefined keeps the client's. */
  readonly hostHeader: string | undefined;
  readonly upstream: Upstream;
  readonly metrics: BackendMetrics;
}

/** What the table builder needs from the rest of the router: upstreams and bound metrics. */
export interface Binder {
  backend(route: RouteConfig, backend: RouteConfig['backends'][number]): { upstream: Upstream; metrics: BackendMetrics };
  /** Metrics for requests of this route that reached no backend (label backend="none"). */
  none(route: RouteConfig): BackendMetrics;
}

/**
 * One route. The split is smooth weighted round-robin (nginx's algorithm):
 * over every window of sum(weights) picks each backend gets exactly its weight,
 * interleaved evenly (90/10 sends 1 in 10, not 10 in a row). Exact per replica
 * means exact in aggregate however many replicas serve a host, and tests are
 * deterministic; a random pick only converges, and at 99/1 a replica can go
 * hundreds of requests without touching the canary. The state is a few numbers
 * per route, reset when a reload builds a new table.
 */
export class Route {
  readonly name: string;
  readonly protocol: Protocol;
  readonly pathPrefix: string;
  readonly backends: readonly Backend[];
  readonly connectMs: number;
  readonly responseMs: number;
  readonly hosts: readonly string[];
  readonly fingerprint: string;
  readonly none: BackendMetrics;
  readonly #weights: Int32Array;
  readonly #current: Float64Array;
  readonly #total: number;

  static build(rc: RouteConfig, bind: Binder): Route {
    const backends = rc.backends.map((bc) => ({
      name: bc.name,
      weight: bc.weight,
      hostHeader: bc.hostHeader,
      ...bind.backend(rc, bc),
    }));
    return new Route(rc, backends, bind.none(rc));
  }

  constructor(cfg: RouteConfig, backends: readonly Backend[], none: BackendMetrics) {
    this.name = cfg.name;
    this.hosts = cfg.hosts;
    this.fingerprint = cfg.fingerprint;
    this.none = none;
    this.protocol = cfg.protocol;
    this.pathPrefix = cfg.pathPrefix;
    this.connectMs = cfg.timeouts.connectMs;
    this.responseMs = cfg.timeouts.responseMs;
    this.backends = backends;
    this.#weights = Int32Array.from(backends, (b) => b.weight);
    this.#current = new Float64Array(backends.length);
    this.#total = backends.reduce((s, b) => s + b.weight, 0);
  }

  /** The next backend by weight, or undefined when every weight is 0. */
  pick(): Backend | undefined {
    if (this.#total === 0) return undefined;
    const w = this.#weights;
    const cur = this.#current;
    let best = -1;
    for (let i = 0; i < w.length; i++) {
      if (w[i] === 0) continue;
      cur[i] += w[i]!;
      if (best < 0 || cur[i]! > cur[best]!) best = i;
    }
    cur[best] -= this.#total;
    return this.backends[best];
  }

  /** The backend named by an override header (weight 0 included). */
  byName(name: string): Backend | undefined {
    for (const b of this.backends) if (b.name === name) return b;
    return undefined;
  }

  /** Where a retry goes: another backend with weight if there is one, else the same. */
  retryTarget(failed: Backend): Backend {
    for (const b of this.backends) if (b !== failed && b.weight > 0) return b;
    return failed;
  }
}

// Hostnames seen in requests, mapped to their candidate routes. Bounded so a
// flood of random Host headers cannot grow memory; cleared when full.
const HOST_CACHE_LIMIT = 10_000;
// New routes built between two turns of the event loop during a reload.
const BUILD_SLICE = 500;

export class RouteTable {
  readonly routes: readonly Route[];
  readonly #exact = new Map<string, Route[]>();
  readonly #wildcard = new Map<string, Route[]>();
  readonly #cache = new Map<string, readonly Route[] | null>();
  readonly #byFingerprint = new Map<string, Route>();

  /**
   * Builds the table for `config`. Routes whose config is unchanged since
   * `previous` are carried over as they are (with their weighted-pick state),
   * so a reload that moves one weight among thousands of routes costs little.
   * New routes are built in slices with a turn of the event loop between
   * them, so even a config where every route changed never stalls requests.
   */
  static async build(config: Config, bind: Binder, previous?: RouteTable): Promise<RouteTable> {
    const routes: Route[] = [];
    let built = 0;
    for (const rc of config.routes) {
      let route = previous?.byFingerprint(rc.fingerprint);
      if (route === undefined) {
        route = Route.build(rc, bind);
        if (++built % BUILD_SLICE === 0) await setImmediate();
      }
      routes.push(route);
    }
    return new RouteTable(routes);
  }

  constructor(routes: readonly Route[]) {
    for (const route of routes) {
      this.#byFingerprint.set(route.fingerprint, route);
      for (const host of route.hosts) {
        const [map, key] = host.startsWith('*.') ? [this.#wildcard, host.slice(2)] : [this.#exact, host];
        let list = map.get(key);
        if (list === undefined) map.set(key, (list = []));
        list.push(route);
      }
    }
    // Longest prefix first, so the first prefix that matches wins.
    for (const map of [this.#exact, this.#wildcard]) {
      for (const list of map.values()) list.sort((a, b) => b.pathPrefix.length - a.pathPrefix.length);
    }
    this.routes = routes;
  }

  byFingerprint(fingerprint: string): Route | undefined {
    return this.#byFingerprint.get(fingerprint);
  }

  /** The route for a raw Host / :authority value and a request path. */
  match(rawHost: string | undefined, path: string): Route | undefined {
    if (rawHost === undefined) return undefined;
    let candidates = this.#cache.get(rawHost);
    if (candidates === undefined) {
      candidates = this.#lookup(normalizeHost(rawHost));
      if (this.#cache.size >= HOST_CACHE_LIMIT) this.#cache.clear();
      this.#cache.set(rawHost, candidates);
    }
    if (candidates === null) return undefined;
    for (const r of candidates) if (path.startsWith(r.pathPrefix)) return r;
    return undefined;
  }

  #lookup(host: string): readonly Route[] | null {
    const exact = this.#exact.get(host);
    const dot = host.indexOf('.');
    // "*.x.com" covers exactly one more label: "a.x.com", not "x.com" or "a.b.x.com".
    const wild = dot > 0 ? this.#wildcard.get(host.slice(dot + 1)) : undefined;
    // The exact host's prefixes are tried before the wildcard's.
    if (exact !== undefined && wild !== undefined) return [...exact, ...wild];
    return exact ?? wild ?? null;
  }
}

/** Lowercase, without the port or a trailing dot: "API.Example.com.:8080" → "api.example.com". */
export function normalizeHost(raw: string): string {
  let host = raw;
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    host = end > 0 ? host.slice(0, end + 1) : host;
  } else {
    const colon = host.lastIndexOf(':');
    if (colon >= 0) host = host.slice(0, colon);
  }
  if (host.endsWith('.')) host = host.slice(0, -1);
  return host.toLowerCase();
}
