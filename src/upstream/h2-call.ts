// One request on an h2c backend (gRPC): a stream on a pooled session
// (h2-pool.ts). The request goes out as HEADERS and DATA as the peer's
// windows allow; the response's HEADERS, DATA and trailers go to the
// exchange, and its bytes are given back to the backend's window only as the
// client side takes them.
import { streamResetError, UpstreamError, upstreamError } from '../errors.ts';
import { H2Stream } from '../h2/connection.ts';
import { CANCEL, NO_ERROR, PROTOCOL_ERROR } from '../h2/frames.ts';
import type { BodyReader, RequestBody } from '../ingress/body.ts';
import type { Exchange, ResponseHeaders } from '../ingress/exchange.ts';
import type { Session } from './h2-pool.ts';
import { NATIVE_BELOW_MS, TICK_MS, deadlineIn, tick, unwatch, watch } from './clock.ts';
import { MAX_HEAD_BYTES } from './http1-parser.ts';
import { COPY_TIMEOUT_MS, type Attempt, type QueueCount } from './upstream.ts';

/** Where a stream waits for room on a backend connection: a session's queue, or the pool's while it connects. */
export interface StreamQueue {
  /** Takes `s` out (it died waiting); nothing if it is not there. */
  withdraw(s: UpstreamStream): void;
}

/** A stream to a backend as its session sees it: a proxied call, or a mirror's copy. */
export abstract class UpstreamStream extends H2Stream {
  /** The queue it waits in, set by that queue (null: not waiting). */
  queuedIn: StreamQueue | null = null;
  /** Counts its time in a queue: one while it waits (the queue adds and takes away). */
  abstract get queue(): QueueCount;
  /** False once it need not start any more (its exchange is over). */
  abstract get startable(): boolean;
  /** Registered on `session`, which has room for it: send the request. */
  abstract start(session: Session): void;
  /** It never started: no session could be had, or the one it waited in closed. */
  abstract unavailable(err: Error): void;
  /** A header block (`list` is reused: copy what is kept). */
  abstract headers(list: string[], count: number, end: boolean): void;
  /** DATA; the bytes are given back with session.consumed() once they moved on. */
  abstract data(buf: Buffer, start: number, end: number, endStream: boolean): void;
  /** Reset by the peer, or by the frame layer for a stream error (the stream is closed). */
  abstract wasReset(code: number): void;
  /** The session closed with the stream open. */
  abstract lost(err: Error | undefined): void;
  /** What waited for the peer's window or the socket went out. */
  writable(): void {}
}

const EMPTY = Buffer.alloc(0);
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te']);
/** Request trailers as a flat list, reused. */
const trailerList: string[] = [];

function threeDigits(s: string): boolean {
  if (s.length !== 3) return false;
  for (let i = 0; i < 3; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** A field name: lowercase token characters only (RFC 9113 §8.2.1). */
const NAME = /^[-!#$%&'*+.^_`|~0-9a-z]+$/;
/** NUL, CR or LF in a value make it malformed (RFC 9113 §8.2.1); on an HTTP/1.1 client they would start new header lines. */
const BAD_VALUE = /[\0\r\n]/;

/**
 * A header block's regular fields into `out`; returns its :status, -1 when it
 * has none, -2 when it is malformed or its list is over MAX_HEAD_BYTES (as
 * HTTP/1.1 response heads; checked first, so a small HPACK block referencing
 * a large table entry again and again is never walked, let alone built).
 */
function responseHeaders(list: string[], count: number, out: ResponseHeaders): number {
  let size = 0;
  for (let i = 0; i < count; i += 2) size += list[i]!.length + list[i + 1]!.length + 32;
  if (size > MAX_HEAD_BYTES) return -2;
  let status = -1;
  for (let i = 0; i < count; i += 2) {
    const name = list[i]!;
    const value = list[i + 1]!;
    if (BAD_VALUE.test(value)) return -2;
    if (name.charCodeAt(0) === 58 /* ':' */) {
      // A second :status, another pseudo-header, or not three digits: malformed (RFC 9113 §8.3.2).
      if (name !== ':status' || status !== -1 || !threeDigits(value)) return -2;
      status = Number(value);
      continue;
    }
    if (!NAME.test(name)) return -2;
    const prev = out[name];
    if (prev === undefined) out[name] = value;
    else if (typeof prev === 'string') out[name] = [prev, value];
    else prev.push(value);
  }
  return status;
}

/** A response's content-length (-1: none), or -2 when it is not one number. */
function contentLength(h: ResponseHeaders): number {
  const v = h['content-length'];
  if (v === undefined) return -1;
  if (typeof v === 'string') return /^\d{1,15}$/.test(v) ? Number(v) : -2;
  let n = -1;
  for (const x of v) {
    if (!/^\d{1,15}$/.test(x) || (n >= 0 && Number(x) !== n)) return -2;
    n = Number(x);
  }
  return n;
}

// Per-RPC allocations are what GC time is made of: timers call shared
// functions with the call as argument, and timeouts of 2 s and more are
// deadlines on the coarse clock instead of a native timer.
function onTimer(call: H2Call): void {
  call.expired();
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
export class H2Call extends UpstreamStream implements BodyReader {
  readonly #attempt: Attempt;
  readonly #ex: Exchange;
  #session: Session | null = null;
  #body: RequestBody | null = null;
  #bodyEnded = false;
  #bodyPaused = false;
  /** Native timer for timeouts under NATIVE_BELOW_MS. */
  #timer: NodeJS.Timeout | undefined;
  /** Coarse-clock deadline of the current phase (response, then idle between chunks); 0: none. */
  deadline = 0;
  #idleTicks = 0;
  #responded = false;
  #status = 0;
  #trailers: ResponseHeaders | null = null;
  /** Over for the session (done() was called): later events are ignored. */
  #finished = false;
  /** Response bytes written to the client side that it has not taken yet: given back on drain. */
  #held = 0;
  #onDrain: (() => void) | undefined;

  constructor(attempt: Attempt) {
    super();
    this.#attempt = attempt;
    this.#ex = attempt.exchange;
    // The response timeout runs from here: waiting for room on a session counts
    // (a backend may keep SETTINGS_MAX_CONCURRENT_STREAMS at 0 for good).
    const responseMs = attempt.timeouts.responseMs;
    if (responseMs >= NATIVE_BELOW_MS) this.#setDeadline(deadlineIn(responseMs));
    else if (responseMs > 0) this.#timer = setTimeout(onTimer, responseMs, this);
    // Listening from here: a call still waiting leaves its queue when the exchange is over.
    this.#ex.signal.listen(this.#cancel);
  }

  // Asked only when it queues: no field per call.
  get queue(): QueueCount {
    return this.#attempt.queue;
  }

  get startable(): boolean {
    // The session took a while: the exchange may have settled, or the call timed out, meanwhile.
    return !this.#finished && !this.#ex.signal.aborted;
  }

  start(session: Session): void {
    this.#session = session;
    const ex = this.#ex;
    const hasBody = ex.hasBody;
    const headers = ex.headersForH2(this.#attempt.hostHeader);
    session.sendHeaders(this, headers, headers.length, !hasBody);
    const idleMs = this.#attempt.timeouts.idleMs;
    this.#idleTicks = idleMs >= NATIVE_BELOW_MS ? Math.ceil(idleMs / TICK_MS) + 1 : 0;
    // Last: what the client sent already goes out now, and a body that broke off finishes the call.
    const body = hasBody ? ex.body() : null;
    if (body !== null) {
      this.#body = body;
      body.read(this);
    }
  }

  unavailable(err: Error): void {
    if (this.#finished) return;
    this.#stop();
    if (this.#ex.signal.aborted) return;
    this.#fail(upstreamError(err));
  }

  /** Over before it started: timers off, out of the queue it waited in, and it will not start. */
  #stop(): void {
    this.#finished = true;
    clearTimeout(this.#timer);
    this.deadline = 0;
    this.#ex.signal.unlisten(this.#cancel);
    this.queuedIn?.withdraw(this);
  }

  #setDeadline(at: number): void {
    if (this.deadline === 0) {
      if (timed.length === 0) watch(sweeper);
      timed.push(this);
    }
    this.deadline = at;
  }

  // --- request body -------------------------------------------------------------

  bodyData(chunk: Buffer): boolean {
    if (this.#finished) return false;
    const session = this.#session!;
    // Held back while the peer's window or the socket is full: writable() resumes it.
    if (!session.sendData(this, chunk, 0, chunk.length, false)) {
      this.#bodyPaused = true;
      return false;
    }
    if (session.needDrain) {
      this.#bodyPaused = true;
      session.waitDrain(this);
      return false;
    }
    return true;
  }

  writable(): void {
    if (!this.#bodyPaused || this.#finished) return;
    const session = this.#session!;
    if (session.needDrain) {
      session.waitDrain(this);
      return;
    }
    this.#bodyPaused = false;
    this.#body!.resume(this);
  }

  bodyEnd(): void {
    this.#bodyEnded = true;
    if (this.#finished) return;
    const session = this.#session!;
    const trailers = this.#ex.requestTrailers();
    let n = 0;
    if (trailers !== null) {
      const list = trailerList;
      for (const name in trailers) {
        // Fields HTTP/2 forbids would make the backend reset the stream (RFC 9113 §8.2.2).
        if (name.charCodeAt(0) === 58 /* ':' */ || CONNECTION_SPECIFIC.has(name)) continue;
        const v = trailers[name];
        if (typeof v === 'string') { list[n++] = name; list[n++] = v; }
        else if (v !== undefined) for (const x of v) { list[n++] = name; list[n++] = x; }
      }
    }
    // sendHeaders encodes the list now, or copies it to wait behind DATA: the scratch list is free again after.
    if (n > 0) session.sendHeaders(this, trailerList, n, true);
    else session.sendData(this, EMPTY, 0, 0, true);
  }

  bodyError(_err: Error): void {
    this.#bodyEnded = true;
    if (this.#finished) return;
    this.#finish(CANCEL);
    // The client's body failed (usually the exchange is over by then): as a stream we cancelled.
    if (!this.#ex.signal.aborted) this.#fail(streamResetError(CANCEL));
  }

  // --- response --------------------------------------------------------------------

  headers(list: string[], count: number, end: boolean): void {
    if (this.#finished) return;
    if (this.#responded) {
      // Trailers: the last header block, without pseudo-headers.
      const trailers: ResponseHeaders = {};
      if (!end || responseHeaders(list, count, trailers) !== -1) {
        this.#protocolError('malformed response trailers');
        return;
      }
      this.#trailers = trailers;
      this.#ended();
      return;
    }
    const headers: ResponseHeaders = {};
    const status = responseHeaders(list, count, headers);
    if (status < 100) {
      this.#protocolError(status === -2 ? 'malformed response headers' : 'response without a :status');
      return;
    }
    if (status < 200) {
      // Informational: the final response follows on the stream.
      if (end) this.#protocolError('informational response ending the stream');
      return;
    }
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#responded = true;
    this.#status = status;
    const ex = this.#ex;
    if (end) {
      // Trailers-Only (how gRPC servers send errors): one HEADERS frame, no body.
      this.#finish(this.#afterRemoteEnd());
      this.#observe(headers);
      ex.respondOnly(status, headers);
      return;
    }
    // A body that disagrees with its length would desynchronise an HTTP/1.1 client: the frame layer resets it.
    if (ex.method !== 'HEAD' && status !== 204 && status !== 304) {
      const cl = contentLength(headers);
      if (cl === -2) {
        this.#protocolError('malformed content-length');
        return;
      }
      this.contentLength = cl;
    }
    const idleMs = this.#attempt.timeouts.idleMs;
    if (this.#idleTicks > 0) this.deadline = tick + this.#idleTicks;
    else {
      this.deadline = 0;
      if (idleMs > 0) this.#timer = setTimeout(onTimer, idleMs, this);
    }
    ex.respond(status, headers, true);
  }

  data(buf: Buffer, start: number, end: number, endStream: boolean): void {
    if (this.#finished) return;
    if (!this.#responded) {
      this.#protocolError('DATA before the response headers');
      return;
    }
    const n = end - start;
    if (n > 0) {
      if (this.deadline !== 0) this.deadline = tick + this.#idleTicks;
      else this.#timer?.refresh();
      const ex = this.#ex;
      const chunk = buf.subarray(start, end);
      // Once the client side is full, what the backend's stream window still
      // admits is written (buffered) and held: the stream's share goes back to the
      // backend on drain. The connection's share goes back at once: a client that
      // stops reading must not stall the other clients' streams on this session
      // (its bytes held here are bounded by the stream window, and by the client
      // connection's budget at the ingress).
      const session = this.#session!;
      if (this.#held > 0) {
        session.consumed(null, n);
        this.#held += n;
        ex.write(chunk);
      } else if (ex.write(chunk)) {
        session.consumed(this, n);
      } else {
        session.consumed(null, n);
        this.#held = n;
        ex.onceDrain(this.#onDrain ??= () => this.#drained());
      }
    }
    if (endStream) this.#ended();
  }

  #drained(): void {
    const n = this.#held;
    if (n === 0 || this.#finished) return;
    this.#held = 0;
    this.#session!.consumed(this, n, false);
  }

  /** The response ended cleanly (END_STREAM). */
  #ended(): void {
    this.#finish(this.#afterRemoteEnd());
    this.#observe(this.#trailers ?? {});
    this.#ex.end(this.#trailers);
  }

  /** Passive health: a 5xx or gRPC UNAVAILABLE counts against the backend. */
  #observe(h: ResponseHeaders): void {
    this.#attempt.observe(this.#status >= 500 || h['grpc-status'] === '14');
  }

  #protocolError(why: string): void {
    this.#finish(PROTOCOL_ERROR);
    if (!this.#ex.signal.aborted) this.#fail(new UpstreamError('protocol', false, new Error(why)));
  }

  // --- the end of the call ------------------------------------------------------------

  /** The backend ended its side: a request still being sent is cut (NO_ERROR), else nothing to reset (-1). */
  #afterRemoteEnd(): number {
    return this.localEnded && this.pending === null ? -1 : NO_ERROR;
  }

  /**
   * Over for the session: timers off, the stream reset with `code` unless it
   * is closed (-1: nothing to reset), held window given back, the session
   * told. Once.
   */
  #finish(code: number): void {
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#timer);
    this.deadline = 0;
    this.#ex.signal.unlisten(this.#cancel);
    const session = this.#session!;
    // The stream is over: the connection's share of what was held went back as it came.
    this.#held = 0;
    // A request body still coming is not wanted any more.
    if (this.#body !== null && !this.#bodyEnded) this.#body.stop(this);
    if (code >= 0) session.reset(this, code);
    session.done(this);
  }

  /** The coarse-clock deadline or the native timer fired: no response yet, or no data for the idle time. */
  expired(): void {
    if (this.#finished) return;
    const { responseMs, idleMs } = this.#attempt.timeouts;
    if (this.#session === null) {
      this.#stop();
      // Still waiting for a connection or room on one: no stream was opened, nothing
      // reached the backend, so it may be tried again (as a connect timeout may).
      if (!this.#ex.signal.aborted) this.#fail(new UpstreamError('timeout', true, new Error(`no stream to the backend within ${responseMs} ms`)));
      return;
    }
    this.#finish(CANCEL);
    const why = this.#responded ? `no data for ${idleMs} ms` : `no response within ${responseMs} ms`;
    this.#fail(new UpstreamError('timeout', false, new Error(why)));
  }

  wasReset(code: number): void {
    if (this.#finished) return;
    this.#finish(-1);
    if (!this.#ex.signal.aborted) this.#fail(streamResetError(code));
  }

  lost(err: Error | undefined): void {
    if (this.#finished) return;
    this.#finish(-1);
    if (!this.#ex.signal.aborted) this.#fail(new UpstreamError('reset', false, err ?? new Error('upstream session closed')));
  }

  /** The client went away or the proxy answered: the backend is told to stop, or a call still waiting never starts. */
  readonly #cancel = (): void => {
    if (this.#session === null) this.#stop();
    else this.#finish(CANCEL);
  };

  #fail(err: UpstreamError): void {
    this.#attempt.failed(err, this.#responded);
  }
}

function onCopyTimeout(copy: H2Copy): void {
  copy.timedOut();
}

/** A mirror's copy: sent whole, its answer's code passed to `done`, the rest dropped. */
export class H2Copy extends UpstreamStream {
  readonly queue: QueueCount;
  readonly #headers: string[];
  readonly #body: Buffer;
  readonly #grpc: boolean;
  readonly #done: (code: number | null) => void;
  #session: Session | null = null;
  #timer: NodeJS.Timeout | undefined;
  #code: number | null = null;
  #responded = false;
  #finished = false;

  constructor(headers: string[], body: Buffer, grpc: boolean, queue: QueueCount, done: (code: number | null) => void) {
    super();
    this.queue = queue;
    this.#headers = headers;
    this.#body = body;
    this.#grpc = grpc;
    this.#done = done;
    // From here: a copy waiting for room on a session that never has any is dropped (with its body) in time.
    this.#timer = setTimeout(onCopyTimeout, COPY_TIMEOUT_MS, this);
  }

  get startable(): boolean {
    return !this.#finished;
  }

  start(session: Session): void {
    this.#session = session;
    const body = this.#body;
    session.sendHeaders(this, this.#headers, this.#headers.length, body.length === 0);
    if (body.length > 0) session.sendData(this, body, 0, body.length, true);
  }

  unavailable(_err: Error): void {
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#timer);
    this.queuedIn?.withdraw(this);
    this.#done(null);
  }

  headers(list: string[], count: number, end: boolean): void {
    for (let i = 0; i < count; i += 2) {
      const name = list[i]!;
      // gRPC: the code is grpc-status, in the trailers or a Trailers-Only head; else the HTTP status.
      if (this.#grpc ? name === 'grpc-status' : name === ':status' && !this.#responded) this.#code = Number(list[i + 1]);
    }
    if (!this.#responded) {
      const status = this.#code;
      // An informational head does not count as the answer.
      if (!this.#grpc && status !== null && status < 200) this.#code = null;
      else this.#responded = true;
    }
    if (end) this.#finish(this.localEnded && this.pending === null ? -1 : NO_ERROR);
  }

  data(_buf: Buffer, start: number, end: number, endStream: boolean): void {
    this.#session!.consumed(this, end - start);
    if (endStream) this.#finish(this.localEnded && this.pending === null ? -1 : NO_ERROR);
  }

  wasReset(_code: number): void {
    this.#finish(-1);
  }

  lost(_err: Error | undefined): void {
    this.#finish(-1);
  }

  timedOut(): void {
    if (this.#session === null) this.unavailable(new Error('no stream to the backend'));
    else this.#finish(CANCEL);
  }

  #finish(code: number): void {
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#timer);
    const session = this.#session!;
    if (code >= 0) session.reset(this, code);
    session.done(this);
    this.#done(this.#code);
  }
}
