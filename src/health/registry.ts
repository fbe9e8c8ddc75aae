// Backend health: active checks (HTTP, or the gRPC health protocol) and
// passive outlier ejection. State is keyed by backend URL and the route's
// health settings, and outlives reloads, so a down backend stays down across
// a config change (Traefik resets it on every reload: traefik#13218).
import { Agent } from '../node-http.ts';
import type { Logger } from 'pino';
import type { HealthCheckConfig, RouteConfig } from '../config/model.ts';
import { parseDuration } from '../config/parse.ts';
import { ActiveCheck } from './active.ts';
import { BackendHealth } from './backend.ts';

/**
 * Which health state a route's backend uses: routes that name one URL with the
 * same healthCheck and outlierDetection share it (one probe, one failure
 * count); a route with other settings gets its own, so one route's check
 * never decides for another (the last route's settings used to win for all).
 */
export function healthKey(url: string, route: Pick<RouteConfig, 'healthCheck' | 'outlierDetection'>): string {
  const { healthCheck: hc, outlierDetection: o } = route;
  // Durations in ms, so "5s" and "5000ms" are the same settings.
  const check = hc === undefined ? null : { ...hc, interval: parseDuration(hc.interval), timeout: parseDuration(hc.timeout) };
  const outlier = { ...o, ejectionTime: parseDuration(o.ejectionTime), maxEjectionTime: parseDuration(o.maxEjectionTime) };
  return `${url} ${JSON.stringify(check)} ${JSON.stringify(outlier)}`;
}

/** A health state wanted after a (re)load: its URL and its active check, if any. */
export interface WantedHealth {
  readonly url: string;
  readonly check: HealthCheckConfig | null;
}

/**
 * Every backend's health, by healthKey, plus the active checks in force. A
 * reload keeps the states of keys it still uses and restarts only checks
 * whose settings changed.
 */
export class HealthRegistry {
  readonly #byKey = new Map<string, BackendHealth>();
  readonly #checks = new Map<string, ActiveCheck>();
  readonly #log: Logger;
  // Probes reuse their connections; idle ones close before a backend's own keep-alive timeout (node: 5 s).
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 2, timeout: 4_000 });

  constructor(log: Logger) {
    this.#log = log;
  }

  backend(key: string, url: string): BackendHealth {
    let h = this.#byKey.get(key);
    if (h === undefined) {
      h = new BackendHealth(url, this.#log);
      this.#byKey.set(key, h);
    }
    return h;
  }

  /** After a (re)load: the states wanted now, by healthKey; the others and their checks are dropped. */
  retain(wanted: ReadonlyMap<string, WantedHealth>): void {
    for (const [key, h] of this.#byKey) {
      if (wanted.has(key)) continue;
      h.close();
      this.#byKey.delete(key);
    }
    for (const [key, check] of this.#checks) {
      if (wanted.get(key)?.check != null) continue;
      check.stop();
      this.#checks.delete(key);
    }
    for (const [key, { url, check }] of wanted) {
      if (check === null || this.#checks.has(key)) continue;
      const active = new ActiveCheck(this.backend(key, url), check, this.#agent);
      this.#checks.set(key, active);
      active.start();
    }
  }

  async close(): Promise<void> {
    for (const c of this.#checks.values()) c.stop();
    this.#checks.clear();
    for (const h of this.#byKey.values()) h.close();
    this.#agent.destroy();
  }
}
