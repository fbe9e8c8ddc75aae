// Routing: the immutable host table built from a config (host, then path prefix).
// A RouteTable is built whole on every (re)load and swapped as one reference;
// a request looks its route up in the table it started with.
import { setImmediate } from 'node:timers/promises';
import type { Config, RouteConfig } from '../config/model.ts';
import { Route, type Binder } from './route.ts';

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
  readonly #byConfig = new Map<RouteConfig, Route>();

  /**
   * Builds the table for `config`. Routes whose config is unchanged since
   * `previous` (the config loader hands an unchanged route back as the same
   * object) are carried over as they are (with their weighted-pick state),
   * so a reload that moves one weight among thousands of routes costs little.
   * New routes are built in slices with a turn of the event loop between
   * them, so even a config where every route changed never stalls requests.
   */
  static async build(config: Config, bind: Binder, previous?: RouteTable): Promise<RouteTable> {
    const routes: Route[] = [];
    let built = 0;
    for (const rc of config.routes) {
      let route = previous === undefined ? undefined : previous.#byConfig.get(rc);
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
      this.#byConfig.set(route.config, route);
      for (const host of route.config.hosts) {
        const [map, key] = host.startsWith('*.') ? [this.#wildcard, host.slice(2)] : [this.#exact, host];
        let list = map.get(key);
        if (list === undefined) map.set(key, (list = []));
        list.push(route);
      }
    }
    // Longest prefix first, so the first prefix that matches wins.
    for (const map of [this.#exact, this.#wildcard]) {
      for (const list of map.values()) list.sort((a, b) => b.config.pathPrefix.length - a.config.pathPrefix.length);
    }
    this.routes = routes;
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
    for (const r of candidates) if (path.startsWith(r.config.pathPrefix)) return r;
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
