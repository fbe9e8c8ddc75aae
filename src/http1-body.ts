// The body of an HTTP/1.1 message (RFC 9112 §6, §7), decoded for both
// hand-written parsers: requests from clients (ingress/h1-parser.ts) and
// responses from backends (upstream/http1-parser.ts). One decoder for
// Content-Length, chunked and close-delimited bodies; where the two sides
// differ (the request side is the stricter one: a backend is trusted a little
// more than a client) the difference is a field of BodyRules.
import { CR, HEAD_END, HEX, LF, fieldLines, latin1 } from './http1-syntax.ts';

/** Receives the decoded body. */
export interface BodySink {
  /** Body bytes: a view into the buffer given to decode(), valid until the call returns. */
  onBody(chunk: Buffer): void;
  /** The body is complete (a request's trailers, if any, are in the decoder's `trailers`). */
  onBodyEnd(): void;
}

/** How strict a side is; one object per side (or per parser), never per message. */
export interface BodyRules {
  /**
   * Whether SP/HTAB may end a chunk size (the rest of the line is then skipped
   * like an extension). Refused on requests: whitespace there is how size
   * lines get read two ways by two parsers.
   */
  readonly spaceAfterSize: boolean;
  /** Longest chunk extension, in bytes (extensions are skipped, never passed on). */
  readonly maxExtensionBytes: number;
  /**
   * Whether trailer fields are parsed into `trailers` (checked as field lines;
   * the section at most `maxTrailerBytes`), or skipped (only bare CR/LF
   * refused; each line at most `maxTrailerBytes`: nothing of them is held).
   */
  readonly keepTrailers: boolean;
  readonly maxTrailerBytes: number;
  /** The error to throw for a body that must be refused. */
  readonly error: (reason: string) => Error;
}

// States.
const LENGTH = 0;
const UNTIL_CLOSE = 1;
const CHUNK_SIZE = 2;
const CHUNK_EXT = 3;
const CHUNK_SIZE_LF = 4;
const CHUNK_DATA = 5;
const CHUNK_DATA_CR = 6;
const CHUNK_DATA_LF = 7;
const TRAILER = 8;
const DONE = 9;

/** One per parser (connection), restarted for each message with none(), length(), chunked() or untilClose(). */
export class BodyDecoder {
  readonly #sink: BodySink;
  readonly #rules: BodyRules;
  #state = DONE;
  /** Bytes left of the body (Content-Length) or of the chunk; while reading a size, the size so far. */
  #remaining = 0;
  #sizeDigits = 0;
  #extBytes = 0;
  /** Kept trailers: the section so far, when it arrives in pieces. */
  #trailer: Buffer[] | null = null;
  /** Kept trailers: bytes of the section so far; skipped ones: bytes of the current line. */
  #trailerBytes = 0;
  #sawCR = false;
  /** Trailer fields after a chunked body, when kept (rare: null when none). */
  trailers: Record<string, string> | null = null;

  constructor(sink: BodySink, rules: BodyRules) {
    this.#sink = sink;
    this.#rules = rules;
  }

  /** No body (the sink is not called). */
  none(): void {
    this.#state = DONE;
    this.trailers = null;
  }

  /** A Content-Length body; 0 is none. */
  length(n: number): void {
    this.trailers = null;
    this.#state = n > 0 ? LENGTH : DONE;
    this.#remaining = n;
  }

  chunked(): void {
    this.trailers = null;
    this.#state = CHUNK_SIZE;
    this.#remaining = 0;
    this.#sizeDigits = 0;
    this.#extBytes = 0;
  }

  /** A body that ends when the connection does (responses only). */
  untilClose(): void {
    this.trailers = null;
    this.#state = UNTIL_CLOSE;
  }

  get done(): boolean {
    return this.#state === DONE;
  }

  /** The connection closed. Returns true if that completes the body (a close-delimited one). */
  eof(): boolean {
    if (this.#state !== UNTIL_CLOSE) return this.#state === DONE;
    this.#state = DONE;
    this.#sink.onBodyEnd();
    return true;
  }

  /** Decodes body bytes from `off`; returns the offset after them (the rest is the next message). Throws rules.error(). */
  decode(buf: Buffer, off: number): number {
    while (off < buf.length) {
      switch (this.#state) {
        case LENGTH:
        case CHUNK_DATA: {
          const n = Math.min(this.#remaining, buf.length - off);
          this.#remaining -= n;
          const chunk = off === 0 && n === buf.length ? buf : buf.subarray(off, off + n);
          off += n;
          if (this.#remaining === 0) {
            if (this.#state === LENGTH) {
              this.#state = DONE;
              this.#sink.onBody(chunk);
              this.#sink.onBodyEnd();
              return off;
            }
            this.#state = CHUNK_DATA_CR;
          }
          this.#sink.onBody(chunk);
          break;
        }
        case UNTIL_CLOSE:
          this.#sink.onBody(off === 0 ? buf : buf.subarray(off));
          return buf.length;
        case DONE:
          return off;
        case TRAILER:
          return this.#rules.keepTrailers ? this.#keptTrailers(buf, off) : this.#skippedTrailers(buf, off);
        default:
          off = this.#chunkFraming(buf, off);
      }
    }
    return off;
  }

  /** The bytes around chunk data: size line, extensions, CRLFs. */
  #chunkFraming(buf: Buffer, off: number): number {
    while (off < buf.length) {
      const c = buf[off]!;
      switch (this.#state) {
        case CHUNK_SIZE: {
          const h = HEX[c]!;
          if (h >= 0) {
            if (++this.#sizeDigits > 12) throw this.#rules.error('chunk size too large');
            this.#remaining = this.#remaining * 16 + h;
          } else if (this.#sizeDigits === 0) {
            throw this.#rules.error('malformed chunk size');
          } else if (c === CR) {
            this.#state = CHUNK_SIZE_LF;
          } else if (c === 0x3b /* ';' */ || ((c === 0x20 || c === 0x09) && this.#rules.spaceAfterSize)) {
            this.#state = CHUNK_EXT;
          } else {
            throw this.#rules.error('malformed chunk size');
          }
          break;
        }
        case CHUNK_EXT:
          // Only a CRLF ends the line; a bare LF is not one.
          if (c === CR) this.#state = CHUNK_SIZE_LF;
          else if (c === LF || (c < 0x20 && c !== 0x09) || c === 0x7f) throw this.#rules.error('malformed chunk extension');
          else if (++this.#extBytes > this.#rules.maxExtensionBytes) throw this.#rules.error('chunk extension too long');
          break;
        case CHUNK_SIZE_LF:
          if (c !== LF) throw this.#rules.error('bare CR after a chunk size');
          this.#extBytes = 0;
          if (this.#remaining === 0) {
            this.#state = TRAILER;
            this.#trailer = null;
            this.#trailerBytes = 0;
            this.#sawCR = false;
          } else {
            this.#state = CHUNK_DATA;
          }
          return off + 1;
        case CHUNK_DATA_CR:
          if (c !== CR) throw this.#rules.error('chunk data longer than its size');
          this.#state = CHUNK_DATA_LF;
          break;
        case CHUNK_DATA_LF:
          if (c !== LF) throw this.#rules.error('bare CR after chunk data');
          this.#state = CHUNK_SIZE;
          this.#sizeDigits = 0;
          break;
        default:
          return off;
      }
      off++;
    }
    return off;
  }

  /** The trailer section (RFC 9112 §7.1.2), kept: field lines, then an empty line. Usually just the empty line. */
  #keptTrailers(buf: Buffer, off: number): number {
    // The common case: no trailers, CRLF right here.
    if (this.#trailer === null && buf[off] === CR && buf[off + 1] === LF) {
      this.#finish(null);
      return off + 2;
    }
    const part = buf.subarray(off);
    (this.#trailer ??= []).push(Buffer.from(part));
    this.#trailerBytes += part.length;
    const all = this.#trailer.length === 1 ? this.#trailer[0]! : Buffer.concat(this.#trailer);
    let end: number;
    if (all[0] === CR && all[1] === LF) end = -2; // an empty trailer section that arrived split
    else {
      end = all.indexOf(HEAD_END);
      if (end < 0) {
        if (this.#trailerBytes > this.#rules.maxTrailerBytes) throw this.#rules.error('trailers too large');
        for (let lf = all.indexOf(LF); lf >= 0; lf = all.indexOf(LF, lf + 1)) {
          if (lf === 0 || all[lf - 1] !== CR) throw this.#rules.error('bare LF in trailers');
        }
        this.#trailer = [all];
        return buf.length;
      }
    }
    this.#finish(end === -2 ? null : this.#parseTrailers(latin1(all, 0, end + 2)));
    // What followed the section in this buffer is the next message.
    const used = end + 4;
    return buf.length - (all.length - used);
  }

  #parseTrailers(h: string): Record<string, string> {
    const fields: string[] = [];
    if (!fieldLines(h, 0, fields)) throw this.#rules.error('malformed trailer line');
    const out: Record<string, string> = {};
    for (let i = 0; i < fields.length; i += 2) {
      const name = fields[i]!;
      // Framing and routing fields have no meaning in trailers (RFC 9110 §6.5.1).
      if (name === 'content-length' || name === 'transfer-encoding' || name === 'host' || name === 'trailer') continue;
      out[name] = fields[i + 1]!;
    }
    return out;
  }

  /** The trailer section, skipped: only the empty line that ends it matters. */
  #skippedTrailers(buf: Buffer, off: number): number {
    for (; off < buf.length; off++) {
      const c = buf[off]!;
      if (c === CR) {
        if (this.#sawCR) throw this.#rules.error('bare CR in trailers');
        this.#sawCR = true;
      } else if (c === LF) {
        if (!this.#sawCR) throw this.#rules.error('bare LF in trailers');
        this.#sawCR = false;
        if (this.#trailerBytes === 0) {
          this.#finish(null);
          return off + 1;
        }
        this.#trailerBytes = 0;
      } else {
        if (this.#sawCR) throw this.#rules.error('bare CR in trailers');
        if (++this.#trailerBytes > this.#rules.maxTrailerBytes) throw this.#rules.error('trailers too large');
      }
    }
    return off;
  }

  #finish(trailers: Record<string, string> | null): void {
    this.#trailer = null;
    this.trailers = trailers;
    this.#state = DONE;
    this.#sink.onBodyEnd();
  }
}
