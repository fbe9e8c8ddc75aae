// What the proxy sees of a backend, whatever protocol it speaks: one
// interface, so the proxy never branches on protocol and nothing downcasts.
import type { UpstreamError } from '../errors.ts';
import type { Exchange } from '../ingress/exchange.ts';

/** A route's timeouts in milliseconds (the Route derives them once from its config). */
export interface Timeouts {
  readonly connectMs: number;
  readonly responseMs: number;
  readonly idleMs: number;           // 0 = none
  readonly overallMs: number;        // 0 = none
  readonly overallIncludesStreams: boolean;
}

/**
 * The calls of one (route, backend) waiting in an upstream's queue, for a
 * connection or a stream; a pool adds and takes away as calls enter and leave
 * its queue (a metric reads it, nothing per request).
 */
export interface QueueCount {
  queued: number;
}

/** One try of an exchange on one backend; the proxy makes one per attempt. */
export interface Attempt {
  readonly exchange: Exchange;
  /** Where its waits in a queue are counted. */
  readonly queue: QueueCount;
  /** Host / :authority sent upstream; undefined keeps the client's. */
  readonly hostHeader: string | undefined;
  readonly timeouts: Timeouts;
  /** A response arrived (passive health): `failed` for a 5xx or gRPC UNAVAILABLE. */
  observe(failed: boolean): void;
  /** The attempt failed; the proxy retries or answers. `responseStarted` once a response status went to the client. */
  failed(err: UpstreamError, responseStarted: boolean): void;
}

/** A copy that gets no answer in this long is dropped. */
export const COPY_TIMEOUT_MS = 30_000;

/** A connection pool to one backend origin. */
export interface Upstream {
  readonly origin: string;
  /**
   * Sends the attempt's exchange: the response goes to the exchange, a
   * failure to `attempt.failed`. Nothing starts once the exchange's signal
   * has fired, and the call stops when it fires.
   */
  forward(attempt: Attempt): void;
  /**
   * Sends a copy of an exchange that is over (a mirror) with its kept `body`;
   * the answer is read and dropped. `done` gets its status (gRPC: its
   * grpc-status; null when there was none) or null when the copy failed.
   * Its waits in a queue count in `queue`.
   */
  copy(exchange: Exchange, hostHeader: string | undefined, body: Buffer, queue: QueueCount, done: (code: number | null) => void): void;
  /** Closes once the requests in flight are done. */
  close(): Promise<void>;
  /** Closes now, cutting what is in flight. */
  destroy(): Promise<void>;
}
