// h2c upstreams (gRPC): a small set of HTTP/2 sessions per backend origin.
// Sessions are opened when the ones there are full (the peer's
// maxConcurrentStreams), retired on GOAWAY or after a maximum age — a fresh
// connect re-resolves DNS, so RPCs to a Kubernetes Service spread over its
// pods instead of pinning to the one pod a single connection reached.
import http2, { type ClientHttp2Session } from 'node:http2';
import { UpstreamError } from '../errors.ts';
import { H2_MAX_SESSION_MEMORY_MB, H2_SESSION_WINDOW, H2_STREAM_WINDOW } from '../h2-settings.ts';
import { H2Call, sendCopy } from './h2-call.ts';
import type { Exchange } from '../ingress/exchange.ts';
import type { Attempt, Upstream } from './upstream.ts';

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

export interface Slot {
  readonly session: ClientHttp2Session;
  active: number;
  /** The peer's SETTINGS_MAX_CONCURRENT_STREAMS (100 until it says otherwise). */
  max: number;
  ready: boolean;
  retired: boolean;
  dropped: boolean;
}

export type SessionCallback = (err: Error | null, slot: Slot | null) => void;

export class H2Upstream implements Upstream {
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

  forward(attempt: Attempt): void {
    if (attempt.exchange.signal.aborted) return;
    this.#acquire(new H2Call(attempt, this).onSession);
  }

  copy(ex: Exchange, hostHeader: string | undefined, body: Buffer, done: (code: number | null) => void): void {
    const headers = ex.headersForH2(hostHeader);
    this.#acquire((err, slot) => {
      if (err !== null || slot === null) done(null);
      else sendCopy(this, slot, headers, body, ex.grpc, done);
    });
  }

  /** Calls back with a connected session that has room for one more stream. */
  #acquire(cb: SessionCallback): void {
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
    // timeouts.connect 0s: no limit of ours (as on HTTP/1.1 upstreams).
    const timer = this.#opts.connectTimeoutMs <= 0 ? undefined : setTimeout(() => {
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
