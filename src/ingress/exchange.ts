// An Exchange is one client request and its response, whatever the client
// spoke (HTTP/1.1 or HTTP/2). Upstream forwarders see only this interface, so
// each upstream protocol is written once for both kinds of client.
import { randomUUID } from 'node:crypto';
import { STATUS_CODES, type IncomingMessage, type ServerResponse, type OutgoingHttpHeaders } from 'node:http';
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { Readable, type Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { UpstreamError, type ProxyError } from '../errors.ts';
import type { BackendMetrics } from '../observe/metrics.ts';

export type ResponseHeaders = Record<string, string | string[] | undefined>;

/** What the entrypoint provides to, and learns from, its exchanges. */
export interface ExchangeOwner {
  /** Header carrying the request id (propagated, or generated when absent). */
  readonly requestIdHeader: string;
  /** One exchange is over; `h2` when it was an HTTP/2 stream. */
  exchangeDone(h2: boolean): void;
  /** Whether a response on this HTTP/1.1 connection should close it (draining, or past max age). */
  shouldClose(socket: Duplex): boolean;
}

/** The client connection's address, and whether it is a trusted proxy whose X-Forwarded-* may be kept. */
export interface Peer {
  readonly ip: string;
  readonly trusted: boolean;
}

export interface Exchange {
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
  /** The protocol of an HTTP/1.1 Upgrade request (e.g. "websocket"). */
  readonly upgrade: string | undefined;
  /** False once request bytes were read that could not be kept for a retry. */
  readonly bodyReplayable: boolean;
  /** True once the response status was sent to the client. */
  readonly responded: boolean;
  /** True once the proxy gave its own answer (an error): later upstream outcomes are moot. */
  readonly settled: boolean;
  readonly clientGone: boolean;
  /** Metrics the outcome is counted under; set once the route/backend is known. */
  metrics: BackendMetrics;
  /** Cancels the upstream call in progress; called when the client goes away or the proxy gives up. */
  onClientGone: (() => void) | undefined;

  /** A request header's value by lowercase name (the first, if repeated). */
  header(name: string): string | undefined;
  /** A cookie's value by name. */
  cookie(name: string): string | undefined;
  /** A fresh body stream for one upstream attempt; it may be destroyed by its consumer. */
  body(): Readable | null;
  /** Cuts the body past `max` bytes and answers `err` (413). */
  limitBody(max: number, err: ProxyError): void;
  /** Answers 504 (or cuts the response) if the exchange is not over in `ms`. */
  deadline(ms: number, exemptEventStreams?: boolean): void;
  headersForH1(hostHeader: string | undefined): string[];
  headersForH2(hostHeader: string | undefined): OutgoingHttpHeaders;
  /** Starts the response; `trailersFollow` when the upstream may send trailers (HTTP/2). */
  respond(status: number, headers: ResponseHeaders, trailersFollow: boolean): void;
  /** A complete response without body (HTTP/2: one HEADERS frame with END_STREAM, as gRPC's Trailers-Only). */
  respondOnly(status: number, headers: ResponseHeaders): void;
  /** Trailers the client sent after its body, if any (read once the body has ended). */
  requestTrailers(): ResponseHeaders | null;
  write(chunk: Buffer): boolean;
  onceDrain(fn: () => void): void;
  end(trailers: ResponseHeaders | null): void;
  /** Answers with the error's status (gRPC: Trailers-Only) or, if the response began, cuts it. Once. */
  fail(err: ProxyError): void;
}

// Hop-by-hop and HTTP/2 connection-specific request headers (RFC 9110 §7.6.1,
// RFC 9113 §8.2.2), plus ones the proxy consumes or sets itself.
const DROP_REQUEST = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'http2-settings', 'host', 'expect', 'x-switchyard-backend',
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host',
]);
const DROP_RESPONSE = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'trailer', 'upgrade'];
// Tokens of a Connection header that name no other header.
const PLAIN_CONNECTION_TOKENS = new Set(['close', 'keep-alive', 'upgrade', 'te', 'http2-settings']);

/** Names listed in a Connection header (beyond the usual tokens), to be dropped too. */
function connectionNamed(value: string | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  let named: Set<string> | undefined;
  for (const t of value.split(',')) {
    const token = t.trim().toLowerCase();
    if (token !== '' && !PLAIN_CONNECTION_TOKENS.has(token)) (named ??= new Set()).add(token);
  }
  return named;
}

/** Removes hop-by-hop headers from an upstream response, in place. */
export function stripResponseHeaders(h: ResponseHeaders): ResponseHeaders {
  const connection = h['connection'];
  // The common values name no other header: skip the split.
  if (connection !== undefined && connection !== 'keep-alive' && connection !== 'close') {
    const named = connectionNamed(connection as string);
    if (named !== undefined) for (const n of named) delete h[n];
  }
  // `delete` turns an object into a slow dictionary: only when the header is there.
  for (const n of DROP_RESPONSE) if (h[n] !== undefined) delete h[n];
  return h;
}

// Request bytes kept so that a retry can send them again. gRPC requests are
// mostly small; a larger body that was already read is not retried.
const RETRY_BUFFER_BYTES = 64 * 1024;

/**
 * A request body handed upstream one attempt at a time. The client is read
 * only when an upstream reads, so a request whose connection was refused is
 * retried with its body untouched; what was read is kept (up to
 * RETRY_BUFFER_BYTES) so a stream the upstream refused can be sent again. An
 * attempt's stream may be destroyed by its consumer (undici does, when done)
 * without touching the client's stream. Node has no stream that defers and
 * replays its source like this, hence this class.
 */
class RequestBody {
  readonly #src: Readable;
  #retained: Buffer[] | null = [];
  #retainedBytes = 0;
  #bytes = 0;
  /** Over this many bytes the body is cut and `onLimit` called (0: no limit). */
  limit = 0;
  onLimit: (() => void) | undefined;
  #listening = false;
  #ended = false;
  #current: AttemptBody | undefined;

  constructor(src: Readable) {
    this.#src = src;
  }

  /** True while every byte read so far is kept, so another attempt can send the same body. */
  get replayable(): boolean {
    return this.#retained !== null;
  }

  /** The body for a new attempt; the previous attempt's stream stops receiving. */
  attempt(): Readable {
    this.#current?.destroy();
    this.#current = new AttemptBody(this);
    return this.#current;
  }

  /** An attempt's stream wants data. */
  pull(body: AttemptBody, first: boolean): void {
    if (body !== this.#current) return;
    if (first) {
      for (const chunk of this.#retained ?? []) body.push(chunk);
      if (this.#ended) {
        body.push(null);
        return;
      }
    }
    if (!this.#listening) {
      this.#listening = true;
      this.#src.on('data', this.#onData).on('end', this.#onEnd).on('error', this.#onError);
    }
    this.#src.resume();
  }

  /** An attempt's stream was destroyed. */
  detach(body: AttemptBody): void {
    if (body !== this.#current) return;
    this.#current = undefined;
    this.#src.pause();
  }

  readonly #onData = (chunk: Buffer): void => {
    this.#bytes += chunk.length;
    if (this.limit > 0 && this.#bytes > this.limit) {
      this.#src.pause();
      this.#src.off('data', this.#onData);
      this.onLimit?.();
      return;
    }
    if (this.#retained !== null) {
      this.#retainedBytes += chunk.length;
      if (this.#retainedBytes <= RETRY_BUFFER_BYTES) this.#retained.push(chunk);
      else this.#retained = null;
    }
    if (this.#current !== undefined && !this.#current.push(chunk)) this.#src.pause();
  };

  readonly #onEnd = (): void => {
    this.#ended = true;
    this.#current?.push(null);
  };

  readonly #onError = (err: Error): void => {
    this.#current?.destroy(err);
  };
}

class AttemptBody extends Readable {
  readonly #body: RequestBody;
  #started = false;

  constructor(body: RequestBody) {
    super({ highWaterMark: 64 * 1024 });
    this.#body = body;
  }

  override _read(): void {
    const first = !this.#started;
    this.#started = true;
    this.#body.pull(this, first);
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.#body.detach(this);
    cb(err);
  }
}

function appendForwardedFor(prev: string | undefined, ip: string): string {
  return prev === undefined || prev === '' ? ip : `${prev}, ${ip}`;
}

function textBody(err: ProxyError): string {
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

const DEADLINE = new UpstreamError('timeout', false, new Error('the route\'s overall timeout passed'));

/** What every exchange shares: request facts, body, lifecycle, forwarding headers. */
abstract class BaseExchange {
  readonly method: string;
  readonly path: string;
  readonly authority: string | undefined;
  readonly grpc: boolean;
  readonly override: string | undefined;
  readonly hasBody: boolean;
  readonly contentLength: number;
  upgrade: string | undefined = undefined;
  responded = false;
  settled = false;
  clientGone = false;
  metrics!: BackendMetrics;
  onClientGone: (() => void) | undefined = undefined;
  protected readonly start = performance.now();
  protected readonly owner: ExchangeOwner;
  readonly #peer: Peer;
  readonly #requestId: string;
  #body: RequestBody | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(owner: ExchangeOwner, peer: Peer, f: {
    method: string; path: string; authority: string | undefined; contentType: string | undefined;
    override: string | undefined; hasBody: boolean; contentLength: number; requestId: string | undefined;
  }) {
    this.owner = owner;
    this.#peer = peer;
    this.method = f.method;
    this.path = f.path;
    this.authority = f.authority;
    this.grpc = f.contentType !== undefined && f.contentType.startsWith('application/grpc');
    this.override = f.override;
    this.hasBody = f.hasBody;
    this.contentLength = f.contentLength;
    this.#requestId = f.requestId ?? randomUUID();
  }

  protected abstract bodySource(): Readable;
  abstract fail(err: ProxyError): void;

  body(): Readable | null {
    if (!this.hasBody) return null;
    return (this.#body ??= new RequestBody(this.bodySource())).attempt();
  }

  get bodyReplayable(): boolean {
    return this.#body?.replayable ?? true;
  }

  limitBody(max: number, err: ProxyError): void {
    if (!this.hasBody) return;
    const body = (this.#body ??= new RequestBody(this.bodySource()));
    body.limit = max;
    body.onLimit = () => this.#abandon(err);
  }

  deadline(ms: number, exemptEventStreams = false): void {
    this.#sseExempt = exemptEventStreams;
    this.#timer = setTimeout(() => this.#abandon(DEADLINE), ms);
  }

  #sseExempt = false;
  /** A response head is going out: an event stream is a stream, exempt from the overall deadline unless asked. */
  protected responseHead(headers: ResponseHeaders): void {
    const ct = headers['content-type'];
    if (this.#sseExempt && typeof ct === 'string' && ct.startsWith('text/event-stream')) clearTimeout(this.#timer);
  }

  /** The proxy gives up on the exchange: answers `err` and cancels the upstream call. */
  #abandon(err: ProxyError): void {
    if (this.settled || this.clientGone) return;
    this.fail(err);
    const cancel = this.onClientGone;
    this.onClientGone = undefined;
    cancel?.();
  }

  cookie(name: string): string | undefined {
    return cookieValue(this.header('cookie'), name);
  }

  abstract header(name: string): string | undefined;

  /** Common end of every exchange: cancel upstream if the client left early, count, tell the owner. */
  protected closed(finished: boolean, code: number, h2: boolean): void {
    clearTimeout(this.#timer);
    if (!finished) {
      this.clientGone = true;
      this.onClientGone?.();
    }
    this.metrics.done(this.clientGone ? 499 : code, (performance.now() - this.start) / 1000);
    this.owner.exchangeDone(h2);
  }

  /**
   * X-Forwarded-For/-Proto/-Host as sent upstream. From a trusted proxy the
   * client's values are kept (XFF appended to); from anyone else they are
   * replaced, so a client cannot forge its address.
   */
  protected forwarded(xff: string | undefined, proto: string | undefined, host: string | undefined): [xff: string, proto: string, host: string | undefined] {
    const peer = this.#peer;
    if (!peer.trusted) return [peer.ip, 'http', this.authority];
    return [appendForwardedFor(xff, peer.ip), proto ?? 'http', host ?? this.authority];
  }

  protected get requestId(): string {
    return this.#requestId;
  }
}

/**
 * The request side of an HTTP/1.1 client's exchange: the head, parsed once
 * into what goes upstream. Subclasses answer on a ServerResponse or, for an
 * Upgrade, on the raw socket.
 */
abstract class H1Request extends BaseExchange {
  readonly req: IncomingMessage;
  /** The client's headers minus hop-by-hop and proxy-set ones, flat [name, value, ...]. */
  readonly #headers: string[];
  readonly #forwarded: [xff: string, proto: string, host: string | undefined];

  constructor(req: IncomingMessage, owner: ExchangeOwner, peer: Peer) {
    // One pass over the raw headers: node builds req.headers lazily, and
    // not touching it saves an object per request.
    const raw = req.rawHeaders;
    const idHeader = owner.requestIdHeader;
    let headers: string[] = [];
    let host: string | undefined, ctype: string | undefined, override: string | undefined, requestId: string | undefined;
    let xff: string | undefined, xfProto: string | undefined, xfHost: string | undefined;
    let connection: string | undefined, hasBody = false, contentLength = -1;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      const value = raw[i + 1]!;
      if (!DROP_REQUEST.has(name)) {
        if (name === 'content-type') ctype = value;
        else if (name === 'content-length') {
          contentLength = Number(value);
          hasBody ||= contentLength !== 0;
        } else if (name === idHeader) requestId ??= value;
        headers.push(name, value);
        continue;
      }
      switch (name) {
        case 'host': host = value; break;
        case 'x-switchyard-backend': override = value; break;
        case 'x-forwarded-for': xff = xff === undefined ? value : `${xff}, ${value}`; break;
        case 'x-forwarded-proto': xfProto ??= value; break;
        case 'x-forwarded-host': xfHost ??= value; break;
        case 'connection': connection = value; break;
        case 'transfer-encoding': hasBody = true; break;
      }
    }
    const named = connectionNamed(connection);
    if (named !== undefined) {
      const kept: string[] = [];
      for (let i = 0; i < headers.length; i += 2) {
        if (!named.has(headers[i]!)) kept.push(headers[i]!, headers[i + 1]!);
      }
      headers = kept;
    }
    super(owner, peer, {
      method: req.method ?? 'GET', path: req.url ?? '/', authority: host, contentType: ctype,
      override, hasBody, contentLength, requestId,
    });
    if (requestId === undefined) headers.push(idHeader, this.requestId);
    this.req = req;
    this.#headers = headers;
    this.#forwarded = this.forwarded(xff, xfProto, xfHost);
  }

  protected bodySource(): Readable {
    return this.req;
  }

  header(name: string): string | undefined {
    const h = this.#headers;
    for (let i = 0; i < h.length; i += 2) if (h[i] === name) return h[i + 1];
    return undefined;
  }

  requestTrailers(): ResponseHeaders | null {
    return this.req.trailers;
  }

  headersForH1(hostHeader: string | undefined): string[] {
    const h = this.#headers.slice();
    const [xff, proto, xfHost] = this.#forwarded;
    h.push('host', hostHeader ?? this.authority ?? '', 'x-forwarded-for', xff, 'x-forwarded-proto', proto);
    if (xfHost !== undefined) h.push('x-forwarded-host', xfHost);
    return h;
  }

  headersForH2(hostHeader: string | undefined): OutgoingHttpHeaders {
    const out: OutgoingHttpHeaders = {
      ':method': this.method,
      ':path': this.path,
      ':scheme': 'http',
      ':authority': hostHeader ?? this.authority ?? '',
    };
    const h = this.#headers;
    for (let i = 0; i < h.length; i += 2) {
      const name = h[i]!;
      const prev = out[name];
      // HTTP/2 wants one field per name; cookies join with "; " (RFC 9113 §8.2.3).
      out[name] = prev === undefined ? h[i + 1] : `${String(prev)}${name === 'cookie' ? '; ' : ', '}${h[i + 1]}`;
    }
    const [xff, proto, xfHost] = this.#forwarded;
    out['x-forwarded-for'] = xff;
    out['x-forwarded-proto'] = proto;
    if (xfHost !== undefined) out['x-forwarded-host'] = xfHost;
    return out;
  }
}

/** A request from an HTTP/1.1 client (node:http), answered on its ServerResponse. */
export class H1Exchange extends H1Request implements Exchange {
  readonly res: ServerResponse;
  // req.socket is already null when the response emits 'close'.
  readonly #socket: Duplex;

  constructor(req: IncomingMessage, res: ServerResponse, owner: ExchangeOwner, peer: Peer) {
    super(req, owner, peer);
    this.res = res;
    this.#socket = req.socket;
    res.once('close', this.#onClose);
  }

  readonly #onClose = (): void => {
    this.closed(this.res.writableFinished, this.res.statusCode, false);
  };

  respond(status: number, headers: ResponseHeaders): void {
    if (this.settled) return;
    this.responded = true;
    this.responseHead(headers);
    stripResponseHeaders(headers);
    if (this.owner.shouldClose(this.#socket)) headers['connection'] = 'close';
    this.res.writeHead(status, headers as OutgoingHttpHeaders);
  }

  respondOnly(status: number, headers: ResponseHeaders): void {
    if (this.settled) return;
    this.respond(status, headers);
    this.res.end();
  }

  write(chunk: Buffer): boolean {
    return this.settled || this.res.write(chunk);
  }

  onceDrain(fn: () => void): void {
    this.res.once('drain', fn);
  }

  end(): void {
    if (!this.settled) this.res.end();
  }

  fail(err: ProxyError): void {
    if (this.settled || this.clientGone) return;
    this.settled = true;
    if (this.responded) {
      // The status line is out: the only honest signal left is a cut connection.
      this.res.destroy();
      return;
    }
    this.responded = true;
    const body = textBody(err);
    const headers: OutgoingHttpHeaders = {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    };
    // An unread request body would otherwise have to be drained first.
    if (this.owner.shouldClose(this.#socket) || (this.hasBody && !this.req.complete)) headers['connection'] = 'close';
    this.res.writeHead(err.httpStatus, headers);
    this.res.end(body);
  }
}

/**
 * An HTTP/1.1 Upgrade request (WebSocket): answered on the raw client socket.
 * On 101 the proxy writes the upstream's head and splices the two sockets;
 * any other answer is passed on and the connection closed after it.
 */
export class UpgradeExchange extends H1Request implements Exchange {
  readonly socket: Duplex;
  readonly #head: Buffer;
  #status = 0;
  #finished = false;

  constructor(req: IncomingMessage, socket: Duplex, head: Buffer, owner: ExchangeOwner, peer: Peer) {
    super(req, owner, peer);
    this.socket = socket;
    this.#head = head;
    const upgrade = req.headers['upgrade'];
    this.upgrade = typeof upgrade === 'string' ? upgrade : 'websocket';
    socket.on('error', () => socket.destroy());
    socket.once('close', this.#onClose);
  }

  readonly #onClose = (): void => {
    this.closed(this.#finished || this.#status === 101, this.#status, false);
  };

  respond(status: number, headers: ResponseHeaders): void {
    if (this.settled) return;
    this.#writeHead(status, headers);
  }

  #writeHead(status: number, headers: ResponseHeaders): void {
    this.responded = true;
    this.#status = status;
    if (status !== 101) {
      stripResponseHeaders(headers);
      headers['connection'] = 'close';
    }
    let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`;
    for (const name in headers) {
      const value = headers[name];
      if (value === undefined) continue;
      for (const v of Array.isArray(value) ? value : [value]) head += `${name}: ${v}\r\n`;
    }
    this.socket.write(`${head}\r\n`);
  }

  respondOnly(status: number, headers: ResponseHeaders): void {
    this.respond(status, headers);
    this.end();
  }

  /** Joins the client socket to the upgraded upstream socket, both ways. */
  splice(upstream: Duplex): void {
    this.#finished = true;
    if (this.#head.length > 0) upstream.write(this.#head);
    const client = this.socket;
    upstream.on('error', () => client.destroy()).once('close', () => client.destroy());
    client.on('error', () => upstream.destroy()).once('close', () => upstream.destroy());
    upstream.pipe(client);
    client.pipe(upstream);
  }

  write(chunk: Buffer): boolean {
    return this.settled || this.socket.write(chunk);
  }

  onceDrain(fn: () => void): void {
    this.socket.once('drain', fn);
  }

  end(): void {
    if (this.settled) return;
    this.#finished = true;
    this.socket.end();
  }

  fail(err: ProxyError): void {
    if (this.settled || this.clientGone) return;
    this.settled = true;
    if (this.responded) {
      this.socket.destroy();
      return;
    }
    const body = textBody(err);
    this.#writeHead(err.httpStatus, { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(body)) });
    this.#finished = true;
    this.socket.end(body);
  }
}

/** A request on an HTTP/2 stream (node:http2 core API). */
export class H2Exchange extends BaseExchange implements Exchange {
  readonly stream: ServerHttp2Stream;
  readonly #headers: IncomingHttpHeaders;
  readonly #forwarded: [xff: string, proto: string, host: string | undefined];
  #finished = false;
  #status = 0;
  #trailers: ResponseHeaders | null = null;
  #requestTrailers: ResponseHeaders | null = null;

  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, owner: ExchangeOwner, peer: Peer) {
    const override = headers['x-switchyard-backend'];
    const cl = headers['content-length'];
    const id = headers[owner.requestIdHeader];
    super(owner, peer, {
      method: headers[':method'] ?? 'GET',
      path: headers[':path'] ?? '/',
      authority: headers[':authority'] ?? headers['host'],
      contentType: headers['content-type'],
      override: Array.isArray(override) ? override[0] : override,
      // END_STREAM on the HEADERS frame means no body.
      hasBody: !stream.readableEnded && !(stream as { endAfterHeaders?: boolean }).endAfterHeaders,
      contentLength: cl === undefined ? -1 : Number(cl),
      requestId: Array.isArray(id) ? id[0] : id,
    });
    this.stream = stream;
    this.#headers = headers;
    const first = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);
    const xff = headers['x-forwarded-for'];
    this.#forwarded = this.forwarded(Array.isArray(xff) ? xff.join(', ') : xff, first(headers['x-forwarded-proto']), first(headers['x-forwarded-host']));
    if (this.hasBody) stream.once('trailers', this.#onRequestTrailers);
    stream.once('close', this.#onClose);
  }

  readonly #onRequestTrailers = (trailers: IncomingHttpHeaders): void => {
    this.#requestTrailers = trailers;
  };

  requestTrailers(): ResponseHeaders | null {
    return this.#requestTrailers;
  }

  readonly #onClose = (): void => {
    this.closed(this.#finished, this.#status, true);
  };

  protected bodySource(): Readable {
    return this.stream;
  }

  header(name: string): string | undefined {
    const v = this.#headers[name];
    return Array.isArray(v) ? v[0] : v;
  }

  headersForH1(hostHeader: string | undefined): string[] {
    const out: string[] = [];
    const h = this.#headers;
    const named = connectionNamed(h['connection']);
    for (const name in h) {
      if (name.charCodeAt(0) === 58 /* ':' */ || DROP_REQUEST.has(name) || named?.has(name)) continue;
      const v = h[name];
      if (Array.isArray(v)) for (const x of v) out.push(name, x);
      else if (v !== undefined) out.push(name, v);
    }
    const [xff, proto, xfHost] = this.#forwarded;
    out.push('host', hostHeader ?? this.authority ?? '', 'x-forwarded-for', xff, 'x-forwarded-proto', proto);
    if (xfHost !== undefined) out.push('x-forwarded-host', xfHost);
    if (h[this.owner.requestIdHeader] === undefined) out.push(this.owner.requestIdHeader, this.requestId);
    return out;
  }

  headersForH2(hostHeader: string | undefined): OutgoingHttpHeaders {
    const out: OutgoingHttpHeaders = {};
    const h = this.#headers;
    const named = connectionNamed(h['connection']);
    for (const name in h) {
      if (DROP_REQUEST.has(name) || named?.has(name)) continue;
      out[name] = h[name];
    }
    out[':authority'] = hostHeader ?? this.authority ?? '';
    // "te: trailers" is the one TE value HTTP/2 allows, and gRPC servers require it.
    if (h['te'] === 'trailers') out['te'] = 'trailers';
    const [xff, proto, xfHost] = this.#forwarded;
    out['x-forwarded-for'] = xff;
    out['x-forwarded-proto'] = proto;
    if (xfHost !== undefined) out['x-forwarded-host'] = xfHost;
    out[this.owner.requestIdHeader] ??= this.requestId;
    return out;
  }

  respond(status: number, headers: ResponseHeaders, trailersFollow: boolean): void {
    if (this.settled || this.stream.destroyed) return;
    this.#prepare(status, headers);
    if (trailersFollow) {
      this.stream.respond(headers as OutgoingHttpHeaders, { waitForTrailers: true });
      this.stream.once('wantTrailers', this.#sendTrailers);
    } else {
      this.stream.respond(headers as OutgoingHttpHeaders);
    }
  }

  respondOnly(status: number, headers: ResponseHeaders): void {
    if (this.settled || this.stream.destroyed) return;
    this.#prepare(status, headers);
    this.#finished = true;
    this.stream.respond(headers as OutgoingHttpHeaders, { endStream: true });
  }

  #prepare(status: number, headers: ResponseHeaders): void {
    this.responded = true;
    this.responseHead(headers);
    stripResponseHeaders(headers);
    delete headers['te'];
    headers[':status'] = String(status);
    this.#status = this.grpc ? grpcStatusFrom(headers, status) : status;
  }

  write(chunk: Buffer): boolean {
    return this.settled || this.stream.write(chunk);
  }

  onceDrain(fn: () => void): void {
    this.stream.once('drain', fn);
  }

  end(trailers: ResponseHeaders | null): void {
    if (this.settled || this.stream.destroyed) return;
    this.#finished = true;
    if (trailers !== null) {
      this.#trailers = trailers;
      if (this.grpc) this.#status = grpcStatusFrom(trailers, this.#status);
    }
    this.stream.end();
  }

  readonly #sendTrailers = (): void => {
    // Empty trailers make node end the stream with an empty DATA frame.
    this.stream.sendTrailers((this.#trailers ?? {}) as OutgoingHttpHeaders);
  };

  fail(err: ProxyError): void {
    if (this.settled || this.clientGone || this.stream.destroyed) return;
    this.settled = true;
    this.#finished = true;
    if (this.responded) {
      // Mid-response there is no status left to send: reset the stream.
      // close(code) would end it first (END_STREAM), which a client reads as
      // a complete response; destroy sends only RST_STREAM (INTERNAL_ERROR).
      this.stream.destroy(err);
      return;
    }
    this.responded = true;
    if (this.grpc) {
      // Trailers-Only: one HEADERS frame with END_STREAM carrying the status.
      this.#status = err.grpcStatus;
      this.stream.respond({
        ':status': 200,
        'content-type': 'application/grpc',
        'grpc-status': String(err.grpcStatus),
        'grpc-message': encodeURIComponent(err.message),
      }, { endStream: true });
      return;
    }
    this.#status = err.httpStatus;
    this.stream.respond({ ':status': err.httpStatus, 'content-type': 'text/plain; charset=utf-8' });
    this.stream.end(textBody(err));
  }
}

/** The grpc-status a response carries, else the fallback. */
function grpcStatusFrom(h: ResponseHeaders, fallback: number): number {
  const s = h['grpc-status'];
  return typeof s === 'string' ? Number(s) : fallback;
}
