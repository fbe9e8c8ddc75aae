// Backend health: active checks (HTTP, or the gRPC health protocol) and
// passive outlier ejection. State is keyed by backend URL and outlives
// reloads, so a down backend stays down across a config change (Traefik
// resets it on every reload: traefik#13218).
import { Agent, request } from 'undici';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { HealthCheckConfig, OutlierConfig } from '../config/model.ts';

/** The health of one backend URL, as the request path reads it. */
export class BackendHealth {
  readonly url: string;
  /** Read on every pick: a plain field, flipped by checks and timers, never computed per request. */
  up = true;
  /** When the current ejection ends (ms since epoch), 0 when not ejected: ranks backends when all are down. */
  ejectedUntil = 0;
  #activeUp = true;
  #consecutiveFailures = 0;
  #ejections = 0;
  #readmittedAt = 0;
  #timer: NodeJS.Timeout | undefined;
  readonly #log: Logger;

  constructor(url: string, log: Logger) {
    this.url = url;
    this.#log = log;
  }

  /** A finished upstream response (passive): `failed` for a 5xx or gRPC UNAVAILABLE. */
  observe(cfg: OutlierConfig, failed: boolean): void {
    if (failed) this.failure(cfg);
    else this.success(cfg);
  }

  /** A response that counts as healthy (passive). */
  success(cfg: OutlierConfig): void {
    this.#consecutiveFailures = 0;
    // Back-off doubles per ejection; it is forgiven after a clean ejection period.
    if (this.#ejections > 0 && this.ejectedUntil === 0 && Date.now() - this.#readmittedAt > cfg.ejectionMs) this.#ejections = 0;
  }

  /** A connect failure, timeout, reset, 5xx or gRPC UNAVAILABLE (passive). */
  failure(cfg: OutlierConfig): void {
    if (cfg.consecutiveFailures === 0 || this.ejectedUntil !== 0) return;
    if (++this.#consecutiveFailures < cfg.consecutiveFailures) return;
    const ms = Math.min(cfg.ejectionMs * 2 ** this.#ejections, cfg.maxEjectionMs);
    this.#ejections++;
    this.ejectedUntil = Date.now() + ms;
    this.#log.warn({ url: this.url, failures: this.#consecutiveFailures, ejectedForMs: ms }, 'backend ejected');
    this.#timer = setTimeout(() => {
      this.ejectedUntil = 0;
      this.#consecutiveFailures = 0;
      this.#readmittedAt = Date.now();
      this.#log.info({ url: this.url }, 'backend readmitted after ejection');
      this.#update();
    }, ms);
    this.#timer.unref();
    this.#update();
  }

  /** The verdict of the active checks (after their thresholds). */
  setActive(up: boolean): void {
    if (up === this.#activeUp) return;
    this.#activeUp = up;
    this.#log[up ? 'info' : 'warn']({ url: this.url }, up ? 'backend healthy (active check)' : 'backend unhealthy (active check)');
    this.#update();
  }

  #update(): void {
    this.up = this.#activeUp && this.ejectedUntil === 0;
  }

  close(): void {
    clearTimeout(this.#timer);
  }
}

// --- active checks --------------------------------------------------------

// grpc.health.v1.HealthCheckRequest { string service = 1; } and
// HealthCheckResponse { ServingStatus status = 1; } — one field each, so they
// are encoded here instead of loading a .proto at run time.
function encodeHealthRequest(service: string): Buffer {
  const s = Buffer.from(service);
  return s.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, s.length]), s]);
}

const SERVING = 1;
function decodeHealthStatus(b: Buffer): number {
  // Field 1, varint: tag 0x08 then the value (ServingStatus fits one byte).
  return b.length >= 2 && b[0] === 0x08 ? b[1]! : 0;
}

type Probe = () => Promise<boolean>;

function httpProbe(url: string, cfg: HealthCheckConfig, agent: Agent): Probe {
  const target = new URL(cfg.path, url).toString();
  return async () => {
    const res = await request(target, {
      dispatcher: agent, headersTimeout: cfg.timeoutMs, bodyTimeout: cfg.timeoutMs,
      signal: AbortSignal.timeout(cfg.timeoutMs),
    });
    await res.body.dump();
    return res.statusCode >= cfg.expectStatus[0] && res.statusCode <= cfg.expectStatus[1];
  };
}

function grpcProbe(url: string, cfg: HealthCheckConfig): { probe: Probe; close(): void } {
  const client = new grpc.Client(new URL(url).host, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  const probe: Probe = () => new Promise((resolve) => {
    client.makeUnaryRequest('/grpc.health.v1.Health/Check', encodeHealthRequest, decodeHealthStatus, cfg.grpcService,
      { deadline: Date.now() + cfg.timeoutMs }, (err: grpc.ServiceError | null, status?: number) => resolve(err === null && status === SERVING));
  });
  return { probe, close: () => client.close() };
}

/** Probes one backend every interval and applies the thresholds. */
class ActiveCheck {
  readonly #health: BackendHealth;
  readonly #cfg: HealthCheckConfig;
  readonly #probe: Probe;
  readonly #closeProbe: () => void;
  #timer: NodeJS.Timeout | undefined;
  #successes = 0;
  #failures = 0;
  #stopped = false;

  constructor(health: BackendHealth, cfg: HealthCheckConfig, agent: Agent) {
    this.#health = health;
    this.#cfg = cfg;
    if (cfg.kind === 'grpc') {
      const g = grpcProbe(health.url, cfg);
      this.#probe = g.probe;
      this.#closeProbe = g.close;
    } else {
      this.#probe = httpProbe(health.url, cfg, agent);
      this.#closeProbe = () => {};
    }
  }

  start(): void {
    void this.#run();
  }

  async #run(): Promise<void> {
    let ok = false;
    try {
      ok = await this.#probe();
    } catch {
      ok = false;
    }
    if (this.#stopped) return;
    if (ok) {
      this.#failures = 0;
      if (++this.#successes >= this.#cfg.healthyThreshold) this.#health.setActive(true);
    } else {
      this.#successes = 0;
      if (++this.#failures >= this.#cfg.unhealthyThreshold) this.#health.setActive(false);
    }
    this.#timer = setTimeout(() => void this.#run(), this.#cfg.intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#closeProbe();
  }
}

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
