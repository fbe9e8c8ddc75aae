// Exchanges of HTTP/1.1 clients (node:http): the request head parsed once,
// answered on a ServerResponse.
import type { IncomingMessage, ServerResponse, OutgoingHttpHeaders } from 'node:http';
import type { Readable, Duplex } from 'node:stream';
import { BadRequestError, type ProxyError } from '../errors.ts';
import { Exchange, textBody, type ExchangeOwner, type Peer, type ResponseHeaders } from './exchange.ts';
import { resolveTarget, unsupportedTransferEncoding } from './h1-head.ts';
import { connectionNamed, DROP_REQUEST, stripResponseHeaders } from './hygiene.ts';

/**
 * The request side of an HTTP/1.1 client's exchange: the head, parsed once
 * into what goes upstream. Subclasses answer on a ServerResponse or, for an
 * Upgrade, on the raw socket.
 */
export abstract class H1Request extends Exchange {
  readonly req: IncomingMessage;
  /** Set when the head breaks a rule of RFC 9112 (h1-head.ts): the request is answered 400, never forwarded. */
  readonly malformed: BadRequestError | undefined;
  /** The client's headers minus hop-by-hop and proxy-set ones, flat [name, value, ...]. */
  readonly #headers: string[];

  constructor(req: IncomingMessage, owner: ExchangeOwner, peer: Peer) {
    // One pass over the raw headers: node builds req.headers lazily, and
    // not touching it saves an object per request.
    const raw = req.rawHeaders;
    const idHeader = owner.requestIdHeader;
    let headers: string[] = [];
    let host: string | undefined, ctype: string | undefined, override: string | undefined, requestId: string | undefined;
    let xff: string | undefined, xfProto: string | undefined, xfHost: string | undefined;
    let connection: string | undefined, hasBody = false, contentLength = -1;
    let hosts = 0, badFraming = false;
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
        case 'host': host = value; hosts++; break;
        case 'x-switchyard-backend': override = value; break;
        case 'x-forwarded-for': xff = xff === undefined ? value : `${xff}, ${value}`; break;
        case 'x-forwarded-proto': xfProto ??= value; break;
        case 'x-forwarded-host': xfHost ??= value; break;
        case 'connection': connection = value; break;
        case 'transfer-encoding':
          // A second line, not a plain chunked, or on HTTP/1.0 (RFC 9112 §6.1: faulty framing).
          badFraming ||= hasBody || unsupportedTransferEncoding(value) || req.httpVersion === '1.0';
          hasBody = true;
          break;
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
    const target = resolveTarget(req.httpVersion, req.url ?? '/', host, hosts);
    super(owner, peer, {
      method: req.method ?? 'GET', path: target.ok ? target.path : req.url ?? '/', authority: target.ok ? target.authority : host, contentType: ctype,
      override, hasBody, contentLength, requestId, xff, xfProto, xfHost,
    });
    if (requestId === undefined) headers.push(idHeader, this.requestId);
    this.req = req;
    this.#headers = headers;
    this.malformed = badFraming ? new BadRequestError('Transfer-Encoding other than chunked')
      : target.ok ? undefined : new BadRequestError(target.reason);
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
    this.pushForwarded(h, hostHeader);
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
    this.setForwarded(out);
    return out;
  }
}

/** A request from an HTTP/1.1 client (node:http), answered on its ServerResponse. */
export class H1Exchange extends H1Request {
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

  protected cut(): void {
    // The status line is out: the only honest signal left is a cut connection.
    this.res.destroy();
  }

  protected answer(err: ProxyError): void {
    this.responded = true;
    const body = textBody(err);
    const headers: OutgoingHttpHeaders = {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    };
    // An unread request body would otherwise have to be drained first.
    if (err.closesConnection || this.owner.shouldClose(this.#socket) || (this.hasBody && !this.req.complete)) headers['connection'] = 'close';
    this.res.writeHead(err.httpStatus, headers);
    this.res.end(body);
  }
}
