// HTTP/1.1 Upgrade requests (WebSocket), answered on the raw client socket.
import { STATUS_CODES } from '../node-http.ts';
import type { Duplex } from 'node:stream';
import type { RequestBody } from './body.ts';
import type { ProxyError } from '../errors.ts';
import { httpDate } from './date.ts';
import { textBody, type ExchangeOwner, type Peer, type ResponseHeaders, type Upgrade } from './exchange.ts';
import { H1Request } from './h1.ts';
import type { RequestParser } from './h1-parser.ts';
import { stripResponseHeaders } from './hygiene.ts';

/**
 * An HTTP/1.1 Upgrade request (WebSocket): answered on the raw client socket.
 * On 101 the proxy writes the upstream's head and splices the two sockets;
 * any other answer is passed on and the connection closed after it.
 */
export class UpgradeExchange extends H1Request implements Upgrade {
  readonly protocol: string;
  readonly socket: Duplex;
  readonly #head: Buffer;
  #status = 0;
  #finished = false;

  /** `head`: bytes the client sent after the request head, already the new protocol's. */
  constructor(p: RequestParser, socket: Duplex, head: Buffer, owner: ExchangeOwner, peer: Peer) {
    super(p, owner, peer);
    this.socket = socket;
    this.#head = head;
    this.protocol = p.upgrade ?? 'websocket';
    this.upgrade = this;
    socket.on('error', () => socket.destroy());
    socket.once('close', this.#onClose);
  }

  readonly #onClose = (): void => {
    this.closed(this.#finished || this.#status === 101, this.#status, false);
  };

  protected get requestBody(): RequestBody | null {
    // Only requests without a body are taken as upgrades (h1-conn.ts).
    return null;
  }

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

  upgraded(status: number, headers: ResponseHeaders, upstream: Duplex): void {
    this.respond(status, headers);
    this.#splice(upstream);
  }

  /** Joins the client socket to the upgraded upstream socket, both ways. */
  #splice(upstream: Duplex): void {
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
    this.socket.resume(); // read (and drop) to the client's FIN, so the socket closes
  }

  protected cut(): void {
    this.socket.destroy();
  }

  protected answer(err: ProxyError): void {
    const body = textBody(err);
    this.#writeHead(err.httpStatus, { date: httpDate(), 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(body)) });
    this.#finished = true;
    this.socket.end(body);
    this.socket.resume(); // read (and drop) to the client's FIN, so the socket closes
  }
}
