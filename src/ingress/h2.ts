// Exchanges of HTTP/2 clients: one per stream of a frame-level server
// connection (h2-conn.ts). The request headers are the decoded flat list
// [name, value, ...], validated by the connection; the response goes out as
// frames on the stream, paced by the client's windows and the socket.
import type { ProxyError } from '../errors.ts';
import { INTERNAL_ERROR } from '../h2/frames.ts';
import { H2_STREAM_WINDOW } from '../h2-settings.ts';
import { GRPC_CODE_UNKNOWN } from '../observe/metrics.ts';
import { RequestBody, type BodyFeed } from './body.ts';
import { httpDate } from './date.ts';
import { Exchange, textBody, type ExchangeOwner, type Peer, type ResponseHeaders } from './exchange.ts';
import type { H2ServerConnection, ServerStream } from './h2-conn.ts';
import { DROP_REQUEST, stripResponseHeaders } from './hygiene.ts';

const EMPTY = Buffer.alloc(0);
/**
 * Response bytes one client connection may leave waiting for its windows
 * (memory held here): 16 streams stalled with a full upstream stream window
 * each. A client that opens streams and never reads costs at most this.
 */
const QUEUE_BUDGET = 16 * H2_STREAM_WINDOW;
const STREAM_RESET = new Error('the client reset the stream mid-body');
/** Response header lists are built here and encoded at once (a copy is kept only when they wait behind DATA). */
const out: string[] = [];

/** A request on an HTTP/2 stream. */
export class H2Exchange extends Exchange implements BodyFeed {
  readonly conn: H2ServerConnection;
  readonly stream: ServerStream;
  /** The request's header fields after the pseudo-headers, [name, value, ...]. */
  readonly #fields: string[];
  readonly #scheme: string;
  readonly #body: RequestBody | null;
  /** Request bytes received whose window was not given back yet. */
  #owed = 0;
  #finished = false;
  #closed = false;
  /** Handed to the entrypoint: from then on it is counted, and its end must be. */
  #routed = false;
  /** Response trailers will be sent (the response was started waiting for them). */
  #trailersFollow = false;
  #status = 0;
  #requestTrailers: ResponseHeaders | null = null;
  #drain: (() => void) | null = null;

  /** `fields`: the regular header fields, copied out of the connection's reused list. */
  constructor(conn: H2ServerConnection, stream: ServerStream, owner: ExchangeOwner, peer: Peer, p: {
    method: string; scheme: string; path: string; authority: string | undefined; contentLength: number; hasBody: boolean;
  }, fields: string[]) {
    super(owner, peer, {
      method: p.method,
      path: p.path,
      authority: p.authority,
      contentType: find(fields, 'content-type'),
      override: find(fields, 'x-switchyard-backend'),
      hasBody: p.hasBody,
      contentLength: p.contentLength,
      requestId: find(fields, owner.requestIdHeader),
      xff: findAll(fields, 'x-forwarded-for', ', '), xfProto: find(fields, 'x-forwarded-proto'), xfHost: find(fields, 'x-forwarded-host'),
    });
    this.conn = conn;
    this.stream = stream;
    this.#fields = fields;
    this.#scheme = p.scheme;
    this.#body = p.hasBody ? new RequestBody(this) : null;
  }

  // --- from the connection -------------------------------------------------------

  /** @internal the connection hands it on for routing (its whole chunk was read and the stream is still open). */
  route(): void {
    this.#routed = true;
  }

  /** @internal DATA on the stream. */
  data(chunk: Buffer): void {
    this.#owed += chunk.length;
    // The client's window bounds what it sends: nothing to pause here.
    this.#body!.push(chunk);
  }

  /** @internal the request ended (END_STREAM on DATA or on trailers). */
  requestEnded(trailers: ResponseHeaders | null): void {
    this.#requestTrailers = trailers;
    this.#body?.end();
  }

  /** The body's reader took `n` bytes: the client's window gets them back. */
  bodyTaken(_body: RequestBody, n: number): void {
    this.#owed -= n;
    if (!this.#closed) this.conn.consumed(this.stream, n);
  }

  bodyWanted(_body: RequestBody): void {
    // Paced by the client's window, given back in bodyTaken().
  }

  /** @internal the stream can take more: a writer waiting for it goes on. */
  drained(): void {
    const fn = this.#drain;
    if (fn === null) return;
    this.#drain = null;
    fn();
  }

  /** @internal the stream is over: ended both ways, or reset (`reset`) by either side or with its connection. */
  streamClosed(reset: boolean): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#drain = null;
    // What the body holds untaken still counts against the connection's window.
    if (this.#owed > 0) this.conn.consumed(null, this.#owed);
    this.#owed = 0;
    // A stream reset in the chunk that opened it was never routed, nor counted.
    if (this.#routed) this.closed(this.#finished, this.#status, true);
    // After closed(): the exchange's signal has stopped the upstream side, which must not take this for its own failure.
    if (reset) this.#body?.fail(STREAM_RESET);
  }

  // --- Exchange --------------------------------------------------------------------

  protected get requestBody(): RequestBody | null {
    return this.#body;
  }

  header(name: string): string | undefined {
    // Cookie crumbs may come as separate fields (RFC 9113 §8.2.3): one value.
    return name === 'cookie' ? findAll(this.#fields, name, '; ') : find(this.#fields, name);
  }

  requestTrailers(): ResponseHeaders | null {
    return this.#requestTrailers;
  }

  headersForH1(hostHeader: string | undefined): string[] {
    const h: string[] = [];
    const f = this.#fields;
    let cookie: string | undefined;
    for (let i = 0; i < f.length; i += 2) {
      const name = f[i]!;
      if (DROP_REQUEST.has(name)) continue;
      if (name === 'cookie') cookie = cookie === undefined ? f[i + 1]! : `${cookie}; ${f[i + 1]!}`;
      else h.push(name, f[i + 1]!);
    }
    if (cookie !== undefined) h.push('cookie', cookie);
    this.pushForwarded(h, hostHeader);
    if (find(f, this.owner.requestIdHeader) === undefined) h.push(this.owner.requestIdHeader, this.requestId);
    return h;
  }

  headersForH2(hostHeader: string | undefined): string[] {
    const h: string[] = [':method', this.method, ':scheme', this.#scheme, ':authority', hostHeader ?? this.authority ?? '', ':path', this.path];
    const f = this.#fields;
    let te = false;
    for (let i = 0; i < f.length; i += 2) {
      const name = f[i]!;
      if (DROP_REQUEST.has(name)) {
        // "te: trailers" is the one TE value HTTP/2 allows (the connection checked), and gRPC servers require it.
        if (name === 'te') te = true;
        continue;
      }
      h.push(name, f[i + 1]!);
    }
    if (te) h.push('te', 'trailers');
    this.pushXForwarded(h);
    if (find(f, this.owner.requestIdHeader) === undefined) h.push(this.owner.requestIdHeader, this.requestId);
    return h;
  }

  respond(status: number, headers: ResponseHeaders, trailersFollow: boolean): void {
    if (this.settled || this.#closed) return;
    this.#trailersFollow = trailersFollow;
    const n = this.#prepare(status, headers);
    this.conn.sendHeaders(this.stream, out, n, false);
  }

  respondOnly(status: number, headers: ResponseHeaders): void {
    if (this.settled || this.#closed) return;
    const n = this.#prepare(status, headers);
    this.#finished = true;
    this.conn.sendHeaders(this.stream, out, n, true);
    this.conn.responseDone(this.stream);
  }

  /** Fills `out` with the response head; returns its length. */
  #prepare(status: number, headers: ResponseHeaders): number {
    this.responded = true;
    this.responseHead(headers);
    stripResponseHeaders(headers);
    // A gRPC response's code comes with its trailers; until then, one without
    // grpc-status counts as its HTTP status maps.
    this.#status = this.grpc ? grpcCodeOf(headers, grpcCodeOfHttp(status)) : status;
    out[0] = ':status';
    out[1] = String(status);
    return flatten(headers, 2, true);
  }

  write(chunk: Buffer): boolean {
    if (this.settled || this.#closed) return true;
    const conn = this.conn;
    if (conn.sendData(this.stream, chunk, 0, chunk.length, false)) return !conn.needDrain;
    // The client's windows are shut: what waits is held here. Past the connection's budget the stream goes.
    if (conn.queued > QUEUE_BUDGET) conn.overBudget(this.stream);
    return false;
  }

  onceDrain(fn: () => void): void {
    if (this.#closed) return;
    this.#drain = fn;
    this.conn.waitDrain(this);
  }

  end(trailers: ResponseHeaders | null): void {
    if (this.settled || this.#closed) return;
    this.#finished = true;
    if (trailers !== null && this.grpc) this.#status = grpcCodeOf(trailers, this.#status);
    const n = trailers !== null && this.#trailersFollow ? flatten(trailers, 0, false) : 0;
    // Without trailers an empty DATA frame ends the stream.
    if (n > 0) this.conn.sendHeaders(this.stream, out, n, true);
    else this.conn.sendData(this.stream, EMPTY, 0, 0, true);
    this.conn.responseDone(this.stream);
  }

  protected override isClosed(): boolean {
    return this.#closed;
  }


  protected cut(err: ProxyError): void {
    this.#finished = true;
    if (this.grpc && this.#trailersFollow) {
      // A gRPC response has its status in the trailers: they carry the error.
      this.#status = err.grpcStatus;
      out[0] = 'grpc-status';
      out[1] = String(err.grpcStatus);
      out[2] = 'grpc-message';
      out[3] = grpcMessage(err.message);
      this.conn.sendHeaders(this.stream, out, 4, true);
      this.conn.responseDone(this.stream);
      return;
    }
    // Mid-response there is no status left to send: END_STREAM would read as
    // a complete response, so only RST_STREAM.
    this.conn.reset(this.stream, INTERNAL_ERROR);
  }

  protected answer(err: ProxyError): void {
    this.#finished = true;
    this.responded = true;
    if (this.grpc) {
      // Trailers-Only: one HEADERS frame with END_STREAM carrying the status.
      this.#status = err.grpcStatus;
      out[0] = ':status'; out[1] = '200';
      out[2] = 'content-type'; out[3] = 'application/grpc';
      out[4] = 'grpc-status'; out[5] = String(err.grpcStatus);
      out[6] = 'grpc-message'; out[7] = grpcMessage(err.message);
      out[8] = 'date'; out[9] = httpDate();
      this.conn.sendHeaders(this.stream, out, 10, true);
    } else {
      this.#status = err.httpStatus;
      out[0] = ':status'; out[1] = String(err.httpStatus);
      out[2] = 'content-type'; out[3] = 'text/plain; charset=utf-8';
      out[4] = 'date'; out[5] = httpDate();
      this.conn.sendHeaders(this.stream, out, 6, false);
      const body = Buffer.from(textBody(err));
      this.conn.sendData(this.stream, body, 0, body.length, true);
    }
    this.conn.responseDone(this.stream);
  }
}

/**
 * grpc-message as gRPC's PROTOCOL-HTTP2.md writes it: the UTF-8 bytes
 * outside 0x20-0x7E, and '%', percent-encoded; everything else (spaces
 * above all) as it is. The router's own messages are plain ASCII: returned as
 * they are, without a copy.
 */
export function grpcMessage(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) return percentEncode(Buffer.from(s, 'utf8'));
  }
  return s;
}

function percentEncode(bytes: Buffer): string {
  let r = '';
  for (const b of bytes) r += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b < 0x10 ? '0' : ''}${b.toString(16).toUpperCase()}`;
  return r;
}

/**
 * Appends a header object to `out` from `at` as [name, value, ...], names
 * lowercase (HTTP/2 requires it; an HTTP/1.1 upstream may send any case);
 * `te` dropped from a response head. Returns the end.
 */
function flatten(h: ResponseHeaders, at: number, head: boolean): number {
  let n = at;
  for (const key in h) {
    const v = h[key];
    if (v === undefined) continue;
    const name = lower(key);
    if (name.charCodeAt(0) === 58 /* : */ || (head && name === 'te')) continue;
    if (typeof v === 'string') {
      out[n++] = name;
      out[n++] = v;
    } else {
      for (let i = 0; i < v.length; i++) {
        out[n++] = name;
        out[n++] = v[i]!;
      }
    }
  }
  return n;
}

function lower(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 65 && c <= 90) return s.toLowerCase();
  }
  return s;
}

/** The first value of `name` in a flat list. */
function find(f: string[], name: string): string | undefined {
  for (let i = 0; i < f.length; i += 2) if (f[i] === name) return f[i + 1];
  return undefined;
}

/** Every value of `name`, joined with `sep`. */
function findAll(f: string[], name: string, sep: string): string | undefined {
  let v: string | undefined;
  for (let i = 0; i < f.length; i += 2) if (f[i] === name) v = v === undefined ? f[i + 1] : `${v}${sep}${f[i + 1]!}`;
  return v;
}

// The 17 gRPC status codes by their text in grpc-status; any other value
// counts as GRPC_CODE_UNKNOWN, so a backend cannot make new metric series.
const GRPC_CODES = new Map(Array.from({ length: 17 }, (_, i) => [String(i), i]));

/** The grpc-status a response carries (GRPC_CODE_UNKNOWN if not one of the 17), else `fallback`. */
function grpcCodeOf(h: ResponseHeaders, fallback: number): number {
  const s = h['grpc-status'];
  if (s === undefined) return fallback;
  return (typeof s === 'string' ? GRPC_CODES.get(s) : undefined) ?? GRPC_CODE_UNKNOWN;
}

/** The gRPC code of an HTTP status without grpc-status (gRPC's http-grpc-status-mapping.md). */
function grpcCodeOfHttp(status: number): number {
  switch (status) {
    case 200: return GRPC_CODE_UNKNOWN; // until the trailers say
    case 400: return 13;
    case 401: return 16;
    case 403: return 7;
    case 404: return 12;
    case 429: case 502: case 503: case 504: return 14;
    default: return 2;
  }
}
