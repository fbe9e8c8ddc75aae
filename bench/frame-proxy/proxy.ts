// Frame-level h2c/gRPC proxy: the prototype of issue 15 item 2, an experiment
// kept under bench/ (not adopted; see bench/results/frame-prototype-2026-11-30.md).
//
// Both sides on src/h2's H2Connection (the frame layer adopted from this
// prototype): the client side (server role) decodes request HEADERS (HPACK),
// picks a backend (smooth weighted round-robin), re-encodes the request headers
// with X-Forwarded-For/-Proto replaced for a pooled upstream h2c connection
// with its own stream ids, and forwards DATA frames as they come, rewriting
// only the stream id. Response HEADERS, DATA and trailers come back the same
// way. Flow control: both sides are offered large windows, which are given
// back (WINDOW_UPDATE) as the bytes are written on to the other side; what a
// peer's window does not admit waits on the stream.
//
//   node bench/frame-proxy/proxy.ts --listen 127.0.0.1:PORT --backend 127.0.0.1:P1=90 [--backend 127.0.0.1:P2=10]
//                                   [--host grpc.bench] [--streams-per-conn 100]
//
// Prints "listening PORT" once it accepts connections.
import net from 'node:net';
import { parseArgs } from 'node:util';
import { H2Connection, H2Stream, type H2Config } from '../../src/h2/connection.ts';
import { CANCEL, INTERNAL_ERROR, NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM } from '../../src/h2/frames.ts';

/** Window offered per stream and per connection (the router's figures, src/h2-settings.ts). */
const STREAM_WINDOW = 1 << 20;
const CONN_WINDOW = 1 << 24;
const MAX_CLIENT_STREAMS = 1000;
const CLIENT_SIDE: H2Config = {
  server: true, streamWindow: STREAM_WINDOW, connectionWindow: CONN_WINDOW, maxConcurrentStreams: MAX_CLIENT_STREAMS,
  maxHeaderBlock: 256 * 1024,
};
const UPSTREAM_SIDE: H2Config = { server: false, streamWindow: STREAM_WINDOW, connectionWindow: CONN_WINDOW, maxHeaderBlock: 256 * 1024 };

// Connection-specific headers make an HTTP/2 request malformed (RFC 9113 §8.2.2).
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);
// Replaced by the proxy (DESIGN: X-Forwarded-* replaced for untrusted clients).
const REPLACED = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host']);

/** The outgoing header list, reused. */
const outHdrs: string[] = [];

/** What the prototype counts per RPC, standing in for the router's metrics. */
class Rpc {
  grpc = false;
  responseStarted = false;
  start = 0;
}
const stats = { rpcs: 0, byStatus: new Float64Array(18), latency: new Float64Array(16) };
function rpcDone(rpc: Rpc, grpcStatus: number): void {
  stats.rpcs++;
  stats.byStatus[grpcStatus >= 0 && grpcStatus < 17 ? grpcStatus : 17]!++;
  const ms = performance.now() - rpc.start;
  stats.latency[Math.min(15, Math.max(0, Math.ceil(Math.log2(ms + 1))))]!++;
}

/** One side of a proxied stream: the stream as one peer (client or backend) sees it. */
class Leg extends H2Stream {
  readonly conn: Side;
  other: Leg | null = null;
  readonly rpc: Rpc;

  constructor(conn: Side, id: number, rpc: Rpc) {
    super(id);
    this.conn = conn;
    this.rpc = rpc;
  }
}

/** What both sides do alike: DATA goes on to the other leg; its window comes back as it is sent there. */
abstract class Side extends H2Connection<Leg> {
  protected onData(leg: Leg, buf: Buffer, start: number, end: number, endStream: boolean): void {
    const out = leg.other;
    if (out === null || out.closed || out.localEnded) { this.consumed(leg, end - start); return; }
    out.conn.sendData(out, buf, start, end, endStream);
  }

  protected override onDataSent(leg: Leg, n: number): void {
    const from = leg.other;
    if (from !== null) from.conn.consumed(from, n);
  }

  protected onWritable(): void {} // flow is driven by onDataSent

  /** The peer reset `leg` (its code goes on), or this side found a stream error (the other side is cancelled). */
  protected onReset(leg: Leg, code: number, byPeer: boolean): void {
    const other = leg.other;
    if (other !== null) other.conn.reset(other, byPeer ? code : CANCEL);
  }

  /** Our side closed: the other legs are cancelled. */
  protected onClose(): void {
    for (const leg of this.streams.values()) {
      const other = leg.other;
      if (other !== null) other.conn.lostPeer(other);
    }
  }

  /** The other side of `leg` is gone with its connection. */
  lostPeer(leg: Leg): void {
    this.reset(leg, CANCEL);
  }
}

// --- upstream ------------------------------------------------------------------

class Backend {
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  current = 0;
  readonly pool: UpConn[] = [];

  constructor(host: string, port: number, weight: number) {
    this.host = host;
    this.port = port;
    this.weight = weight;
  }

  /**
   * The first pooled connection with room for one more stream (at most
   * `perConn`, as switchyard's pool: a burst of cancels on one connection
   * trips the backend's rapid-reset limit); a new one if all are full.
   */
  conn(perConn: number): UpConn {
    for (const c of this.pool) if (c.canOpen && c.streams.size < perConn) return c;
    const c = new UpConn(this);
    this.pool.push(c);
    return c;
  }
}

class UpConn extends Side {
  readonly backend: Backend;

  constructor(backend: Backend) {
    super(net.connect(backend.port, backend.host), UPSTREAM_SIDE);
    this.backend = backend;
  }

  /** Response headers, 1xx, or trailers from the backend. */
  protected onHeaders(leg: Leg | null, _sid: number, list: string[], count: number, end: boolean): void {
    if (leg === null) return; // the client role is never offered new streams
    const client = leg.other!;
    let n = 0;
    let grpcStatus = -1;
    for (let i = 0; i < count; i += 2) {
      const name = list[i]!;
      if (CONNECTION_SPECIFIC.has(name)) continue;
      if (name === 'grpc-status') grpcStatus = Number(list[i + 1]);
      outHdrs[n++] = name;
      outHdrs[n++] = list[i + 1]!;
    }
    leg.rpc.responseStarted = true;
    if (!client.closed && !client.localEnded) {
      client.conn.sendHeaders(client, outHdrs, n, end);
      if (end) rpcDone(leg.rpc, grpcStatus);
    }
  }

  protected onGoaway(): void {
    if (this.streams.size === 0) this.close();
  }

  /** Streams above the backend's GOAWAY come back REFUSED: failed as unanswered (a retry would go here). */
  protected override onReset(leg: Leg, code: number, byPeer: boolean): void {
    if (byPeer && code === REFUSED_STREAM) this.#failStream(leg, 'backend went away');
    else super.onReset(leg, code, byPeer);
  }

  protected override onClose(): void {
    const i = this.backend.pool.indexOf(this);
    if (i >= 0) this.backend.pool.splice(i, 1);
    for (const leg of this.streams.values()) this.#failStream(leg, 'backend connection lost');
  }

  protected override onStreamClosed(): void {
    if (this.peerGoingAway && this.streams.size === 0) this.close();
  }

  /** The backend cannot answer this stream: a Trailers-Only UNAVAILABLE (or 502) if nothing was sent yet, else a reset. */
  #failStream(leg: Leg, msg: string): void {
    const client = leg.other!;
    leg.other = null;
    if (client.closed || client.localEnded) return;
    if (!leg.rpc.responseStarted) {
      leg.rpc.responseStarted = true;
      const h = leg.rpc.grpc
        ? [':status', '200', 'content-type', 'application/grpc', 'grpc-status', '14', 'grpc-message', msg]
        : [':status', '502'];
      client.conn.sendHeaders(client, h, h.length, true);
      rpcDone(leg.rpc, 14);
      if (!client.closed && !client.remoteEnded) client.conn.reset(client, NO_ERROR);
    } else {
      client.conn.reset(client, INTERNAL_ERROR);
    }
  }

  /** Opens a stream to the backend for `client`'s request. */
  open(client: Leg, h: string[], count: number, end: boolean): void {
    const leg = new Leg(this, 0, client.rpc);
    this.register(leg);
    leg.other = client;
    client.other = leg;
    this.sendHeaders(leg, h, count, end);
  }
}

// --- client side ---------------------------------------------------------------

interface Config {
  hosts: Set<string> | null;
  backends: Backend[];
  total: number;
  /** Streams per upstream connection at most. */
  perConn: number;
}

/** Smooth weighted round-robin (nginx's): over every window of sum(weights) picks, each backend gets its weight. */
function pick(cfg: Config): Backend {
  let best: Backend | null = null;
  for (const b of cfg.backends) {
    b.current += b.weight;
    if (best === null || b.current > best.current) best = b;
  }
  best!.current -= cfg.total;
  return best!;
}

class ClientConn extends Side {
  readonly cfg: Config;
  readonly clientIp: string;

  constructor(socket: net.Socket, cfg: Config) {
    super(socket, CLIENT_SIDE);
    this.cfg = cfg;
    this.clientIp = socket.remoteAddress ?? '';
  }

  protected onGoaway(): void {
    if (this.streams.size === 0) this.close();
  }

  protected override onStreamClosed(): void {
    if (this.peerGoingAway && this.streams.size === 0) this.close();
  }

  protected onHeaders(existing: Leg | null, sid: number, list: string[], count: number, end: boolean): void {
    if (existing !== null) {
      // Trailers (the frame layer has checked they end the stream): no pseudo-headers.
      const up = existing.other;
      if (!validTrailers(list, count)) {
        this.reset(existing, PROTOCOL_ERROR);
        if (up !== null) up.conn.reset(up, CANCEL);
        return;
      }
      if (up !== null) up.conn.sendHeaders(up, list, count, true);
      return;
    }
    if (this.streams.size >= MAX_CLIENT_STREAMS) { this.rst(sid, REFUSED_STREAM); return; }
    // Validate (RFC 9113 §8.2, §8.3) and build the upstream list in one pass.
    let authority = '';
    let contentLength = -1;
    let grpc = false;
    let method = false, scheme = false, path = false, regular = false;
    let n = 0;
    for (let i = 0; i < count; i += 2) {
      const name = list[i]!;
      const value = list[i + 1]!;
      if (name.charCodeAt(0) === 58) {
        if (regular) { this.rst(sid, PROTOCOL_ERROR); return; }
        switch (name) {
          case ':method': if (method) { this.rst(sid, PROTOCOL_ERROR); return; } method = true; break;
          case ':scheme': if (scheme) { this.rst(sid, PROTOCOL_ERROR); return; } scheme = true; break;
          case ':path': if (path || value === '') { this.rst(sid, PROTOCOL_ERROR); return; } path = true; break;
          case ':authority': authority = value; break;
          default: this.rst(sid, PROTOCOL_ERROR); return;
        }
      } else {
        regular = true;
        if (hasUpper(name) || CONNECTION_SPECIFIC.has(name) || (name === 'te' && value !== 'trailers')) { this.rst(sid, PROTOCOL_ERROR); return; }
        if (REPLACED.has(name)) continue;
        if (name === 'host' && authority === '') authority = value;
        if (name === 'content-type' && value.startsWith('application/grpc')) grpc = true;
        else if (name === 'content-length') {
          if (!/^\d{1,15}$/.test(value) || (contentLength >= 0 && Number(value) !== contentLength)) { this.rst(sid, PROTOCOL_ERROR); return; }
          contentLength = Number(value);
        }
      }
      outHdrs[n++] = name;
      outHdrs[n++] = value;
    }
    if (!method || !scheme || !path) { this.rst(sid, PROTOCOL_ERROR); return; }
    if (end && contentLength > 0) { this.rst(sid, PROTOCOL_ERROR); return; }
    outHdrs[n++] = 'x-forwarded-for';
    outHdrs[n++] = this.clientIp;
    outHdrs[n++] = 'x-forwarded-proto';
    outHdrs[n++] = 'http';

    const rpc = new Rpc();
    rpc.grpc = grpc;
    rpc.start = performance.now();
    const leg = new Leg(this, sid, rpc);
    leg.contentLength = contentLength;
    this.register(leg);
    if (this.cfg.hosts !== null && !this.cfg.hosts.has(hostOf(authority))) {
      const h = grpc
        ? [':status', '200', 'content-type', 'application/grpc', 'grpc-status', '12', 'grpc-message', 'no route']
        : [':status', '404'];
      this.sendHeaders(leg, h, h.length, true);
      rpcDone(rpc, 12);
      if (!end) this.reset(leg, NO_ERROR);
      return;
    }
    const backend = pick(this.cfg);
    backend.conn(this.cfg.perConn).open(leg, outHdrs, n, end);
  }
}

function hasUpper(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 65 && c <= 90) return true;
  }
  return false;
}

function validTrailers(list: string[], count: number): boolean {
  for (let i = 0; i < count; i += 2) if (list[i]!.charCodeAt(0) === 58 || hasUpper(list[i]!)) return false;
  return true;
}

function hostOf(authority: string): string {
  const colon = authority.lastIndexOf(':');
  return colon > 0 && authority.indexOf(']') < colon ? authority.slice(0, colon) : authority;
}

// --- main ------------------------------------------------------------------------

function main(): void {
  const { values } = parseArgs({
    options: {
      listen: { type: 'string', default: '127.0.0.1:0' },
      backend: { type: 'string', multiple: true },
      host: { type: 'string', multiple: true },
      'streams-per-conn': { type: 'string', default: '100' },
    },
  });
  const backends = (values.backend ?? []).map((spec) => {
    const m = /^(.+):(\d+)(?:=(\d+))?$/.exec(spec);
    if (m === null) throw new Error(`--backend ${spec}: expected HOST:PORT[=WEIGHT]`);
    return new Backend(m[1]!, Number(m[2]), m[3] === undefined ? 1 : Number(m[3]));
  });
  if (backends.length === 0) throw new Error('at least one --backend HOST:PORT[=WEIGHT]');
  const cfg: Config = {
    hosts: values.host === undefined ? null : new Set(values.host),
    backends,
    total: backends.reduce((s, b) => s + b.weight, 0),
    perConn: Number(values['streams-per-conn']),
  };
  const m = /^(.+):(\d+)$/.exec(values.listen!);
  if (m === null) throw new Error(`--listen ${values.listen}: expected HOST:PORT`);
  const server = net.createServer({ noDelay: true }, (socket) => { new ClientConn(socket, cfg); });
  server.listen(Number(m[2]), m[1], () => {
    console.log(`listening ${(server.address() as net.AddressInfo).port}`);
  });
  const stop = (): void => {
    console.log(`rpcs ${stats.rpcs}; grpc-status counts ${[...stats.byStatus].join(',')}`);
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main();
