// HTTP/1.1 upstreams on raw sockets: one bounded keep-alive pool per backend
// origin (http1-pool.ts, with the response parser in http1-parser.ts), and the
// call that streams an upstream response into an Exchange. WebSocket upgrades
// take the same path: on 101 the pool hands the socket over. (undici did this
// before; its parser, header objects and dispatch cost ~23% more CPU per
// request, measured with bench/cpu-cost.ts.)
import type { Socket } from 'node:net';
import { upstreamError } from '../errors.ts';
import { CHUNKED_FIELD, CR, LF, SP, putField, putLatin1 } from '../http1-syntax.ts';
import type { Exchange, ResponseHeaders } from '../ingress/exchange.ts';
import { TICK_MS, deadlineIn, tick } from './clock.ts';
import { H1Pool, type H1Call, type H1Connection } from './http1-pool.ts';
import { COPY_TIMEOUT_MS, type Attempt, type QueueCount, type Upstream } from './upstream.ts';

export interface HttpUpstreamOptions {
  /** Upper bound of connections to this backend. */
  readonly connections: number;
  readonly connectTimeoutMs: number;
  /** Below a typical backend's keep-alive timeout (nginx 75s, node 5s), so we close idle sockets first and never reuse one the backend is closing. */
  readonly keepAliveTimeoutMs: number;
}

export const DEFAULT_HTTP_UPSTREAM: Omit<HttpUpstreamOptions, 'connectTimeoutMs'> = {
  connections: 128,
  keepAliveTimeoutMs: 4_000,
};

export class HttpUpstream implements Upstream {
  readonly origin: string;
  readonly #pool: H1Pool;

  constructor(origin: string, opts: HttpUpstreamOptions) {
    this.origin = origin;
    const url = new URL(origin);
    this.#pool = new H1Pool({
      // URL keeps an IPv6 literal's brackets; net.connect wants it bare.
      host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: Number(url.port === '' ? 80 : url.port),
      connections: opts.connections,
      connectTimeoutMs: opts.connectTimeoutMs,
      keepAliveTimeoutMs: opts.keepAliveTimeoutMs,
    });
  }

  forward(attempt: Attempt): void {
    if (attempt.exchange.signal.aborted) return;
    this.#pool.dispatch(new HttpCall(attempt));
  }

  copy(ex: Exchange, hostHeader: string | undefined, body: Buffer, queue: QueueCount, done: (code: number | null) => void): void {
    const h = ex.headersForH1(hostHeader);
    let head = `${ex.method} ${ex.path} HTTP/1.1\r\n`;
    for (let i = 0; i < h.length; i += 2) {
      // The kept body is whole: its length replaces whatever framing the client used.
      if (h[i] !== 'content-length') head += `${h[i]}: ${h[i + 1]}\r\n`;
    }
    if (ex.hasBody) head += `content-length: ${body.length}\r\n`;
    this.#pool.dispatch(new CountingCall(Buffer.from(`${head}\r\n`, 'latin1'), ex.hasBody && body.length > 0 ? body : null, COPY_TIMEOUT_MS, queue, done));
  }

  close(): Promise<void> {
    return this.#pool.close();
  }

  destroy(): Promise<void> {
    return this.#pool.destroy();
  }
}

const UPGRADE = 'connection: upgrade\r\nupgrade: ';

/**
 * The request head for `ex`, ending with the blank line, written into a
 * buffer of its own piece by piece: the same head concatenated as a string
 * (~30 pieces, then flattened for the write) cost ~1 KB of garbage a request.
 * `chunked`: the body goes chunked. Characters are written one byte each, as
 * a latin1 write of the string did.
 */
export function requestHead(ex: Exchange, hostHeader: string | undefined, chunked: boolean): Buffer {
  const h = ex.headersForH1(hostHeader);
  const method = ex.method;
  const path = ex.path;
  const upgrade = ex.upgrade?.protocol;
  // "M P HTTP/1.1" CRLF, "name: value" CRLF per field, CRLF.
  let n = method.length + path.length + 14 + 2 * h.length;
  for (let i = 0; i < h.length; i++) n += h[i]!.length;
  if (chunked) n += CHUNKED_FIELD.length;
  if (upgrade !== undefined) n += UPGRADE.length + upgrade.length + 2;
  const b = Buffer.allocUnsafe(n);
  let o = putLatin1(b, method, 0);
  b[o++] = SP;
  o = putLatin1(b, path, o);
  o = putLatin1(b, ' HTTP/1.1\r\n', o);
  for (let i = 0; i < h.length; i += 2) o = putField(b, o, h[i]!, h[i + 1]!);
  // A body of unknown length (HTTP/1.1 chunked, HTTP/2 without content-length) goes chunked.
  if (chunked) o = putLatin1(b, CHUNKED_FIELD, o);
  if (upgrade !== undefined) {
    o = putLatin1(b, UPGRADE, o);
    o = putLatin1(b, upgrade, o);
    b[o++] = CR;
    b[o++] = LF;
  }
  b[o++] = CR;
  b[o++] = LF;
  return b;
}

/** One request to an HTTP/1.1 backend: the exchange on one side, a pooled connection on the other. */
class HttpCall implements H1Call {
  queuedIn: H1Pool | null = null;
  readonly #attempt: Attempt;
  readonly #ex: Exchange;
  #conn: H1Connection | undefined;
  #started = false;
  /** The last chunk went on by reference and is still queued (see holds()). */
  #holds = false;

  constructor(attempt: Attempt) {
    this.#attempt = attempt;
    this.#ex = attempt.exchange;
    // Listening from here: a call still waiting for a connection leaves the queue when the exchange is over.
    this.#ex.signal.listen(this.#cancel);
  }

  // Asked only when it queues: no field per call.
  get queue(): QueueCount {
    return this.#attempt.queue;
  }

  /**
   * Waiting for a connection counts against the response timeout, as waiting
   * for a stream does on h2c; once sent, the response timeout runs again.
   */
  waitDeadline(): number {
    const ms = this.#attempt.timeouts.responseMs;
    return ms > 0 ? deadlineIn(ms) : 0;
  }

  onConnection(conn: H1Connection): boolean {
    const ex = this.#ex;
    // Queued for a connection until now: the exchange may have settled meanwhile.
    if (ex.signal.aborted) return false;
    this.#conn = conn;
    const chunked = ex.hasBody && ex.contentLength < 0;
    const head = requestHead(ex, this.#attempt.hostHeader, chunked);
    const { responseMs, idleMs } = this.#attempt.timeouts;
    conn.send(this, head, {
      body: ex.body(), chunked, head: ex.method === 'HEAD', upgrade: ex.upgrade !== undefined, responseMs, idleMs,
    });
    return true;
  }

  /** The client went away or the proxy answered: the request is cut, or one still waiting leaves the queue. */
  readonly #cancel = (): void => {
    const conn = this.#conn;
    if (conn === undefined) {
      this.queuedIn?.withdraw(this);
      return;
    }
    this.#conn = undefined;
    conn.abort();
  };

  onConnectError(err: Error): void {
    this.#ex.signal.unlisten(this.#cancel);
    if (this.#ex.signal.aborted) return;
    this.#attempt.failed(upstreamError(err), false);
  }

  onResponse(status: number, headers: ResponseHeaders): void {
    this.#started = true;
    this.#attempt.observe(status >= 500);
    this.#ex.respond(status, headers, false);
  }

  onData(chunk: Buffer): boolean {
    const ex = this.#ex;
    let ok: boolean;
    // Behind output still queued (and on an HTTP/2 client, which queues
    // what its frames do not copy), a chunk is copied rather than the read
    // buffer kept: giving it away costs the connection a fresh 128 KiB buffer
    // for its next read (http1-pool.ts), more than copying the chunk. By
    // reference it goes only where it may be taken at once.
    if (ex.holdsChunks()) ok = ex.write(Buffer.from(chunk));
    else {
      ok = ex.write(chunk);
      if (ex.holdsChunks()) this.#holds = true;
    }
    if (ok) return true;
    ex.onceDrain(this.#resume);
    return false;
  }

  readonly #resume = (): void => {
    this.#conn?.resume();
  };

  holds(): boolean {
    const held = this.#holds;
    this.#holds = false;
    return held;
  }

  onEnd(): void {
    this.#conn = undefined;
    this.#ex.signal.unlisten(this.#cancel);
    this.#ex.end(null);
  }

  onError(err: Error, responseStarted: boolean): void {
    this.#conn = undefined;
    const ex = this.#ex;
    ex.signal.unlisten(this.#cancel);
    if (ex.signal.aborted) return;
    // Any response byte counts: only a request reset before one may be retried.
    this.#attempt.failed(upstreamError(err), this.#started || responseStarted);
  }

  onUpgrade(headers: ResponseHeaders, socket: Socket): void {
    this.#started = true;
    this.#conn = undefined;
    this.#ex.signal.unlisten(this.#cancel);
    // Only asked for (and so only reached) when the exchange is an Upgrade.
    this.#ex.upgrade!.upgraded(101, headers, socket);
  }
}

/**
 * A request whose answer only counts (a mirror's copy): the body is a buffer
 * sent whole, the response is read and dropped, `done` gets the status or
 * null on any failure.
 */
class CountingCall implements H1Call {
  queuedIn: H1Pool | null = null;
  readonly queue: QueueCount;
  readonly #head: Buffer;
  readonly #body: Buffer | null;
  readonly #timeoutMs: number;
  /** From here, like an h2c copy: one that waits for a connection is dropped (with its body) in time, never sent late. */
  readonly #until: number;
  readonly #done: (code: number | null) => void;
  #status: number | null = null;

  constructor(head: Buffer, body: Buffer | null, timeoutMs: number, queue: QueueCount, done: (code: number | null) => void) {
    this.#head = head;
    this.queue = queue;
    this.#body = body;
    this.#timeoutMs = timeoutMs;
    this.#until = deadlineIn(timeoutMs);
    this.#done = done;
  }

  waitDeadline(): number {
    return this.#until;
  }

  onConnection(conn: H1Connection): boolean {
    // The answer is due by the same deadline, however long the copy waited.
    const responseMs = Math.min(this.#timeoutMs, (this.#until - tick) * TICK_MS);
    if (responseMs <= 0) {
      this.#done(null);
      return false;
    }
    conn.send(this, this.#head, { body: null, chunked: false, head: false, upgrade: false, responseMs, idleMs: this.#timeoutMs });
    if (this.#body !== null) conn.socket.write(this.#body);
    return true;
  }

  onConnectError(): void { this.#done(null); }
  onResponse(status: number): void { this.#status = status; }
  onData(): boolean { return true; }
  holds(): boolean { return false; }
  onEnd(): void { this.#done(this.#status); }
  onError(): void { this.#done(null); }
  onUpgrade(_headers: ResponseHeaders, socket: Socket): void {
    socket.destroy();
    this.#done(null);
  }
}
