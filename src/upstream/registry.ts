// The upstream registry: one connection pool per backend origin and protocol,
// shared by every route that names it and kept across reloads, so a
// weights-only change opens no new connections and in-flight requests keep theirs.
import type { Protocol } from '../config/model.ts';
import { DEFAULT_HTTP_UPSTREAM, HttpUpstream } from './http1.ts';
import { DEFAULT_H2_UPSTREAM, H2Upstream, type H2Gauges } from './h2-pool.ts';
import type { Upstream } from './upstream.ts';

export class Upstreams {
  readonly #byKey = new Map<string, Upstream>();
  readonly #h2Gauges: H2Gauges;

  constructor(h2Gauges: H2Gauges) {
    this.#h2Gauges = h2Gauges;
  }

  /** The upstream for a backend URL (normalised by config to http://host:port), created on first use. */
  get(protocol: Protocol, origin: string, connectTimeoutMs: number): Upstream {
    const key = `${protocol} ${origin} ${connectTimeoutMs}`;
    let up = this.#byKey.get(key);
    if (up === undefined) {
      up = protocol === 'h2c'
        ? new H2Upstream(origin, { ...DEFAULT_H2_UPSTREAM, connectTimeoutMs }, this.#h2Gauges)
        : new HttpUpstream(origin, { ...DEFAULT_HTTP_UPSTREAM, connectTimeoutMs });
      this.#byKey.set(key, up);
    }
    return up;
  }

  /** After a reload: closes, once their in-flight requests are done, the upstreams no route uses now. */
  retain(used: ReadonlySet<Upstream>): void {
    for (const [key, up] of this.#byKey) {
      if (used.has(up)) continue;
      this.#byKey.delete(key);
      void up.close();
    }
  }

  async closeAll(): Promise<void> {
    const all = [...this.#byKey.values()];
    this.#byKey.clear();
    await Promise.all(all.map((u) => u.destroy()));
  }
}
