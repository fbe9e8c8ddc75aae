// A route's retry budget: retries may be at most a share of its requests
// over the last 10 s (plus a floor per second), so that during an outage
// retries cannot multiply the load on the backends that are left (the
// Envoy/Finagle "retry budget"). Per-route state, kept with the route.
import type { RouteConfig } from '../config/model.ts';

const WINDOW_SECONDS = 10;

/** Requests and retries of one route over the last 10 s, in one-second slots. */
export class RetryBudget {
  readonly #cfg: RouteConfig['retries'];
  readonly #requests = new Uint32Array(WINDOW_SECONDS);
  readonly #retries = new Uint32Array(WINDOW_SECONDS);
  #second = 0;

  constructor(cfg: RouteConfig['retries']) {
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
    const allowed = Math.max(this.#cfg.minRetriesPerSecond * WINDOW_SECONDS, (requests * this.#cfg.budget) / 100);
    if (retries >= allowed) return false;
    this.#retries[slot]!++;
    return true;
  }
}
