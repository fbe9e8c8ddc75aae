// h2c upstreams (gRPC): a small set of HTTP/2 sessions per backend origin and
// the stream forwarder. Sessions are opened when the ones there are full (the
// peer's maxConcurrentStreams), retired on GOAWAY or after a maximum age — a
// fresh connect re-resolves DNS, so RPCs to a Kubernetes Service spread over
// its pods instead of pinning to the one pod a single connection reached.
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import { UpstreamError, upstreamError } from '../errors.ts';
import type { Exchange, ResponseHeaders } from '../ingress/exchange.ts';
import type { Backend, Route } from '../routing/table.ts';
import type { AttemptFailed } from './http1.ts';
import { H2_MAX_SESSION_MEMORY_MB, H2_SESSION_WINDOW, H2_STREAM_WINDOW } from '../h2-settings.ts';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR } = http2.constants;

export interface H2UpstreamOptions {
  readonly connectTimeoutMs: number;
  /** Upper bound of sessions to one backend origin. */
  readonly maxSessions: number;
  /** A session is retired (no new streams, closed when idle) after this long. */
  readonly maxSessionAgeMs: number;
  /** Streams per session at most, below the peer's own limit if that is higher. */
  readonly maxStreamsPerSession: number;
}

export const DEFAULT_H2_UPSTREAM: Omit<H2UpstreamOptions, 'connectTimeoutMs'> = {
  maxSessions: 16,
  maxSessionAgeMs: 5 * 60_000,
  // Many clients' streams on one session would pin them all to one pod behind
  // a Service, and a burst of their cancels trips the backend's rapid-reset
  // limit (nghttp2: 1,000 RST_STREAM, then 33/s, per connection).
  maxStreamsPerSession: 100,
};

/** Live counts of upstream HTTP/2 sessions and streams (for metrics and leak tests). */
export interface H2Gauges {
  sessions: { inc(): void; dec(): void };
  streams: { inc(): void; dec(): void };
}

interface Slot {
  readonly session: ClientHttp2Session;
  active: number;
  /** The peer's SETTINGS_MAX_CONCURRENT_STREAMS (100 until it says otherwise). */
  max: number;
  ready: boolean;
  retired: boolean;
  dropped: boolean;
}

type SessionCallback = (err: Error | null, slot: Slot | null) => void;

export class H2Upstream {
  readonly protocol = 'h2c' as const;
  readonly origin: string;
  readonly #opts: H2UpstreamOptions;
  readonly #gauges: H2Gauges;
  #slots: Slot[] = [];
  /** Waiting for the session being connected. */
  #waiting: SessionCallback[] = [];
  #connecting: Slot | undefined;

  constructor(origin: string, opts: H2UpstreamOptions, gauges: H2Gauges) {
    this.origin = origin;
    this.#opts = opts;
    this.#gauges = gauges;
  }

  /** Calls back with a connected session that has room for one more stream. */
  acquire(cb: SessionCallback): void {
    let best: Slot | undefined;
    for (const s of this.#slots) {
      if (s.ready && !s.retired && (best === undefined || s.active < best.active)) best = s;
    }
    if (best !== undefined && (best.active < best.max || this.#slots.length >= this.#opts.maxSessions)) {
      cb(null, best);
      return;
    }
    this.#waiting.push(cb);
    if (this.#connecting === undefined) this.#connect();
  }

  #connect(): void {
    const session = http2.connect(this.origin, {
      settings: { initialWindowSize: H2_STREAM_WINDOW, enablePush: false },
      maxSessionMemory: H2_MAX_SESSION_MEMORY_MB,
    });
    const slot: Slot = { session, active: 0, max: 100, ready: false, retired: false, dropped: false };
    this.#connecting = slot;
    this.#slots.push(slot);
    this.#gauges.sessions.inc();
    const timer = setTimeout(() => {
      const err = Object.assign(new Error(`connect timeout after ${this.#opts.connectTimeoutMs} ms`), { code: 'UND_ERR_CONNECT_TIMEOUT' });
      // A session destroyed before its socket connected emits neither 'error' nor 'close'.
      this.#drop(slot);
      this.#connected(slot, err);
      session.destroy(err);
    }, this.#opts.connectTimeoutMs);
    // Ready once the peer's SETTINGS are in: before that its stream limit is
    // unknown, and streams over it would be refused.
    session.on('remoteSettings', (settings) => {
      slot.max = Math.min(settings.maxConcurrentStreams ?? slot.max, this.#opts.maxStreamsPerSession);
      if (slot.ready) return;
      clearTimeout(timer);
      slot.ready = true;
      session.setLocalWindowSize(H2_SESSION_WINDOW);
      this.#connected(slot, null);
      const age = setTimeout(() => this.#retire(slot), this.#opts.maxSessionAgeMs);
      age.unref();
      session.once('close', () => clearTimeout(age));
    });
    // The peer is going away: no new streams here; ones it refused are retried.
    session.once('goaway', () => this.#retire(slot));
    session.on('error', (err: Error) => {
      clearTimeout(timer);
      if (!slot.ready) this.#connected(slot, err);
    });
    session.once('close', () => {
      clearTimeout(timer);
      this.#drop(slot);
      if (!slot.ready) this.#connected(slot, new UpstreamError('connect', true, new Error('session closed before connecting')));
    });
  }

  /** Forgets a session that closed or never connected (once). */
  #drop(slot: Slot): void {
    if (slot.dropped) return;
    slot.dropped = true;
    this.#gauges.sessions.dec();
    this.#slots = this.#slots.filter((s) => s !== slot);
  }

  #connected(slot: Slot, err: Error | null): void {
    if (this.#connecting !== slot) return;
    this.#connecting = undefined;
    const waiting = this.#waiting;
    this.#waiting = [];
    if (err !== null) {
      for (const cb of waiting) cb(err, null);
      return;
    }
    // Those who waited fill this session up to the peer's limit; the rest wait
    // for another session, or (at maxSessions) queue in this one.
    const room = this.#slots.length >= this.#opts.maxSessions ? waiting.length : Math.max(slot.max - slot.active, 1);
    for (const cb of waiting.slice(0, room)) cb(null, slot);
    if (waiting.length > room) {
      this.#waiting = waiting.slice(room);
      this.#connect();
    }
  }

  #retire(slot: Slot): void {
    if (slot.retired) return;
    slot.retired = true;
    // Streams in flight finish; the session closes when the last one does.
    if (!slot.session.closed) slot.session.close();
  }

  async close(): Promise<void> {
    await Promise.all(this.#slots.map((s) => new Promise<void>((resolve) => {
      if (s.session.closed) resolve();
      else s.session.close(() => resolve());
    })));
  }

  async destroy(): Promise<void> {
    for (const s of this.#slots) s.session.destroy();
  }

  /** A stream started on this slot. */
  track(slot: Slot): void {
    slot.active++;
    this.#gauges.streams.inc();
  }

  /** A stream on this slot closed. */
  release(slot: Slot): void {
    slot.active--;
    this.#gauges.streams.dec();
    if (slot.retired && slot.active === 0 && !slot.session.closed) slot.session.close();
  }
}

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
    if (ex.clientGone) return;
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
    ex.onClientGone = this.#cancel;
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
    this.#ex.onClientGone = undefined;
    this.#up.release(this.#slot!);
    if (this.#done || this.#ex.clientGone) return;
    // The stream closed before it ended: reset by the peer or the session died.
    const code = this.#stream!.rstCode ?? NGHTTP2_INTERNAL_ERROR;
    const refused = code === NGHTTP2_REFUSED_STREAM;
    // REFUSED_STREAM: the peer did no work on it (RFC 9113 §8.7), so it is as if nothing was sent.
    const err = new UpstreamError('reset', refused, new Error(`upstream stream closed with code ${code}`));
    err.rstCode = code === NGHTTP2_NO_ERROR ? NGHTTP2_INTERNAL_ERROR : code;
    this.#fail(err);
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
