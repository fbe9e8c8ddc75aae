// The entrypoint: one TCP port for HTTP/1.1 and h2c. A net.Server accepts,
// reads just enough to tell an HTTP/2 prior-knowledge preface from an
// HTTP/1.1 request line, and hands the socket (bytes put back) to an HTTP/2
// server connection (h2-conn.ts) or an HTTP/1.1 ClientConnection (h1-conn.ts),
// both our own. It also owns connection lifecycles: max age, timeouts on one
// coarse clock, drain, and memory given back once idle (idle-memory.ts).
import net, { BlockList, type Socket, type AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../config/model.ts';
import { parseCidr } from '../config/parse.ts';
import { HeadersTooLargeError, UriTooLongError } from '../errors.ts';
import type { Exchange, Peer } from './exchange.ts';
import type { H1Exchange } from './h1.ts';
import { ClientConnection, TICK_MS, ticks, type H1Limits, type H1Owner } from './h1-conn.ts';
import type { H2Exchange } from './h2.ts';
import { H2ServerConnection, type H2Limits, type H2Owner } from './h2-conn.ts';
import type { UpgradeExchange } from './upgrade.ts';
import type { BackendMetrics, Metrics } from '../observe/metrics.ts';
import { proxy } from '../proxy/proxy.ts';
import { IDLE_MS, IdleWatch, giveBackMemory } from '../idle-memory.ts';
import type { RouteTable } from '../routing/table.ts';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
// A connection that has not sent enough to be classified by then is dropped.
const SNIFF_TICKS = ticks(10_000);

/** Config['entrypoint']: address, max connection age (0: off), limits, trusted proxies, request id header. */
export type EntrypointOptions = Config['entrypoint'];

const URI_TOO_LONG = new UriTooLongError();
const HEADERS_TOO_LARGE = new HeadersTooLargeError();

/**
 * The client's address. socket.remoteAddress keeps what it read from the
 * kernel ({ address, family, port }, 56 bytes) on the socket for its whole
 * life; nothing here asks again, so it is let go (asked again, node reads it
 * anew).
 */
function remoteIp(socket: Socket): string {
  const ip = socket.remoteAddress ?? '';
  (socket as Socket & { _peername?: unknown })._peername = null;
  return ip;
}

/** ±10% so connections opened together do not all reconnect together. */
function jitter(ms: number): number {
  return Math.round(ms * (0.9 + Math.random() * 0.2));
}

export class Entrypoint implements H1Owner, H2Owner {
  /** The route table in force; reload swaps this reference. */
  table: RouteTable;
  readonly #opts: EntrypointOptions;
  readonly #log: Logger;
  readonly #unmatchedH1: BackendMetrics;
  readonly #unmatchedH2: BackendMetrics;
  readonly #server: net.Server;
  readonly #h2 = new Set<H2ServerConnection>();
  readonly #h2Limits: H2Limits;
  readonly #h2Open: ReturnType<Metrics['openConnections']['labels']>;
  readonly #h1 = new Set<ClientConnection>();
  /**
   * Connections not classified yet, with their sniff deadline on the coarse
   * clock. Not socket.setTimeout(): cleared, it still leaves its Timeout and
   * bound callback on the socket for the connection's whole life.
   */
  readonly #sniffing = new Map<Socket, number>();
  readonly #h1Limits: H1Limits;
  readonly #h1Open: ReturnType<Metrics['openConnections']['labels']>;
  /** One listener for every upgraded HTTP/1.1 socket's close, rather than a closure each. */
  readonly #h1Closed = (): void => { this.#h1Open.dec(); };
  /** The coarse clock HTTP/1.1 connection timeouts run on: one interval, no timer per connection or request. */
  readonly #clock: NodeJS.Timeout;
  tick = 1;
  readonly #trusted = new BlockList();
  readonly requestIdHeader: string;
  #inflight = 0;
  #inflightH2 = 0;
  /** Accepts and requests so far: the idle watch's sign of activity. */
  #activity = 0;
  /** When activity stops, memory a burst left behind is given back (idle-memory.ts). */
  readonly #idle = new IdleWatch(ticks(IDLE_MS));
  /** Off once giving memory back failed. */
  #giveBack = true;
  draining = false;
  #onIdle: (() => void) | undefined;

  constructor(opts: EntrypointOptions, table: RouteTable, metrics: Metrics, log: Logger) {
    this.#opts = opts;
    this.requestIdHeader = opts.requestIdHeader;
    for (const cidr of opts.trustedProxies) {
      const { address, prefix, family } = parseCidr(cidr);
      this.#trusted.addSubnet(address, prefix, family);
    }
    this.table = table;
    this.#log = log;
    this.#unmatchedH1 = metrics.backend('unmatched', 'none', 'http');
    this.#unmatchedH2 = metrics.backend('unmatched', 'none', 'h2c');
    metrics.openStreamsSource = () => this.#inflightH2;

    this.#h1Open = metrics.openConnections.labels('http');
    this.#h1Limits = {
      maxHeaderBytes: opts.maxHeaderBytes, // over it: 431
      headersTicks: ticks(opts.headersTimeoutMs), // slow clients: 408
      idleTicks: ticks(opts.idleTimeoutMs), // keep-alive connections with nothing in flight
    };
    this.#h2Open = metrics.openConnections.labels('h2c');
    this.#h2Limits = {
      maxHeaderBytes: opts.maxHeaderBytes, // over it: 431
      idleTicks: ticks(opts.idleTimeoutMs), // connections without streams
      headersTicks: ticks(opts.headersTimeoutMs), // a header block trickled in
    };
    this.#clock = setInterval(this.#sweep, TICK_MS);
    this.#clock.unref();
    this.#server = net.createServer({ noDelay: true }, this.#onConnection);
    // Over it, node closes new connections at once.
    if (opts.maxConnections > 0) this.#server.maxConnections = opts.maxConnections;
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#opts.port, this.#opts.host, () => {
        this.#server.off('error', reject);
        resolve(this.#server.address() as AddressInfo);
      });
    });
  }

  get inflight(): number {
    return this.#inflight;
  }

  // --- connections ---------------------------------------------------------

  readonly #onConnection = (socket: Socket): void => {
    this.#activity++;
    let buffered: Buffer | undefined;
    const onError = (): void => { socket.destroy(); };
    const onData = (chunk: Buffer): void => {
      buffered = buffered === undefined ? chunk : Buffer.concat([buffered, chunk]);
      const n = Math.min(buffered.length, PREFACE.length);
      const h2 = buffered.compare(PREFACE, 0, n, 0, n) === 0;
      if (h2 && buffered.length < PREFACE.length) return; // the preface may arrive in pieces
      // The error listener too: left on, it would keep these bytes for the connection's life.
      socket.off('data', onData).off('error', onError);
      this.#sniffing.delete(socket);
      socket.pause();
      socket.unshift(buffered);
      this.#handOver(socket, h2);
    };
    socket.on('data', onData).on('error', onError);
    this.#sniffing.set(socket, this.tick + SNIFF_TICKS);
  };

  #handOver(socket: Socket, h2: boolean): void {
    if (h2) {
      this.#h2Open.inc();
      const conn = new H2ServerConnection(socket, this, this.#peerOf(socket), this.#h2Limits);
      this.#h2.add(conn);
      if (this.draining) conn.goAway();
      else if (this.#opts.maxConnectionAgeMs > 0) {
        conn.expiresAt = this.tick + ticks(jitter(this.#opts.maxConnectionAgeMs));
        conn.graceTicks = ticks(this.#opts.maxConnectionAgeGraceMs);
      }
      socket.resume();
      return;
    }
    this.#h1Open.inc();
    // Whole-request time is bounded per route (timeouts.overall), not here: a large upload may rightly take long.
    const ip = remoteIp(socket);
    const conn = new ClientConnection(socket, this, ip, this.#isTrusted(ip), this.#h1Limits);
    if (this.#opts.maxConnectionAgeMs > 0) conn.expiresAt = this.tick + ticks(jitter(this.#opts.maxConnectionAgeMs));
    this.#h1.add(conn);
    socket.resume();
  }

  readonly #sweep = (): void => {
    const now = ++this.tick;
    for (const conn of this.#h1) conn.sweep(now);
    for (const conn of this.#h2) conn.sweep(now);
    for (const [socket, deadline] of this.#sniffing) {
      if (now < deadline && !socket.destroyed) continue;
      this.#sniffing.delete(socket);
      socket.destroy();
    }
    if (this.#giveBack && this.#idle.tick(now, this.#activity, this.#inflight) && !this.draining) {
      // A failure here (V8's gc() not to be had) must not take the router down from a timer: the feature goes off.
      try {
        const given = giveBackMemory();
        if (given !== undefined) this.#log.info(given, 'idle: memory given back');
      } catch (err) {
        this.#giveBack = false;
        this.#log.warn({ err: (err as Error).message }, 'idle: cannot give memory back; turned off');
      }
    }
  };

  /** H1Owner: the connection closed. */
  forget(conn: ClientConnection): void {
    this.#h1.delete(conn);
    this.#h1Open.dec();
  }

  /** H1Owner: the connection's socket was handed over to a WebSocket upgrade; it counts as open until it closes. */
  upgraded(conn: ClientConnection): void {
    this.#h1.delete(conn);
    conn.socket.once('close', this.#h1Closed);
  }

  /** H2Owner: the connection is gone. */
  h2Closed(conn: H2ServerConnection): void {
    if (this.#h2.delete(conn)) this.#h2Open.dec();
  }

  // --- requests ------------------------------------------------------------

  /** H1Owner: a request head from an HTTP/1.1 client; a refused one (a malformed head: 400, its connection closed; an Expect it cannot meet: 417) is answered, not routed. */
  dispatchH1(ex: H1Exchange | UpgradeExchange): void {
    this.#inflight++;
    this.#activity++;
    if (ex.refused === undefined) {
      this.#dispatch(ex, this.#unmatchedH1);
      return;
    }
    ex.metrics = this.#unmatchedH1;
    ex.fail(ex.refused);
  }

  /** H2Owner: a request from an HTTP/2 client; one whose header list is over the limit is answered 431. */
  h2Request(ex: H2Exchange, tooLarge: boolean): void {
    this.#inflight++;
    this.#activity++;
    this.#inflightH2++;
    if (tooLarge) {
      ex.metrics = this.#unmatchedH2;
      ex.fail(HEADERS_TOO_LARGE);
      return;
    }
    this.#dispatch(ex, this.#unmatchedH2);
  }

  #dispatch(ex: Exchange, unmatched: BackendMetrics): void {
    if (ex.path.length > this.#opts.maxUrlLength) {
      ex.metrics = unmatched;
      ex.fail(URI_TOO_LONG);
      return;
    }
    proxy(ex, this.table, unmatched);
  }

  /** Whether the client at `ip` is a trusted proxy, once per connection. */
  #isTrusted(ip: string): boolean {
    // remoteFamily is 'IPv6' exactly when the address has a colon (IPv4-mapped ones too).
    return ip !== '' && this.#trusted.check(ip, ip.includes(':') ? 'ipv6' : 'ipv4');
  }

  /** The client's address and whether it is a trusted proxy, once per connection. */
  #peerOf(socket: Socket): Peer {
    const ip = remoteIp(socket);
    return { ip, trusted: this.#isTrusted(ip) };
  }

  /** ExchangeOwner: one exchange is over. */
  exchangeDone(h2: boolean): void {
    this.#inflight--;
    if (h2) this.#inflightH2--;
    if (this.#inflight === 0 && this.#onIdle !== undefined) this.#onIdle();
  }

  // --- shutdown ------------------------------------------------------------

  /**
   * Stops taking new work: closes the listener, asks HTTP/2 clients to go
   * (GOAWAY) and closes idle HTTP/1.1 keep-alive connections; busy ones get
   * `Connection: close` on their current response.
   */
  drain(): void {
    this.draining = true;
    this.#server.close();
    for (const conn of this.#h2) conn.goAway();
    for (const conn of this.#h1) conn.drain();
  }

  /** Resolves with the number of exchanges still open when `timeoutMs` ran out (0 if all finished). */
  whenIdle(timeoutMs: number): Promise<number> {
    if (this.#inflight === 0) return Promise.resolve(0);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#onIdle = undefined;
        resolve(this.#inflight);
      }, timeoutMs);
      this.#onIdle = () => {
        clearTimeout(timer);
        this.#onIdle = undefined;
        resolve(0);
      };
    });
  }

  /** Cuts whatever is still open. */
  destroy(): void {
    this.#server.close();
    for (const conn of this.#h2) conn.destroy();
    for (const conn of this.#h1) conn.socket.destroy();
    for (const socket of this.#sniffing.keys()) socket.destroy();
    clearInterval(this.#clock);
    this.#log.debug('entrypoint destroyed');
  }
}
