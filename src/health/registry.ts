// Backend health: active checks (HTTP, or the gRPC health protocol) and
// passive outlier ejection. State is keyed by backend URL and outlives
// reloads, so a down backend stays down across a config change (Traefik
// resets it on every reload: traefik#13218).
import { Agent } from 'undici';
import type { Logger } from 'pino';
import type { HealthCheckConfig } from '../config/model.ts';
import { ActiveCheck } from './active.ts';
import { BackendHealth } from './backend.ts';

/**
 * Every backend's health, by URL, plus the active checks in force. A reload
 * keeps the health of URLs it still uses and restarts only checks whose
 * settings changed.
 */
export class HealthRegistry {
  readonly #byUrl = new Map<string, BackendHealth>();
  readonly #checks = new Map<string, ActiveCheck>();
  readonly #log: Logger;
  readonly #agent = new Agent({ connections: 2, keepAliveTimeout: 4_000 });

  constructor(log: Logger) {
    this.#log = log;
  }

  backend(url: string): BackendHealth {
    let h = this.#byUrl.get(url);
    if (h === undefined) {
      h = new BackendHealth(url, this.#log);
      this.#byUrl.set(url, h);
    }
    return h;
  }

  /** After a (re)load: the checks wanted now, by URL; health of URLs no longer used is dropped. */
  retain(urls: ReadonlySet<string>, checks: ReadonlyMap<string, HealthCheckConfig>): void {
    for (const [url, h] of this.#byUrl) {
      if (urls.has(url)) continue;
      h.close();
      this.#byUrl.delete(url);
    }
    const wanted = new Map<string, [string, HealthCheckConfig]>();
    for (const [url, cfg] of checks) wanted.set(`${url} ${JSON.stringify(cfg)}`, [url, cfg]);
    for (const [key, check] of this.#checks) {
      if (wanted.has(key)) continue;
      check.stop();
      this.#checks.delete(key);
    }
    for (const [key, [url, cfg]] of wanted) {
      if (this.#checks.has(key)) continue;
      const health = this.backend(url);
      const check = new ActiveCheck(health, cfg, this.#agent);
      this.#checks.set(key, check);
      check.start();
    }
    // A URL whose checks were removed is no longer held down by them.
    const checked = new Set([...wanted.values()].map(([url]) => url));
    for (const [url, h] of this.#byUrl) if (!checked.has(url)) h.setActive(true);
  }

  async close(): Promise<void> {
    for (const c of this.#checks.values()) c.stop();
    this.#checks.clear();
    for (const h of this.#byUrl.values()) h.close();
    await this.#agent.close();
  }
}
