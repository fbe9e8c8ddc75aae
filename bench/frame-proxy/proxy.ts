// Frame-level h2c/gRPC proxy: the prototype of issue 15 item 2, an experiment
// kept under bench/ (not adopted; see bench/results/frame-prototype-2026-11-30.md).
//
// Raw net sockets on both sides. The client side reads the preface and frames,
// answers SETTINGS/PING/WINDOW_UPDATE itself, decodes request HEADERS (HPACK),
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
import { HpackDecoder, HpackError, blockBound, encodeBlock } from '../../src/h2/hpack.ts';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

const DATA = 0, HEADERS = 1, PRIORITY = 2, RST_STREAM = 3, SETTINGS = 4, PUSH_PROMISE = 5, PING = 6, GOAWAY = 7,
  WINDOW_UPDATE = 8, CONTINUATION = 9;
const END_STREAM = 0x1, ACK = 0x1, END_HEADERS = 0x4, PADDED = 0x8, PRIORITY_FLAG = 0x20;
const NO_ERROR = 0, PROTOCOL_ERROR = 1, INTERNAL_ERROR = 2, FLOW_CONTROL_ERROR = 3, STREAM_CLOSED = 5,
  FRAME_SIZE_ERROR = 6, REFUSED_STREAM = 7, CANCEL = 8, COMPRESSION_ERROR = 9;

/** Our SETTINGS_MAX_FRAME_SIZE: the default, never raised, so every frame we forward fits any peer. */
const MAX_FRAME = 16384;
/** Window offered per stream and per connection; given back in halves. */
const STREAM_WINDOW = 1 << 20;
const CONN_WINDOW = 1 << 24;
const MAX_WINDOW = 2 ** 31 - 1;
const MAX_CLIENT_STREAMS = 1000;
/** Frames at most this long are copied into the output slab; longer payloads are written as they are. */
const COPY_LIMIT = 1024;
const SLAB = 64 * 1024;

// Connection-specific headers make an HTTP/2 request malformed (RFC 9113 §8.2.2).
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);
// Replaced by the proxy (DESIGN: X-Forwarded-* replaced for untrusted clients).
const REPLACED = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host']);

/** Decoded header lists, reused: name, value, name, value… */
const hdrs: string[] = [];
const outHdrs: string[] = [];
let blockScratch = Buffer.allocUnsafe(SLAB);

/** Connections with output waiting, written out at the end of each socket event. */
const dirty: Conn[] = [];
function flushAll(): void {
  for (let i = 0; i < dirty.length; i++) dirty[i]!.flush();
  dirty.length = 0;
}

class ConnError extends Error {
  readonly code: number;
  constructor(code: number, msg: string) {
    super(msg);
    this.code = code;
  }
}

/** Waiting for the peer's window: a piece of DATA or a header block (trailers behind DATA). */
interface Pending {
  data: Buffer | null;
  hdrCount: number;
  hdrs: string[] | null;
  end: boolean;
}

/** One side of a proxied stream: the stream as one peer (client or backend) sees it. */
class Leg {
  readonly conn: Conn;
  readonly id: number;
  other: Leg | null = null;
  /** What we may still send on this stream. */
  sendWindow: number;
  pending: Pending[] | null = null;
  /** Bytes the peer sent on this stream that went on, not yet given back. */
  unacked = 0;
  remoteEnded = false;
  localEnded = false;
  /** A request's declared content-length (-1: none) and the DATA received against it (RFC 9113 §8.1.1). */
  contentLength = -1;
  received = 0;
  readonly rpc: Rpc;

  constructor(conn: Conn, id: number, rpc: Rpc) {
    this.conn = conn;
    this.id = id;
    this.rpc = rpc;
    this.sendWindow = conn.peerInitialWindow;
  }
}

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

abstract class Conn {
  readonly socket: net.Socket;
  readonly decoder = new HpackDecoder();
  readonly streams = new Map<number, Leg>();
  peerInitialWindow = 65535;
  peerMaxFrame = 16384;
  peerMaxStreams = Infinity;
  sendWindow = 65535;
  /** Connection-level bytes received and passed on, not yet given back. */
  unacked = 0;
  closed = false;
  /**
   * DATA on a closed stream gets RST_STREAM(STREAM_CLOSED) (RFC 9113 §5.1); not
   * from a backend, whose late frames on streams we reset are expected and ignored.
   */
  protected answerClosed = true;
  #blocked = new Set<Leg>();
  #rbuf: Buffer | null = null;
  // Output: frames are written into a slab; each flush writes what was added since.
  #slab = Buffer.allocUnsafe(SLAB);
  #start = 0;
  #pos = 0;
  #chunks: Buffer[] = [];
  #dirty = false;
  // A header block spread over CONTINUATION frames.
  #contSid = 0;
  #contFlags = 0;
  #contParts: Buffer[] = [];

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => { this.read(chunk); flushAll(); });
    socket.on('error', () => {});
    socket.on('close', () => { this.teardown(); flushAll(); });
  }

  /** Initial bytes: the preface (client side only). Returns the offset frames start at, or -1 to wait. */
  protected abstract preface(buf: Buffer): number;
  protected abstract headers(sid: number, flags: number, count: number): void;
  protected abstract idle(sid: number): boolean;
  protected abstract goaway(lastId: number): void;
  protected abstract lost(): void;

  read(chunk: Buffer): void {
    if (this.closed) return;
    let buf = chunk;
    if (this.#rbuf !== null) {
      buf = Buffer.concat([this.#rbuf, chunk]);
      this.#rbuf = null;
    }
    let off = this.preface(buf);
    if (off < 0) { this.#rbuf = buf; return; }
    try {
      while (buf.length - off >= 9) {
        const len = (buf[off]! << 16) | (buf[off + 1]! << 8) | buf[off + 2]!;
        if (len > MAX_FRAME) throw new ConnError(FRAME_SIZE_ERROR, 'frame too large');
        if (buf.length - off - 9 < len) break;
        const sid = buf.readUInt32BE(off + 5) & 0x7fffffff;
        this.frame(buf[off + 3]!, buf[off + 4]!, sid, buf, off + 9, off + 9 + len);
        if (this.closed) return;
        off += 9 + len;
      }
    } catch (err) {
      if (err instanceof ConnError) { this.fail(err.code); return; }
      if (err instanceof HpackError) { this.fail(COMPRESSION_ERROR); return; }
      throw err;
    }
    if (off < buf.length) this.#rbuf = buf.subarray(off);
  }

  frame(type: number, flags: number, sid: number, buf: Buffer, start: number, end: number): void {
    if (this.#contSid !== 0 && (type !== CONTINUATION || sid !== this.#contSid)) throw new ConnError(PROTOCOL_ERROR, 'expected CONTINUATION');
    const len = end - start;
    switch (type) {
      case DATA: {
        if (sid === 0) throw new ConnError(PROTOCOL_ERROR, 'DATA on stream 0');
        let e = end;
        let s = start;
        if (flags & PADDED) {
          if (len < 1) throw new ConnError(FRAME_SIZE_ERROR, 'padded DATA without its length');
          e -= buf[s++]!;
          if (e < s) throw new ConnError(PROTOCOL_ERROR, 'padding longer than the frame');
        }
        const leg = this.streams.get(sid);
        if (leg === undefined || leg.remoteEnded) {
          if (this.idle(sid)) throw new ConnError(PROTOCOL_ERROR, 'DATA on an idle stream');
          this.giveBack(null, len);
          if (leg !== undefined) this.reset(leg, STREAM_CLOSED);
          else if (this.answerClosed) this.rst(sid, STREAM_CLOSED);
          return;
        }
        // Padding goes back at once; the data when it has gone on.
        if (len !== e - s) this.giveBack(leg, len - (e - s));
        const endStream = (flags & END_STREAM) !== 0;
        if (leg.contentLength >= 0) {
          leg.received += e - s;
          if (leg.received > leg.contentLength || (endStream && leg.received !== leg.contentLength)) {
            this.giveBack(null, e - s);
            this.reset(leg, PROTOCOL_ERROR);
            return;
          }
        }
        if (endStream) leg.remoteEnded = true;
        const out = leg.other;
        if (out === null || out.localEnded) { this.giveBack(leg, e - s); return; }
        out.conn.sendData(out, buf, s, e, endStream);
        if (endStream) this.maybeDone(leg);
        return;
      }
      case HEADERS: {
        if (sid === 0) throw new ConnError(PROTOCOL_ERROR, 'HEADERS on stream 0');
        let s = start;
        let e = end;
        if (flags & PADDED) {
          if (len < 1) throw new ConnError(FRAME_SIZE_ERROR, 'padded HEADERS without its length');
          e -= buf[s++]!;
        }
        let selfDependent = false;
        if (flags & PRIORITY_FLAG) {
          selfDependent = (buf.readUInt32BE(s) & 0x7fffffff) === sid;
          s += 5;
        }
        if (e < s) throw new ConnError(PROTOCOL_ERROR, 'padding longer than the frame');
        if ((flags & END_HEADERS) === 0) {
          this.#contSid = sid;
          this.#contFlags = flags;
          this.#contParts = [Buffer.from(buf.subarray(s, e))];
          return;
        }
        const count = this.decoder.decode(buf, s, e, hdrs);
        if (selfDependent) { this.rstIdle(sid, PROTOCOL_ERROR); return; }
        this.headers(sid, flags, count);
        return;
      }
      case CONTINUATION: {
        if (this.#contSid === 0 || sid !== this.#contSid) throw new ConnError(PROTOCOL_ERROR, 'CONTINUATION without HEADERS');
        this.#contParts.push(Buffer.from(buf.subarray(start, end)));
        if ((flags & END_HEADERS) === 0) return;
        const block = Buffer.concat(this.#contParts);
        this.#contSid = 0;
        this.#contParts = [];
        const count = this.decoder.decode(block, 0, block.length, hdrs);
        this.headers(sid, this.#contFlags, count);
        return;
      }
      case PRIORITY:
        if (sid === 0) throw new ConnError(PROTOCOL_ERROR, 'PRIORITY on stream 0');
        if (len !== 5) { this.rst(sid, FRAME_SIZE_ERROR); return; }
        if ((buf.readUInt32BE(start) & 0x7fffffff) === sid) this.rstIdle(sid, PROTOCOL_ERROR);
        return;
      case RST_STREAM: {
        if (sid === 0) throw new ConnError(PROTOCOL_ERROR, 'RST_STREAM on stream 0');
        if (len !== 4) throw new ConnError(FRAME_SIZE_ERROR, 'RST_STREAM length');
        const leg = this.streams.get(sid);
        if (leg === undefined) {
          if (this.idle(sid)) throw new ConnError(PROTOCOL_ERROR, 'RST_STREAM on an idle stream');
          return;
        }
        this.peerReset(leg, buf.readUInt32BE(start));
        return;
      }
      case SETTINGS:
        if (sid !== 0) throw new ConnError(PROTOCOL_ERROR, 'SETTINGS on a stream');
        if (flags & ACK) {
          if (len !== 0) throw new ConnError(FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
          return;
        }
        if (len % 6 !== 0) throw new ConnError(FRAME_SIZE_ERROR, 'SETTINGS length');
        for (let p = start; p < end; p += 6) this.setting(buf.readUInt16BE(p), buf.readUInt32BE(p + 2));
        this.writeFrameHeader(0, SETTINGS, ACK, 0);
        return;
      case PUSH_PROMISE:
        throw new ConnError(PROTOCOL_ERROR, 'PUSH_PROMISE');
      case PING:
        if (sid !== 0) throw new ConnError(PROTOCOL_ERROR, 'PING on a stream');
        if (len !== 8) throw new ConnError(FRAME_SIZE_ERROR, 'PING length');
        if ((flags & ACK) === 0) {
          this.writeFrameHeader(8, PING, ACK, 0);
          this.writeBytes(buf, start, end);
        }
        return;
      case GOAWAY:
        if (sid !== 0) throw new ConnError(PROTOCOL_ERROR, 'GOAWAY on a stream');
        if (len < 8) throw new ConnError(FRAME_SIZE_ERROR, 'GOAWAY length');
        this.goaway(buf.readUInt32BE(start) & 0x7fffffff);
        return;
      case WINDOW_UPDATE: {
        if (len !== 4) throw new ConnError(FRAME_SIZE_ERROR, 'WINDOW_UPDATE length');
        const inc = buf.readUInt32BE(start) & 0x7fffffff;
        if (sid === 0) {
          if (inc === 0) throw new ConnError(PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
          this.sendWindow += inc;
          if (this.sendWindow > MAX_WINDOW) throw new ConnError(FLOW_CONTROL_ERROR, 'connection window overflow');
          for (const leg of this.#blocked) this.drain(leg);
          return;
        }
        const leg = this.streams.get(sid);
        if (leg === undefined) {
          if (this.idle(sid)) throw new ConnError(PROTOCOL_ERROR, 'WINDOW_UPDATE on an idle stream');
          return;
        }
        if (inc === 0) { this.reset(leg, PROTOCOL_ERROR); return; }
        leg.sendWindow += inc;
        if (leg.sendWindow > MAX_WINDOW) { this.reset(leg, FLOW_CONTROL_ERROR); return; }
        if (leg.pending !== null) this.drain(leg);
        return;
      }
      default:
        return; // unknown frame types are ignored (RFC 9113 §5.5)
    }
  }

  setting(id: number, value: number): void {
    switch (id) {
      case 2:
        if (value > 1) throw new ConnError(PROTOCOL_ERROR, 'ENABLE_PUSH');
        return;
      case 3: this.peerMaxStreams = value; return;
      case 4: {
        if (value > MAX_WINDOW) throw new ConnError(FLOW_CONTROL_ERROR, 'INITIAL_WINDOW_SIZE');
        const delta = value - this.peerInitialWindow;
        this.peerInitialWindow = value;
        for (const leg of this.streams.values()) {
          leg.sendWindow += delta;
          if (leg.sendWindow > MAX_WINDOW) throw new ConnError(FLOW_CONTROL_ERROR, 'stream window overflow');
          if (delta > 0 && leg.pending !== null) this.drain(leg);
        }
        return;
      }
      case 5:
        if (value < 16384 || value > 16777215) throw new ConnError(PROTOCOL_ERROR, 'MAX_FRAME_SIZE');
        this.peerMaxFrame = value;
        return;
      default:
        return; // header table size: our encoder never indexes; unknown settings are ignored
    }
  }

  // --- sending --------------------------------------------------------------

  /** DATA on `leg` (this connection's side of the stream), as the windows allow; the rest waits. */
  sendData(leg: Leg, buf: Buffer, s: number, e: number, end: boolean): void {
    if (leg.pending === null) {
      const n = e - s;
      if (n === 0 || (n <= leg.sendWindow && n <= this.sendWindow)) {
        this.#dataFrame(leg, buf, s, e, end);
        return;
      }
      leg.pending = [];
      this.#blocked.add(leg);
    }
    leg.pending.push({ data: buf.subarray(s, e), hdrCount: 0, hdrs: null, end });
    this.drain(leg);
  }

  #dataFrame(leg: Leg, buf: Buffer, s: number, e: number, end: boolean): void {
    const n = e - s;
    leg.sendWindow -= n;
    this.sendWindow -= n;
    this.writeFrameHeader(n, DATA, end ? END_STREAM : 0, leg.id);
    if (n <= COPY_LIMIT) this.writeBytes(buf, s, e);
    else this.writeChunk(buf.subarray(s, e));
    if (end) { leg.localEnded = true; this.maybeDone(leg); }
    const from = leg.other;
    if (from !== null && n > 0) from.conn.giveBack(from, n);
  }

  /** A header block on `leg`; behind any DATA still waiting for the window. */
  sendHeaders(leg: Leg, h: string[], count: number, end: boolean): void {
    if (leg.pending !== null) {
      leg.pending.push({ data: null, hdrCount: count, hdrs: h.slice(0, count), end });
      return;
    }
    this.#headersFrame(leg.id, h, count, end);
    if (end) { leg.localEnded = true; this.maybeDone(leg); }
  }

  #headersFrame(sid: number, h: string[], count: number, end: boolean): void {
    const bound = blockBound(h, count);
    if (bound > blockScratch.length) blockScratch = Buffer.allocUnsafe(bound);
    const len = encodeBlock(h, count, blockScratch, 0);
    const flags = end ? END_STREAM : 0;
    if (len <= this.peerMaxFrame) {
      this.writeFrameHeader(len, HEADERS, flags | END_HEADERS, sid);
      this.writeBytes(blockScratch, 0, len);
      return;
    }
    for (let p = 0; p < len; p += this.peerMaxFrame) {
      const e = Math.min(len, p + this.peerMaxFrame);
      this.writeFrameHeader(e - p, p === 0 ? HEADERS : CONTINUATION, (p === 0 ? flags : 0) | (e === len ? END_HEADERS : 0), sid);
      this.writeBytes(blockScratch, p, e);
    }
  }

  /** Sends what the windows now admit of a leg's waiting frames. */
  drain(leg: Leg): void {
    const q = leg.pending;
    if (q === null) return;
    while (q.length > 0) {
      const item = q[0]!;
      if (item.data === null) {
        this.#headersFrame(leg.id, item.hdrs!, item.hdrCount, item.end);
        if (item.end) leg.localEnded = true;
        q.shift();
        continue;
      }
      const n = item.data.length;
      const room = Math.min(leg.sendWindow, this.sendWindow);
      if (n === 0 || n <= room) {
        q.shift();
        this.#dataFrame(leg, item.data, 0, n, item.end);
        continue;
      }
      if (room <= 0) return;
      this.#dataFrame(leg, item.data, 0, room, false);
      item.data = item.data.subarray(room);
    }
    leg.pending = null;
    this.#blocked.delete(leg);
    this.maybeDone(leg);
  }

  /** `n` bytes received on `leg` (null: on a stream already gone) have been passed on: give the window back. */
  giveBack(leg: Leg | null, n: number): void {
    this.unacked += n;
    if (this.unacked >= CONN_WINDOW / 2) {
      this.windowUpdate(0, this.unacked);
      this.unacked = 0;
    }
    if (leg === null || leg.remoteEnded) return;
    leg.unacked += n;
    if (leg.unacked >= STREAM_WINDOW / 2) {
      this.windowUpdate(leg.id, leg.unacked);
      leg.unacked = 0;
    }
  }

  windowUpdate(sid: number, n: number): void {
    this.writeFrameHeader(4, WINDOW_UPDATE, 0, sid);
    const p = this.#reserve(4);
    this.#slab.writeUInt32BE(n, p);
    this.#pos = p + 4;
  }

  rst(sid: number, code: number): void {
    this.writeFrameHeader(4, RST_STREAM, 0, sid);
    const p = this.#reserve(4);
    this.#slab.writeUInt32BE(code, p);
    this.#pos = p + 4;
  }

  /** A stream error on a stream that may be idle: RST it (it is then closed). */
  rstIdle(sid: number, code: number): void {
    const leg = this.streams.get(sid);
    if (leg !== undefined) this.reset(leg, code);
    else this.rst(sid, code);
  }

  /** We reset `leg` (a stream error): the other side is cancelled. */
  reset(leg: Leg, code: number): void {
    this.rst(leg.id, code);
    this.#remove(leg);
    const other = leg.other;
    if (other !== null && other.conn.streams.get(other.id) === other) {
      other.conn.rst(other.id, CANCEL);
      other.conn.#remove(other);
    }
  }

  /** The peer reset `leg`: the reset goes on to the other side. */
  peerReset(leg: Leg, code: number): void {
    this.#remove(leg);
    const other = leg.other;
    if (other !== null && other.conn.streams.get(other.id) === other) {
      other.conn.lostPeer(other, code);
    }
  }

  /** The other side of `leg` went away (reset with `code`, or its connection lost: -1). */
  lostPeer(leg: Leg, code: number): void {
    this.rst(leg.id, code < 0 ? CANCEL : code);
    this.#remove(leg);
  }

  maybeDone(leg: Leg): void {
    if (leg.localEnded && leg.remoteEnded && leg.pending === null) this.#remove(leg);
  }

  #remove(leg: Leg): void {
    if (this.streams.get(leg.id) !== leg) return;
    this.streams.delete(leg.id);
    if (leg.pending !== null) { leg.pending = null; this.#blocked.delete(leg); }
    this.removed(leg);
  }

  protected removed(_leg: Leg): void {}

  /** A connection error: GOAWAY with `code`, then close. */
  fail(code: number): void {
    if (this.closed) return;
    this.writeFrameHeader(8, GOAWAY, 0, 0);
    const p = this.#reserve(8);
    this.#slab.writeUInt32BE(this.lastPeerStream(), p);
    this.#slab.writeUInt32BE(code, p + 4);
    this.#pos = p + 8;
    this.flush();
    this.socket.end();
    this.teardown();
  }

  protected lastPeerStream(): number {
    return 0;
  }

  teardown(): void {
    if (this.closed) return;
    this.closed = true;
    this.lost();
    for (const leg of this.streams.values()) {
      const other = leg.other;
      if (other !== null && other.conn.streams.get(other.id) === other) other.conn.lostPeerConn(other);
    }
    this.streams.clear();
    this.#blocked.clear();
    if (!this.socket.destroyed) setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /** The other side's connection is gone. */
  lostPeerConn(leg: Leg): void {
    this.lostPeer(leg, -1);
  }

  // --- output slab ------------------------------------------------------------

  #reserve(n: number): number {
    if (this.#pos + n > this.#slab.length) {
      if (this.#pos > this.#start) this.#chunks.push(this.#slab.subarray(this.#start, this.#pos));
      this.#slab = Buffer.allocUnsafe(Math.max(SLAB, n));
      this.#start = 0;
      this.#pos = 0;
    }
    if (!this.#dirty) { this.#dirty = true; dirty.push(this); }
    return this.#pos;
  }

  writeFrameHeader(len: number, type: number, flags: number, sid: number): void {
    const p = this.#reserve(9);
    const b = this.#slab;
    b[p] = len >>> 16; b[p + 1] = (len >>> 8) & 0xff; b[p + 2] = len & 0xff;
    b[p + 3] = type; b[p + 4] = flags;
    b.writeUInt32BE(sid, p + 5);
    this.#pos = p + 9;
  }

  writeBytes(src: Buffer, s: number, e: number): void {
    const p = this.#reserve(e - s);
    src.copy(this.#slab, p, s, e);
    this.#pos = p + e - s;
  }

  /** A long payload goes out as it is (writev), after what the slab holds so far. */
  writeChunk(b: Buffer): void {
    this.#reserve(0);
    if (this.#pos > this.#start) this.#chunks.push(this.#slab.subarray(this.#start, this.#pos));
    this.#start = this.#pos;
    this.#chunks.push(b);
  }

  flush(): void {
    this.#dirty = false;
    if (this.socket.destroyed) { this.#chunks = []; this.#start = this.#pos; return; }
    const tail = this.#pos > this.#start ? this.#slab.subarray(this.#start, this.#pos) : null;
    this.#start = this.#pos;
    if (this.#chunks.length === 0) {
      if (tail !== null) this.socket.write(tail);
      return;
    }
    this.socket.cork();
    for (const c of this.#chunks) this.socket.write(c);
    if (tail !== null) this.socket.write(tail);
    this.socket.uncork();
    this.#chunks = [];
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
    for (const c of this.pool) {
      if (!c.draining && c.streams.size < perConn && c.streams.size < c.peerMaxStreams && c.nextId < MAX_WINDOW) return c;
    }
    const c = new UpConn(this);
    this.pool.push(c);
    return c;
  }
}

class UpConn extends Conn {
  readonly backend: Backend;
  nextId = 1;
  draining = false;
  protected override answerClosed = false;

  constructor(backend: Backend) {
    super(net.connect(backend.port, backend.host));
    this.backend = backend;
    // Preface, SETTINGS (no push, our stream window), the connection window; written once connected.
    this.writeBytes(PREFACE, 0, PREFACE.length);
    this.writeFrameHeader(12, SETTINGS, 0, 0);
    this.writeBytes(SETTINGS_PAYLOAD_UP, 0, 12);
    this.windowUpdate(0, CONN_WINDOW - 65535);
  }

  protected preface(_buf: Buffer): number {
    return 0;
  }

  protected idle(sid: number): boolean {
    return sid >= this.nextId;
  }

  /** Response headers, 1xx, or trailers from the backend. */
  protected headers(sid: number, flags: number, count: number): void {
    const leg = this.streams.get(sid);
    if (leg === undefined) return; // a stream we reset: decoded only to keep the table in step
    const end = (flags & END_STREAM) !== 0;
    const client = leg.other!;
    let n = 0;
    let grpcStatus = -1;
    for (let i = 0; i < count; i += 2) {
      const name = hdrs[i]!;
      if (CONNECTION_SPECIFIC.has(name)) continue;
      if (name === 'grpc-status') grpcStatus = Number(hdrs[i + 1]);
      outHdrs[n++] = name;
      outHdrs[n++] = hdrs[i + 1]!;
    }
    if (end) leg.remoteEnded = true;
    leg.rpc.responseStarted = true;
    if (!client.localEnded) {
      client.conn.sendHeaders(client, outHdrs, n, end);
      if (end) rpcDone(leg.rpc, grpcStatus);
    }
    if (end) this.maybeDone(leg);
  }

  protected goaway(lastId: number): void {
    this.draining = true;
    // Streams the backend will not process: fail them (a retry would go here).
    for (const leg of [...this.streams.values()]) {
      if (leg.id > lastId) this.#failStream(leg, 'backend went away');
    }
    if (this.streams.size === 0) this.socket.end();
  }

  protected lost(): void {
    const i = this.backend.pool.indexOf(this);
    if (i >= 0) this.backend.pool.splice(i, 1);
    for (const leg of [...this.streams.values()]) this.#failStream(leg, 'backend connection lost');
  }

  /** The backend cannot answer this stream: a Trailers-Only UNAVAILABLE (or 502) if nothing was sent yet, else a reset. */
  #failStream(leg: Leg, msg: string): void {
    const client = leg.other!;
    this.streams.delete(leg.id);
    if (client.conn.streams.get(client.id) !== client || client.localEnded) return;
    if (!leg.rpc.responseStarted) {
      leg.rpc.responseStarted = true;
      const h = leg.rpc.grpc
        ? [':status', '200', 'content-type', 'application/grpc', 'grpc-status', '14', 'grpc-message', msg]
        : [':status', '502'];
      client.pending = null;
      client.conn.sendHeaders(client, h, h.length, true);
      rpcDone(leg.rpc, 14);
      if (!client.remoteEnded) client.conn.rstIdle(client.id, NO_ERROR);
    } else {
      client.conn.lostPeer(client, INTERNAL_ERROR);
    }
  }

  protected override removed(_leg: Leg): void {
    if (this.draining && this.streams.size === 0) this.socket.end();
  }

  protected override lastPeerStream(): number {
    return 0;
  }

  /** Opens a stream to the backend for `client`'s request. */
  open(client: Leg, h: string[], count: number, end: boolean): void {
    const leg = new Leg(this, this.nextId, client.rpc);
    this.nextId += 2;
    leg.other = client;
    client.other = leg;
    this.streams.set(leg.id, leg);
    this.sendHeaders(leg, h, count, end);
  }
}

function settingsPayload(pairs: [number, number][]): Buffer {
  const b = Buffer.alloc(pairs.length * 6);
  pairs.forEach(([id, v], i) => { b.writeUInt16BE(id, i * 6); b.writeUInt32BE(v, i * 6 + 2); });
  return b;
}
const SETTINGS_PAYLOAD_UP = settingsPayload([[2, 0], [4, STREAM_WINDOW]]);
const SETTINGS_PAYLOAD_CLIENT = settingsPayload([[3, MAX_CLIENT_STREAMS], [4, STREAM_WINDOW]]);

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

class ClientConn extends Conn {
  readonly cfg: Config;
  readonly clientIp: string;
  #prefaceSeen = false;
  #settingsSeen = false;
  #lastId = 0;
  #goingAway = false;

  constructor(socket: net.Socket, cfg: Config) {
    super(socket);
    this.cfg = cfg;
    this.clientIp = socket.remoteAddress ?? '';
    this.writeFrameHeader(SETTINGS_PAYLOAD_CLIENT.length, SETTINGS, 0, 0);
    this.writeBytes(SETTINGS_PAYLOAD_CLIENT, 0, SETTINGS_PAYLOAD_CLIENT.length);
    this.windowUpdate(0, CONN_WINDOW - 65535);
  }

  protected preface(buf: Buffer): number {
    if (this.#prefaceSeen) return 0;
    const n = Math.min(buf.length, PREFACE.length);
    if (buf.compare(PREFACE, 0, n, 0, n) !== 0) { this.fail(PROTOCOL_ERROR); return buf.length; }
    if (buf.length < PREFACE.length) return -1;
    this.#prefaceSeen = true;
    return PREFACE.length;
  }

  override frame(type: number, flags: number, sid: number, buf: Buffer, start: number, end: number): void {
    if (!this.#settingsSeen) {
      if (type !== SETTINGS || (flags & ACK) !== 0) throw new ConnError(PROTOCOL_ERROR, 'the preface is not followed by SETTINGS');
      this.#settingsSeen = true;
    }
    super.frame(type, flags, sid, buf, start, end);
  }

  protected idle(sid: number): boolean {
    return sid > this.#lastId;
  }

  protected override lastPeerStream(): number {
    return this.#lastId;
  }

  protected goaway(_lastId: number): void {
    this.#goingAway = true;
    if (this.streams.size === 0) this.socket.end();
  }

  protected override removed(_leg: Leg): void {
    if (this.#goingAway && this.streams.size === 0) this.socket.end();
  }

  protected lost(): void {}

  protected headers(sid: number, flags: number, count: number): void {
    const end = (flags & END_STREAM) !== 0;
    const existing = this.streams.get(sid);
    if (existing !== undefined) {
      // Trailers: they must end the stream and carry no pseudo-headers.
      if (existing.remoteEnded) { this.reset(existing, STREAM_CLOSED); return; }
      if (!end || !validTrailers(count)) { this.reset(existing, PROTOCOL_ERROR); return; }
      existing.remoteEnded = true;
      const up = existing.other!;
      up.conn.sendHeaders(up, hdrs, count, true);
      this.maybeDone(existing);
      return;
    }
    if ((sid & 1) === 0) throw new ConnError(PROTOCOL_ERROR, 'even stream id');
    if (sid <= this.#lastId) throw new ConnError(STREAM_CLOSED, 'HEADERS on a closed stream');
    this.#lastId = sid;
    if (this.streams.size >= MAX_CLIENT_STREAMS) { this.rst(sid, REFUSED_STREAM); return; }
    // Validate (RFC 9113 §8.2, §8.3) and build the upstream list in one pass.
    let authority = '';
    let contentLength = -1;
    let grpc = false;
    let method = false, scheme = false, path = false, regular = false;
    let n = 0;
    for (let i = 0; i < count; i += 2) {
      const name = hdrs[i]!;
      const value = hdrs[i + 1]!;
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
    outHdrs[n++] = 'x-forwarded-for';
    outHdrs[n++] = this.clientIp;
    outHdrs[n++] = 'x-forwarded-proto';
    outHdrs[n++] = 'http';

    const rpc = new Rpc();
    rpc.grpc = grpc;
    rpc.start = performance.now();
    if (end && contentLength > 0) { this.rst(sid, PROTOCOL_ERROR); return; }
    const leg = new Leg(this, sid, rpc);
    leg.remoteEnded = end;
    leg.contentLength = contentLength;
    this.streams.set(sid, leg);
    if (this.cfg.hosts !== null && !this.cfg.hosts.has(hostOf(authority))) {
      const h = grpc
        ? [':status', '200', 'content-type', 'application/grpc', 'grpc-status', '12', 'grpc-message', 'no route']
        : [':status', '404'];
      this.sendHeaders(leg, h, h.length, true);
      rpcDone(rpc, 12);
      if (!end) this.rstIdle(sid, NO_ERROR);
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

function validTrailers(count: number): boolean {
  for (let i = 0; i < count; i += 2) if (hdrs[i]!.charCodeAt(0) === 58 || hasUpper(hdrs[i]!)) return false;
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
  const server = net.createServer({ noDelay: true }, (socket) => { new ClientConn(socket, cfg); flushAll(); });
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
