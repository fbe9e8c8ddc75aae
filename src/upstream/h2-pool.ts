// h2c upstreams (gRPC): a small set of HTTP/2 sessions per backend origin, on
// the frame layer of src/h2/. Sessions are opened when the ones there are
// full (the peer's SETTINGS_MAX_CONCURRENT_STREAMS, at most 100 of ours),
// retired on GOAWAY or after a maximum age — a fresh connect re-resolves
// DNS, so RPCs to a Kubernetes Service spread over its pods instead of
// pinning to the one pod a single connection reached.
import net from 'node:net';
import { UpstreamError, upstreamError } from '../errors.ts';
import { H2Connection, type H2Config } from '../h2/connection.ts';
import { NO_ERROR } from '../h2/frames.ts';
import { H2_SESSION_WINDOW, H2_STREAM_WINDOW } from '../h2-settings.ts';
import { H2Call, H2Copy, type StreamQueue, type UpstreamStream } from './h2-call.ts';
import { MAX_HEAD_BYTES } from './http1-parser.ts';
import type { Exchange } from '../ingress/exchange.ts';
import type { Attempt, QueueCount, Upstream } from './upstream.ts';

export interface H2UpstreamOptions {
  readonly connectTimeoutMs: number;
  /**
   * Upper bound of sessions to one backend origin that take new streams;
   * retired ones draining their last streams are not counted.
   */
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

const SESSION_CONFIG: H2Config = {
  server: false,
  // The protocol's 64 KiB default window makes large gRPC messages crawl (h2-settings.ts).
  streamWindow: H2_STREAM_WINDOW,
  connectionWindow: H2_SESSION_WINDOW,
  // A response's compressed header block (gRPC keeps metadata under 8 KiB by default).
  maxHeaderBlock: 256 * 1024,
  // Larger response header lists are refused (h2-call.ts), as HTTP/1.1 response heads are.
  maxHeaderListSize: MAX_HEAD_BYTES,
};

/**
 * A session with no stream for this long is checked with a PING before the
 * next call goes into it: a backend gone without a FIN or RST (its host lost,
 * a partition) would swallow the call until the response timeout. On demand,
 * not periodic: gRPC servers count PINGs on a connection without streams as
 * abuse (grpc-go: GOAWAY "too_many_pings" after the third).
 */
const PROBE_AFTER_IDLE_MS = 10_000;

/** Until the peer's SETTINGS say otherwise (RFC 9113 §6.5.2 leaves it unlimited; 100 is the customary floor). */
const DEFAULT_PEER_STREAMS = 100;

function onConnectTimeout(s: Session): void {
  s.connectTimedOut();
}

function onProbeTimeout(s: Session): void {
  s.probeTimedOut();
}

/** One HTTP/2 connection to a backend, in the client role. */
export class Session extends H2Connection<UpstreamStream> implements StreamQueue {
  readonly #pool: H2Upstream;
  readonly #gauges: H2Gauges;
  /** Streams started here and not finished: what the pool balances on and the peer's limit applies to. */
  active = 0;
  /** Streams at most: the peer's SETTINGS_MAX_CONCURRENT_STREAMS, capped by ours. */
  max = DEFAULT_PEER_STREAMS;
  /** The peer's SETTINGS are in: before that its stream limit is unknown, and streams over it would be refused. */
  ready = false;
  /** No new streams; closed once the last one is done. */
  retired = false;
  /** Streams waiting for room here (the pool is at its session limit). */
  readonly #queue: UpstreamStream[] = [];
  /** Streams holding back their request body until the socket drains. */
  #drainWaiters: UpstreamStream[] = [];
  #connectTimer: NodeJS.Timeout | undefined;
  /** A liveness PING is out (PROBE_AFTER_IDLE_MS); streams wait in the queue for its ACK. */
  #probeTimer: NodeJS.Timeout | undefined;
  /** performance.now() when the last stream here finished (or the session became ready). */
  #idleSince = 0;
  #ageTimer: NodeJS.Timeout | undefined;
  #connectError: Error | undefined;
  #whenClosed: (() => void)[] = [];

  constructor(socket: net.Socket, pool: H2Upstream, gauges: H2Gauges, connectTimeoutMs: number) {
    super(socket, SESSION_CONFIG);
    this.#pool = pool;
    this.#gauges = gauges;
    // timeouts.connect 0s: no limit of ours (as on HTTP/1.1 upstreams).
    if (connectTimeoutMs > 0) this.#connectTimer = setTimeout(onConnectTimeout, connectTimeoutMs, this);
  }

  connectTimedOut(): void {
    const ms = this.#pool.connectTimeoutMs;
    this.#connectError = Object.assign(new Error(`connect timeout after ${ms} ms`), { code: 'UND_ERR_CONNECT_TIMEOUT' });
    this.destroy();
  }

  probeTimedOut(): void {
    this.#connectError = Object.assign(new Error(`no PING ACK within ${this.#pool.connectTimeoutMs || PROBE_AFTER_IDLE_MS} ms after ${PROBE_AFTER_IDLE_MS} ms idle`), { code: 'ECONNRESET' });
    this.destroy();
  }

  /** Starts `s` here now, or as soon as a stream is done (or, after an idle spell, once a PING came back). */
  open(s: UpstreamStream): void {
    if (this.#probeTimer === undefined && this.active === 0 && performance.now() - this.#idleSince >= PROBE_AFTER_IDLE_MS) {
      this.ping();
      this.#probeTimer = setTimeout(onProbeTimeout, this.#pool.connectTimeoutMs || PROBE_AFTER_IDLE_MS, this);
    }
    if (this.#probeTimer === undefined && this.active < this.max) this.#start(s);
    else {
      this.#queue.push(s);
      s.queuedIn = this;
      s.queue.queued++;
    }
  }

  withdraw(s: UpstreamStream): void {
    s.queuedIn = null;
    const i = this.#queue.indexOf(s);
    if (i < 0) return;
    this.#queue.splice(i, 1);
    s.queue.queued--;
  }

  /** Starts waiting streams while there is room. */
  #startQueued(): void {
    while (this.#queue.length > 0 && this.active < this.max) {
      const s = this.#queue.shift()!;
      s.queue.queued--;
      this.#start(s);
    }
  }

  #start(s: UpstreamStream): void {
    s.queuedIn = null;
    if (!s.startable) return;
    this.active++;
    this.#gauges.streams.inc();
    this.register(s);
    s.start(this);
  }

  /** A started stream is over (once per stream): its place goes to the next waiting one. */
  done(_s: UpstreamStream): void {
    this.active--;
    this.#gauges.streams.dec();
    if (this.closed) return;
    if (this.active === 0) this.#idleSince = performance.now();
    if (this.retired) {
      if (this.active === 0) {
        this.goaway(NO_ERROR);
        this.close();
      }
      return;
    }
    this.#startQueued();
  }

  /** `s` holds back its request body until the socket takes writes again. */
  waitDrain(s: UpstreamStream): void {
    this.#drainWaiters.push(s);
  }

  /** No new streams here: those in flight finish, then the session closes. */
  retire(): void {
    if (this.retired) return;
    this.retired = true;
    clearTimeout(this.#ageTimer);
    // Waiting ones go back to the pool, for a session that takes new streams.
    const queued = this.#queue.splice(0);
    for (const s of queued) {
      s.queue.queued--;
      this.#pool.requeue(s);
    }
    if (this.ready && this.active === 0 && !this.closed) {
      this.goaway(NO_ERROR);
      this.close();
    }
  }

  /** Resolves once the session is closed. */
  closed$(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => this.#whenClosed.push(resolve));
  }

  // --- frame layer hooks ----------------------------------------------------------

  protected override onSettings(): void {
    this.max = Math.min(this.peerMaxStreams, this.#pool.maxStreamsPerSession);
    if (this.ready) {
      this.#startQueued();
      return;
    }
    clearTimeout(this.#connectTimer);
    this.ready = true;
    this.#idleSince = performance.now();
    this.#ageTimer = setTimeout(() => this.retire(), this.#pool.maxSessionAgeMs);
    this.#ageTimer.unref();
    this.#pool.connected(this, null);
    if (this.retired && this.active === 0) {
      this.goaway(NO_ERROR);
      this.close();
    }
  }

  protected onHeaders(s: UpstreamStream | null, _sid: number, list: string[], count: number, end: boolean): void {
    // A client's connection never gets a new stream from the peer (the frame layer refuses those).
    s!.headers(list, count, end);
  }

  protected onData(s: UpstreamStream, buf: Buffer, start: number, end: number, endStream: boolean): void {
    s.data(buf, start, end, endStream);
  }

  protected onReset(s: UpstreamStream, code: number, _byPeer: boolean): void {
    s.wasReset(code);
  }

  protected onGoaway(_lastStreamId: number, _code: number): void {
    // The peer is going away: no new streams here. Ours above its last stream
    // id were not processed; the frame layer resets them with REFUSED_STREAM,
    // which makes them retryable.
    this.retire();
  }

  protected override onPingAck(): void {
    if (this.#probeTimer === undefined) return;
    clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
    this.#idleSince = performance.now();
    this.#startQueued();
  }

  protected onWritable(s: UpstreamStream): void {
    s.writable();
  }

  protected override onSocketDrain(): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const s of waiters) s.writable();
  }

  protected onClose(err: Error | undefined): void {
    clearTimeout(this.#connectTimer);
    clearTimeout(this.#ageTimer);
    clearTimeout(this.#probeTimer);
    this.#drainWaiters = [];
    const cause = this.#connectError ?? err;
    this.#pool.dropped(this);
    if (!this.ready) {
      this.#pool.connected(this, cause ?? new UpstreamError('connect', true, new Error('session closed before connecting')));
    }
    const queued = this.#queue.splice(0);
    for (const s of this.streams.values()) s.lost(cause);
    for (const s of queued) s.queue.queued--;
    // Those that waited here never started: nothing was sent.
    for (const s of queued) s.unavailable(new UpstreamError('reset', true, new Error('upstream session closed')));
    for (const resolve of this.#whenClosed.splice(0)) resolve();
  }
}

export class H2Upstream implements Upstream, StreamQueue {
  readonly origin: string;
  readonly #host: string;
  readonly #port: number;
  readonly #opts: H2UpstreamOptions;
  readonly #gauges: H2Gauges;
  #sessions: Session[] = [];
  /** Waiting for the session being connected. */
  #waiting: UpstreamStream[] = [];
  #connecting: Session | undefined;

  constructor(origin: string, opts: H2UpstreamOptions, gauges: H2Gauges) {
    this.origin = origin;
    const url = new URL(origin);
    // URL keeps an IPv6 literal's brackets, which net.connect does not take.
    this.#host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    this.#port = Number(url.port === '' ? 80 : url.port);
    this.#opts = opts;
    this.#gauges = gauges;
  }

  get connectTimeoutMs(): number {
    return this.#opts.connectTimeoutMs;
  }

  get maxStreamsPerSession(): number {
    return this.#opts.maxStreamsPerSession;
  }

  get maxSessionAgeMs(): number {
    return this.#opts.maxSessionAgeMs;
  }

  forward(attempt: Attempt): void {
    if (attempt.exchange.signal.aborted) return;
    this.#acquire(new H2Call(attempt));
  }

  copy(ex: Exchange, hostHeader: string | undefined, body: Buffer, queue: QueueCount, done: (code: number | null) => void): void {
    this.#acquire(new H2Copy(ex.headersForH2(hostHeader), body, ex.grpc, queue, done));
  }

  /** A stream that waited in a session that was retired: it goes to another. */
  requeue(s: UpstreamStream): void {
    if (s.startable) this.#acquire(s);
  }

  /** Starts `s` on a connected session with room for it, or queues it for one being connected. */
  #acquire(s: UpstreamStream): void {
    let best: Session | undefined;
    let live = 0;
    for (const c of this.#sessions) {
      if (c.retired) continue;
      live++;
      if (c.ready && (best === undefined || c.active < best.active)) best = c;
    }
    // At the session limit, the least busy session queues it.
    if (best !== undefined && (best.active < best.max || live >= this.#opts.maxSessions)) {
      best.open(s);
      return;
    }
    this.#waiting.push(s);
    s.queuedIn = this;
    s.queue.queued++;
    if (this.#connecting === undefined) this.#connect();
  }

  withdraw(s: UpstreamStream): void {
    s.queuedIn = null;
    const i = this.#waiting.indexOf(s);
    if (i < 0) return;
    this.#waiting.splice(i, 1);
    s.queue.queued--;
  }

  #connect(): void {
    const socket = net.connect(this.#port, this.#host);
    const session = new Session(socket, this, this.#gauges, this.#opts.connectTimeoutMs);
    this.#connecting = session;
    this.#sessions.push(session);
    this.#gauges.sessions.inc();
  }

  /** The session being connected is ready (err null) or failed. */
  connected(session: Session, err: Error | null): void {
    if (this.#connecting !== session) return;
    this.#connecting = undefined;
    const waiting = this.#waiting;
    this.#waiting = [];
    if (err !== null) {
      const e = upstreamError(err);
      for (const s of waiting) s.queue.queued--;
      for (const s of waiting) s.unavailable(e);
      return;
    }
    // Those who waited fill this session up to the peer's limit; the rest wait
    // for another session, or (at maxSessions) queue in this one.
    const room = this.#live() >= this.#opts.maxSessions ? waiting.length : Math.max(session.max - session.active, 1);
    for (let i = 0; i < waiting.length && i < room; i++) {
      const s = waiting[i]!;
      s.queue.queued--;
      session.open(s);
    }
    if (waiting.length > room) {
      this.#waiting = waiting.slice(room);
      this.#connect();
    }
  }

  /** Sessions taking new streams (what maxSessions bounds). */
  #live(): number {
    let n = 0;
    for (const s of this.#sessions) if (!s.retired) n++;
    return n;
  }

  /** Forgets a session that closed or never connected. */
  dropped(session: Session): void {
    this.#sessions = this.#sessions.filter((s) => s !== session);
    this.#gauges.sessions.dec();
  }

  async close(): Promise<void> {
    const all = this.#sessions.slice();
    for (const s of all) s.retire();
    await Promise.all(all.map((s) => s.closed$()));
  }

  async destroy(): Promise<void> {
    for (const s of this.#sessions.slice()) s.destroy();
  }
}
