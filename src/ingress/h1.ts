// Exchanges of HTTP/1.1 clients: the request head as the parser read it
// (h1-parser.ts), the response written on the client connection's socket
// (h1-conn.ts) with its head, and a short body, in one write.
import { STATUS_CODES } from '../node-http.ts';
import { BadRequestError, ExpectationFailedError, type ProxyError } from '../errors.ts';
import { CHUNKED_FIELD, CR, LF, putField, putLatin1 } from '../http1-syntax.ts';
import { httpDate } from './date.ts';
import { Exchange, textBody, type ExchangeOwner, type Peer, type ResponseHeaders } from './exchange.ts';
import type { RequestBody } from './body.ts';
import type { ClientConnection } from './h1-conn.ts';
import { resolveTarget } from './h1-head.ts';
import type { RequestParser } from './h1-parser.ts';
import { connectionNamed, DROP_REQUEST, stripResponseHeaders } from './hygiene.ts';

/**
 * The request side of an HTTP/1.1 client's exchange: the head, parsed once
 * into what goes upstream. Subclasses answer on the client connection or, for
 * an Upgrade, on the raw socket.
 */
export abstract class H1Request extends Exchange {
  /**
   * Set when the request is answered by the router and never forwarded: a
   * head that breaks a rule of RFC 9112 (h1-head.ts) 400, an expectation
   * other than 100-continue 417.
   */
  readonly refused: ProxyError | undefined;
  /** The client's headers minus hop-by-hop and proxy-set ones, flat [name, value, ...]. */
  readonly #headers: string[];
  /** Trailers after a chunked body, once it ended. */
  trailers: ResponseHeaders | null = null;

  constructor(p: RequestParser, owner: ExchangeOwner, peer: Peer) {
    // One pass over the parsed fields (names already lowercase).
    const raw = p.headers;
    const idHeader = owner.requestIdHeader;
    let headers: string[] = [];
    let ctype: string | undefined, override: string | undefined, requestId: string | undefined;
    let xff: string | undefined, xfProto: string | undefined, xfHost: string | undefined;
    let hasBody = false;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      const value = raw[i + 1]!;
      if (!DROP_REQUEST.has(name)) {
        if (name === 'content-type') ctype = value;
        else if (name === 'content-length') hasBody ||= p.contentLength !== 0;
        else if (name === idHeader) requestId ??= value;
        headers.push(name, value);
        continue;
      }
      switch (name) {
        case 'x-switchyard-backend': override = value; break;
        case 'x-forwarded-for': xff = xff === undefined ? value : `${xff}, ${value}`; break;
        case 'x-forwarded-proto': xfProto ??= value; break;
        case 'x-forwarded-host': xfHost ??= value; break;
        case 'transfer-encoding': hasBody = true; break; // the parser allows only one plain chunked
      }
    }
    const named = connectionNamed(p.connection);
    if (named !== undefined) {
      const kept: string[] = [];
      for (let i = 0; i < headers.length; i += 2) {
        if (!named.has(headers[i]!)) kept.push(headers[i]!, headers[i + 1]!);
      }
      headers = kept;
    }
    const host = p.host;
    const target = resolveTarget(p.target, host, p.hosts);
    super(owner, peer, {
      method: p.method, path: target.ok ? target.path : p.target, authority: target.ok ? target.authority : host, contentType: ctype,
      override, hasBody, contentLength: p.contentLength, requestId, xff, xfProto, xfHost,
    });
    if (requestId === undefined) headers.push(idHeader, this.requestId);
    this.#headers = headers;
    this.refused = !target.ok ? new BadRequestError(target.reason)
      : p.expect !== undefined && p.minor === 1 && !expectsContinue(p.expect) ? EXPECTATION_FAILED : undefined;
  }

  header(name: string): string | undefined {
    const h = this.#headers;
    for (let i = 0; i < h.length; i += 2) if (h[i] === name) return h[i + 1];
    return undefined;
  }

  requestTrailers(): ResponseHeaders | null {
    return this.trailers;
  }

  headersForH1(hostHeader: string | undefined): string[] {
    const h = this.#headers.slice();
    this.pushForwarded(h, hostHeader);
    return h;
  }

  headersForH2(hostHeader: string | undefined): string[] {
    const h = [':method', this.method, ':scheme', 'http', ':authority', hostHeader ?? this.authority ?? '', ':path', this.path];
    // Repeated fields stay separate fields: HTTP/2 allows that for any name (RFC 9113 §8.2.3).
    const own = this.#headers;
    for (let i = 0; i < own.length; i++) h.push(own[i]!);
    this.pushXForwarded(h);
    return h;
  }
}

const EXPECTATION_FAILED = new ExpectationFailedError();

/** An Expect value that is exactly 100-continue, case-insensitive (HTTP/1.0 expectations are ignored, as node:http did). */
export function expectsContinue(v: string): boolean {
  return v.length === 12 && v.toLowerCase() === '100-continue';
}

// Status lines by status, built once.
const STATUS_LINES: string[] = [];
function statusLine(status: number): string {
  return (STATUS_LINES[status] ??= `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`);
}

const LAST_CHUNK = '0\r\n\r\n';
/** Body chunks from this size on end the head's cork at once (one writev of head and chunk); shorter ones are copied when they would wait. */
const FLUSH_AT = 16 * 1024;
/** A first body chunk up to this size is copied into the head's buffer: one write. */
const JOIN_MAX = 2048;
const CLOSE = 'connection: close\r\n';
const KEEP_ALIVE = 'connection: keep-alive\r\n';

function uncork(ex: H1Exchange): void {
  ex.uncork();
}

/** A request from an HTTP/1.1 client, answered on its connection. */
export class H1Exchange extends H1Request {
  readonly #conn: ClientConnection;
  readonly #body: RequestBody | null;
  /** The request body was read to its end (or there was none). */
  bodyComplete: boolean;
  #status = 0;
  /** The response body goes chunked (HTTP/1.1, no Content-Length). */
  #chunked = false;
  /** The response has no body whatever is written (HEAD, 204, 304). */
  #noBody = false;
  /** The connection closes after this response. */
  #close = false;
  /** An HTTP/1.0 client's connection stays open: the head says keep-alive. */
  #keepAlive = false;
  #corked = false;
  /**
   * The response head, until the first body bytes, the end, or the end of the
   * tick send it: a failure before then (the upstream's stream reset in the
   * same read as its HEADERS) is still answered with a status, not a cut.
   */
  #head: ResponseHeaders | null = null;
  /** The length of the held head in bytes, blank line included. */
  #headBytes = 0;
  /** A chunk went into the socket by reference (not copied): see holdsChunks. */
  #byRef = false;
  #finished = false;

  /** `body`: the request body as the connection reads it; undefined when there is none. */
  constructor(p: RequestParser, conn: ClientConnection, body: RequestBody | undefined, owner: ExchangeOwner, peer: Peer) {
    super(p, owner, peer);
    this.#conn = conn;
    this.#body = body ?? null;
    this.bodyComplete = body === undefined;
  }

  protected get requestBody(): RequestBody | null {
    return this.#body;
  }

  protected override isClosed(): boolean {
    return this.#finished;
  }

  respond(status: number, headers: ResponseHeaders): void {
    if (this.settled || this.#finished) return;
    this.responded = true;
    this.responseHead(headers);
    stripResponseHeaders(headers);
    const conn = this.#conn;
    // "name: value" CRLF per field, and the blank line.
    let n = statusLine(status).length + 2;
    let framed = false;
    for (const name in headers) {
      const value = headers[name];
      if (value === undefined) continue;
      if (typeof value === 'string') n += name.length + value.length + 4;
      else for (const v of value) n += name.length + v.length + 4;
      if (name === 'content-length') framed = true;
    }
    this.#status = status;
    this.#noBody = this.method === 'HEAD' || status === 204 || status === 304;
    // No length: chunked for HTTP/1.1; for HTTP/1.0 the close ends the body.
    this.#chunked = !framed && !this.#noBody && conn.minor === 1;
    this.#close = conn.shouldClose() || (!framed && !this.#noBody && !this.#chunked);
    if (this.#chunked) n += CHUNKED_FIELD.length;
    // Decided here, with the size: the connection's parser (and its minor
    // version) may be given back before the head is written.
    this.#keepAlive = !this.#close && conn.minor === 0;
    if (this.#close) n += CLOSE.length;
    else if (this.#keepAlive) n += KEEP_ALIVE.length;
    // Held until the end of the tick; body bytes written meanwhile leave with it.
    this.#head = headers;
    this.#headBytes = n;
    process.nextTick(uncork, this);
  }

  /**
   * The held head, written piece by piece into a buffer of its own (a head
   * concatenated as a string and flattened for the write cost ~1 KB of
   * garbage), with `extra` bytes of room after it, from #headBytes on.
   */
  #headBuffer(extra: number): Buffer {
    const headers = this.#head!;
    this.#head = null;
    const b = Buffer.allocUnsafe(this.#headBytes + extra);
    let o = putLatin1(b, statusLine(this.#status), 0);
    for (const name in headers) {
      const value = headers[name];
      if (value === undefined) continue;
      if (typeof value === 'string') o = putField(b, o, name, value);
      else for (const v of value) o = putField(b, o, name, v);
    }
    if (this.#chunked) o = putLatin1(b, CHUNKED_FIELD, o);
    if (this.#close) o = putLatin1(b, CLOSE, o);
    else if (this.#keepAlive) o = putLatin1(b, KEEP_ALIVE, o);
    b[o++] = CR;
    b[o] = LF;
    return b;
  }

  /** The held head goes into the socket, corked: what is written next joins it. */
  #writeHead(): void {
    const s = this.#conn.socket;
    s.cork();
    this.#corked = true;
    s.write(this.#headBuffer(0));
  }

  /** End of the tick: what was held or corked goes out. */
  uncork(): void {
    if (this.#head !== null) this.#conn.socket.write(this.#headBuffer(0));
    if (!this.#corked) return;
    this.#corked = false;
    this.#conn.socket.uncork();
  }

  respondOnly(status: number, headers: ResponseHeaders): void {
    if (this.settled || this.#finished) return;
    this.respond(status, headers);
    this.end();
  }

  write(chunk: Buffer): boolean {
    if (this.settled || this.#finished || this.#noBody) return true;
    if (this.#chunked && chunk.length === 0) return true; // an empty chunk would end the body
    const s = this.#conn.socket;
    let ok: boolean;
    if (this.#head !== null && chunk.length <= JOIN_MAX) {
      // The head and a short first chunk copied into one buffer: one write,
      // and the caller's buffer is not kept. Corked until the end of the
      // tick, so that what follows joins it.
      const size = this.#chunked ? chunk.length.toString(16) : '';
      const b = this.#headBuffer(this.#chunked ? size.length + chunk.length + 4 : chunk.length);
      let o = this.#headBytes;
      if (this.#chunked) {
        o = putLatin1(b, size, o);
        b[o++] = CR;
        b[o++] = LF;
      }
      o += chunk.copy(b, o);
      if (this.#chunked) {
        b[o++] = CR;
        b[o] = LF;
      }
      s.cork();
      this.#corked = true;
      ok = s.write(b);
      return ok || s.writableLength < s.writableHighWaterMark;
    }
    if (this.#head !== null) this.#writeHead();
    // A chunk that would wait in the queue is copied, so that the caller may
    // reuse its buffer: behind what the kernel did not take, at any size;
    // corked this tick, when short (a long one leaves at once, below).
    if (this.#corked ? chunk.length < FLUSH_AT : s.writableLength > 0) chunk = Buffer.from(chunk);
    else this.#byRef = true;
    if (!this.#chunked) ok = s.write(chunk);
    else {
      const corked = this.#corked;
      if (!corked) s.cork();
      s.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
      s.write(chunk);
      ok = s.write('\r\n', 'latin1');
      if (!corked) s.uncork();
    }
    // A large chunk needs no company: out now with the head, so that the
    // kernel, not our queue, holds it (see holdsChunks).
    if (this.#corked && chunk.length >= FLUSH_AT) this.uncork();
    // write() says false for any chunk above the high-water mark, even one the
    // kernel took whole at once: only what is still queued is a reason to wait.
    return ok || s.writableLength < s.writableHighWaterMark;
  }

  override holdsChunks(): boolean {
    // Only a chunk written by reference can be held, while anything is queued.
    return this.#byRef && this.#conn.socket.writableLength > 0;
  }

  onceDrain(fn: () => void): void {
    this.#conn.socket.once('drain', fn);
  }

  end(): void {
    if (this.settled || this.#finished) return;
    // Ended without a head (an h2 upstream whose session died before it
    // answered does this): what node:http's res.end() sent, an empty 200.
    if (!this.responded) this.respond(200, { 'content-length': '0', date: httpDate() });
    if (this.#head !== null) {
      // No body bytes: the head (and the last chunk) in one write.
      if (this.#chunked) {
        const b = this.#headBuffer(LAST_CHUNK.length);
        putLatin1(b, LAST_CHUNK, this.#headBytes);
        this.#conn.socket.write(b);
      } else this.#conn.socket.write(this.#headBuffer(0));
    } else if (this.#chunked) this.#conn.socket.write(LAST_CHUNK, 'latin1');
    this.uncork();
    this.#finish();
  }

  #finish(): void {
    this.#finished = true;
    this.closed(true, this.#status, false);
    this.#conn.responseDone(this, this.#close);
  }

  /** The client connection closed (client gone, or cut) before the response was done. */
  socketClosed(): void {
    if (this.#finished) return;
    this.#finished = true;
    // A head still held has nowhere to go (the tick's uncork must not write it).
    this.#head = null;
    this.closed(false, this.#status, false);
  }

  protected cut(err: ProxyError): void {
    if (this.#head !== null) {
      // Nothing of the response was written: the error still gets its status.
      this.#head = null;
      this.answer(err);
      return;
    }
    // The status line is out, or body bytes with it: the only honest signal
    // left is a cut connection. What was corked goes first, as it would have
    // at the end of the tick: the client sees the response break off.
    this.uncork();
    this.#conn.socket.destroy();
  }

  protected answer(err: ProxyError): void {
    this.responded = true;
    const body = textBody(err);
    // An unread request body would otherwise have to be drained first.
    this.#close = err.closesConnection || this.#conn.shouldClose() || !this.bodyComplete;
    this.#status = err.httpStatus;
    const conn = this.#close ? CLOSE : this.#conn.minor === 0 ? KEEP_ALIVE : '';
    const head = `${statusLine(err.httpStatus)}date: ${httpDate()}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${conn}\r\n`;
    // UTF-8, as content-length counts it (the head is ASCII either way).
    this.#conn.socket.write(this.method === 'HEAD' ? head : head + body);
    this.#finish();
  }
}
