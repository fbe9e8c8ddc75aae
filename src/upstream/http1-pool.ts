// Keep-alive HTTP/1.1 connections to one backend origin, on plain net.Sockets:
// a bounded pool (most recently used first, so surplus connections age out),
// a queue when every connection is busy, the request head written in one
// write, the response parsed only as far as framing needs, bodies streamed
// with backpressure both ways. One request per connection at a time (no
// pipelining: it would put one slow response in front of others).
import net, { type Socket } from 'node:net';
import type { BodyReader, RequestBody } from '../ingress/body.ts';
import type { ResponseHeaders } from '../ingress/exchange.ts';
import { NATIVE_BELOW_MS, TICK_MS, deadlineIn, tick, unwatch, watch } from './clock.ts';
import { ParseError, ResponseParser, type ResponseSink } from './http1-parser.ts';
import type { QueueCount } from './upstream.ts';

export interface H1PoolOptions {
  readonly host: string;
  readonly port: number;
  /** Upper bound of connections to this origin; requests beyond it wait. */
  readonly connections: number;
  readonly connectTimeoutMs: number;
  /** Idle connections close after this; below the backend's own (nginx 75 s, node 5 s), so we close first. */
  readonly keepAliveTimeoutMs: number;
}

/** One request, seen from the connection that carries it. */
export interface H1Call {
  /** The pool whose queue it waits in, set by that pool (null: not waiting). */
  queuedIn: H1Pool | null;
  /** Counts its time in the queue: one while it waits (the pool adds and takes away). */
  readonly queue: QueueCount;
  /**
   * The tick (clock.ts) at which it stops waiting for a connection, 0: never;
   * asked when it is queued. Past it, onConnectError gets SY_QUEUE_TIMEOUT.
   */
  waitDeadline(): number;
  /** The pool has a connection for this call; false if the call no longer wants it (the pool keeps it). */
  onConnection(conn: H1Connection): boolean;
  /** No connection could be had: connect refused, unreachable, timed out. Nothing was sent. */
  onConnectError(err: Error): void;
  /** The final response head (1xx interim responses are skipped). */
  onResponse(status: number, headers: ResponseHeaders): void;
  /**
   * A body chunk; false asks the connection to pause until resume(). The
   * chunk is a view into the connection's read buffer, which the next read
   * reuses unless holds() says the call may still reference it.
   */
  onData(chunk: Buffer): boolean;
  /** Asked after each onData: whether that chunk may still be referenced (queued somewhere, not copied). */
  holds(): boolean;
  onEnd(): void;
  /** The request failed after it was handed a connection; `responseStarted` once any response byte came. */
  onError(err: Error, responseStarted: boolean): void;
  /** 101 Switching Protocols: the socket is the caller's now, with any bytes after the head unshifted into it. */
  onUpgrade(headers: ResponseHeaders, socket: Socket): void;
}

/** What send() needs to know about a request beyond its head. */
export interface SendOptions {
  /** The request body, or null. */
  readonly body: RequestBody | null;
  /** Frame the body with chunked encoding (no Content-Length known). */
  readonly chunked: boolean;
  /** HEAD: the response has no body whatever its headers say. */
  readonly head: boolean;
  /** The request asks to switch protocols: a 101 hands the socket over. */
  readonly upgrade: boolean;
  /** Time to the response head, and the longest gap between body chunks; 0: none. */
  readonly responseMs: number;
  readonly idleMs: number;
}

function codeError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

const CRLF = '\r\n';
const LAST_CHUNK = '0\r\n\r\n';
const RESPONSE_TIMEOUT = 'SY_RESPONSE_TIMEOUT';
const IDLE_TIMEOUT = 'UND_ERR_BODY_TIMEOUT';
/**
 * Size of an upstream connection's read buffer. A fresh buffer per read (what
 * net does by default) costs an allocation, and at hundreds of MB/s the
 * external memory it adds up to drives V8 into a major GC many times a
 * second; a buffer reused across reads costs neither. Twice libuv's 64 KiB:
 * a 64 KiB body and its head come in one read and leave in one writev
 * (0.78x the CPU per 64 KiB response of 64 KiB reads). Pages are only
 * resident once a response was that large.
 */
const READ_BYTES = 128 * 1024;

/**
 * The read side of one upstream socket, as net's `onread` option: every read
 * lands in the same buffer, and a fresh one is taken only after a consumer
 * kept a chunk of it (a client socket that did not take a write at once).
 */
class Reader {
  #buf = Buffer.allocUnsafeSlow(READ_BYTES);
  /** The last read's bytes may still be referenced: the next read needs another buffer. */
  held = false;
  conn: H1Connection | undefined;
  /** After an upgrade: the socket, now an ordinary stream of the caller's. */
  handedOver: Socket | undefined;

  /** net asks for the next read's buffer after each read (and once at the start). */
  readonly buffer = (): Buffer => {
    if (this.held) {
      this.held = false;
      this.#buf = Buffer.allocUnsafeSlow(READ_BYTES);
    }
    return this.#buf;
  };

  readonly callback = (n: number, buf: Buffer): boolean => {
    const view = n === buf.length ? buf : buf.subarray(0, n);
    const s = this.handedOver;
    // Handed over: the new owner reads the socket as a stream of its own buffers.
    if (s !== undefined) return s.push(Buffer.from(view));
    this.conn?.read(view);
    return true;
  };
}

/** One keep-alive connection; carries one call at a time. */
export class H1Connection implements ResponseSink, BodyReader {
  readonly socket: Socket;
  readonly #pool: H1Pool;
  readonly #reader: Reader;
  readonly #parser: ResponseParser;
  #call: H1Call | undefined;
  /** Requests this connection has carried, the current one included. */
  requests = 0;
  #body: RequestBody | null = null;
  #chunked = false;
  #bodyDone = true;
  #upgradeHeaders: ResponseHeaders | undefined;
  /** Coarse-clock deadline of the current phase (0: none), and its length for refreshes. */
  #deadline = 0;
  #idleTicks = 0;
  #idleMs = 0;
  #responseMs = 0;
  #timer: NodeJS.Timeout | undefined;
  /** The tick this connection became idle in the pool (0: busy). */
  idleSince = 0;
  #dead = false;

  constructor(socket: Socket, pool: H1Pool, reader: Reader) {
    this.socket = socket;
    this.#pool = pool;
    this.#reader = reader;
    reader.conn = this;
    this.#parser = new ResponseParser(this);
    // Bytes come through the reader; flowing, so that the end of the stream is emitted.
    socket.resume();
    socket.on('end', this.#onSocketEnd);
    socket.on('error', this.#onSocketError);
    socket.on('close', this.#onSocketClose);
  }

  get busy(): boolean {
    return this.#call !== undefined;
  }

  /** Writes the request: the head in one write, then the body, if any, with backpressure. */
  send(call: H1Call, head: Buffer, opts: SendOptions): void {
    this.#call = call;
    this.requests++;
    this.idleSince = 0;
    this.#parser.start(opts.head, opts.upgrade);
    this.#idleMs = opts.idleMs;
    this.#idleTicks = opts.idleMs >= NATIVE_BELOW_MS ? Math.ceil(opts.idleMs / TICK_MS) + 1 : 0;
    this.#responseMs = opts.responseMs;
    const body = opts.body;
    if (body === null) {
      this.#bodyDone = true;
      this.socket.write(head);
      this.#armResponseTimer();
      return;
    }
    this.#body = body;
    this.#chunked = opts.chunked;
    this.#bodyDone = false;
    // Corked until the first body bytes have had their chance to join the head.
    this.socket.cork();
    this.socket.write(head);
    process.nextTick(uncork, this.socket);
    body.read(this);
  }

  /**
   * Time to the response head counts from when the request is sent, body
   * included (as undici's headersTimeout did): a large upload is not a slow backend.
   */
  #armResponseTimer(): void {
    const ms = this.#responseMs;
    if (ms >= NATIVE_BELOW_MS) this.#deadline = deadlineIn(ms);
    else if (ms > 0) this.#timer = setTimeout(this.#nativeTimeout, ms, RESPONSE_TIMEOUT);
  }

  /** After onData returned false. */
  resume(): void {
    if (!this.#dead) this.socket.resume();
  }

  /** The caller gives up on its call (client gone, deadline): the connection cannot be reused. */
  abort(): void {
    this.#call = undefined;
    this.#destroy();
  }

  // --- request body --------------------------------------------------------

  bodyData(chunk: Buffer): boolean {
    const s = this.socket;
    let ok: boolean;
    if (this.#chunked) {
      if (chunk.length === 0) return true; // an empty chunk would end the body
      s.cork();
      s.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
      s.write(chunk);
      ok = s.write(CRLF, 'latin1');
      process.nextTick(uncork, s);
    } else {
      ok = s.write(chunk);
    }
    if (ok) return true;
    s.once('drain', this.#onDrain);
    return false;
  }

  readonly #onDrain = (): void => {
    this.#body?.resume(this);
  };

  bodyEnd(): void {
    if (this.#chunked) this.socket.write(LAST_CHUNK, 'latin1');
    this.#detachBody();
    this.#bodyDone = true;
    // An early answer may already be in.
    if (this.#call !== undefined && !this.#parser.headDone) this.#armResponseTimer();
  }

  bodyError(): void {
    // The client's body broke off: the backend would wait for the rest.
    this.#detachBody();
    this.#fail(codeError('request body aborted', 'ECONNRESET'));
  }

  #detachBody(): void {
    const body = this.#body;
    if (body === null) return;
    this.#body = null;
    body.stop(this);
    this.socket.off('drain', this.#onDrain);
  }

  // --- response ------------------------------------------------------------

  /** From the reader: bytes from the backend, in the reused read buffer. */
  read(buf: Buffer): void {
    const call = this.#call;
    if (call === undefined) {
      // Bytes nobody asked for (a late 408, garbage): this connection's framing cannot be trusted.
      this.#destroy();
      return;
    }
    let used: number;
    try {
      used = this.#parser.execute(buf);
    } catch (err) {
      this.#fail(err as ParseError);
      return;
    }
    // The bytes after the 101 are the new protocol's; the read buffer will be overwritten.
    if (this.#parser.upgraded) this.#handOver(used < buf.length ? Buffer.from(buf.subarray(used)) : undefined);
    // Bytes past the end of the response: it is complete, but the connection is suspect.
    else if (this.#parser.done) this.#complete(used === buf.length);
  }

  onHead(status: number, headers: ResponseHeaders): void {
    if (status === 101) {
      this.#upgradeHeaders = headers;
      return;
    }
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#idleTicks > 0) this.#deadline = tick + this.#idleTicks;
    else {
      this.#deadline = 0;
      if (this.#idleMs > 0) this.#timer = setTimeout(this.#nativeTimeout, this.#idleMs, IDLE_TIMEOUT);
    }
    this.#call!.onResponse(status, headers);
  }

  onData(chunk: Buffer): void {
    if (this.#deadline !== 0) this.#deadline = tick + this.#idleTicks;
    else this.#timer?.refresh();
    const call = this.#call!;
    if (!call.onData(chunk)) this.socket.pause();
    if (call.holds()) this.#reader.held = true;
  }

  onEnd(): void {
    // Completion is handled once execute() has returned (#onSocketData), so
    // that a next request, sent from the release, never re-enters the parser.
  }

  /** The response is complete; `clean`: nothing followed it. */
  #complete(clean: boolean): void {
    const call = this.#call!;
    this.#call = undefined;
    this.#deadline = 0;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    // An answer that came before the whole request body was sent leaves the
    // backend mid-request: that connection cannot be reused.
    if (clean && this.#parser.keepAlive && this.#bodyDone) {
      // The call may have paused the socket on the last bytes (its client was
      // slow) and will not resume it now that it is over: the next call's
      // answer, and a close while idle, must be read.
      this.socket.resume();
      this.#pool.release(this);
    } else this.#destroy();
    // After the release: the client's next request, which ending this
    // response may let in at once, finds the connection idle.
    call.onEnd();
  }

  #handOver(rest: Buffer | undefined): void {
    const call = this.#call!;
    const headers = this.#upgradeHeaders!;
    this.#call = undefined;
    this.#upgradeHeaders = undefined;
    this.#deadline = 0;
    clearTimeout(this.#timer);
    this.#detachBody();
    this.#dead = true;
    const s = this.socket;
    s.off('end', this.#onSocketEnd).off('error', this.#onSocketError).off('close', this.#onSocketClose);
    this.#reader.conn = undefined;
    this.#reader.handedOver = s;
    this.#pool.forget(this);
    s.pause();
    if (rest !== undefined) s.unshift(rest);
    call.onUpgrade(headers, s);
  }

  // --- failures and timeouts -------------------------------------------------

  readonly #nativeTimeout = (code: string): void => {
    this.#timer = undefined;
    this.#timeout(code);
  };

  #timeout(code: string): void {
    this.#fail(codeError(code === RESPONSE_TIMEOUT ? 'response timeout' : 'idle timeout', code));
  }

  /** From the coarse clock; `now` is the current tick. */
  sweep(now: number, keepAliveTicks: number): void {
    if (this.#call !== undefined) {
      if (this.#deadline !== 0 && now >= this.#deadline) this.#timeout(this.#parser.headDone ? IDLE_TIMEOUT : RESPONSE_TIMEOUT);
    } else if (this.idleSince !== 0 && now - this.idleSince >= keepAliveTicks) {
      this.#destroy();
    }
  }

  readonly #onSocketEnd = (): void => {
    if (this.#call === undefined) this.#destroy();
    // A close-delimited body ends here; anything else is cut short.
    else if (this.#parser.eof()) this.#complete(false);
    else this.#fail(codeError('the backend closed the connection before the response ended', 'UND_ERR_SOCKET'));
  };

  readonly #onSocketError = (err: Error): void => {
    this.#fail(err);
  };

  readonly #onSocketClose = (): void => {
    if (this.#call !== undefined) this.#fail(codeError('the backend closed the connection', 'UND_ERR_SOCKET'));
    this.#dead = true;
    this.#pool.forget(this);
  };

  /** Ends the current call with `err` and the connection with it. */
  #fail(err: Error): void {
    const call = this.#call;
    this.#call = undefined;
    this.#destroy();
    call?.onError(err, this.#parser.started);
  }

  #destroy(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#deadline = 0;
    this.#detachBody();
    if (!this.#dead) {
      this.#dead = true;
      this.socket.destroy();
      this.#pool.forget(this);
    }
  }

  get dead(): boolean {
    return this.#dead;
  }
}

function uncork(s: Socket): void {
  s.uncork();
}

/** The connections to one backend origin. */
export class H1Pool {
  readonly #opts: H1PoolOptions;
  readonly #keepAliveTicks: number;
  readonly #all = new Set<H1Connection>();
  /** Idle connections, most recently used last. */
  readonly #idle: H1Connection[] = [];
  /** Calls waiting for a connection, oldest first from #waitHead, and each one's waitDeadline() at the same index. */
  #waiting: H1Call[] = [];
  #waitUntil: number[] = [];
  #waitHead = 0;
  #connecting = 0;
  #closing = false;
  #onEmpty: (() => void) | undefined;

  constructor(opts: H1PoolOptions) {
    this.#opts = opts;
    this.#keepAliveTicks = Math.max(1, Math.floor(opts.keepAliveTimeoutMs / TICK_MS) - 1);
    watch(this);
  }

  /** Open connections (busy and idle) and connects in progress. */
  get size(): number {
    return this.#all.size + this.#connecting;
  }

  get idle(): number {
    return this.#idle.length;
  }

  /** Finds a connection for `call`: an idle one, a new one, or a place in the queue. */
  dispatch(call: H1Call): void {
    if (this.#closing) {
      call.onConnectError(codeError('upstream pool closed', 'UND_ERR_CLOSED'));
      return;
    }
    const idle = this.#idle;
    while (idle.length > 0) {
      const conn = idle.pop()!;
      if (conn.dead) continue;
      conn.idleSince = 0;
      if (call.onConnection(conn)) return;
      this.release(conn);
      return;
    }
    if (this.#all.size + this.#connecting < this.#opts.connections) this.#connect(call);
    else {
      this.#waiting.push(call);
      this.#waitUntil.push(call.waitDeadline());
      call.queuedIn = this;
      call.queue.queued++;
    }
  }

  /** Takes `call` out of the queue (it died waiting); nothing if it is not there. */
  withdraw(call: H1Call): void {
    call.queuedIn = null;
    const i = this.#waiting.indexOf(call, this.#waitHead);
    if (i < 0) return;
    call.queue.queued--;
    this.#waiting.splice(i, 1);
    this.#waitUntil.splice(i, 1);
    this.#compactQueue();
  }

  #connect(call: H1Call): void {
    this.#connecting++;
    const reader = new Reader();
    const socket = net.connect({ host: this.#opts.host, port: this.#opts.port, noDelay: true, onread: reader });
    let timer: NodeJS.Timeout | undefined;
    const fail = (err: Error): void => {
      clearTimeout(timer);
      socket.off('connect', connected);
      socket.destroy();
      this.#connecting--;
      call.onConnectError(err);
      this.#next();
    };
    const connected = (): void => {
      clearTimeout(timer);
      socket.off('error', fail);
      this.#connecting--;
      const conn = new H1Connection(socket, this, reader);
      this.#all.add(conn);
      if (this.#closing) {
        call.onConnectError(codeError('upstream pool closed', 'UND_ERR_CLOSED'));
        socket.destroy();
      } else if (!call.onConnection(conn)) {
        this.release(conn);
      }
    };
    socket.once('connect', connected).once('error', fail);
    if (this.#opts.connectTimeoutMs > 0) {
      timer = setTimeout(fail, this.#opts.connectTimeoutMs, codeError(`connect timeout after ${this.#opts.connectTimeoutMs} ms`, 'UND_ERR_CONNECT_TIMEOUT'));
    }
  }

  /** A connection finished its call and may carry another. */
  release(conn: H1Connection): void {
    if (conn.dead) return;
    while (this.#waitHead < this.#waiting.length) {
      const call = this.#waiting[this.#waitHead]!;
      this.#waiting[this.#waitHead++] = undefined as unknown as H1Call;
      this.#compactQueue();
      call.queuedIn = null;
      call.queue.queued--;
      if (call.onConnection(conn)) return;
    }
    if (this.#closing) {
      conn.abort();
      return;
    }
    conn.idleSince = tick;
    this.#idle.push(conn);
  }

  /** The connection is gone (closed, failed, or upgraded and handed over): it no longer counts. */
  forget(conn: H1Connection): void {
    if (!this.#all.delete(conn)) return;
    const i = this.#idle.indexOf(conn);
    if (i >= 0) this.#idle.splice(i, 1);
    this.#next();
    if (this.#all.size === 0 && this.#connecting === 0) this.#onEmpty?.();
  }

  /** A slot freed up: the oldest waiting call gets a new connection. */
  #next(): void {
    if (this.#closing || this.#waitHead >= this.#waiting.length) return;
    if (this.#all.size + this.#connecting >= this.#opts.connections) return;
    const call = this.#waiting[this.#waitHead]!;
    this.#waiting[this.#waitHead++] = undefined as unknown as H1Call;
    this.#compactQueue();
    call.queuedIn = null;
    call.queue.queued--;
    this.#connect(call);
  }

  #compactQueue(): void {
    if (this.#waitHead === this.#waiting.length) {
      this.#waiting = [];
      this.#waitUntil = [];
      this.#waitHead = 0;
    } else if (this.#waitHead > 1024 && this.#waitHead * 2 > this.#waiting.length) {
      this.#waiting = this.#waiting.slice(this.#waitHead);
      this.#waitUntil = this.#waitUntil.slice(this.#waitHead);
      this.#waitHead = 0;
    }
  }

  sweep(now: number): void {
    for (const conn of this.#all) conn.sweep(now, this.#keepAliveTicks);
    if (this.#waitHead < this.#waiting.length) this.#expireWaiting(now);
  }

  /**
   * Calls past their waitDeadline() leave the queue, as h2c calls that find
   * no stream in time do: nothing was sent, so they may be retried.
   */
  #expireWaiting(now: number): void {
    const waiting = this.#waiting;
    const until = this.#waitUntil;
    let expired: H1Call[] | undefined;
    let kept = this.#waitHead;
    for (let i = this.#waitHead; i < waiting.length; i++) {
      const call = waiting[i]!;
      const at = until[i]!;
      if (at !== 0 && now >= at) {
        call.queuedIn = null;
        call.queue.queued--;
        (expired ??= []).push(call);
      } else {
        waiting[kept] = call;
        until[kept++] = at;
      }
    }
    if (expired === undefined) return;
    waiting.length = kept;
    until.length = kept;
    this.#compactQueue();
    // Last: a call told now may be retried, and queued here again.
    for (const call of expired) call.onConnectError(codeError('no backend connection came free in time', 'SY_QUEUE_TIMEOUT'));
  }

  /** No new calls; idle connections close now, busy ones when their call is done. Resolves when all are closed. */
  close(): Promise<void> {
    this.#closing = true;
    this.#failWaiting();
    for (const conn of this.#idle.splice(0)) conn.abort();
    return this.#whenEmpty();
  }

  /** Cuts every connection now. */
  destroy(): Promise<void> {
    this.#closing = true;
    this.#failWaiting();
    for (const conn of [...this.#all]) conn.abort();
    return this.#whenEmpty();
  }

  #failWaiting(): void {
    const waiting = this.#waiting.slice(this.#waitHead);
    this.#waiting = [];
    this.#waitUntil = [];
    this.#waitHead = 0;
    for (const call of waiting) {
      call.queuedIn = null;
      call.queue.queued--;
      call.onConnectError(codeError('upstream pool closed', 'UND_ERR_CLOSED'));
    }
  }

  #whenEmpty(): Promise<void> {
    if (this.#all.size === 0 && this.#connecting === 0) {
      unwatch(this);
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.#onEmpty = () => {
        this.#onEmpty = undefined;
        unwatch(this);
        resolve();
      };
    });
  }
}
