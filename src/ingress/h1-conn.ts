// One HTTP/1.1 client connection on a raw socket (the server side of what
// node:http did; see h1-parser.ts for why by hand): requests parsed one at a
// time in order (pipelined ones wait their turn), each served as an
// H1Exchange, the body streamed to whoever reads it with backpressure,
// keep-alive, HTTP/1.0, Expect: 100-continue, WebSocket hand-off, and the
// connection's timeouts as deadlines on the entrypoint's coarse clock (one
// interval for all connections, no timer per request).
import type { Socket } from 'node:net';
import { STATUS_CODES } from '../node-http.ts';
import { ProxyError } from '../errors.ts';
import { listsToken } from '../http1-syntax.ts';
import { RequestBody, type BodyFeed } from './body.ts';
import { httpDate } from './date.ts';
import type { ExchangeOwner, Peer } from './exchange.ts';
import { expectsContinue, H1Exchange } from './h1.ts';
import { giveBack, takeParser, type BodySink, type RequestParser } from './h1-parser.ts';
import { UpgradeExchange } from './upgrade.ts';

/** What a connection needs from the entrypoint. */
export interface H1Owner extends ExchangeOwner {
  /** The coarse clock: ticks of TICK_MS since the entrypoint started. */
  readonly tick: number;
  /** Draining: every response closes its connection. */
  readonly draining: boolean;
  /** A request head is in: route it (or answer it, if refused). */
  dispatchH1(ex: H1Exchange | UpgradeExchange): void;
  /** The connection closed. */
  forget(conn: ClientConnection): void;
  /** The connection's socket was handed over to a WebSocket upgrade. */
  upgraded(conn: ClientConnection): void;
}

/** Timeouts, in ticks of the owner's clock. */
export interface H1Limits {
  readonly maxHeaderBytes: number;
  readonly headersTicks: number;
  readonly idleTicks: number;
}

export const TICK_MS = 250;
/** A deadline `ms` away on a TICK_MS clock: never early, at most one tick late. */
export function ticks(ms: number): number {
  return Math.ceil(ms / TICK_MS) + 1;
}

// Connection states.
const HEAD = 0; // waiting for (the rest of) a request head
const BODY = 1; // reading the request body
const WAIT = 2; // the request is read; its response is not done
const CLOSED = 3; // the last response is out (or refused): reading only to see the client's FIN
const GONE = 4; // handed over (upgrade) or destroyed

/** Pipelined bytes held while a response is pending; past this the socket stops being read. */
const MAX_PENDING = 64 * 1024;
/** After our FIN, how long the client gets to close its side. */
const LINGER_TICKS = ticks(2_000);

const CONTINUE = 'HTTP/1.1 100 Continue\r\n\r\n';

function refusal(status: number): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ndate: ${httpDate()}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`;
}

const CONN = Symbol('client connection');
type Tagged = Socket & { [CONN]: ClientConnection };
function onData(this: Tagged, chunk: Buffer): void { this[CONN].data(chunk); }
function onEnd(this: Tagged): void { this[CONN].end(); }
function onError(this: Tagged): void { this[CONN].error(); }
function onClose(this: Tagged): void { this[CONN].close(); }

function processPending(conn: ClientConnection): void {
  conn.processPending();
}

/** The connection is its exchanges' Peer: no object of its own per connection. */
export class ClientConnection implements BodySink, BodyFeed, Peer {
  readonly socket: Socket;
  readonly ip: string;
  readonly trusted: boolean;
  readonly #owner: H1Owner;
  readonly #limits: H1Limits;
  /** Held from a request's head to its response's end (takeParser), none while idle. */
  #parser: RequestParser | undefined = undefined;
  #state = HEAD;
  /** Bytes received and not yet parsed: part of a head, or requests pipelined behind the current one. */
  #pending: Buffer | undefined;
  #ex: H1Exchange | undefined;
  #body: RequestBody | undefined;
  /** The body reader is full: the socket is paused until it reads. */
  #bodyFull = false;
  #continueDue = false;
  /** Inside #consume: a response that ends now is followed by the loop, not by a new consume. */
  #consuming = false;
  #deadline = 0;
  /** The deadline is the headers timeout (a 408), not the idle or linger one (a silent close). */
  #headDeadline = false;
  /** Past entrypoint.maxConnectionAge: the next response closes the connection. */
  expired = false;
  /** The coarse-clock tick at which the connection expires (0: never). */
  expiresAt = 0;

  constructor(socket: Socket, owner: H1Owner, ip: string, trusted: boolean, limits: H1Limits) {
    this.socket = socket;
    this.#owner = owner;
    this.ip = ip;
    this.trusted = trusted;
    this.#limits = limits;
    // Shared listeners that find the connection on the socket: no closures per connection.
    (socket as Tagged)[CONN] = this;
    socket.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
  }

  // --- reading -------------------------------------------------------------

  /** Socket listener: bytes from the client. */
  data(chunk: Buffer): void {
    const state = this.#state;
    if (state === CLOSED || state === GONE) return;
    if (state === WAIT) {
      this.#hold(chunk, 0);
      return;
    }
    let buf = chunk;
    if (this.#pending !== undefined) {
      buf = Buffer.concat([this.#pending, chunk]);
      this.#pending = undefined;
    }
    this.#consume(buf);
  }

  /** Parses what `buf` holds, one request at a time. */
  #consume(buf: Buffer): void {
    this.#consuming = true;
    let off = 0;
    try {
      while (off < buf.length) {
        const state = this.#state;
        if (state === HEAD) {
          const end = (this.#parser ??= takeParser(this.#limits.maxHeaderBytes, this)).head(buf, off);
          if (end < 0) {
            // The head's first bytes start the headers timeout.
            if (!this.#headDeadline) {
              this.#headDeadline = true;
              this.#deadline = this.#owner.tick + this.#limits.headersTicks;
            }
            this.#pending = Buffer.from(buf.subarray(off));
            break;
          }
          off = end;
          this.#request(buf, off);
          if (this.#state === GONE) return; // upgraded: the rest went with the socket
        } else if (state === BODY) {
          off = this.#parser!.body(buf, off);
        } else if (state === WAIT) {
          this.#hold(buf, off);
          break;
        } else {
          break;
        }
      }
    } catch (err) {
      if (!(err instanceof ProxyError)) throw err;
      this.#refuse(err);
    } finally {
      this.#consuming = false;
    }
  }

  /** Keeps bytes that arrived while a response is pending. */
  #hold(buf: Buffer, off: number): void {
    if (off >= buf.length) return;
    const rest = buf.subarray(off);
    this.#pending = this.#pending === undefined ? Buffer.from(rest) : Buffer.concat([this.#pending, rest]);
    if (this.#pending.length > MAX_PENDING) this.socket.pause();
  }

  /** A head was parsed (the parser holds it); `rest` from `off` is what followed it. */
  #request(buf: Buffer, off: number): void {
    const p = this.#parser!;
    this.#headDeadline = false;
    this.#deadline = 0;
    // Only WebSocket upgrades are proxied as upgrades. Anything else (h2c
    // above all: an upgraded h2c tunnel would bypass per-request routing) is
    // served as a plain request, its Upgrade headers dropped as hop-by-hop.
    if (p.upgrade !== undefined && p.bodyDone && isWebSocket(p.upgrade)) {
      this.#state = GONE;
      const s = this.socket;
      s.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      (s as Partial<Tagged>)[CONN] = undefined;
      s.pause(); // read again when spliced to the upstream
      this.#owner.upgraded(this);
      const ex = new UpgradeExchange(p, s, off < buf.length ? Buffer.from(buf.subarray(off)) : Buffer.alloc(0), this.#owner, this);
      this.#releaseParser(); // the exchange took what it needs
      this.#owner.dispatchH1(ex);
      return;
    }
    let body: RequestBody | undefined;
    if (p.bodyDone) this.#state = WAIT;
    else {
      this.#state = BODY;
      body = this.#body = new RequestBody(this);
      this.#continueDue = p.minor === 1 && p.expect !== undefined && expectsContinue(p.expect);
    }
    const ex = new H1Exchange(p, this, body, this.#owner, this);
    this.#ex = ex;
    this.#owner.dispatchH1(ex);
  }

  /** The body's reader wants more. */
  bodyWanted(body: RequestBody): void {
    if (body !== this.#body) return;
    if (this.#continueDue) {
      this.#continueDue = false;
      // The client waits for this before it sends the body (RFC 9110 §10.1.1); not once an answer went out.
      if (this.#ex !== undefined && !this.#ex.responded) this.socket.write(CONTINUE, 'latin1');
    }
    if (this.#bodyFull) {
      this.#bodyFull = false;
      this.socket.resume();
    }
  }

  bodyTaken(): void {
    // Paced by the socket: reading stops while push() says so.
  }

  onBody(chunk: Buffer): void {
    const body = this.#body;
    if (body !== undefined && !body.push(chunk) && !this.#bodyFull) {
      this.#bodyFull = true;
      this.socket.pause();
    }
  }

  onBodyEnd(): void {
    const ex = this.#ex;
    const body = this.#body;
    this.#body = undefined;
    this.#continueDue = false;
    if (this.#bodyFull) {
      this.#bodyFull = false;
      this.socket.resume();
    }
    if (ex !== undefined) {
      ex.bodyComplete = true;
      ex.trailers = this.#parser!.trailers;
    }
    this.#state = WAIT;
    body?.end();
  }

  /** A head or body the parser refused: 400 (431) and the connection closed. Nothing after it is read. */
  #refuse(err: ProxyError): void {
    const ex = this.#ex;
    const state = this.#state;
    this.#pending = undefined;
    if (state === BODY && ex !== undefined) {
      // The body broke its framing: the upstream must not get a complete
      // request. The body reader fails; the exchange answers 400 (or is cut).
      const body = this.#body;
      this.#body = undefined;
      // After fail(): the upstream side is stopped by then and does not take this for its own failure.
      ex.fail(err);
      body?.fail(err);
      this.#close();
      return;
    }
    if (this.socket.writable) this.socket.write(refusal(err.httpStatus), 'latin1');
    this.#close();
  }

  // --- responses -------------------------------------------------------------

  /** HTTP/1.0 (without keep-alive) or `Connection: close`: the response closes the connection. */
  closeRequested(): boolean {
    const p = this.#parser;
    if (p === undefined) return false; // between requests
    const c = p.connection;
    if (p.minor === 0) return c === undefined || !listsToken(c, 'keep-alive');
    return c !== undefined && listsToken(c, 'close');
  }

  /** Whether the response being written should close the connection. */
  shouldClose(): boolean {
    return this.#owner.draining || this.expired || this.closeRequested();
  }

  get minor(): number {
    return this.#parser?.minor ?? 1;
  }

  /** The exchange's response is complete; `close`: its head said so (or it has no length). */
  responseDone(ex: H1Exchange, close: boolean): void {
    if (ex !== this.#ex) return;
    this.#ex = undefined;
    // A body not read to its end leaves the next request's start unknown.
    if (close || this.#state === BODY) {
      // Its reader was stopped with the exchange.
      this.#body = undefined;
      this.#close();
      return;
    }
    this.#state = HEAD;
    this.#releaseParser();
    this.#deadline = this.#owner.tick + this.#limits.idleTicks;
    // Requests pipelined behind this one wait their turn. (Inside #consume the
    // loop goes on with its buffer; nothing is held then.)
    if (this.#pending !== undefined && !this.#consuming) {
      this.socket.resume();
      process.nextTick(processPending, this);
    }
  }

  #releaseParser(): void {
    const p = this.#parser;
    if (p === undefined) return;
    this.#parser = undefined;
    giveBack(p);
  }

  /** Pipelined requests that arrived while the last response was pending. */
  processPending(): void {
    const held = this.#pending;
    if (held === undefined || this.#state !== HEAD) return;
    this.#pending = undefined;
    this.#consume(held);
  }

  /** Our side is done: FIN after what was written; the client's FIN (or the linger deadline) ends it. */
  #close(): void {
    if (this.#state === CLOSED || this.#state === GONE) return;
    this.#state = CLOSED;
    this.#deadline = this.#owner.tick + LINGER_TICKS;
    this.#headDeadline = false;
    this.#pending = undefined;
    this.socket.end();
    this.socket.resume(); // read and drop whatever comes, so the client's FIN is seen
  }

  // --- timeouts, drain, close ---------------------------------------------------

  /** From the owner's clock. */
  sweep(now: number): void {
    if (this.expiresAt !== 0 && now >= this.expiresAt) {
      this.expiresAt = 0;
      this.expired = true;
    }
    if (this.#deadline === 0 || now < this.#deadline) return;
    this.#deadline = 0;
    if (this.#state === HEAD && this.#headDeadline) {
      // A head trickling in (slowloris): 408, as node:http answered.
      if (this.socket.writable) this.socket.write(refusal(408), 'latin1');
      this.#close();
      return;
    }
    if (this.#state === HEAD || this.#state === CLOSED) this.socket.destroy();
  }

  /** Draining: an idle keep-alive connection is closed now; a busy one closes after its response. */
  drain(): void {
    if (this.#state === HEAD && this.#pending === undefined) this.socket.destroy();
  }

  /** Socket listener: the client's FIN. */
  end(): void {
    // The client is done sending. Mid-request that means it left (node:http
    // aborted the request too); between requests, it is a close.
    this.socket.destroy();
  }

  /** Socket listener. */
  error(): void {
    this.socket.destroy();
  }

  /** Socket listener: the connection is gone. */
  close(): void {
    this.#state = GONE;
    this.#pending = undefined;
    const body = this.#body;
    this.#body = undefined;
    const ex = this.#ex;
    this.#ex = undefined;
    ex?.socketClosed();
    // After socketClosed(): the upstream side is stopped by then and does not take this for its own failure.
    body?.fail(Object.assign(new Error('client closed the connection mid-body'), { code: 'ECONNRESET' }));
    this.#releaseParser();
    this.#owner.forget(this);
  }
}

function isWebSocket(v: string): boolean {
  return v.length === 9 && v.toLowerCase() === 'websocket';
}
