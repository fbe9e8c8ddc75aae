// When a failed attempt may be tried again. Retries are only ever safe when
// the backend cannot have acted on the request, and they are capped per route
// by a budget, so that during an outage they cannot multiply the load on the
// backends that are left (the Envoy/Finagle "retry budget").
import type { RetryConfig } from '../config/model.ts';
import type { UpstreamError } from '../errors.ts';

// Methods that RFC 9110 §9.2.2 calls idempotent: safe to resend after a reset.
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

const WINDOW_SECONDS = 10;

/** Requests and retries of one route over the last 10 s, in one-second slots. */
export class RetryBudget {
  readonly #cfg: RetryConfig;
  readonly #requests = new Uint32Array(WINDOW_SECONDS);
  readonly #retries = new Uint32Array(WINDOW_SECONDS);
  #second = 0;

  constructor(cfg: RetryConfig) {
    this.#cfg = cfg;
  }

  /** Moves the window to now, clearing the slots of the seconds that passed. */
  #advance(): number {
    const now = Math.floor(Date.now() / 1000);
    if (now !== this.#second) {
      const passed = Math.min(now - this.#second, WINDOW_SECONDS);
      for (let i = 1; i <= passed; i++) {
        const slot = (this.#second + i) % WINDOW_SECONDS;
        this.#requests[slot] = 0;
        this.#retries[slot] = 0;
      }
      this.#second = now;
    }
    return now % WINDOW_SECONDS;
  }

  request(): void {
    this.#requests[this.#advance()]!++;
  }

  /** Takes one retry from the budget, if there is one left. */
  take(): boolean {
    const slot = this.#advance();
    let requests = 0;
    let retries = 0;
    for (let i = 0; i < WINDOW_SECONDS; i++) {
      requests += this.#requests[i]!;
      retries += this.#retries[i]!;
    }
    const allowed = Math.max(this.#cfg.minPerSecond * WINDOW_SECONDS, (requests * this.#cfg.budgetPercent) / 100);
    if (retries >= allowed) return false;
    this.#retries[slot]!++;
    return true;
  }
}

/** What decides whether a failed attempt may be tried again. */
export interface FailedAttempt {
  /** Which attempt failed, 0 for the first. */
  readonly attempt: number;
  readonly method: string;
  readonly err: UpstreamError;
  /** A response status already went to the client. */
  readonly responseStarted: boolean;
  /** Every request body byte read so far was kept, so the body can be sent again. */
  readonly bodyReplayable: boolean;
  readonly clientGone: boolean;
}

/**
 * Whether a failed attempt may be retried:
 * - nothing reached the backend (connect refused, REFUSED_STREAM): any method;
 * - reset before any response byte: idempotent methods only;
 * - a timeout: never (the backend may still be acting on the request);
 * and only with attempts left, a body that can be sent again, the client
 * still there, and the route's retry budget not spent.
 */
export function mayRetry(cfg: RetryConfig, budget: RetryBudget, f: FailedAttempt): boolean {
  if (f.attempt + 1 >= cfg.attempts || f.responseStarted || !f.bodyReplayable || f.clientGone) return false;
  const { err } = f;
  if (!err.nothingSent && !(IDEMPOTENT.has(f.method) && (err.kind === 'reset' || err.kind === 'connect'))) return false;
  return budget.take();
}
