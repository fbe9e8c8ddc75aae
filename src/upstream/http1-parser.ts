// The response side of HTTP/1.1 to a backend, parsed only as far as framing
// needs (RFC 9112 §6): status, headers into an object for the exchange
// (hop-by-hop ones left out),
// Content-Length / chunked / close-delimited bodies, interim 1xx responses
// skipped, 101 handed over. Strict: whatever could let two parties disagree on
// where a response ends is an error, and the connection is not reused.
import { BodyDecoder, type BodyRules, type BodySink } from '../http1-body.ts';
import { CR, HEAD_END, LF, VALUE, decimal, fieldLines, latin1, listsToken } from '../http1-syntax.ts';
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

// A backend's body: whitespace after a chunk size and extensions of any
// length are let through (they are skipped, never passed on); trailer fields
// are dropped (an HTTP/1.1 upstream's trailers were never passed on).
const RULES: BodyRules = {
  spaceAfterSize: true,
  maxExtensionBytes: Infinity,
  keepTrailers: false,
  maxTrailerBytes: MAX_HEAD_BYTES,
  error: (reason) => new ParseError(reason),
};

// States.
const HEAD = 0;
const BODY = 1; // then done when the body decoder is
const UPGRADED = 2;

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
export class ResponseParser implements BodySink {
  readonly #sink: ResponseSink;
  readonly #body: BodyDecoder;
  #state = BODY;
  /** A head that arrived in pieces. */
  #partial: Buffer | undefined;
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
    this.#body = new BodyDecoder(this, RULES);
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
    return this.#state === UPGRADED || (this.#state === BODY && this.#body.done);
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
    // More than one head: interim (1xx) responses before the final one.
    while (this.#state === HEAD && off < buf.length) off = this.#head(buf, off);
    if (this.#state === BODY && off < buf.length) off = this.#body.decode(buf, off);
    return off;
  }

  /** The connection closed. Returns true if that completes the response (a close-delimited body). */
  eof(): boolean {
    return this.#state === UPGRADED || (this.#state === BODY && this.#body.eof());
  }

  onBody(chunk: Buffer): void {
    this.#sink.onData(chunk);
  }

  onBodyEnd(): void {
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
    this.#state = BODY;
    if (this.#noBody || status === 204 || status === 304 || (!te && contentLength === 0)) {
      this.#body.none();
      this.#sink.onEnd();
    } else if (te && chunked) {
      this.#body.chunked();
    } else if (!te && contentLength > 0) {
      this.#body.length(contentLength);
    } else {
      this.keepAlive = false;
      this.#body.untilClose();
    }
  }
}
