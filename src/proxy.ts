// The request path after the entrypoint: route lookup, backend choice,
// forwarding, and the one retry DESIGN.md allows.
import { NoBackendError, NoRouteError, UnknownBackendError, type UpstreamError } from './errors.ts';
import type { Exchange } from './exchange.ts';
import type { BackendMetrics } from './metrics.ts';
import type { Backend, Route, RouteTable } from './routing.ts';
import { forwardH2 } from './upstream-h2.ts';
import { forwardHttp } from './upstream-http.ts';

// These carry nothing request-specific, so one instance each saves a stack
// capture per rejected request.
const NO_ROUTE = new NoRouteError();
const NO_BACKEND = new NoBackendError();
const UNKNOWN_BACKEND = new UnknownBackendError();

// Methods that RFC 9110 §9.2.2 calls idempotent: safe to resend after a reset.
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** Routes and forwards one exchange using the table it started with. */
export function proxy(ex: Exchange, table: RouteTable, unmatched: BackendMetrics): void {
  const route = table.match(ex.authority, ex.path);
  if (route === undefined) {
    ex.metrics = unmatched;
    ex.fail(NO_ROUTE);
    return;
  }
  let backend: Backend | undefined;
  if (ex.override !== undefined) {
    backend = route.byName(ex.override);
    if (backend === undefined) {
      ex.metrics = route.none;
      ex.fail(UNKNOWN_BACKEND);
      return;
    }
  } else {
    backend = route.pick();
    if (backend === undefined) {
      ex.metrics = route.none;
      ex.fail(NO_BACKEND);
      return;
    }
  }
  attempt(ex, route, backend, 0);
}

function attempt(ex: Exchange, route: Route, backend: Backend, n: number): void {
  ex.metrics = backend.metrics;
  if (backend.upstream.protocol === 'h2c') forwardH2(ex, route, backend, n, attemptFailed);
  else forwardHttp(ex, route, backend, n, attemptFailed);
}

/**
 * An attempt failed before or during the response. A connection that was
 * refused (nothing sent), or an idempotent request reset before any response
 * byte, is retried once on another backend (an override pins the backend) —
 * nginx's proxy_next_upstream default. A body is sent again only if all of it
 * that was read could be kept (see RequestBody in exchange.ts).
 */
export function attemptFailed(ex: Exchange, route: Route, backend: Backend, n: number, err: UpstreamError, responseStarted: boolean): void {
  backend.metrics.upstreamError(err);
  const retryable = n === 0 && !responseStarted && ex.bodyReplayable && !ex.clientGone &&
    (err.nothingSent || (err.kind === 'reset' && IDEMPOTENT.has(ex.method)));
  if (retryable) {
    attempt(ex, route, ex.override === undefined ? route.retryTarget(backend) : backend, n + 1);
    return;
  }
  ex.fail(err);
}
