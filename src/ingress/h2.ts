// Exchanges of HTTP/2 clients: one per stream (node:http2 core API).
import type { OutgoingHttpHeaders } from 'node:http';
import { sensitiveHeaders, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { Readable } from 'node:stream';
import type { ProxyError } from '../errors.ts';
import { Exchange, textBody, type ExchangeOwner, type Peer, type ResponseHeaders } from './exchange.ts';
import { connectionNamed, DROP_REQUEST, stripResponseHeaders } from './hygiene.ts';
import { GRPC_CODE_UNKNOWN } from '../observe/metrics.ts';
import { CLOSE, TRAILERS, WANT_TRAILERS, listen } from '../h2-stream-events.ts';

/** A request on an HTTP/2 stream (node:http2 core API). */
export class H2Exchange extends Exchange {
  readonly stream: ServerHttp2Stream;
  readonly #headers: IncomingHttpHeaders;
  #finished = false;
  /** Response trailers will be sent (the response was started waiting for them). */
  #trailersFollow = false;
  #status = 0;
  #trailers: ResponseHeaders | null = null;
  #requestTrailers: ResponseHeaders | null = null;

  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, owner: ExchangeOwner, peer: Peer) {
    const override = headers['x-switchyard-backend'];
    const cl = headers['content-length'];
    const id = headers[owner.requestIdHeader];
    const xff = headers['x-forwarded-for'];
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
      xff: Array.isArray(xff) ? xff.join(', ') : xff, xfProto: first(headers['x-forwarded-proto']), xfHost: first(headers['x-forwarded-host']),
    });
    this.stream = stream;
    this.#headers = headers;
    // `on` for events that come once anyway: no wrapper per stream.
    listen(stream, this, this.hasBody ? TRAILERS | CLOSE : CLOSE);
  }

  /** @internal the client's trailers arrived (shared listener). */
  streamTrailers(trailers: IncomingHttpHeaders): void {
    this.#requestTrailers = trailers;
  }

  requestTrailers(): ResponseHeaders | null {
    return this.#requestTrailers;
  }

  /** @internal the stream closed (shared listener). */
  streamClosed(): void {
    this.closed(this.#finished, this.#status, true);
  }

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
    this.pushForwarded(out, hostHeader);
    if (h[this.owner.requestIdHeader] === undefined) out.push(this.owner.requestIdHeader, this.requestId);
    return out;
  }

  // A flat list: node:http2's request() copies a header object into one of
  // its own first (Object.assign, ~3 % of a gRPC call's allocation).
  headersForH2(hostHeader: string | undefined): string[] {
    const h = this.#headers;
    const out: string[] = [
      ':method', this.method, ':scheme', first(h[':scheme']) ?? 'http', ':authority', hostHeader ?? this.authority ?? '', ':path', this.path,
    ];
    const named = connectionNamed(h['connection']);
    for (const name in h) {
      if (name.charCodeAt(0) === 58 /* ':' */ || DROP_REQUEST.has(name) || named?.has(name)) continue;
      const v = h[name];
      if (Array.isArray(v)) for (const x of v) out.push(name, x);
      else if (v !== undefined) out.push(name, v);
    }
    // "te: trailers" is the one TE value HTTP/2 allows, and gRPC servers require it.
    if (h['te'] === 'trailers') out.push('te', 'trailers');
    this.pushXForwarded(out);
    if (h[this.owner.requestIdHeader] === undefined) out.push(this.owner.requestIdHeader, this.requestId);
    return out;
  }

  respond(status: number, headers: ResponseHeaders, trailersFollow: boolean): void {
    if (this.settled || this.stream.destroyed) return;
    this.#prepare(status, headers);
    if (trailersFollow) {
      this.#trailersFollow = true;
      this.stream.respond(flat(headers), { waitForTrailers: true });
      listen(this.stream, this, WANT_TRAILERS);
    } else {
      this.stream.respond(flat(headers));
    }
  }

  respondOnly(status: number, headers: ResponseHeaders): void {
    if (this.settled || this.stream.destroyed) return;
    this.#prepare(status, headers);
    this.#finished = true;
    this.stream.respond(flat(headers), { endStream: true });
  }

  #prepare(status: number, headers: ResponseHeaders): void {
    this.responded = true;
    this.responseHead(headers);
    stripResponseHeaders(headers);
    delete headers['te'];
    headers[':status'] = String(status);
    // A gRPC response's code comes with its trailers; until then, one without
    // grpc-status counts as its HTTP status maps.
    this.#status = this.grpc ? grpcCodeOf(headers, grpcCodeOfHttp(status)) : status;
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
      if (this.grpc) this.#status = grpcCodeOf(trailers, this.#status);
    }
    this.stream.end();
  }

  /** @internal the stream wants the response trailers (shared listener). */
  wantTrailers(): void {
    // Empty trailers make node end the stream with an empty DATA frame.
    this.stream.sendTrailers((this.#trailers ?? {}) as OutgoingHttpHeaders);
  }

  protected override isClosed(): boolean {
    return this.stream.destroyed;
  }

  protected cut(err: ProxyError): void {
    this.#finished = true;
    if (this.grpc && this.#trailersFollow) {
      // A gRPC response has its status in the trailers: they carry the error.
      this.#status = err.grpcStatus;
      this.#trailers = { 'grpc-status': String(err.grpcStatus), 'grpc-message': encodeURIComponent(err.message) };
      this.stream.end();
      return;
    }
    // Mid-response there is no status left to send: reset the stream.
    // close(code) would end it first (END_STREAM), which a client reads as
    // a complete response; destroy sends only RST_STREAM (INTERNAL_ERROR).
    this.stream.destroy(err);
  }

  protected answer(err: ProxyError): void {
    this.#finished = true;
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

/**
 * Response headers as a flat [name, value, ...] list: respond() copies a
 * header object into a null-prototype one of its own first. Fields the
 * upstream sent never-indexed stay so.
 */
function flat(h: ResponseHeaders): string[] {
  const out: string[] = [];
  for (const name in h) {
    const v = h[name];
    if (Array.isArray(v)) for (const x of v) out.push(name, x);
    else if (v !== undefined) out.push(name, v);
  }
  const never = (h as { [sensitiveHeaders]?: unknown })[sensitiveHeaders];
  if (never !== undefined) (out as unknown as { [sensitiveHeaders]?: unknown })[sensitiveHeaders] = never;
  return out;
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
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
