// When a failed attempt may be tried again. Retries are only ever safe when
// the backend cannot have acted on the request, and they are capped per route
// by a budget, so that during an outage they cannot multiply the load on the
// backends that are left (the Envoy/Finagle "retry budget").
import type { RouteConfig } from '../config/model.ts';
import type { UpstreamError } from '../errors.ts';
import type { RetryBudget } from '../routing/retry-budget.ts';

// Methods that RFC 9110 §9.2.2 calls idempotent: safe to resend after a reset.
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

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
 * - nothing reached the backend (connect refused, REFUSED_STREAM, a connect
 *   timeout, an h2c call that timed out still waiting for a stream): any method;
 * - reset before any response byte: idempotent methods only;
 * - a timeout once the request went out: never (the backend may still be acting on it);
 * and only with attempts left, a body that can be sent again, the client
 * still there, and the route's retry budget not spent.
 */
export function mayRetry(cfg: RouteConfig['retries'], budget: RetryBudget, f: FailedAttempt): boolean {
  if (f.attempt + 1 >= cfg.attempts || f.responseStarted || !f.bodyReplayable || f.clientGone) return false;
  const { err } = f;
  if (!err.nothingSent && !(IDEMPOTENT.has(f.method) && (err.kind === 'reset' || err.kind === 'connect'))) return false;
  return budget.take();
}
