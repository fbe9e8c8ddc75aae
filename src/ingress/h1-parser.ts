// The request side of HTTP/1.1 from clients, parsed by hand: the head once,
// as one latin1 string scanned with charCodeAt, into what the exchange needs
// (method, target, version, header fields with lowercase names, the framing);
// then the body by Content-Length or chunked, with the strict rules of
// http1-body.ts.
//
// Why hand-written: node:http's server (llhttp's callbacks into JS,
// IncomingMessage/ServerResponse, _storeHeader, a keep-alive timer re-armed
// per response) was most of the router's own CPU on HTTP/1.1
// (bench/results/cpu-cost-2026-11-30.md), and no maintained npm library offers
// a strict server-side parser to use instead. Strict means: whatever two
// parsers could frame or route differently (RFC 9112 §6.1, §6.3, §3.2; the
// battery in test/smuggling.test.ts) is refused, never guessed at.
import { BadRequestError, HeadersTooLargeError } from '../errors.ts';
import { BodyDecoder, type BodyRules, type BodySink } from '../http1-body.ts';
import { CR, HEAD_END, LF, SP, decimal, fieldLines, latin1 } from '../http1-syntax.ts';
import type { ResponseHeaders } from './exchange.ts';

// Methods: uppercase tokens (a lowercase `get` is refused, as llhttp does).
const METHOD = new Uint8Array(256);
for (let c = 0x41; c <= 0x5a; c++) METHOD[c] = 1;
METHOD[0x2d] = METHOD[0x5f] = 1; // M-SEARCH, and _ for extension methods
// Request-target bytes: visible ASCII. Raw UTF-8 or controls would reach the
// upstream's request line as we got them; they are refused instead.
const TARGET = new Uint8Array(256);
for (let c = 0x21; c <= 0x7e; c++) TARGET[c] = 1;

/** The common methods as constants: no new string per request for them. */
function methodOf(h: string, end: number): string {
  switch (end) {
    case 3: if (h.startsWith('GET')) return 'GET'; if (h.startsWith('PUT')) return 'PUT'; break;
    case 4: if (h.startsWith('POST')) return 'POST'; if (h.startsWith('HEAD')) return 'HEAD'; break;
  }
  return h.slice(0, end);
}

function bad(reason: string): BadRequestError {
  return new BadRequestError(reason);
}

const HEADERS_TOO_LARGE = new HeadersTooLargeError();
const NO_HEADERS: string[] = [];

export type { BodySink };

/** Chunk extensions are skipped; more than this on one chunk is an attack, not metadata (node's limit too). */
const MAX_CHUNK_EXTENSION = 16 * 1024;

/** The body rules for a head limit, one object for every connection that has it. */
const RULES = new Map<number, BodyRules>();
function bodyRules(maxHeadBytes: number): BodyRules {
  let rules = RULES.get(maxHeadBytes);
  if (rules === undefined) {
    rules = { spaceAfterSize: false, maxExtensionBytes: MAX_CHUNK_EXTENSION, keepTrailers: true, maxTrailerBytes: maxHeadBytes, error: bad };
    RULES.set(maxHeadBytes, rules);
  }
  return rules;
}

/** A parser in the free list answers to nobody. */
const NO_SINK: BodySink = { onBody() {}, onBodyEnd() {} };

/**
 * Parsers let go by connections between requests, for the next connection
 * that gets one: an idle keep-alive connection holds no parser (10,000 idle
 * connections held 1.4 MB of them). Bounded: past a burst of busy
 * connections the rest are garbage.
 */
const FREE: RequestParser[] = [];
const MAX_FREE = 256;

/** A parser for a connection that is getting a request: from the free list if it has one. */
export function takeParser(maxHeadBytes: number, sink: BodySink): RequestParser {
  const p = FREE.pop();
  if (p === undefined || p.maxHeadBytes !== maxHeadBytes) return new RequestParser(maxHeadBytes, sink);
  p.sink = sink;
  return p;
}

/** The connection's request is over (or the connection is): its parser goes back to the free list. */
export function giveBack(p: RequestParser): void {
  p.release();
  p.sink = NO_SINK;
  // One left mid-body (a connection cut or refused) may hold a partial chunk or trailer state: not reused.
  if (p.bodyDone && FREE.length < MAX_FREE) FREE.push(p);
}

/**
 * Held by a client connection from a request's head to its response's end,
 * then given back (takeParser, giveBack). head() finds and parses a request
 * head; the fields below then describe that request until the next head().
 * body() decodes the body that follows.
 */
export class RequestParser implements BodySink {
  readonly maxHeadBytes: number;
  /** Where body bytes go: the connection holding the parser (the decoder's sink is the parser, which outlives a connection). */
  sink: BodySink;
  /** Made for the connection's first request with a body: most keep-alive connections never need one. */
  #body: BodyDecoder | undefined = undefined;
  method = '';
  target = '';
  /** 1 for HTTP/1.1, 0 for HTTP/1.0. */
  minor = 1;
  /** Field lines in order, flat [name, value, ...], names lowercase. */
  headers: string[] = NO_HEADERS;
  /** The declared Content-Length, -1 when none. */
  contentLength = -1;
  chunked = false;
  /** Host lines seen, and the last one's value. */
  hosts = 0;
  host: string | undefined = undefined;
  /** Connection values, joined. */
  connection: string | undefined = undefined;
  upgrade: string | undefined = undefined;
  expect: string | undefined = undefined;

  constructor(maxHeadBytes: number, sink: BodySink) {
    this.maxHeadBytes = maxHeadBytes;
    this.sink = sink;
  }

  #decoder(): BodyDecoder {
    return this.#body ??= new BodyDecoder(this, bodyRules(this.maxHeadBytes));
  }

  onBody(chunk: Buffer): void {
    this.sink.onBody(chunk);
  }

  onBodyEnd(): void {
    this.sink.onBodyEnd();
  }

  /**
   * Looks for a complete head in `data` from `start`: returns the offset just
   * past it (the fields then describe it), or -1 when more bytes are needed.
   * Throws the ProxyError to answer (400, 431) for a head that must be refused.
   */
  head(data: Buffer, start: number): number {
    // Empty lines before a request line are skipped (RFC 9112 §2.2).
    while (data[start] === CR && data[start + 1] === LF) start += 2;
    const end = data.indexOf(HEAD_END, start);
    if (end < 0) {
      if (data.length - start > this.maxHeadBytes) throw HEADERS_TOO_LARGE;
      // A head with a bare LF never ends in CRLF CRLF: refuse it now, not at the headers timeout.
      for (let lf = data.indexOf(LF, start); lf >= 0; lf = data.indexOf(LF, lf + 1)) {
        if (lf === start || data[lf - 1] !== CR) throw bad('bare LF in the request head');
      }
      return -1;
    }
    if (end - start > this.maxHeadBytes) throw HEADERS_TOO_LARGE;
    this.#parse(latin1(data, start, end + 2));
    return end + 4;
  }

  /** Parses a head: the request line and the field lines, each with its CRLF, without the final CRLF. */
  #parse(h: string): void {
    let i = 0;
    let c = h.charCodeAt(0);
    while (METHOD[c] === 1) c = h.charCodeAt(++i);
    if (i === 0 || c !== SP) throw bad('malformed request line');
    this.method = methodOf(h, i);
    const tStart = ++i;
    c = h.charCodeAt(i);
    while (TARGET[c] === 1) c = h.charCodeAt(++i);
    if (c !== SP || i === tStart) throw bad('malformed request target');
    this.target = h.slice(tStart, i);
    // "HTTP/1.0" or "HTTP/1.1", then CRLF.
    const minor = h.charCodeAt(i + 8) - 0x30;
    if (!h.startsWith('HTTP/1.', i + 1) || (minor !== 0 && minor !== 1)) throw bad('unsupported HTTP version');
    if (h.charCodeAt(i + 9) !== CR || h.charCodeAt(i + 10) !== LF) throw bad('malformed request line');
    this.minor = minor;

    const headers: string[] = [];
    if (!fieldLines(h, i + 11, headers)) throw bad('malformed header line');
    let contentLength = -1;
    let te = false;
    let hosts = 0;
    let host: string | undefined, connection: string | undefined, upgrade: string | undefined, expect: string | undefined;
    for (let f = 0; f < headers.length; f += 2) {
      const value = headers[f + 1]!;
      switch (headers[f]) {
        case 'host': hosts++; host = value; break;
        case 'content-length':
          // One line, one number: a repeat, even of the same value, or a list is refused.
          if (contentLength !== -1) throw bad('more than one Content-Length');
          contentLength = decimal(value);
          if (contentLength < 0) throw bad('invalid Content-Length');
          break;
        case 'transfer-encoding':
          // One plain `chunked` and nothing else: a list or an unknown coding may be framed another way elsewhere.
          if (te) throw bad('more than one Transfer-Encoding');
          if (value.length !== 7 || value.toLowerCase() !== 'chunked') throw bad('Transfer-Encoding other than chunked');
          if (minor === 0) throw bad('Transfer-Encoding on HTTP/1.0'); // RFC 9112 §6.1: faulty framing
          te = true;
          break;
        case 'connection': connection = connection === undefined ? value : `${connection}, ${value}`; break;
        case 'upgrade': upgrade = value; break;
        case 'expect': expect = expect === undefined ? value : `${expect}, ${value}`; break;
      }
    }
    if (te && contentLength !== -1) throw bad('both Content-Length and Transfer-Encoding');
    this.headers = headers;
    this.contentLength = contentLength;
    this.chunked = te;
    this.hosts = hosts;
    this.host = host;
    this.connection = connection;
    this.upgrade = upgrade;
    this.expect = expect;
    if (te) this.#decoder().chunked();
    else if (contentLength > 0) this.#decoder().length(contentLength);
    else this.#body?.none(); // -1 (none) and 0 alike: no body
  }

  /** The request is over: its strings are let go (an idle keep-alive connection holds nothing of it). */
  release(): void {
    this.headers = NO_HEADERS;
    this.method = this.target = '';
    this.host = this.connection = this.upgrade = this.expect = undefined;
    if (this.#body !== undefined) this.#body.trailers = null;
  }

  /** Whether the request just parsed has a body still to read. */
  get bodyDone(): boolean {
    return this.#body === undefined || this.#body.done;
  }

  /** Trailer fields after a chunked body (rare: null when none). */
  get trailers(): ResponseHeaders | null {
    return this.#body === undefined ? null : this.#body.trailers;
  }

  /** Decodes body bytes from `off`; returns the offset after them (the rest is the next request). Throws a BadRequestError. */
  body(buf: Buffer, off: number): number {
    return this.#decoder().decode(buf, off);
  }
}
