// The request path after the entrypoint: route lookup, backend choice
// (override, sticky key, weighted pick over healthy backends), limits,
// forwarding, retries and the overall timeout.
import {
  NoBackendError, NoRouteError, PayloadTooLargeError, UnknownBackendError, type UpstreamError,
} from '../errors.ts';
import type { Exchange } from '../ingress/exchange.ts';
import type { BackendMetrics } from '../observe/metrics.ts';
import type { Backend, Route } from '../routing/route.ts';
import type { RouteTable } from '../routing/table.ts';
import type { Attempt, Timeouts } from '../upstream/upstream.ts';
import { choose } from './choose.ts';
import { mayRetry } from './retry.ts';

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
  const { maxBodyBytes } = route.config;
  if (maxBodyBytes > 0) {
    if (ex.contentLength > maxBodyBytes) {
      ex.metrics = route.none;
      ex.fail(TOO_LARGE);
      return;
    }
    ex.limitBody(maxBodyBytes, TOO_LARGE);
  }
  if (route.mirror !== null && backend !== route.mirror.to) route.mirror.offer(ex);
  route.retryBudget.request();
  const { overallMs, overallIncludesStreams } = route.timeouts;
  // gRPC calls and WebSockets may be long streams: cut only if asked to.
  if (overallMs > 0 && (overallIncludesStreams || (!ex.grpc && ex.upgrade === undefined))) ex.deadline(overallMs, !overallIncludesStreams);
  start(ex, route, backend, 0);
}

function start(ex: Exchange, route: Route, backend: Backend, n: number): void {
  if (ex.signal.aborted) return;
  ex.metrics = backend.metrics;
  backend.upstream.forward(new ProxyAttempt(ex, route, backend, n));
}

/** One try of an exchange on one backend, as its upstream sees it. */
class ProxyAttempt implements Attempt {
  readonly exchange: Exchange;
  readonly #route: Route;
  readonly #backend: Backend;
  /** 0 for the first try. */
  readonly #n: number;

  constructor(exchange: Exchange, route: Route, backend: Backend, n: number) {
    this.exchange = exchange;
    this.#route = route;
    this.#backend = backend;
    this.#n = n;
  }

  get queue(): BackendMetrics {
    return this.#backend.metrics;
  }

  get hostHeader(): string | undefined {
    return this.#backend.config.hostHeader;
  }

  get timeouts(): Timeouts {
    return this.#route.timeouts;
  }

  observe(failed: boolean): void {
    this.#backend.health.observe(this.#route.ejection, failed);
  }

  /**
   * The attempt failed before or during the response. It counts against the
   * backend's health; it is retried (preferring another backend; an override
   * pins the backend) when retry.ts says that is safe and the budget allows.
   */
  failed(err: UpstreamError, responseStarted: boolean): void {
    const ex = this.exchange;
    // The client left, or the proxy answered (limit, deadline) and cancelled this call.
    if (ex.signal.aborted) return;
    const route = this.#route;
    const backend = this.#backend;
    backend.metrics.upstreamError(err);
    backend.health.failure(route.ejection);
    const retry = mayRetry(route.config.retries, route.retryBudget, {
      attempt: this.#n, method: ex.method, err, responseStarted, bodyReplayable: ex.bodyReplayable, clientGone: ex.clientGone,
    });
    if (retry) start(ex, route, ex.override === undefined ? route.retryTarget(backend) : backend, this.#n + 1);
    else ex.fail(err);
  }
}
