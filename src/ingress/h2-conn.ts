// An HTTP/2 client connection (prior knowledge, handed over by the
// entrypoint's sniff), on the frame layer of src/h2/. This is the server
// role: request HEADERS are validated (RFC 9113 §8.2-8.3) and become
// H2Exchanges; DATA feeds their bodies; the abuse limits of a client's own
// (nghttp2's figures where it has one) are counted here, in the frame loop
// (rapid reset, header blocks that grow or trickle, header list size,
// concurrent streams), beside those the frame layer keeps for either peer
// (SETTINGS/PING floods against a peer that does not read, floods of frames
// that do no stream's work, empty frames: src/h2/connection.ts), and idle,
// max-age and drain run on the entrypoint's coarse clock.
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { H2Connection, H2Stream, type H2Config } from '../h2/connection.ts';
import {
  CONTINUATION, ENHANCE_YOUR_CALM, HEADERS, NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM, RST_STREAM,
} from '../h2/frames.ts';
import { H2_SESSION_WINDOW, H2_STREAM_WINDOW } from '../h2-settings.ts';
import type { ExchangeOwner, Peer, ResponseHeaders } from './exchange.ts';
import { validHost } from './h1-head.ts';
import { H2Exchange } from './h2.ts';

/** Concurrent streams a client may open (SETTINGS_MAX_CONCURRENT_STREAMS); more are refused. */
const MAX_STREAMS = 1000;
// Rapid reset (CVE-2023-44487): streams the client resets, as nghttp2 limits
// them: a burst of 1,000, then 33 a second; past that the connection ends.
const RESET_BURST = 1000;
const RESETS_PER_MS = 33 / 1000;
/**
 * CONTINUATION frames one header block may take (CVE-2024-27316 class), as
 * nghttp2 counts them: a legitimate block fits a handful of 16 KiB frames.
 */
const MAX_CONTINUATIONS = 8;

// Connection-specific headers make an HTTP/2 request malformed (RFC 9113 §8.2.2).
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);
/** A field name: lowercase token characters only (RFC 9113 §8.2.1, RFC 9110 §5.6.2). */
const NAME = /^[-!#$%&'*+.^_`|~0-9a-z]+$/;
/** What a field value must not hold: it would end the line on an HTTP/1.1 upstream. */
const BAD_VALUE = /[\0\r\n]/;
const METHOD = /^[-!#$%&'*+.^_`|~0-9A-Za-z]+$/;
/** A request target: visible characters only (a space or control character would split an HTTP/1.1 request line). */
const PATH = /^[\x21-\x7e\x80-\xff]+$/;
const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*$/;
const DIGITS = /^\d{1,15}$/;

/**
 * Whether two valid host[:port] values name the same authority under
 * scheme-based normalization (RFC 3986 §6.2.3, as RFC 9113 §8.3.1 asks of a
 * proxy): the host case-insensitively, an empty port or the scheme's
 * default port the same as none.
 */
function sameAuthority(a: string, b: string, scheme: string | undefined): boolean {
  const pa = portAt(a);
  const pb = portAt(b);
  const ha = pa < 0 ? a : a.slice(0, pa);
  const hb = pb < 0 ? b : b.slice(0, pb);
  if (ha.length !== hb.length || ha.toLowerCase() !== hb.toLowerCase()) return false;
  const dflt = scheme === 'http' ? 80 : scheme === 'https' ? 443 : -1;
  return portOf(a, pa, dflt) === portOf(b, pb, dflt);
}

/** Where the ':' before a port is (-1: none); an IPv6 literal's colons are inside its brackets. */
function portAt(v: string): number {
  const c = v.lastIndexOf(':');
  return c < 0 || v.indexOf(']', c) >= 0 ? -1 : c;
}

function portOf(v: string, colon: number, dflt: number): number {
  return colon < 0 || colon === v.length - 1 ? dflt : Number(v.slice(colon + 1));
}

/** What the entrypoint provides to its HTTP/2 connections. */
export interface H2Owner extends ExchangeOwner {
  /** The coarse clock (TICK_MS) idle, header-block and max-age deadlines run on. */
  readonly tick: number;
  /** A validated request, to route; `tooLarge` when its header list is over the limit (431). */
  h2Request(ex: H2Exchange, tooLarge: boolean): void;
  /** The connection is gone. */
  h2Closed(conn: H2ServerConnection): void;
}

export interface H2Limits {
  /** SETTINGS_MAX_HEADER_LIST_SIZE; a larger request header list is answered 431. */
  readonly maxHeaderBytes: number;
  /** A connection without streams for this many ticks is sent GOAWAY and closed. */
  readonly idleTicks: number;
  /** A header block (HEADERS and its CONTINUATIONs) must be complete within this many ticks. */
  readonly headersTicks: number;
}

/** A client stream and its exchange. */
export class ServerStream extends H2Stream {
  ex: H2Exchange | null = null;
  /** The request's header list is over maxHeaderBytes. */
  tooLarge = false;
}

/** The frame layer's settings for client connections, per maxHeaderBytes (one config in practice). */
const configs = new Map<number, H2Config>();
function configFor(maxHeaderBytes: number): H2Config {
  let c = configs.get(maxHeaderBytes);
  if (c === undefined) {
    c = {
      server: true,
      streamWindow: H2_STREAM_WINDOW,
      connectionWindow: H2_SESSION_WINDOW,
      maxConcurrentStreams: MAX_STREAMS,
      maxHeaderListSize: maxHeaderBytes,
      // A block past this is no request the limit would let through (431 is for lists up to here).
      maxHeaderBlock: Math.max(64 * 1024, 2 * maxHeaderBytes),
    };
    configs.set(maxHeaderBytes, c);
  }
  return c;
}

export class H2ServerConnection extends H2Connection<ServerStream> {
  readonly #owner: H2Owner;
  readonly #peer: Peer;
  readonly #limits: H2Limits;
  /** Tick at which the client is asked to reconnect (max connection age; 0: never), and the grace after it. */
  expiresAt = 0;
  graceTicks = 0;
  /** Tick at which what is left is cut, once GOAWAY was sent for max age (0: not yet). */
  #cutAt = 0;
  #lastActive: number;
  /** Tick a header block was first seen open at by the sweep (-1: none open). */
  #blockSince = -1;
  #resetTokens = RESET_BURST;
  #resetClock = performance.now();
  #continuations = 0;
  /**
   * Requests read from the current socket chunk, routed once all of it is
   * read: a stream opened and reset in one go (rapid reset) never goes upstream.
   */
  readonly #fresh: H2Exchange[] = [];
  /** Exchanges whose writer waits for the stream or the socket to take more. */
  readonly #waiting = new Set<H2Exchange>();

  /** The socket's first bytes were put back into it by the sniff: they are read once it resumes. */
  constructor(socket: Socket, owner: H2Owner, peer: Peer, limits: H2Limits) {
    super(socket, configFor(limits.maxHeaderBytes));
    this.#owner = owner;
    this.#peer = peer;
    this.#limits = limits;
    this.#lastActive = owner.tick;
  }

  readonly #route = (): void => {
    const fresh = this.#fresh;
    for (let i = 0; i < fresh.length; i++) {
      const ex = fresh[i]!;
      if (ex.stream.closed) continue;
      ex.route();
      this.#owner.h2Request(ex, ex.stream.tooLarge);
    }
    fresh.length = 0;
  };

  // --- frames in -------------------------------------------------------------------

  protected override frameIn(type: number): void {
    if (type === RST_STREAM) this.#spendReset();
    else if (type === HEADERS) this.#continuations = 0;
    else if (type === CONTINUATION && ++this.#continuations > MAX_CONTINUATIONS) this.fail(ENHANCE_YOUR_CALM);
  }

  protected onHeaders(stream: ServerStream | null, sid: number, h: string[], count: number, end: boolean): void {
    if (stream !== null) {
      this.#trailers(stream, h, count);
      return;
    }
    this.#lastActive = this.#owner.tick;
    if (this.streams.size >= MAX_STREAMS) {
      this.#refuse(sid, REFUSED_STREAM);
      return;
    }
    // Validate (RFC 9113 §8.2, §8.3) and copy the regular fields out of the reused list in one pass.
    let method: string | undefined, scheme: string | undefined, path: string | undefined, authority: string | undefined;
    let host: string | undefined;
    let contentLength = -1;
    let regular = false;
    // Over the limit the request is answered 431 (gRPC: grpc-status 8) from its pseudo-headers
    // and content-type alone: a small HPACK block naming a large table entry again and again
    // is not validated or copied.
    let size = 0;
    for (let i = 0; i < count; i += 2) size += h[i]!.length + h[i + 1]!.length + 32;
    const tooLarge = size > this.#limits.maxHeaderBytes;
    const fields: string[] = [];
    for (let i = 0; i < count; i += 2) {
      const name = h[i]!;
      const value = h[i + 1]!;
      if (name.charCodeAt(0) === 58 /* : */) {
        if (regular) { this.#refuse(sid, PROTOCOL_ERROR); return; }
        switch (name) {
          case ':method': if (method !== undefined || !METHOD.test(value)) { this.#refuse(sid, PROTOCOL_ERROR); return; } method = value; break;
          case ':scheme': if (scheme !== undefined || !SCHEME.test(value)) { this.#refuse(sid, PROTOCOL_ERROR); return; } scheme = value; break;
          // Origin-form or '*' only, as from HTTP/1.1 clients: an absolute-form :path would name another host upstream.
          case ':path': if (path !== undefined || !PATH.test(value) || (value.charCodeAt(0) !== 47 /* / */ && value !== '*')) { this.#refuse(sid, PROTOCOL_ERROR); return; } path = value; break;
          case ':authority': if (authority !== undefined || !validHost(value)) { this.#refuse(sid, PROTOCOL_ERROR); return; } authority = value; break;
          default: this.#refuse(sid, PROTOCOL_ERROR); return;
        }
        continue;
      }
      regular = true;
      if (tooLarge) {
        // Only content-type still matters: a gRPC request gets its answer as grpc-status (8), not 431.
        if (name === 'content-type' && fields.length === 0) fields.push(name, value);
        continue;
      }
      if (!NAME.test(name) || BAD_VALUE.test(value) || CONNECTION_SPECIFIC.has(name) || (name === 'te' && value !== 'trailers')) {
        this.#refuse(sid, PROTOCOL_ERROR);
        return;
      }
      if (name === 'content-length') {
        if (!DIGITS.test(value) || (contentLength >= 0 && Number(value) !== contentLength)) { this.#refuse(sid, PROTOCOL_ERROR); return; }
        contentLength = Number(value);
      } else if (name === 'host') {
        // A Host naming another entity than :authority (or than an earlier Host) is malformed
        // (RFC 9113 §8.3.1): the backend, or a cache before it, could act on either.
        const first = authority ?? host;
        if (!validHost(value) || (first !== undefined && value !== first && !sameAuthority(first, value, scheme))) {
          this.#refuse(sid, PROTOCOL_ERROR);
          return;
        }
        host ??= value;
      }
      fields.push(name, value);
    }
    // CONNECT (RFC 9113 §8.5) is not proxied: with :scheme and :path it is malformed, without them too here.
    if (method === undefined || scheme === undefined || path === undefined || method === 'CONNECT' || (end && contentLength > 0)) {
      this.#refuse(sid, PROTOCOL_ERROR);
      return;
    }
    const st = new ServerStream(sid);
    st.contentLength = contentLength;
    st.tooLarge = tooLarge;
    this.register(st);
    const ex = new H2Exchange(this, st, this.#owner, this.#peer, {
      method, scheme, path, authority: authority ?? host, contentLength, hasBody: !end,
    }, fields);
    st.ex = ex;
    if (this.#fresh.push(ex) === 1) process.nextTick(this.#route);
  }

  /** A new stream refused with RST_STREAM; from a client that reads nothing, the answers count (connection.ts). */
  #refuse(sid: number, code: number): void {
    this.rst(sid, code);
    if (this.needDrain) this.unread();
  }

  /** A header block on an open stream: the request's trailers (the frame layer checked they end it, at its content-length), without pseudo-headers. */
  #trailers(st: ServerStream, h: string[], count: number): void {
    let size = 0;
    for (let i = 0; i < count; i += 2) size += h[i]!.length + h[i + 1]!.length + 32;
    // SETTINGS_MAX_HEADER_LIST_SIZE holds for trailers too; the request is under way, so no 431: the stream ends.
    if (size > this.#limits.maxHeaderBytes) { this.reset(st, ENHANCE_YOUR_CALM); return; }
    let trailers: ResponseHeaders | null = null;
    for (let i = 0; i < count; i += 2) {
      const name = h[i]!;
      if (!NAME.test(name) || BAD_VALUE.test(h[i + 1]!)) { this.reset(st, PROTOCOL_ERROR); return; }
      (trailers ??= {})[name] = h[i + 1];
    }
    st.ex!.requestEnded(trailers);
  }

  protected onData(st: ServerStream, buf: Buffer, s: number, e: number, end: boolean): void {
    const ex = st.ex!;
    if (e > s) ex.data(buf.subarray(s, e));
    if (end) ex.requestEnded(null);
  }

  /** One reset from the rapid-reset budget; past it the connection ends. */
  #spendReset(): void {
    const now = performance.now();
    this.#resetTokens = Math.min(RESET_BURST, this.#resetTokens + (now - this.#resetClock) * RESETS_PER_MS) - 1;
    this.#resetClock = now;
    if (this.#resetTokens < 0) this.fail(ENHANCE_YOUR_CALM);
  }

  protected onReset(_st: ServerStream, _code: number, byPeer: boolean): void {
    // onStreamClosed has ended the exchange. A stream error the client provoked
    // (a WINDOW_UPDATE of 0, DATA past its window...) cancels the request upstream
    // just like its own RST_STREAM would (MadeYouReset, CVE-2025-8671): it costs the same.
    if (!byPeer) this.#spendReset();
  }

  protected override onStreamClosed(st: ServerStream): void {
    this.#lastActive = this.#owner.tick;
    this.#waiting.delete(st.ex!);
    // A request not complete was cut off (reset, by either side); a complete one may wait unread in its body.
    st.ex!.streamClosed(!st.remoteEnded);
    this.#maybeGone();
  }

  protected onGoaway(_lastId: number, _code: number): void {
    // The client opens no more streams; those open finish.
    this.#maybeGone();
  }

  protected onClose(): void {
    for (const st of this.streams.values()) st.ex!.streamClosed(true);
    this.#waiting.clear();
    this.#owner.h2Closed(this);
  }

  /** A connection error; the socket is destroyed once the GOAWAY is out, so a peer still flooding it sees the end. */
  override fail(code: number): void {
    if (this.closed) return;
    super.fail(code);
    const socket = this.socket;
    if (socket.writableFinished) socket.destroy();
    else socket.once('finish', () => socket.destroy());
  }

  /**
   * A response complete (and out) while its request is still coming: the
   * request is stopped with RST_STREAM NO_ERROR (RFC 9113 §8.1).
   */
  #settle(st: ServerStream): void {
    if (st.localEnded && st.pending === null && !st.remoteEnded) this.reset(st, NO_ERROR);
  }

  // --- frames out -----------------------------------------------------------------

  protected onWritable(st: ServerStream): void {
    if (st.localEnded) {
      this.#settle(st);
      return;
    }
    const ex = st.ex!;
    if (!this.needDrain && this.#waiting.delete(ex)) ex.drained();
  }

  protected override onSocketDrain(): void {
    for (const ex of this.#waiting) {
      if (ex.stream.pending !== null) continue;
      this.#waiting.delete(ex);
      ex.drained();
    }
  }

  /**
   * The client leaves more response bytes waiting for its windows than its
   * budget (h2.ts): the stream that added to them is reset, which frees what it
   * holds and cancels it upstream; it counts as a reset the client caused.
   */
  overBudget(st: ServerStream): void {
    this.reset(st, ENHANCE_YOUR_CALM);
    this.#spendReset();
  }

  /** An exchange's writer waits until the stream and the socket take more. */
  waitDrain(ex: H2Exchange): void {
    this.#waiting.add(ex);
  }

  /** The response's last frame was queued: the exchange ends once it is out (and the request is in). */
  responseDone(st: ServerStream): void {
    this.#settle(st);
  }

  // --- lifecycle ---------------------------------------------------------------------

  /** Asks the client to go (GOAWAY NO_ERROR): streams open finish, then the connection closes. */
  goAway(): void {
    if (this.closed || this.goingAway) return;
    this.goaway(NO_ERROR);
    this.#maybeGone();
  }

  #maybeGone(): void {
    if ((this.goingAway || this.peerGoingAway) && this.streams.size === 0) this.close();
  }

  /** The coarse clock ticked: idle connections, trickled header blocks and max age. */
  sweep(now: number): void {
    if (this.closed) return;
    if (!this.headerBlockOpen) this.#blockSince = -1;
    else if (this.#blockSince < 0) this.#blockSince = now;
    else if (now - this.#blockSince >= this.#limits.headersTicks) {
      this.fail(ENHANCE_YOUR_CALM);
      return;
    }
    if (this.streams.size === 0 && this.#blockSince < 0 && now > this.#lastActive) {
      if (now - this.#lastActive >= this.#limits.idleTicks) {
        this.fail(NO_ERROR);
        return;
      }
      // Idle for a tick at least: the output slab goes until the next write (idle connections cost their state only).
      this.trim();
    }
    if (this.#cutAt !== 0) {
      if (now >= this.#cutAt) this.destroy();
    } else if (this.expiresAt !== 0 && now >= this.expiresAt) {
      // Long-lived gRPC clients reach replicas an HPA added only if asked to
      // reconnect: GOAWAY at max age, then what is left is cut after the grace.
      this.#cutAt = now + this.graceTicks;
      this.goAway();
    }
  }
}
