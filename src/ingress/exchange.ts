// An Exchange is one client request and its response, whatever the client
// spoke (HTTP/1.1 or HTTP/2). Upstream forwarders see only this class, so
// each upstream protocol is written once for every kind of client.
import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { UpstreamError, type ProxyError } from '../errors.ts';
import type { BackendMetrics } from '../observe/metrics.ts';
import type { RequestBody } from './body.ts';
import { appendForwardedFor } from './hygiene.ts';
import { ExchangeSignal } from './signal.ts';

export type ResponseHeaders = Record<string, string | string[] | undefined>;

/** What the entrypoint provides to, and learns from, its exchanges. */
export interface ExchangeOwner {
  /** Header carrying the request id (propagated, or generated when absent). */
  readonly requestIdHeader: string;
  /** One exchange is over; `h2` when it was an HTTP/2 stream. */
  exchangeDone(h2: boolean): void;
}

/** The client connection's address, and whether it is a trusted proxy whose X-Forwarded-* may be kept. */
export interface Peer {
  readonly ip: string;
  readonly trusted: boolean;
}

/** What an HTTP/1.1 Upgrade request offers the upstream side. */
export interface Upgrade {
  /** The protocol asked for (e.g. "websocket"). */
  readonly protocol: string;
  /** The upstream switched protocols (101): passes its head on and joins the two sockets. */
  upgraded(status: number, headers: ResponseHeaders, socket: Duplex): void;
}

export function textBody(err: ProxyError): string {
  return `${err.httpStatus} ${err.code}: ${err.message}\n`;
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

const EMPTY = Buffer.alloc(0);

// Generated request ids: UUID v4 in form (8-4-4-4-12 hex, version 4, variant
// 10xx), but only the first 28 characters are random, drawn afresh every
// ~800 million ids; the last 8 are a counter (kept in V8's small-integer
// range, so counting allocates nothing). randomUUID() per request built its
// string from ~20 pieces, ~0.5 KB of garbage a request; this is two short
// strings. Unique within the process by the counter, across processes by 90
// random bits. A request id is not a secret (clients may send their own).
// From ID_START on, toString(16) has 8 digits; ID_END - 1 is the largest small integer.
const ID_START = 0x1000_0000;
const ID_END = 0x4000_0000;
let idPrefix = '';
let idCount = ID_END;
function newRequestId(): string {
  if (idCount === ID_END) {
    idPrefix = randomUUID().slice(0, 28);
    idCount = ID_START;
  }
  return idPrefix + (idCount++).toString(16);
}

const DEADLINE = new UpstreamError('timeout', false, new Error('the route\'s overall timeout passed'));

/**
 * One client request and its response, whatever the client spoke. What every
 * exchange shares is here (request facts, body, lifecycle, forwarding
 * headers); each client protocol answers in its own subclass (h1.ts,
 * upgrade.ts, h2.ts). Upstreams are written against this class alone.
 */
export abstract class Exchange {
  readonly method: string;
  readonly path: string;
  /** Raw Host / :authority, as the client sent it. */
  readonly authority: string | undefined;
  readonly grpc: boolean;
  /** Value of x-switchyard-backend, if any. */
  readonly override: string | undefined;
  readonly hasBody: boolean;
  /** The declared Content-Length, -1 when none. */
  readonly contentLength: number;
  /** Set for an HTTP/1.1 Upgrade request (WebSocket). */
  upgrade: Upgrade | undefined = undefined;
  /** True once the response status was sent to the client. */
  responded = false;
  /** True once the proxy gave its own answer (an error): later upstream outcomes are moot. */
  settled = false;
  clientGone = false;
  /** Fires when the client goes away or the proxy has answered (settled): upstream work stops. */
  readonly signal = new ExchangeSignal();
  /** Metrics the outcome is counted under; set once the route/backend is known. */
  metrics!: BackendMetrics;
  protected readonly start = performance.now();
  protected readonly owner: ExchangeOwner;
  readonly #requestId: string;
  // X-Forwarded-For/-Proto/-Host as sent upstream.
  readonly #xff: string;
  readonly #xfProto: string;
  readonly #xfHost: string | undefined;
  #timer: NodeJS.Timeout | undefined;

  /** `xff`, `xfProto`, `xfHost`: the client's own X-Forwarded-For (repeats joined), -Proto and -Host, if any. */
  constructor(owner: ExchangeOwner, peer: Peer, f: {
    method: string; path: string; authority: string | undefined; contentType: string | undefined;
    override: string | undefined; hasBody: boolean; contentLength: number; requestId: string | undefined;
    xff: string | undefined; xfProto: string | undefined; xfHost: string | undefined;
  }) {
    this.owner = owner;
    // From a trusted proxy the client's values are kept (XFF appended to);
    // from anyone else they are replaced, so a client cannot forge its address.
    if (peer.trusted) {
      this.#xff = appendForwardedFor(f.xff, peer.ip);
      this.#xfProto = f.xfProto ?? 'http';
      this.#xfHost = f.xfHost ?? f.authority;
    } else {
      this.#xff = peer.ip;
      this.#xfProto = 'http';
      this.#xfHost = f.authority;
    }
    this.method = f.method;
    this.path = f.path;
    this.authority = f.authority;
    this.grpc = f.contentType !== undefined && f.contentType.startsWith('application/grpc');
    this.override = f.override;
    this.hasBody = f.hasBody;
    this.contentLength = f.contentLength;
    this.#requestId = f.requestId ?? newRequestId();
  }

  /** A request header's value by lowercase name (the first, if repeated). */
  abstract header(name: string): string | undefined;
  /** Trailers the client sent after its body, if any (read once the body has ended). */
  abstract requestTrailers(): ResponseHeaders | null;
  /** The request headers for an HTTP/1.1 upstream, flat [name, value, ...]. */
  abstract headersForH1(hostHeader: string | undefined): string[];
  /**
   * The request headers for an HTTP/2 upstream, flat: ':method', ':scheme',
   * ':authority' (`hostHeader`, else the client's), ':path' in that order,
   * then [name, value, ...] lowercase, without connection-specific fields,
   * X-Forwarded-* set; a field the client repeated stays repeated.
   */
  abstract headersForH2(hostHeader: string | undefined): string[];
  /** Starts the response; `trailersFollow` when the upstream may send trailers (HTTP/2). */
  abstract respond(status: number, headers: ResponseHeaders, trailersFollow: boolean): void;
  /** A complete response without body (HTTP/2: one HEADERS frame with END_STREAM, as gRPC's Trailers-Only). */
  abstract respondOnly(status: number, headers: ResponseHeaders): void;
  abstract write(chunk: Buffer): boolean;
  /**
   * Whether chunks given to write() may still be referenced (queued, not yet
   * in the kernel): a writer that reuses its buffers (an HTTP/1.1 upstream's
   * read buffer) must then take a fresh one. True unless a subclass knows better.
   */
  holdsChunks(): boolean {
    return true;
  }
  abstract onceDrain(fn: () => void): void;
  abstract end(trailers: ResponseHeaders | null): void;

  /** The request body as the client connection feeds it; null when there is none (set when hasBody). */
  protected abstract get requestBody(): RequestBody | null;
  /** Mid-response, when no status can be sent any more: cut the response. */
  protected abstract cut(err: ProxyError): void;
  /** No response yet: answer with the error's status. */
  protected abstract answer(err: ProxyError): void;

  /** Whether the client side is closed already, so there is nothing to answer on. */
  protected isClosed(): boolean {
    return false;
  }

  /** Answers with the error's status (gRPC: Trailers-Only) or, if the response began, cuts it. Once; then `signal` fires. */
  fail(err: ProxyError): void {
    if (this.settled || this.clientGone || this.isClosed()) return;
    this.settled = true;
    if (this.responded) this.cut(err);
    else this.answer(err);
    this.signal.abort();
  }

  /** The request body, for an upstream attempt to read (RequestBody.read); null when there is none. */
  body(): RequestBody | null {
    return this.requestBody;
  }

  /** The whole request body once it was read and kept (up to 64 KiB; empty without a body); null when it was not. */
  keptBody(): Buffer | null {
    const body = this.requestBody;
    return body === null ? EMPTY : body.kept();
  }

  #done: (() => void) | undefined;
  /** Runs `fn` once the exchange is over (after it was counted): a mirror's copy goes out then. */
  whenDone(fn: () => void): void {
    this.#done = fn;
  }

  /** False once request bytes were read that could not be kept for a retry. */
  get bodyReplayable(): boolean {
    return this.requestBody?.replayable ?? true;
  }

  /** Cuts the body past `max` bytes and answers `err` (413). */
  limitBody(max: number, err: ProxyError): void {
    const body = this.requestBody;
    if (body === null) return;
    body.limit = max;
    body.onLimit = () => this.fail(err);
  }

  /** Answers 504 (or cuts the response) if the exchange is not over in `ms`. */
  deadline(ms: number, exemptEventStreams = false): void {
    this.#sseExempt = exemptEventStreams;
    this.#timer = setTimeout(() => this.fail(DEADLINE), ms);
  }

  #sseExempt = false;
  /** A response head is going out: an event stream is a stream, exempt from the overall deadline unless asked. */
  protected responseHead(headers: ResponseHeaders): void {
    const ct = headers['content-type'];
    if (this.#sseExempt && typeof ct === 'string' && ct.startsWith('text/event-stream')) clearTimeout(this.#timer);
  }

  /** A cookie's value by name. */
  cookie(name: string): string | undefined {
    return cookieValue(this.header('cookie'), name);
  }

  /** Common end of every exchange: cancel upstream if the client left early, count, tell the owner. */
  protected closed(finished: boolean, code: number, h2: boolean): void {
    clearTimeout(this.#timer);
    if (!finished) {
      this.clientGone = true;
      this.signal.abort();
    }
    this.metrics.done(this.clientGone ? 499 : code, (performance.now() - this.start) / 1000, this.grpc);
    this.owner.exchangeDone(h2);
    if (this.#done !== undefined) this.#done();
  }

  /** Host (`hostHeader`, else the client's) and X-Forwarded-*, appended to a flat HTTP/1.1 header list. */
  protected pushForwarded(h: string[], hostHeader: string | undefined): void {
    h.push('host', hostHeader ?? this.authority ?? '');
    this.pushXForwarded(h);
  }

  /** X-Forwarded-* appended to a flat header list. */
  protected pushXForwarded(h: string[]): void {
    h.push('x-forwarded-for', this.#xff, 'x-forwarded-proto', this.#xfProto);
    if (this.#xfHost !== undefined) h.push('x-forwarded-host', this.#xfHost);
  }

  protected get requestId(): string {
    return this.#requestId;
  }
}
