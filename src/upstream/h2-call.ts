// One request on an h2c backend (gRPC): a stream on a pooled session.
import type { OutgoingHttpHeaders } from 'node:http';
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type ClientSessionRequestOptions, type IncomingHttpHeaders } from 'node:http2';
import { streamResetError, UpstreamError, upstreamError } from '../errors.ts';
import type { Exchange, ResponseHeaders } from '../ingress/exchange.ts';
import type { H2Upstream, Slot } from './h2-pool.ts';
import { NATIVE_BELOW_MS, TICK_MS, deadlineIn, tick, unwatch, watch } from './clock.ts';
import { COPY_TIMEOUT_MS, type Attempt } from './upstream.ts';
import { CLOSE, DATA, END, RESPONSE, TRAILERS, WANT_TRAILERS, listen } from '../h2-stream-events.ts';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR } = http2.constants;

// Per-RPC allocations are what GC time is made of here: the stream's
// listeners are shared functions (h2-stream-events.ts), and timeouts of 2 s
// and more are deadlines on the coarse clock instead of a native timer (and
// node's stream timer) per RPC.
function noop(): void {}

/**
 * Opens a stream with a flat header list. node:http2 refuses a repeated
 * single-value field (user-agent, authorization, ...) that an HTTP/1.1
 * client may send twice: then the repeats go joined, as one field.
 */
function request(session: ClientHttp2Session, headers: string[], options: ClientSessionRequestOptions): ClientHttp2Stream {
  try {
    return session.request(headers, options);
  } catch (e) {
    if ((e as { code?: string }).code !== 'ERR_HTTP2_HEADER_SINGLE_VALUE') throw e;
  }
  const joined: OutgoingHttpHeaders = {};
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    const prev = joined[name];
    // Cookies join with "; " (RFC 9113 §8.2.3), any other field with ", ".
    joined[name] = prev === undefined ? headers[i + 1] : `${String(prev)}${name === 'cookie' ? '; ' : ', '}${headers[i + 1]}`;
  }
  return session.request(joined, options);
}

/** Calls with a deadline on the coarse clock; finished ones are dropped on the next sweep. */
const timed: H2Call[] = [];
const sweeper = {
  sweep(now: number): void {
    let kept = 0;
    for (let i = 0; i < timed.length; i++) {
      const call = timed[i]!;
      if (call.deadline === 0) continue;
      if (now >= call.deadline) call.expired();
      else timed[kept++] = call;
    }
    timed.length = kept;
    if (kept === 0) unwatch(sweeper);
  },
};

/**
 * One request on an h2c backend: headers and body upstream, response headers,
 * data and trailers back, cancellation both ways.
 */
export class H2Call {
  readonly #attempt: Attempt;
  readonly #ex: Exchange;
  readonly #up: H2Upstream;
  #slot: Slot | null = null;
  #stream: ClientHttp2Stream | undefined;
  /** Native timer for timeouts under NATIVE_BELOW_MS. */
  #timer: NodeJS.Timeout | undefined;
  /** Coarse-clock deadline of the current phase (response, then idle between chunks); 0: none. */
  deadline = 0;
  #idleTicks = 0;
  #responded = false;
  #status = 0;
  #trailers: ResponseHeaders | null = null;
  #done = false;

  constructor(attempt: Attempt, up: H2Upstream) {
    this.#attempt = attempt;
    this.#ex = attempt.exchange;
    this.#up = up;
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
      stream = request(slot.session, ex.headersForH2(this.#attempt.hostHeader), { endStream: !hasBody, waitForTrailers: hasBody });
    } catch (e) {
      // The session went away between acquire and request: nothing was sent.
      this.#fail(new UpstreamError('reset', true, e));
      return;
    }
    this.#slot = slot;
    this.#stream = stream;
    this.#up.track(slot);
    // `on` rather than `once` for the events that come once anyway: no wrapper per call.
    listen(stream, this, RESPONSE | TRAILERS | DATA | END | CLOSE | (hasBody ? WANT_TRAILERS : 0));
    stream.on('error', noop);
    ex.signal.listen(this.#cancel);
    if (hasBody) {
      const body = ex.body()!;
      body.on('error', () => { if (!stream.closed) stream.close(NGHTTP2_CANCEL); });
      body.pipe(stream);
    }
    const { responseMs, idleMs } = this.#attempt.timeouts;
    this.#idleTicks = idleMs >= NATIVE_BELOW_MS ? Math.ceil(idleMs / TICK_MS) + 1 : 0;
    if (responseMs >= NATIVE_BELOW_MS) this.#setDeadline(deadlineIn(responseMs));
    else if (responseMs > 0) this.#timer = setTimeout(this.#timeout, responseMs);
  };

  #setDeadline(at: number): void {
    if (this.deadline === 0) {
      if (timed.length === 0) watch(sweeper);
      timed.push(this);
    }
    this.deadline = at;
  }

  /** The stream wants the request trailers (shared listener). */
  wantTrailers(): void {
    // Empty trailers make node end the stream with an empty DATA frame.
    this.#stream!.sendTrailers((this.#ex.requestTrailers() ?? {}) as OutgoingHttpHeaders);
  }

  streamResponse(headers: IncomingHttpHeaders & ResponseHeaders, flags: number): void {
    clearTimeout(this.#timer);
    const status = Number(headers[':status']);
    if (status < 200) return;
    delete headers[':status'];
    this.#responded = true;
    this.#status = status;
    if (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) {
      // Trailers-Only (how gRPC servers send errors): one HEADERS frame, no body.
      this.#done = true;
      this.deadline = 0;
      this.#observe(headers);
      this.#ex.respondOnly(status, headers);
      return;
    }
    const idleMs = this.#attempt.timeouts.idleMs;
    if (this.#idleTicks > 0) this.deadline = tick + this.#idleTicks;
    else {
      this.deadline = 0;
      if (idleMs > 0) this.#stream!.setTimeout(idleMs, this.#idle);
    }
    this.#ex.respond(status, headers, true);
  }

  /** Passive health: a 5xx or gRPC UNAVAILABLE counts against the backend. */
  #observe(h: ResponseHeaders): void {
    this.#attempt.observe(this.#status >= 500 || h['grpc-status'] === '14');
  }

  /** The coarse-clock deadline passed: no response yet, or no data for the idle time. */
  expired(): void {
    this.deadline = 0;
    if (this.#responded) this.#idle();
    else this.#timeout();
  }

  readonly #idle = (): void => {
    this.#done = true;
    this.#stream?.close(NGHTTP2_CANCEL);
    this.#fail(new UpstreamError('timeout', false, new Error(`no data for ${this.#attempt.timeouts.idleMs} ms`)));
  };

  streamTrailers(trailers: IncomingHttpHeaders): void {
    this.#trailers = trailers as ResponseHeaders;
  }

  streamData(chunk: Buffer): void {
    if (this.deadline !== 0) this.deadline = tick + this.#idleTicks;
    if (!this.#ex.write(chunk)) {
      const stream = this.#stream!;
      stream.pause();
      this.#ex.onceDrain(() => stream.resume());
    }
  }

  streamEnded(): void {
    if (this.#done) return;
    // Node pushes EOF on every stream close: a reset or a dead session is not a clean end.
    const rst = this.#stream!.rstCode;
    if (rst !== undefined && rst !== NGHTTP2_NO_ERROR) return;
    this.#done = true;
    this.deadline = 0;
    this.#observe(this.#trailers ?? {});
    this.#ex.end(this.#trailers);
  }

  streamClosed(): void {
    clearTimeout(this.#timer);
    this.deadline = 0;
    this.#ex.signal.unlisten(this.#cancel);
    this.#up.release(this.#slot!);
    if (this.#done || this.#ex.signal.aborted) return;
    // The stream closed before it ended: the session died (UNAVAILABLE), or
    // the peer reset the stream, whose code says what the client is told.
    const session = this.#slot!.session;
    const code = this.#stream!.rstCode;
    if (code === undefined || session.destroyed) {
      this.#fail(new UpstreamError('reset', false, new Error('upstream session closed')));
      return;
    }
    this.#fail(streamResetError(code));
  }

  readonly #timeout = (): void => {
    if (this.#responded) return;
    this.#done = true;
    this.#stream?.close(NGHTTP2_CANCEL);
    this.#fail(new UpstreamError('timeout', false, new Error(`no response within ${this.#attempt.timeouts.responseMs} ms`)));
  };

  readonly #cancel = (): void => {
    clearTimeout(this.#timer);
    this.deadline = 0;
    this.#stream?.close(NGHTTP2_CANCEL);
  };

  #fail(err: UpstreamError): void {
    this.#attempt.failed(err, this.#responded);
  }
}

/** A mirror's copy on a session of `up`: sent whole, its answer's code passed to `done`, the rest dropped. */
export function sendCopy(up: H2Upstream, slot: Slot, headers: string[], body: Buffer, grpc: boolean, done: (code: number | null) => void): void {
  let stream: ClientHttp2Stream;
  try {
    stream = request(slot.session, headers, { endStream: body.length === 0 });
  } catch {
    done(null);
    return;
  }
  up.track(slot);
  let code: number | null = null;
  const timer = setTimeout(() => stream.close(), COPY_TIMEOUT_MS);
  stream.on('response', (h) => {
    // gRPC: Trailers-Only answers carry grpc-status in the head; others in the trailers.
    code = grpc && h['grpc-status'] !== undefined ? Number(h['grpc-status']) : grpc ? null : Number(h[':status']);
  });
  stream.on('trailers', (t) => {
    if (grpc && t['grpc-status'] !== undefined) code = Number(t['grpc-status']);
  });
  stream.on('error', noop);
  stream.on('close', () => {
    clearTimeout(timer);
    up.release(slot);
    done(code);
  });
  stream.resume();
  if (body.length > 0) stream.end(body);
}
