// The response side of HTTP/1.1 to a backend, parsed only as far as framing
// needs (RFC 9112 §6): status, headers into an object for the exchange
// (hop-by-hop ones left out),
// Content-Length / chunked / close-delimited bodies, interim 1xx responses
// skipped, 101 handed over. Strict: whatever could let two parties disagree on
// where a response ends is an error, and the connection is not reused.
import { CR, HEAD_END, HEX, LF, VALUE, decimal, fieldLines, latin1, listsToken } from '../http1-syntax.ts';
import type { ResponseHeaders } from '../ingress/exchange.ts';

/** Receives what the parser finds, in order: head, data chunks, end. */
export interface ResponseSink {
  /** A final response head: status >= 200, or 101 when the request asked to upgrade. */
  onHead(status: number, headers: ResponseHeaders): void;
  /** Body bytes, a view into the buffer given to execute(); valid until the next call. */
  onData(chunk: Buffer): void;
  onEnd(): void;
}

/** A response the proxy cannot pass on safely. */
export class ParseError extends Error {
  readonly code = 'SY_UPSTREAM_PARSE';
}

/** Response heads larger than this are refused (node's default for requests is 16 KiB). */
export const MAX_HEAD_BYTES = 64 * 1024;

// States.
const HEAD = 0;
const BODY_LENGTH = 1;
const BODY_CLOSE = 2; // until the connection closes
const CHUNK_SIZE = 3;
const CHUNK_EXT = 4;
const CHUNK_SIZE_LF = 5;
const CHUNK_DATA = 6;
const CHUNK_DATA_CR = 7;
const CHUNK_DATA_LF = 8;
const TRAILER = 9;
const DONE = 10;
const UPGRADED = 11;

// Hop-by-hop response headers (RFC 9110 §7.6.1), not forwarded.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'trailer', 'upgrade']);
// Connection tokens that name no other header.
const PLAIN_TOKENS = new Set(['close', 'keep-alive', 'upgrade', 'te', 'http2-settings']);

function dropNamed(headers: ResponseHeaders, connection: string): void {
  for (const t of connection.split(',')) {
    const name = t.trim().toLowerCase();
    if (name !== '' && !PLAIN_TOKENS.has(name) && headers[name] !== undefined) delete headers[name];
  }
}

/**
 * The headers object: fast properties (Object.create(null) would start in
 * dictionary mode), and a prototype with no properties, so no field name
 * (`__proto__`, `constructor`) can collide with anything inherited.
 */
const Headers = function Headers(): void {} as unknown as new () => ResponseHeaders;
Headers.prototype = Object.create(null) as object;

/**
 * One parser per upstream connection, restarted for each request. execute()
 * takes the bytes as they arrive and returns how many it used: fewer than
 * given only after an upgrade (the rest belongs to the new protocol) or when
 * bytes follow a complete response (the caller must not reuse the connection).
 */
export class ResponseParser {
  readonly #sink: ResponseSink;
  #state = DONE;
  /** A head that arrived in pieces. */
  #partial: Buffer | undefined;
  #remaining = 0;
  #chunkSize = 0;
  #sizeDigits = 0;
  #sawCR = false;
  #noBody = false;
  #upgrade = false;
  /** Whether the connection may carry another request after this response. */
  keepAlive = false;
  /** The final status, once the head is in; 0 before. */
  status = 0;
  /** Whether any byte of this response arrived. */
  started = false;

  constructor(sink: ResponseSink) {
    this.#sink = sink;
  }

  /** Expects a new response. `noBody`: the request was HEAD; `upgrade`: it asked to switch protocols. */
  start(noBody: boolean, upgrade: boolean): void {
    this.#state = HEAD;
    this.#partial = undefined;
    this.#noBody = noBody;
    this.#upgrade = upgrade;
    this.keepAlive = false;
    this.status = 0;
    this.started = false;
  }

  /** True when the response is complete (or the connection was upgraded). */
  get done(): boolean {
    return this.#state === DONE || this.#state === UPGRADED;
  }

  get upgraded(): boolean {
    return this.#state === UPGRADED;
  }

  /** Whether the head is complete (the body may not be). */
  get headDone(): boolean {
    return this.#state !== HEAD;
  }

  execute(buf: Buffer): number {
    if (buf.length > 0) this.started = true;
    let off = 0;
    while (off < buf.length) {
      switch (this.#state) {
        case HEAD: off = this.#head(buf, off); break;
        case BODY_LENGTH: {
          const n = Math.min(this.#remaining, buf.length - off);
          this.#remaining -= n;
          this.#sink.onData(off === 0 && n === buf.length ? buf : buf.subarray(off, off + n));
          off += n;
          if (this.#remaining === 0) this.#finish();
          break;
        }
        case BODY_CLOSE:
          this.#sink.onData(off === 0 ? buf : buf.subarray(off));
          off = buf.length;
          break;
        case CHUNK_DATA: {
          const n = Math.min(this.#remaining, buf.length - off);
          this.#remaining -= n;
          this.#sink.onData(buf.subarray(off, off + n));
          off += n;
          if (this.#remaining === 0) this.#state = CHUNK_DATA_CR;
          break;
        }
        case DONE:
        case UPGRADED:
          return off;
        default: off = this.#chunkFraming(buf, off);
      }
    }
    return off;
  }

  /** The connection closed. Returns true if that completes the response (a close-delimited body). */
  eof(): boolean {
    if (this.#state === BODY_CLOSE) {
      this.#state = DONE;
      this.#sink.onEnd();
      return true;
    }
    return this.done;
  }

  #finish(): void {
    this.#state = DONE;
    this.#sink.onEnd();
  }

  /** Consumes head bytes; returns the offset after them (the whole buffer while the head is incomplete). */
  #head(buf: Buffer, off: number): number {
    let data = buf;
    let start = off;
    const prevLen = this.#partial?.length ?? 0;
    if (this.#partial !== undefined) {
      data = Buffer.concat([this.#partial, buf.subarray(off)]);
      start = 0;
    }
    // Search from a little before the new bytes: the terminator may straddle.
    const end = data.indexOf(HEAD_END, Math.max(start, prevLen - 3));
    if (end < 0) {
      if (data.length - start > MAX_HEAD_BYTES) throw new ParseError('response head too large');
      this.#partial = start === 0 && data !== buf ? data : Buffer.from(data.subarray(start));
      return buf.length;
    }
    if (end - start > MAX_HEAD_BYTES) throw new ParseError('response head too large');
    this.#partial = undefined;
    // One string for the whole head: a native call per field would cost more than the parsing.
    this.#parseHead(latin1(data, start, end + 2));
    // Offset in `buf` just past the terminator.
    return data === buf ? end + 4 : off + (end + 4 - prevLen);
  }

  /** Parses a head: the status line and the header lines, each with its CRLF, without the final CRLF. */
  #parseHead(h: string): void {
    // Status line: HTTP/1.x SP 3DIGIT SP reason
    if (h.length < 14 || !h.startsWith('HTTP/1.') || h.charCodeAt(8) !== 0x20) throw new ParseError('malformed status line');
    const minor = h.charCodeAt(7) - 0x30;
    if (minor !== 0 && minor !== 1) throw new ParseError('unsupported HTTP version');
    const d0 = h.charCodeAt(9) - 0x30, d1 = h.charCodeAt(10) - 0x30, d2 = h.charCodeAt(11) - 0x30;
    if (d0 < 1 || d0 > 5 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9 || (h.charCodeAt(12) !== 0x20 && h.charCodeAt(12) !== CR)) {
      throw new ParseError('malformed status code');
    }
    const status = d0 * 100 + d1 * 10 + d2;
    let i = 12;
    for (let c = h.charCodeAt(i); c !== CR; c = h.charCodeAt(++i)) {
      if (VALUE[c] !== 1) throw new ParseError('malformed reason phrase');
    }
    if (h.charCodeAt(i + 1) !== LF) throw new ParseError('bare CR in status line');
    i += 2;

    const fields: string[] = [];
    if (!fieldLines(h, i, fields)) throw new ParseError('malformed header line');
    const headers = new Headers();
    let contentLength = -1;
    let chunked = false;
    let te = false;
    let connection: string | undefined;
    for (let f = 0; f < fields.length; f += 2) {
      const name = fields[f]!;
      const value = fields[f + 1]!;
      switch (name) {
        case 'content-length': {
          const n = decimal(value);
          if (n < 0) throw new ParseError('invalid Content-Length');
          if (contentLength !== -1 && n !== contentLength) throw new ParseError('conflicting Content-Length');
          contentLength = n;
          break;
        }
        case 'transfer-encoding': {
          te = true;
          // The final coding decides the framing (RFC 9112 §6.3); each value is a list.
          const last = value.slice(value.lastIndexOf(',') + 1).trim().toLowerCase();
          chunked = last === 'chunked';
          break;
        }
        case 'connection':
          connection = connection === undefined ? value : `${connection}, ${value}`;
          break;
      }
      if (HOP_BY_HOP.has(name)) {
        // Not passed on, except on a 101, whose Upgrade/Connection the client needs.
        if (status !== 101) continue;
      }
      const prev = headers[name];
      if (prev === undefined) headers[name] = value;
      else if (typeof prev === 'string') headers[name] = [prev, value];
      else prev.push(value);
    }

    // Headers the Connection header names are hop-by-hop too (RFC 9110 §7.6.1);
    // the usual values name none.
    if (connection !== undefined && status !== 101 && connection !== 'keep-alive' && connection !== 'close') dropNamed(headers, connection);
    if (status < 200 && status !== 101) {
      // Interim (100 Continue, 103 Early Hints): the final response follows.
      if (te || contentLength > 0) throw new ParseError('interim response with a body');
      this.#state = HEAD;
      return;
    }
    if (status === 101) {
      if (!this.#upgrade) throw new ParseError('101 without an upgrade request');
      this.status = 101;
      this.keepAlive = false;
      this.#state = UPGRADED;
      this.#sink.onHead(101, headers);
      return;
    }
    this.status = status;
    const close = connection !== undefined && listsToken(connection, 'close');
    this.keepAlive = minor === 1 ? !close : connection !== undefined && listsToken(connection, 'keep-alive');
    // Content-Length next to Transfer-Encoding may be a smuggling attempt: the
    // encoding wins and the connection is not reused (RFC 9112 §6.1).
    if (te) this.keepAlive &&= contentLength === -1;
    this.#sink.onHead(status, headers);
    if (this.#noBody || status === 204 || status === 304) {
      this.#finish();
    } else if (te) {
      if (chunked) {
        this.#state = CHUNK_SIZE;
        this.#sizeDigits = 0;
        this.#chunkSize = 0;
      } else {
        this.keepAlive = false;
        this.#state = BODY_CLOSE;
      }
    } else if (contentLength >= 0) {
      this.#remaining = contentLength;
      if (contentLength === 0) this.#finish();
      else this.#state = BODY_LENGTH;
    } else {
      this.keepAlive = false;
      this.#state = BODY_CLOSE;
    }
  }

  /** The bytes around chunk data: size line, extensions, CRLFs, trailer section. */
  #chunkFraming(buf: Buffer, off: number): number {
    while (off < buf.length) {
      const c = buf[off]!;
      switch (this.#state) {
        case CHUNK_SIZE: {
          const h = HEX[c]!;
          if (h >= 0) {
            if (++this.#sizeDigits > 12) throw new ParseError('chunk size too large');
            this.#chunkSize = this.#chunkSize * 16 + h;
          } else if (this.#sizeDigits === 0) {
            throw new ParseError('malformed chunk size');
          } else if (c === CR) {
            this.#state = CHUNK_SIZE_LF;
          } else if (c === 0x3b /* ';' */ || c === 0x20 || c === 0x09) {
            this.#state = CHUNK_EXT;
          } else {
            throw new ParseError('malformed chunk size');
          }
          break;
        }
        case CHUNK_EXT:
          // Extensions are ignored; only a line end matters. A bare LF is not one.
          if (c === CR) this.#state = CHUNK_SIZE_LF;
          else if (c === LF || (c < 0x20 && c !== 0x09) || c === 0x7f) throw new ParseError('malformed chunk extension');
          break;
        case CHUNK_SIZE_LF:
          if (c !== LF) throw new ParseError('bare CR after chunk size');
          if (this.#chunkSize === 0) {
            this.#state = TRAILER;
            this.#remaining = 0; // bytes of the current trailer line
            this.#sawCR = false;
          } else {
            this.#state = CHUNK_DATA;
            this.#remaining = this.#chunkSize;
          }
          return off + 1;
        case CHUNK_DATA_CR:
          if (c !== CR) throw new ParseError('chunk longer than its size');
          this.#state = CHUNK_DATA_LF;
          break;
        case CHUNK_DATA_LF:
          if (c !== LF) throw new ParseError('bare CR after chunk data');
          this.#state = CHUNK_SIZE;
          this.#sizeDigits = 0;
          this.#chunkSize = 0;
          break;
        case TRAILER:
          // Trailer fields are dropped (an HTTP/1.1 upstream's trailers were never
          // passed on); only the empty line that ends them matters.
          if (c === CR) {
            if (this.#sawCR) throw new ParseError('bare CR in trailers');
            this.#sawCR = true;
          } else if (c === LF) {
            if (!this.#sawCR) throw new ParseError('bare LF in trailers');
            this.#sawCR = false;
            if (this.#remaining === 0) {
              this.#finish();
              return off + 1;
            }
            this.#remaining = 0;
          } else {
            if (this.#sawCR) throw new ParseError('bare CR in trailers');
            if (++this.#remaining > MAX_HEAD_BYTES) throw new ParseError('trailers too large');
          }
          break;
        default:
          return off;
      }
      off++;
    }
    return off;
  }
}
