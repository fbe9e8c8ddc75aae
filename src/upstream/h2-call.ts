// One request on an h2c backend (gRPC): a stream on a pooled session.
import http2, { type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import { streamResetError, UpstreamError, upstreamError } from '../errors.ts';
import type { Exchange, ResponseHeaders } from '../ingress/exchange.ts';
import type { Backend, Route } from '../routing/route.ts';
import type { H2Upstream, Slot } from './h2-pool.ts';
import type { AttemptFailed } from './http1.ts';

const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR } = http2.constants;

/**
 * One request on an h2c backend: headers and body upstream, response headers,
 * data and trailers back, cancellation both ways.
 */
class H2Call {
  readonly #ex: Exchange;
  readonly #route: Route;
  readonly #backend: Backend;
  readonly #attempt: number;
  readonly #failed: AttemptFailed;
  readonly #up: H2Upstream;
  #slot: Slot | null = null;
  #stream: ClientHttp2Stream | undefined;
  #timer: NodeJS.Timeout | undefined;
  #responded = false;
  #status = 0;
  #trailers: ResponseHeaders | null = null;
  #done = false;

  constructor(ex: Exchange, route: Route, backend: Backend, attempt: number, failed: AttemptFailed) {
    this.#ex = ex;
    this.#route = route;
    this.#backend = backend;
    this.#attempt = attempt;
    this.#failed = failed;
    this.#up = backend.upstream as H2Upstream; // routes of protocol h2c get H2Upstreams
  }

  readonly onSession = (err: Error | null, slot: Slot | null): void => {
    const ex = this.#ex;
    // The session took a while: the exchange may have settled meanwhile.
    if (ex.signal.aborted) return;
    if (err !== null || slot === null) {
      this.#fail(upstreamError(err));
      return;
    }
    let stream: ClientHttp2Stream;
    const hasBody = ex.hasBody;
    try {
      stream = slot.session.request(ex.headersForH2(this.#backend.hostHeader), { endStream: !hasBody, waitForTrailers: hasBody });
    } catch (e) {
      // The session went away between acquire and request: nothing was sent.
      this.#fail(new UpstreamError('reset', true, e));
      return;
    }
    this.#slot = slot;
    this.#stream = stream;
    this.#up.track(slot);
    stream.on('response', this.#onResponse);
    stream.on('trailers', this.#onTrailers);
    stream.on('data', this.#onData);
    stream.on('end', this.#onEnd);
    stream.on('error', noop);
    stream.once('close', this.#onClose);
    ex.signal.listen(this.#cancel);
    if (hasBody) {
      stream.once('wantTrailers', this.#sendRequestTrailers);
      const body = ex.body()!;
      body.on('error', () => { if (!stream.closed) stream.close(NGHTTP2_CANCEL); });
      body.pipe(stream);
    }
    this.#timer = setTimeout(this.#timeout, this.#route.timeouts.responseMs);
  };

  readonly #sendRequestTrailers = (): void => {
    // Empty trailers make node end the stream with an empty DATA frame.
    this.#stream!.sendTrailers(this.#ex.requestTrailers() ?? {});
  };

  readonly #onResponse = (headers: IncomingHttpHeaders & ResponseHeaders, flags: number): void => {
    clearTimeout(this.#timer);
    const status = Number(headers[':status']);
    if (status < 200) return;
    delete headers[':status'];
    this.#responded = true;
    this.#status = status;
    if (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) {
      // Trailers-Only (how gRPC servers send errors): one HEADERS frame, no body.
      this.#done = true;
      this.#observe(headers);
      this.#ex.respondOnly(status, headers);
      return;
    }
    const idleMs = this.#route.timeouts.idleMs;
    if (idleMs > 0) this.#stream!.setTimeout(idleMs, this.#idle);
    this.#ex.respond(status, headers, true);
  };

  /** Passive health: a 5xx or gRPC UNAVAILABLE counts against the backend. */
  #observe(h: ResponseHeaders): void {
    this.#backend.health.observe(this.#route.outlier, this.#status >= 500 || h['grpc-status'] === '14');
  }

  readonly #idle = (): void => {
    this.#done = true;
    this.#stream?.close(NGHTTP2_CANCEL);
    this.#fail(new UpstreamError('timeout', false, new Error(`no data for ${this.#route.timeouts.idleMs} ms`)));
  };

  readonly #onTrailers = (trailers: IncomingHttpHeaders): void => {
    this.#trailers = trailers as ResponseHeaders;
  };

  readonly #onData = (chunk: Buffer): void => {
    if (!this.#ex.write(chunk)) {
      const stream = this.#stream!;
      stream.pause();
      this.#ex.onceDrain(() => stream.resume());
    }
  };

  readonly #onEnd = (): void => {
    if (this.#done) return;
    // Node pushes EOF on every stream close: a reset or a dead session is not a clean end.
    const rst = this.#stream!.rstCode;
    if (rst !== undefined && rst !== NGHTTP2_NO_ERROR) return;
    this.#done = true;
    this.#observe(this.#trailers ?? {});
    this.#ex.end(this.#trailers);
  };

  readonly #onClose = (): void => {
    clearTimeout(this.#timer);
    this.#ex.signal.unlisten(this.#cancel);
    this.#up.release(this.#slot!);
    if (this.#done || this.#ex.signal.aborted) return;
    // The stream closed before it ended: the session died (UNAVAILABLE), or
    // the peer reset the stream, whose code says what the client is told.
    const session = this.#slot!.session;
    const code = this.#stream!.rstCode;
    if (code === undefined || session.destroyed) {
      const err = new UpstreamError('reset', false, new Error('upstream session closed'));
      err.rstCode = NGHTTP2_INTERNAL_ERROR;
      this.#fail(err);
      return;
    }
    this.#fail(streamResetError(code));
  };

  readonly #timeout = (): void => {
    if (this.#responded) return;
    this.#done = true;
    this.#stream?.close(NGHTTP2_CANCEL);
    this.#fail(new UpstreamError('timeout', false, new Error(`no response within ${this.#route.timeouts.responseMs} ms`)));
  };

  readonly #cancel = (): void => {
    clearTimeout(this.#timer);
    this.#stream?.close(NGHTTP2_CANCEL);
  };

  #fail(err: UpstreamError): void {
    this.#failed(this.#ex, this.#route, this.#backend, this.#attempt, err, this.#responded);
  }
}

function noop(): void {}

/** Sends `ex` to an h2c backend. `failed` decides between retry and error. */
export function forwardH2(ex: Exchange, route: Route, backend: Backend, attempt: number, failed: AttemptFailed): void {
  (backend.upstream as H2Upstream).acquire(new H2Call(ex, route, backend, attempt, failed).onSession);
}
