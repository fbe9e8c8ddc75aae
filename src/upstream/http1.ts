// HTTP/1.1 upstreams: one bounded undici Pool per backend origin, and the
// dispatch handler that streams an upstream response into an Exchange.
import { Pool, buildConnector, type Dispatcher } from 'undici';
import type { Duplex } from 'node:stream';
import { upstreamError, type UpstreamError } from '../errors.ts';
import type { Exchange, ResponseHeaders } from '../ingress/exchange.ts';
import type { UpgradeExchange } from '../ingress/upgrade.ts';
import type { Backend, Route } from '../routing/route.ts';

export interface HttpUpstreamOptions {
  /** Upper bound of connections to this backend. */
  readonly connections: number;
  readonly connectTimeoutMs: number;
  /** Below a typical backend's keep-alive timeout (nginx 75s, node 5s), so we close idle sockets first (undici#3141). */
  readonly keepAliveTimeoutMs: number;
}

export const DEFAULT_HTTP_UPSTREAM: Omit<HttpUpstreamOptions, 'connectTimeoutMs'> = {
  connections: 128,
  keepAliveTimeoutMs: 4_000,
};

export class HttpUpstream {
  readonly protocol = 'http' as const;
  readonly origin: string;
  readonly pool: Pool;

  constructor(origin: string, opts: HttpUpstreamOptions) {
    this.origin = origin;
    this.pool = new Pool(origin, {
      connections: opts.connections,
      pipelining: 1,
      keepAliveTimeout: opts.keepAliveTimeoutMs,
      keepAliveMaxTimeout: opts.keepAliveTimeoutMs,
      connect: nativeTimeoutConnector(opts.connectTimeoutMs),
      // Response (and body) timeouts are set per request from the route.
      headersTimeout: 0,
      bodyTimeout: 0,
    });
    // A pool emits 'connectionError' for failed connects; the request that
    // triggered it already reports the failure, so nothing more to do here.
    this.pool.on('connectionError', () => {});
  }

  close(): Promise<void> {
    return this.pool.close();
  }

  destroy(): Promise<void> {
    return this.pool.destroy();
  }
}

/** undici's connector with the connect timeout on a native timer (undici's own runs on ~1 s "fast timers"). */
function nativeTimeoutConnector(ms: number): buildConnector.connector {
  const base = buildConnector({ noDelay: true, timeout: 0 });
  return (opts, cb) => {
    let done = false;
    const timer = setTimeout(() => {
      done = true;
      (socket as { destroy?: () => void } | undefined)?.destroy?.();
      cb(Object.assign(new Error(`connect timeout after ${ms} ms`), { code: 'UND_ERR_CONNECT_TIMEOUT' }), null);
    }, ms);
    const socket = base(opts, (err, s) => {
      if (done) { s?.destroy(); return; }
      clearTimeout(timer);
      if (err !== null) cb(err, null); else cb(null, s!);
    });
  };
}

/**
 * undici runs response and body timeouts on its "fast timers" (~1 s
 * resolution, measured: 300 ms fired after ~1000 ms), which are cheap; a
 * native timer per request costs ~10% of throughput (measured). So timeouts
 * under 2 s, where that resolution matters, run on native timers, and longer
 * ones (the defaults: 30 s, 60 s) on undici's. 0 means none.
 */
function nativeTimer(ms: number): boolean {
  return ms > 0 && ms < 2_000;
}

/** Reports a failed attempt to the request path, which retries or answers the error. */
export type AttemptFailed = (ex: Exchange, route: Route, backend: Backend, attempt: number, err: UpstreamError, responseStarted: boolean) => void;

/**
 * One request to an HTTP/1.1 backend. Implements undici's dispatch handler:
 * response head, body chunks with backpressure both ways, end, error.
 */
class HttpCall implements Dispatcher.DispatchHandler {
  readonly #ex: Exchange;
  readonly #route: Route;
  readonly #backend: Backend;
  readonly #attempt: number;
  readonly #failed: AttemptFailed;
  #controller: Dispatcher.DispatchController | undefined;
  #started = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(ex: Exchange, route: Route, backend: Backend, attempt: number, failed: AttemptFailed) {
    this.#ex = ex;
    this.#route = route;
    this.#backend = backend;
    this.#attempt = attempt;
    this.#failed = failed;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    // Queued for a connection until now: the exchange may have settled meanwhile.
    if (this.#ex.signal.aborted) controller.abort(new Error('exchange settled'));
    else {
      this.#ex.signal.listen(this.#abort);
      const ms = this.#route.timeouts.responseMs;
      if (nativeTimer(ms)) this.#timer = setTimeout(this.#timeout, ms, 'SY_RESPONSE_TIMEOUT');
    }
  }

  readonly #timeout = (code: string): void => {
    this.#controller?.abort(Object.assign(new Error(code === 'SY_RESPONSE_TIMEOUT' ? 'response timeout' : 'idle timeout'), { code: code === 'SY_RESPONSE_TIMEOUT' ? code : 'UND_ERR_BODY_TIMEOUT' }));
  };

  readonly #abort = (): void => {
    this.#controller?.abort(new Error('exchange settled'));
  };

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[]>): void {
    if (statusCode < 200) return; // 1xx interim responses are the proxy's business only
    this.#started = true;
    clearTimeout(this.#timer);
    const idle = this.#route.timeouts.idleMs;
    if (nativeTimer(idle)) this.#timer = setTimeout(this.#timeout, idle, 'idle');
    this.#backend.health.observe(this.#route.outlier, statusCode >= 500);
    this.#ex.respond(statusCode, headers as ResponseHeaders, false);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#timer?.refresh();
    if (!this.#ex.write(chunk)) {
      controller.pause();
      this.#ex.onceDrain(() => controller.resume());
    }
  }

  onResponseEnd(): void {
    clearTimeout(this.#timer);
    this.#ex.signal.unlisten(this.#abort);
    this.#ex.end(null);
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    clearTimeout(this.#timer);
    this.#ex.signal.unlisten(this.#abort);
    if (this.#ex.signal.aborted) return;
    this.#failed(this.#ex, this.#route, this.#backend, this.#attempt, upstreamError(err), this.#started);
  }

  onRequestUpgrade(_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[]>, socket: Duplex): void {
    this.#started = true;
    clearTimeout(this.#timer);
    this.#ex.signal.unlisten(this.#abort);
    const ex = this.#ex as UpgradeExchange;
    ex.respond(statusCode, headers as ResponseHeaders);
    ex.splice(socket);
  }
}

/** Sends `ex` to an HTTP/1.1 backend. `failed` decides between retry and error. */
export function forwardHttp(ex: Exchange, route: Route, backend: Backend, attempt: number, failed: AttemptFailed): void {
  (backend.upstream as HttpUpstream).pool.dispatch({
    method: ex.method,
    path: ex.path,
    headers: ex.headersForH1(backend.hostHeader),
    body: ex.body(),
    // An Upgrade (WebSocket) request: on 101 the two sockets are spliced.
    upgrade: ex.upgrade ?? null,
    // Short ones run on native timers in HttpCall; see nativeTimer.
    headersTimeout: nativeTimer(route.timeouts.responseMs) ? 0 : route.timeouts.responseMs,
    bodyTimeout: nativeTimer(route.timeouts.idleMs) ? 0 : route.timeouts.idleMs,
  }, new HttpCall(ex, route, backend, attempt, failed));
}
