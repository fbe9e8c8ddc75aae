// The health of one backend URL as the request path reads it: passive
// outlier ejection (consecutive failures, doubling back-off) combined with the
// verdict of active checks (active.ts).
import type { Logger } from 'pino';

/** A route's outlierDetection in milliseconds (the Route derives it once from its config). */
export interface Ejection {
  readonly consecutiveFailures: number; // 0 disables ejection
  readonly ejectionMs: number;
  readonly maxEjectionMs: number;
}

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
  observe(cfg: Ejection, failed: boolean): void {
    if (failed) this.failure(cfg);
    else this.success(cfg);
  }

  /** A response that counts as healthy (passive). */
  success(cfg: Ejection): void {
    this.#consecutiveFailures = 0;
    // Back-off doubles per ejection; it is forgiven after a clean ejection period.
    if (this.#ejections > 0 && this.ejectedUntil === 0 && Date.now() - this.#readmittedAt > cfg.ejectionMs) this.#ejections = 0;
  }

  /** A connect failure, timeout, reset, 5xx or gRPC UNAVAILABLE (passive). */
  failure(cfg: Ejection): void {
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

  /** The active checks' verdict; true while none run. */
  get activeUp(): boolean {
    return this.#activeUp;
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
