// The request path after the entrypoint: route lookup, backend choice
// (override, sticky key, weighted pick over healthy backends), limits,
// forwarding, retries and the overall timeout.
import {
  NoBackendError, NoRouteError, PayloadTooLargeError, UnknownBackendError, type UpstreamError,
} from '../errors.ts';
import type { Exchange } from '../ingress/exchange.ts';
import type { BackendMetrics } from '../observe/metrics.ts';
import { choose } from './choose.ts';
import { mayRetry } from './retry.ts';
import type { Backend, Route } from '../routing/route.ts';
import type { RouteTable } from '../routing/table.ts';
import { forwardH2 } from '../upstream/h2-call.ts';
import { forwardHttp } from '../upstream/http1.ts';

// These carry nothing request-specific, so one instance each saves a stack
// capture per rejected request.
const NO_ROUTE = new NoRouteError();
const NO_BACKEND = new NoBackendError();
const UNKNOWN_BACKEND = new UnknownBackendError();
const TOO_LARGE = new PayloadTooLargeError();

/** Routes and forwards one exchange using the table it started with. */
export function proxy(ex: Exchange, table: RouteTable, unmatched: BackendMetrics): void {
  const route = table.match(ex.authority, ex.path);
  if (route === undefined) {
    ex.metrics = unmatched;
    ex.fail(NO_ROUTE);
    return;
  }
  const backend = choose(ex, route);
  if (backend === undefined || typeof backend === 'string') {
    ex.metrics = route.none;
    ex.fail(backend === undefined ? NO_BACKEND : UNKNOWN_BACKEND);
    return;
  }
  if (route.maxBodyBytes > 0) {
    if (ex.contentLength > route.maxBodyBytes) {
      ex.metrics = route.none;
      ex.fail(TOO_LARGE);
      return;
    }
    ex.limitBody(route.maxBodyBytes, TOO_LARGE);
  }
  if (route.mirror !== null && backend !== route.mirror.to) route.mirror.offer(ex);
  route.retryBudget.request();
  const { overallMs, overallIncludesStreams } = route.timeouts;
  // gRPC calls and WebSockets may be long streams: cut only if asked to.
  if (overallMs > 0 && (overallIncludesStreams || (!ex.grpc && ex.upgrade === undefined))) ex.deadline(overallMs, !overallIncludesStreams);
  attempt(ex, route, backend, 0);
}

function attempt(ex: Exchange, route: Route, backend: Backend, n: number): void {
  if (ex.signal.aborted) return;
  ex.metrics = backend.metrics;
  if (backend.upstream.protocol === 'h2c') forwardH2(ex, route, backend, n, attemptFailed);
  else forwardHttp(ex, route, backend, n, attemptFailed);
}

/**
 * An attempt failed before or during the response. It counts against the
 * backend's health; it is retried (preferring another backend; an override
 * pins the backend) when retry.ts says that is safe and the budget allows.
 */
export function attemptFailed(ex: Exchange, route: Route, backend: Backend, n: number, err: UpstreamError, responseStarted: boolean): void {
  if (ex.signal.aborted) return; // the client left, or the proxy answered (limit, deadline) and cancelled this call
  backend.metrics.upstreamError(err);
  backend.health.failure(route.outlier);
  if (mayRetry(route.retry, route.retryBudget, n, ex.method, err, responseStarted, ex.bodyReplayable, ex.clientGone)) {
    attempt(ex, route, ex.override === undefined ? route.retryTarget(backend) : backend, n + 1);
    return;
  }
  ex.fail(err);
}
