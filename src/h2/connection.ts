// The role-neutral HTTP/2 connection (RFC 9113) over a net.Socket, adopted
// from the frame-level prototype (bench/results/frame-prototype-2026-11-30.md).
// The server role (src/ingress) and the client role (src/upstream) extend it.
//
// API
//   class MyStream extends H2Stream { ... }            // per-stream state of the role
//   class MyConn extends H2Connection<MyStream> { ... } // super(socket, config, head?)
//   config: H2Config — server (accepts streams, reads the preface, peer ids odd)
//     or client (sends the preface, opens odd ids); the windows and limits we advertise.
//   Hooks the role implements (all called synchronously from a socket read):
//     onHeaders(stream | null, sid, list, count, endStream)  HEADERS (+CONTINUATION),
//       HPACK-decoded into `list` as name, value, … (count strings; reused: copy what
//       you keep). stream null: a new peer stream (server role only) — register() it
//       or rst(sid, code). Trailers come the same way on a known stream.
//     onData(stream, buf, start, end, endStream)  a DATA payload (padding removed). The
//       bytes are the socket's: keep the slice or copy it. Call consumed(stream, n) when
//       they have moved on: that gives the peer its window back.
//     onReset(stream, code, byPeer)   the stream ended by RST_STREAM: the peer's, or one
//       this layer sent for a stream error (not when the role called reset() itself).
//     onGoaway(lastStreamId, code)    the peer's GOAWAY; streams above lastStreamId were
//       not processed (their onReset follows with REFUSED_STREAM, byPeer true).
//     onWritable(stream)              what waited on the stream's send window has gone out
//       (if that ended both sides, the stream is already closed).
//     onClose(err)                    the connection is gone; open streams are still in
//       `streams` during the call (nothing else is called for them), cleared after.
//   Optional hooks: frameIn(type, flags, sid, length) before each frame (the role's
//     own abuse accounting: call fail(ENHANCE_YOUR_CALM) to stop; the budgets any
//     peer gets, for frames that do no stream's work, empty frames and answers it
//     leaves unread, are kept here, and unread() counts a role's own answers),
//     onSettings() after each peer SETTINGS is applied, onStreamClosed(stream) when a
//     stream leaves `streams` (both ends done or reset, whoever reset it; not at
//     onClose), onSocketDrain() when the socket takes writes again, onPingAck() when
//     the ACK of our ping() came.
//   Sending: register(stream) (client role: assigns the next id), sendHeaders(stream,
//     list, count, end), sendData(stream, buf, start, end, endStream) → false when some
//     of it waits for the peer's window (onWritable tells when it went), reset(stream,
//     code), rst(sid, code), ping(), goaway(code), fail(code) (connection error: GOAWAY,
//     close), close() (end the socket once written), destroy(), trim() (an idle
//     connection lets go of its 64 KiB output slab until it writes again).
//   State: streams, lastPeerStream, peerSettings (its first SETTINGS came), settingsAcked,
//     peer settings (peerMaxStreams, peerInitialWindow, peerMaxFrame, peerMaxHeaderList),
//     canOpen, goingAway, peerGoingAway, closed, needDrain (the socket buffers more than
//     its high-water mark), writableLength, headerBlockOpen, pingsOutstanding, queued
//     (DATA bytes waiting for the peer's windows).
//   consumed(stream, n, false) gives back the stream's share only, after consumed(null, n)
//     gave the connection's: a proxy holding a stalled stream's bytes keeps the connection open to the others.
//   A hook run from a read (all but onSocketDrain and onClose) may throw
//   H2ConnectionError(code, why): the connection fails with that code.
//
// Output: frames are written into a per-connection slab and go out in one write
// per connection per socket event (or event-loop turn, for output made outside
// a socket read); DATA payloads over COPY_LIMIT are written as they are, not copied.
// The hot path allocates nothing: header lists are reused, frames are parsed in
// place, repeated fields are table references both ways.
import type { Socket } from 'node:net';
import {
  ACK, COMPRESSION_ERROR, CONTINUATION, DATA, DEFAULT_MAX_FRAME, DEFAULT_WINDOW, END_HEADERS, END_STREAM,
  ENHANCE_YOUR_CALM, FLOW_CONTROL_ERROR, FRAME_HEADER, FRAME_SIZE_ERROR, GOAWAY, HEADERS, MAX_MAX_FRAME, MAX_WINDOW,
  PADDED, PING, PREFACE, PRIORITY, PRIORITY_FLAG, PROTOCOL_ERROR, PUSH_PROMISE, REFUSED_STREAM, RST_STREAM,
  SETTINGS, SETTINGS_ENABLE_PUSH, SETTINGS_HEADER_TABLE_SIZE, SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE, STREAM_CLOSED,
  WINDOW_UPDATE, settingsPayload, writeFrameHeader,
} from './frames.ts';
import { HpackDecoder, HpackEncoder, HpackError, blockBound } from './hpack.ts';

export interface H2Config {
  /** true: the peer opens streams (odd ids) and starts with the client preface; false: we do. */
  readonly server: boolean;
  /** Our SETTINGS_INITIAL_WINDOW_SIZE: what each stream may receive before consumed() gives it back. */
  readonly streamWindow: number;
  /** The connection's receive window (a WINDOW_UPDATE on stream 0 raises it from 65,535 at the start). */
  readonly connectionWindow: number;
  /** Advertised SETTINGS_MAX_CONCURRENT_STREAMS (the server role enforces it in onHeaders); omitted: not sent. */
  readonly maxConcurrentStreams?: number;
  /** Advertised SETTINGS_MAX_HEADER_LIST_SIZE (the role checks decoded lists against it); omitted: not sent. */
  readonly maxHeaderListSize?: number;
  /** A header block (HEADERS + CONTINUATION, compressed) longer than this is a connection error (ENHANCE_YOUR_CALM). */
  readonly maxHeaderBlock: number;
}

/** Frames at most this long are copied into the output slab; longer payloads are written as they are. */
const COPY_LIMIT = 1024;
const SLAB = 64 * 1024;
/** Our SETTINGS_MAX_FRAME_SIZE: the default, never raised. */
const MAX_FRAME = DEFAULT_MAX_FRAME;
/** Streams we reset lately: frames the peer had in flight on them are ignored (RFC 9113 §5.1, "closed"). */
const RESET_MEMORY = 64;
// Abuse budgets, the same for either peer (a client, or a hostile or broken
// backend): past one, GOAWAY ENHANCE_YOUR_CALM.
/**
 * Frames that do no stream's work (PRIORITY, WINDOW_UPDATE, SETTINGS and its
 * ACK, an unasked-for PING ACK, GOAWAY, unknown types) the peer may send: this
 * many, and this many more per stream opened (Envoy's
 * max_inbound_priority_frames_per_stream). They are answered by nothing or by
 * a small ACK, so to a peer that reads, no pile-up stops a flood of them.
 * Not PINGs: keepalives on one long stream would use it up.
 */
const CONTROL_PER_STREAM = 100;
/**
 * ...and this many more per DATA frame sent to it: a long transfer earns its
 * WINDOW_UPDATEs (Envoy: 2 × max_inbound_window_update_frames_per_data_frame_sent).
 */
const CONTROL_PER_DATA_FRAME = 20;
/** Empty DATA/HEADERS/CONTINUATION frames that end nothing, per connection (the limit node:http2 had, as maxSessionInvalidFrames). */
const MAX_EMPTY_FRAMES = 1000;
/** Answers (SETTINGS/PING ACKs, RST_STREAM for frames on closed or refused streams) written while the peer does not read its socket. */
const MAX_UNREAD_ACKS = 1000;

/** A connection error: GOAWAY with `code`, then the connection closes. */
export class H2ConnectionError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

/** Something waiting for the peer's window: a piece of DATA, or a header block behind DATA (trailers). */
class Pending {
  data: Buffer | null;
  readonly list: string[] | null;
  readonly end: boolean;
  constructor(data: Buffer | null, list: string[] | null, end: boolean) {
    this.data = data;
    this.list = list;
    this.end = end;
  }
}

/** A stream as this layer keeps it; the roles extend it with their own state. */
export class H2Stream {
  id: number;
  /** What we may still send (the peer's window for this stream). */
  sendWindow = 0;
  /** What the peer may still send before we give window back. */
  recvWindow = 0;
  /** Bytes consumed and not yet given back with WINDOW_UPDATE. */
  unacked = 0;
  /** DATA and header blocks waiting for the send window, in order; null when nothing waits. */
  pending: Pending[] | null = null;
  /** We sent END_STREAM (or it waits in `pending`). */
  localEnded = false;
  /** The peer sent END_STREAM. */
  remoteEnded = false;
  /** Gone from the connection: both ends done, or reset. */
  closed = false;
  /** The declared content-length (-1: none), set by the role; DATA (and trailers ending the stream) are checked against it (RFC 9113 §8.1.1). */
  contentLength = -1;
  received = 0;

  /** `id`: the peer's stream id in the server role; 0 in the client role (register() assigns it). */
  constructor(id = 0) {
    this.id = id;
  }
}

/** A connection holds no slab until it writes (and again after trim()). */
const NO_SLAB = Buffer.alloc(0);
/** Decoded header lists, reused by every connection: name, value, name, value… */
const list: string[] = [];
/** HPACK output before it is framed; grows to the largest block. */
let blockScratch = Buffer.allocUnsafe(SLAB);

// Connections with output waiting. A socket read flushes them when it is done;
// output made outside a read (timers, another socket's events) is flushed at
// the end of the event-loop turn.
const dirty: H2Connection<H2Stream>[] = [];
let inRead = false;
let flushScheduled = false;
function flushAll(): void {
  flushScheduled = false;
  for (let i = 0; i < dirty.length; i++) dirty[i]!.flush();
  dirty.length = 0;
}

export abstract class H2Connection<S extends H2Stream> {
  readonly socket: Socket;
  readonly config: H2Config;
  readonly streams = new Map<number, S>();
  readonly #decoder = new HpackDecoder();
  readonly #encoder = new HpackEncoder();
  // Peer settings.
  peerInitialWindow = DEFAULT_WINDOW;
  peerMaxFrame = DEFAULT_MAX_FRAME;
  peerMaxStreams = Infinity;
  peerMaxHeaderList = Infinity;
  /** The peer's first SETTINGS has come. */
  peerSettings = false;
  /** Our SETTINGS were acknowledged. */
  settingsAcked = false;
  /** Connection-level send window. */
  sendWindow = DEFAULT_WINDOW;
  /** The connection receive window we keep: at least the default, which SETTINGS cannot lower. */
  readonly #connWindow: number;
  #recvWindow: number;
  #unacked = 0;
  /** The highest stream id the peer opened. */
  lastPeerStream = 0;
  #nextId: number;
  /** The new peer stream onHeaders(null, …) is being called for, and whether its HEADERS ended it. */
  #newSid = 0;
  #newEnd = false;
  /** We sent GOAWAY: peer streams above lastPeerStream as it was then are ignored. */
  goingAway = false;
  #goawayLast = 0;
  /** The peer sent GOAWAY: open no more streams. */
  peerGoingAway = false;
  closed = false;
  /** The socket buffers more than its high-water mark: hold back what can wait until onSocketDrain. */
  needDrain = false;
  /** PINGs sent and not acknowledged yet. */
  pingsOutstanding = 0;
  /** DATA bytes waiting on this connection's streams for the peer's windows (held in memory here). */
  queued = 0;
  #error: Error | undefined;
  #prefaceLeft: number;
  #blocked = new Set<S>();
  #resets = new Int32Array(RESET_MEMORY);
  #resetNext = 0;
  #rbuf: Buffer | null = null;
  // Output slab: each flush writes what was added since the last.
  #slab = NO_SLAB;
  #start = 0;
  #pos = 0;
  #chunks: Buffer[] = [];
  #dirty = false;
  // A header block spread over CONTINUATION frames.
  #contSid = 0;
  #contFlags = 0;
  #contBuf: Buffer | null = null;
  #contLen = 0;
  /** The SETTINGS being applied raised the peer's initial window: what waits may go after the ACK. */
  #windowGrew = false;
  /** The SETTINGS being applied set INITIAL_WINDOW_SIZE to this (-1: not). */
  #initialWindow = -1;
  #controlBudget = CONTROL_PER_STREAM;
  #emptyFrames = 0;
  #unreadAcks = 0;

  /** `head`: bytes already read from the socket (the entrypoint's sniff), the preface included. */
  constructor(socket: Socket, config: H2Config, head?: Buffer) {
    this.socket = socket;
    this.config = config;
    this.#nextId = config.server ? 2 : 1;
    this.#prefaceLeft = config.server ? PREFACE.length : 0;
    this.#connWindow = Math.max(config.connectionWindow, DEFAULT_WINDOW);
    this.#recvWindow = this.#connWindow;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      inRead = true;
      try {
        this.#read(chunk);
      } finally {
        inRead = false;
      }
      flushAll();
    });
    socket.on('drain', () => {
      this.needDrain = false;
      this.#unreadAcks = 0;
      this.onSocketDrain();
    });
    socket.on('error', (err) => { this.#error ??= err; });
    socket.on('close', () => { this.#teardown(); });
    if (!config.server) this.#bytes(PREFACE, 0, PREFACE.length);
    const pairs: [number, number][] = [];
    if (!config.server) pairs.push([SETTINGS_ENABLE_PUSH, 0]);
    if (config.maxConcurrentStreams !== undefined) pairs.push([SETTINGS_MAX_CONCURRENT_STREAMS, config.maxConcurrentStreams]);
    pairs.push([SETTINGS_INITIAL_WINDOW_SIZE, config.streamWindow]);
    if (config.maxHeaderListSize !== undefined) pairs.push([SETTINGS_MAX_HEADER_LIST_SIZE, config.maxHeaderListSize]);
    const payload = settingsPayload(pairs);
    this.#frameHeader(payload.length, SETTINGS, 0, 0);
    this.#bytes(payload, 0, payload.length);
    if (this.#connWindow > DEFAULT_WINDOW) this.#windowUpdate(0, this.#connWindow - DEFAULT_WINDOW);
    if (head !== undefined && head.length > 0) {
      inRead = true;
      try {
        this.#read(head);
      } finally {
        inRead = false;
      }
    }
  }

  // --- role hooks ------------------------------------------------------------

  protected abstract onHeaders(stream: S | null, sid: number, list: string[], count: number, endStream: boolean): void;
  protected abstract onData(stream: S, buf: Buffer, start: number, end: number, endStream: boolean): void;
  protected abstract onReset(stream: S, code: number, byPeer: boolean): void;
  protected abstract onGoaway(lastStreamId: number, code: number): void;
  protected abstract onWritable(stream: S): void;
  protected abstract onClose(err: Error | undefined): void;
  protected frameIn(_type: number, _flags: number, _sid: number, _length: number): void {}
  protected onSettings(): void {}
  protected onStreamClosed(_stream: S): void {}
  protected onSocketDrain(): void {}
  protected onPingAck(): void {}

  // --- state -----------------------------------------------------------------

  /** Client role: a new stream may be opened here now. */
  get canOpen(): boolean {
    return !this.closed && !this.goingAway && !this.peerGoingAway && this.streams.size < this.peerMaxStreams &&
      this.#nextId <= MAX_WINDOW;
  }

  /** A header block is being received (HEADERS without END_HEADERS so far). */
  get headerBlockOpen(): boolean {
    return this.#contSid !== 0;
  }

  /** Bytes handed to the socket and not yet taken by the kernel. */
  get writableLength(): number {
    return this.socket.writableLength;
  }

  // --- input -------------------------------------------------------------------

  #read(chunk: Buffer): void {
    if (this.closed) return;
    let buf = chunk;
    if (this.#rbuf !== null) {
      buf = Buffer.concat([this.#rbuf, chunk]);
      this.#rbuf = null;
    }
    let off = 0;
    try {
      if (this.#prefaceLeft > 0) {
        const at = PREFACE.length - this.#prefaceLeft;
        const n = Math.min(buf.length, this.#prefaceLeft);
        if (buf.compare(PREFACE, at, at + n, 0, n) !== 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'not the HTTP/2 preface');
        this.#prefaceLeft -= n;
        off = n;
      }
      while (buf.length - off >= FRAME_HEADER) {
        const len = (buf[off]! << 16) | (buf[off + 1]! << 8) | buf[off + 2]!;
        if (len > MAX_FRAME) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'frame larger than SETTINGS_MAX_FRAME_SIZE');
        if (buf.length - off - FRAME_HEADER < len) break;
        const type = buf[off + 3]!;
        const flags = buf[off + 4]!;
        const sid = buf.readUInt32BE(off + 5) & 0x7fffffff;
        this.frameIn(type, flags, sid, len);
        if (this.closed) return;
        if (!this.#withinBudget(type, flags, len)) { this.fail(ENHANCE_YOUR_CALM); return; }
        this.#frame(type, flags, sid, buf, off + FRAME_HEADER, off + FRAME_HEADER + len);
        if (this.closed) return;
        off += FRAME_HEADER + len;
      }
    } catch (err) {
      if (err instanceof H2ConnectionError) { this.fail(err.code); return; }
      if (err instanceof HpackError) { this.fail(COMPRESSION_ERROR); return; }
      throw err;
    }
    if (off < buf.length) this.#rbuf = buf.subarray(off);
  }

  /** Counts the frame against the abuse budgets; false once one is spent. */
  #withinBudget(type: number, flags: number, len: number): boolean {
    if (type === PRIORITY || type === WINDOW_UPDATE || type === SETTINGS || type === GOAWAY || type > CONTINUATION ||
      (type === PING && (flags & ACK) !== 0 && this.pingsOutstanding === 0)) {
      if (--this.#controlBudget < 0) return false;
      if (type !== SETTINGS) return true;
    }
    if (len === 0 && (
      (type === DATA && (flags & END_STREAM) === 0) ||
      (type === HEADERS && (flags & (END_STREAM | END_HEADERS)) !== (END_STREAM | END_HEADERS)) ||
      (type === CONTINUATION && (flags & END_HEADERS) === 0)
    ) && ++this.#emptyFrames > MAX_EMPTY_FRAMES) return false;
    // SETTINGS and PINGs are answered: from a peer that reads nothing, the answers would
    // pile up here. (DATA answered RST_STREAM is counted in #data, where the RST is written.)
    if (this.needDrain && (type === SETTINGS || type === PING) && (flags & ACK) === 0) {
      return ++this.#unreadAcks <= MAX_UNREAD_ACKS;
    }
    return true;
  }

  /** One more answer the role wrote for a peer that does not read its socket (needDrain); past MAX_UNREAD_ACKS the connection ends. */
  protected unread(): void {
    if (++this.#unreadAcks > MAX_UNREAD_ACKS) this.fail(ENHANCE_YOUR_CALM);
  }

  #frame(type: number, flags: number, sid: number, buf: Buffer, start: number, end: number): void {
    if (this.#contSid !== 0 && (type !== CONTINUATION || sid !== this.#contSid)) {
      throw new H2ConnectionError(PROTOCOL_ERROR, 'a header block interrupted');
    }
    if (!this.peerSettings && type !== SETTINGS) throw new H2ConnectionError(PROTOCOL_ERROR, 'the peer did not start with SETTINGS');
    const len = end - start;
    switch (type) {
      case DATA: this.#data(flags, sid, buf, start, end); return;
      case HEADERS: {
        if (sid === 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'HEADERS on stream 0');
        let s = start;
        let e = end;
        if (flags & PADDED) {
          if (len < 1) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'padded HEADERS without its length');
          e -= buf[s++]!;
        }
        let selfDependent = false;
        if (flags & PRIORITY_FLAG) {
          if (e - s < 5) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'HEADERS priority cut short');
          selfDependent = (buf.readUInt32BE(s) & 0x7fffffff) === sid;
          s += 5;
        }
        if (e < s) throw new H2ConnectionError(PROTOCOL_ERROR, 'padding longer than the frame');
        if ((flags & END_HEADERS) === 0) {
          this.#contSid = sid;
          this.#contFlags = flags;
          this.#contLen = 0;
          this.#append(buf, s, e);
          return;
        }
        const count = this.#decoder.decode(buf, s, e, list);
        if (selfDependent) { this.#streamError(sid, PROTOCOL_ERROR); return; }
        this.#headers(sid, flags, count);
        return;
      }
      case CONTINUATION: {
        if (this.#contSid === 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'CONTINUATION without HEADERS');
        this.#append(buf, start, end);
        if ((flags & END_HEADERS) === 0) return;
        this.#contSid = 0;
        const count = this.#decoder.decode(this.#contBuf!, 0, this.#contLen, list);
        this.#headers(sid, this.#contFlags, count);
        return;
      }
      case PRIORITY:
        if (sid === 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'PRIORITY on stream 0');
        if (len !== 5) { this.#streamError(sid, FRAME_SIZE_ERROR); return; }
        if ((buf.readUInt32BE(start) & 0x7fffffff) === sid) this.#streamError(sid, PROTOCOL_ERROR);
        return;
      case RST_STREAM: {
        if (sid === 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'RST_STREAM on stream 0');
        if (len !== 4) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'RST_STREAM length');
        const stream = this.streams.get(sid);
        if (stream === undefined) {
          if (this.#idle(sid)) throw new H2ConnectionError(PROTOCOL_ERROR, 'RST_STREAM on an idle stream');
          return;
        }
        this.#remove(stream);
        this.onReset(stream, buf.readUInt32BE(start), true);
        return;
      }
      case SETTINGS:
        if (sid !== 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'SETTINGS on a stream');
        if (flags & ACK) {
          if (len !== 0) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
          if (!this.peerSettings) throw new H2ConnectionError(PROTOCOL_ERROR, 'the peer did not start with SETTINGS');
          this.settingsAcked = true;
          return;
        }
        if (len % 6 !== 0) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'SETTINGS length');
        this.#windowGrew = false;
        this.#initialWindow = -1;
        for (let p = start; p < end; p += 6) this.#setting(buf.readUInt16BE(p), buf.readUInt32BE(p + 2));
        if (this.#initialWindow >= 0) this.#applyInitialWindow(this.#initialWindow);
        this.peerSettings = true;
        // The ACK goes before any DATA the new window admits: the peer applies
        // its new window to what it receives only once it has our ACK.
        this.#frameHeader(0, SETTINGS, ACK, 0);
        if (this.#windowGrew) for (const stream of this.#blocked) this.#drain(stream);
        this.onSettings();
        return;
      case PUSH_PROMISE:
        // We never enable push (client role) and a client cannot push (server role).
        throw new H2ConnectionError(PROTOCOL_ERROR, 'PUSH_PROMISE');
      case PING:
        if (sid !== 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'PING on a stream');
        if (len !== 8) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'PING length');
        if ((flags & ACK) === 0) {
          this.#frameHeader(8, PING, ACK, 0);
          this.#bytes(buf, start, end);
        } else if (this.pingsOutstanding > 0) {
          this.pingsOutstanding--; // an unsolicited ACK is ignored (RFC 9113 §6.7 says nothing else)
          this.onPingAck();
        }
        return;
      case GOAWAY: {
        if (sid !== 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'GOAWAY on a stream');
        if (len < 8) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'GOAWAY length');
        const lastId = buf.readUInt32BE(start) & 0x7fffffff;
        this.peerGoingAway = true;
        this.onGoaway(lastId, buf.readUInt32BE(start + 4));
        // Our streams the peer did not process: refused, so the role may retry them.
        for (const stream of this.streams.values()) {
          if (this.closed) break; // the role closed the connection from a hook
          if (this.#ours(stream.id) && stream.id > lastId && !stream.closed) {
            this.#remove(stream);
            this.onReset(stream, REFUSED_STREAM, true);
          }
        }
        return;
      }
      case WINDOW_UPDATE: {
        if (len !== 4) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'WINDOW_UPDATE length');
        const inc = buf.readUInt32BE(start) & 0x7fffffff;
        if (sid === 0) {
          if (inc === 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
          this.sendWindow += inc;
          if (this.sendWindow > MAX_WINDOW) throw new H2ConnectionError(FLOW_CONTROL_ERROR, 'connection window over 2^31-1');
          for (const stream of this.#blocked) {
            if (this.sendWindow <= 0) break;
            this.#drain(stream);
          }
          return;
        }
        const stream = this.streams.get(sid);
        if (stream === undefined) {
          if (this.#idle(sid)) throw new H2ConnectionError(PROTOCOL_ERROR, 'WINDOW_UPDATE on an idle stream');
          return;
        }
        if (inc === 0) { this.#streamError(sid, PROTOCOL_ERROR); return; }
        stream.sendWindow += inc;
        if (stream.sendWindow > MAX_WINDOW) { this.#streamError(sid, FLOW_CONTROL_ERROR); return; }
        if (stream.pending !== null) this.#drain(stream);
        return;
      }
      default:
        return; // unknown frame types are ignored (RFC 9113 §5.5)
    }
  }

  #data(flags: number, sid: number, buf: Buffer, start: number, end: number): void {
    if (sid === 0) throw new H2ConnectionError(PROTOCOL_ERROR, 'DATA on stream 0');
    const len = end - start;
    let s = start;
    let e = end;
    if (flags & PADDED) {
      if (len < 1) throw new H2ConnectionError(FRAME_SIZE_ERROR, 'padded DATA without its length');
      e -= buf[s++]!;
      if (e < s) throw new H2ConnectionError(PROTOCOL_ERROR, 'padding longer than the frame');
    }
    this.#recvWindow -= len;
    if (this.#recvWindow < 0) throw new H2ConnectionError(FLOW_CONTROL_ERROR, 'DATA beyond the connection window');
    const stream = this.streams.get(sid);
    if (stream === undefined || stream.remoteEnded) {
      if (this.#idle(sid)) throw new H2ConnectionError(PROTOCOL_ERROR, 'DATA on an idle stream');
      this.consumed(null, len);
      if (stream !== undefined) this.#streamError(sid, STREAM_CLOSED);
      else if (this.config.server && !this.#ignored(sid)) this.rst(sid, STREAM_CLOSED);
      else return;
      // An RST_STREAM went out: one more answer for a peer that may not be reading.
      if (this.needDrain) this.unread();
      return;
    }
    stream.recvWindow -= len;
    if (stream.recvWindow < 0) {
      this.consumed(null, len);
      this.#streamError(sid, FLOW_CONTROL_ERROR);
      return;
    }
    // Padding goes back at once; the data when the role has passed it on.
    if (len !== e - s) this.consumed(stream, len - (e - s));
    const endStream = (flags & END_STREAM) !== 0;
    if (stream.contentLength >= 0) {
      stream.received += e - s;
      if (stream.received > stream.contentLength || (endStream && stream.received !== stream.contentLength)) {
        this.consumed(null, e - s);
        this.#streamError(sid, PROTOCOL_ERROR);
        return;
      }
    }
    if (endStream) stream.remoteEnded = true;
    this.onData(stream, buf, s, e, endStream);
    if (endStream) this.#maybeDone(stream);
  }

  #headers(sid: number, flags: number, count: number): void {
    const endStream = (flags & END_STREAM) !== 0;
    const stream = this.streams.get(sid);
    if (stream !== undefined) {
      if (stream.remoteEnded) { this.#streamError(sid, STREAM_CLOSED); return; }
      // A request's second header block is its trailers, which end it (RFC 9113 §8.1).
      if (this.config.server && !endStream) { this.#streamError(sid, PROTOCOL_ERROR); return; }
      // Trailers end the body: it must have been as long as declared (RFC 9113 §8.1.1).
      if (endStream && stream.contentLength >= 0 && stream.received !== stream.contentLength) {
        this.#streamError(sid, PROTOCOL_ERROR);
        return;
      }
      if (endStream) stream.remoteEnded = true;
      this.onHeaders(stream, sid, list, count, endStream);
      if (endStream) this.#maybeDone(stream);
      return;
    }
    if (!this.#peers(sid)) {
      // Client role: a response on a stream we reset (decoded only to keep HPACK in step), or an idle one.
      if (sid >= this.#nextId) throw new H2ConnectionError(PROTOCOL_ERROR, 'HEADERS on an idle stream');
      return;
    }
    if (!this.config.server) throw new H2ConnectionError(PROTOCOL_ERROR, 'HEADERS opening a stream from the server');
    if (sid <= this.lastPeerStream) {
      if (this.#ignored(sid)) return;
      throw new H2ConnectionError(STREAM_CLOSED, 'HEADERS on a closed stream');
    }
    this.lastPeerStream = sid;
    if (this.goingAway) return; // after our GOAWAY: not processed (RFC 9113 §6.8)
    // register() during the hook takes END_STREAM from here.
    this.#newSid = sid;
    this.#newEnd = endStream;
    this.onHeaders(null, sid, list, count, endStream);
    this.#newSid = 0;
    const opened = this.streams.get(sid);
    if (opened !== undefined) this.#maybeDone(opened);
  }

  #append(buf: Buffer, s: number, e: number): void {
    const n = this.#contLen + e - s;
    if (n > this.config.maxHeaderBlock) throw new H2ConnectionError(ENHANCE_YOUR_CALM, 'header block too large');
    if (this.#contBuf === null || this.#contBuf.length < n) {
      const grown = Buffer.allocUnsafe(Math.max(n, 2 * (this.#contBuf?.length ?? 8192)));
      if (this.#contBuf !== null) this.#contBuf.copy(grown, 0, 0, this.#contLen);
      this.#contBuf = grown;
    }
    buf.copy(this.#contBuf, this.#contLen, s, e);
    this.#contLen = n;
  }

  #setting(id: number, value: number): void {
    switch (id) {
      case SETTINGS_ENABLE_PUSH:
        if (value > 1) throw new H2ConnectionError(PROTOCOL_ERROR, 'SETTINGS_ENABLE_PUSH above 1');
        return;
      case SETTINGS_MAX_CONCURRENT_STREAMS: this.peerMaxStreams = value; return;
      case SETTINGS_INITIAL_WINDOW_SIZE:
        if (value > MAX_WINDOW) throw new H2ConnectionError(FLOW_CONTROL_ERROR, 'SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1');
        // Applied once per frame, with its last value: the deltas of one frame add up to that,
        // and a frame of 2,730 entries must not walk every open stream 2,730 times.
        this.#initialWindow = value;
        return;
      case SETTINGS_MAX_FRAME_SIZE:
        if (value < DEFAULT_MAX_FRAME || value > MAX_MAX_FRAME) throw new H2ConnectionError(PROTOCOL_ERROR, 'SETTINGS_MAX_FRAME_SIZE out of range');
        this.peerMaxFrame = value;
        return;
      case SETTINGS_MAX_HEADER_LIST_SIZE: this.peerMaxHeaderList = value; return;
      case SETTINGS_HEADER_TABLE_SIZE: this.#encoder.setTableSize(value); return;
      default: return; // unknown settings are ignored
    }
  }

  /** Every open stream's window moves by the difference (RFC 9113 §6.9.2). */
  #applyInitialWindow(value: number): void {
    const delta = value - this.peerInitialWindow;
    this.peerInitialWindow = value;
    if (delta === 0) return;
    for (const stream of this.streams.values()) {
      stream.sendWindow += delta;
      if (stream.sendWindow > MAX_WINDOW) throw new H2ConnectionError(FLOW_CONTROL_ERROR, 'stream window over 2^31-1');
    }
    if (delta > 0) this.#windowGrew = true;
  }

  /** Stream ids the peer opens: odd ones when we serve. */
  #peers(sid: number): boolean {
    return (sid & 1) === (this.config.server ? 1 : 0);
  }

  #ours(sid: number): boolean {
    return !this.#peers(sid);
  }

  #idle(sid: number): boolean {
    return this.#peers(sid) ? sid > this.lastPeerStream : sid >= this.#nextId;
  }

  /** A closed stream whose late frames are expected: one we reset, or one above our GOAWAY. */
  #ignored(sid: number): boolean {
    if (this.goingAway && sid > this.#goawayLast) return true;
    const r = this.#resets;
    for (let i = 0; i < RESET_MEMORY; i++) if (r[i] === sid) return true;
    return false;
  }

  // --- streams -------------------------------------------------------------------

  /** Adds a stream: the server role's for a new peer stream (id set), the client role's new one (gets the next id). */
  register(stream: S): void {
    if (!this.config.server) {
      stream.id = this.#nextId;
      this.#nextId += 2;
    } else if (stream.id === this.#newSid) {
      stream.remoteEnded = this.#newEnd;
    }
    stream.sendWindow = this.peerInitialWindow;
    // Until our SETTINGS are acknowledged the peer may send up to the default window.
    stream.recvWindow = this.settingsAcked ? this.config.streamWindow : Math.max(this.config.streamWindow, DEFAULT_WINDOW);
    this.streams.set(stream.id, stream);
    this.#controlBudget += CONTROL_PER_STREAM;
  }

  /**
   * `n` bytes received on `stream` (null: on no stream) have moved on: give the
   * windows back, in halves. `connection` false: the stream's share only (the
   * connection's was given back before, with consumed(null, n)).
   */
  consumed(stream: S | null, n: number, connection = true): void {
    if (connection) {
      this.#unacked += n;
      if (this.#unacked >= this.#connWindow / 2) {
        this.#windowUpdate(0, this.#unacked);
        this.#recvWindow += this.#unacked;
        this.#unacked = 0;
      }
    }
    if (stream === null || stream.remoteEnded || stream.closed) return;
    stream.unacked += n;
    if (stream.unacked >= this.config.streamWindow / 2) {
      this.#windowUpdate(stream.id, stream.unacked);
      stream.recvWindow += stream.unacked;
      stream.unacked = 0;
    }
  }

  /** A header block on `stream`, behind any DATA still waiting for the window (trailers). */
  sendHeaders(stream: S, h: readonly string[], count: number, end: boolean): void {
    if (stream.closed || stream.localEnded) return;
    if (end) stream.localEnded = true;
    if (stream.pending !== null) {
      stream.pending.push(new Pending(null, h.slice(0, count), end));
      return;
    }
    this.#headersFrame(stream.id, h, count, end);
    if (end) this.#maybeDone(stream);
  }

  /**
   * DATA on `stream`, split to the peer's frame size and windows; what the
   * windows do not admit waits on the stream. Returns false when something
   * waits (onWritable follows when it has gone). Ignored once the stream is
   * closed or ended.
   */
  sendData(stream: S, buf: Buffer, start: number, end: number, endStream: boolean): boolean {
    if (stream.closed || stream.localEnded) return true;
    if (endStream) stream.localEnded = true;
    if (stream.pending === null) {
      let s = start;
      for (;;) {
        const n = end - s;
        const room = Math.min(stream.sendWindow, this.sendWindow, this.peerMaxFrame);
        if (n === 0 || n <= room) { // an empty frame needs no window
          this.#dataFrame(stream, buf, s, end, endStream);
          return true;
        }
        if (room <= 0) break;
        this.#dataFrame(stream, buf, s, s + room, false);
        s += room;
      }
      stream.pending = [];
      this.#blocked.add(stream);
      start = s;
    }
    stream.pending.push(new Pending(buf.subarray(start, end), null, endStream));
    this.queued += end - start;
    return false;
  }

  #dataFrame(stream: S, buf: Buffer, s: number, e: number, end: boolean): void {
    const n = e - s;
    stream.sendWindow -= n;
    this.sendWindow -= n;
    this.#frameHeader(n, DATA, end ? END_STREAM : 0, stream.id);
    if (n <= COPY_LIMIT) this.#bytes(buf, s, e);
    else this.#chunk(s === 0 && e === buf.length ? buf : buf.subarray(s, e));
    if (n > 0) this.#controlBudget += CONTROL_PER_DATA_FRAME;
    // From the queue, END_STREAM is on its last item: pending is still set, so the stream stays until #drain ends.
    if (end) this.#maybeDone(stream);
  }

  #headersFrame(sid: number, h: readonly string[], count: number, end: boolean): void {
    const bound = blockBound(h, count);
    if (bound > blockScratch.length) blockScratch = Buffer.allocUnsafe(bound);
    const len = this.#encoder.encode(h, count, blockScratch, 0);
    const flags = end ? END_STREAM : 0;
    const max = this.peerMaxFrame;
    if (len <= max) {
      this.#frameHeader(len, HEADERS, flags | END_HEADERS, sid);
      this.#bytes(blockScratch, 0, len);
      return;
    }
    for (let p = 0; p < len; p += max) {
      const e = Math.min(len, p + max);
      this.#frameHeader(e - p, p === 0 ? HEADERS : CONTINUATION, (p === 0 ? flags : 0) | (e === len ? END_HEADERS : 0), sid);
      this.#bytes(blockScratch, p, e);
    }
  }

  /** Sends what the windows now admit of what waits on `stream`. */
  #drain(stream: S): void {
    const q = stream.pending;
    if (q === null) return;
    while (q.length > 0) {
      const item = q[0]!;
      if (item.data === null) {
        this.#headersFrame(stream.id, item.list!, item.list!.length, item.end);
        q.shift();
        continue;
      }
      const n = item.data.length;
      const room = Math.min(stream.sendWindow, this.sendWindow, this.peerMaxFrame);
      if (n === 0 || n <= room) {
        q.shift();
        this.queued -= n;
        this.#dataFrame(stream, item.data, 0, n, item.end);
        continue;
      }
      if (room <= 0) return;
      this.queued -= room;
      this.#dataFrame(stream, item.data, 0, room, false);
      item.data = item.data.subarray(room);
    }
    stream.pending = null;
    this.#blocked.delete(stream);
    this.#maybeDone(stream);
    this.onWritable(stream);
  }

  #maybeDone(stream: S): void {
    if (stream.localEnded && stream.remoteEnded && stream.pending === null) this.#remove(stream);
  }

  #remove(stream: S): void {
    if (stream.closed) return;
    stream.closed = true;
    this.streams.delete(stream.id);
    if (stream.pending !== null) {
      for (const item of stream.pending) if (item.data !== null) this.queued -= item.data.length;
      stream.pending = null;
      this.#blocked.delete(stream);
    }
    this.onStreamClosed(stream);
  }

  /** We reset `stream` (the role's decision): RST_STREAM, the stream is closed. */
  reset(stream: S, code: number): void {
    if (stream.closed) return;
    this.#remove(stream);
    this.rst(stream.id, code);
  }

  /** RST_STREAM on `sid`, whether or not it is registered (a refused new stream, say). */
  rst(sid: number, code: number): void {
    this.#resets[this.#resetNext] = sid;
    this.#resetNext = (this.#resetNext + 1) % RESET_MEMORY;
    this.#frameHeader(4, RST_STREAM, 0, sid);
    this.#u32(code);
  }

  /** A stream error found here: RST_STREAM, and the role hears of it if the stream is registered. */
  #streamError(sid: number, code: number): void {
    const stream = this.streams.get(sid);
    this.rst(sid, code);
    if (stream === undefined) return;
    this.#remove(stream);
    this.onReset(stream, code, false);
  }

  // --- connection ------------------------------------------------------------------

  /** A PING for liveness; pingsOutstanding counts it until its ACK. */
  ping(): void {
    this.pingsOutstanding++;
    this.#frameHeader(8, PING, 0, 0);
    const p = this.#reserve(8);
    this.#slab.fill(0, p, p + 8);
    this.#pos = p + 8;
  }

  /** GOAWAY(code) with the last peer stream we process; streams open now go on (drain). */
  goaway(code: number): void {
    if (this.closed) return;
    this.#goaway(code);
  }

  /**
   * The first GOAWAY fixes the last peer stream id; later ones repeat it: peer
   * streams opened since were ignored, and the id may never go up (RFC 9113 §6.8).
   */
  #goaway(code: number): void {
    if (!this.goingAway) {
      this.goingAway = true;
      this.#goawayLast = this.lastPeerStream;
    }
    this.#frameHeader(8, GOAWAY, 0, 0);
    this.#u32(this.#goawayLast);
    this.#u32(code);
  }

  /** A connection error: GOAWAY(code), what is written goes out, the connection is closed. */
  fail(code: number): void {
    if (this.closed) return;
    this.#goaway(code);
    this.close();
  }

  /** Ends the connection once what is written went out; onClose is called now. */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.socket.end();
    this.#teardown();
    // A peer that never closes its side would keep the socket half-open.
    if (!this.socket.destroyed) setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  destroy(): void {
    this.socket.destroy();
    this.#teardown();
  }

  #teardown(): void {
    if (this.closed) return;
    this.closed = true;
    this.#rbuf = null;
    this.#contBuf = null;
    this.#slab = NO_SLAB;
    this.#start = this.#pos = 0;
    this.onClose(this.#error);
    this.queued = 0;
    for (const stream of this.streams.values()) stream.closed = true;
    this.streams.clear();
    this.#blocked.clear();
  }

  // --- output slab -------------------------------------------------------------------

  #reserve(n: number): number {
    if (this.#pos + n > this.#slab.length) {
      if (this.#pos > this.#start) this.#chunks.push(this.#slab.subarray(this.#start, this.#pos));
      this.#slab = Buffer.allocUnsafe(Math.max(SLAB, n));
      this.#start = 0;
      this.#pos = 0;
    }
    if (!this.#dirty) {
      this.#dirty = true;
      dirty.push(this as unknown as H2Connection<H2Stream>);
      if (!inRead && !flushScheduled) {
        flushScheduled = true;
        setImmediate(flushAll);
      }
    }
    return this.#pos;
  }

  #frameHeader(len: number, type: number, flags: number, sid: number): void {
    const p = this.#reserve(FRAME_HEADER);
    this.#pos = writeFrameHeader(this.#slab, p, len, type, flags, sid);
  }

  #u32(v: number): void {
    const p = this.#reserve(4);
    this.#slab.writeUInt32BE(v, p);
    this.#pos = p + 4;
  }

  #bytes(src: Buffer, s: number, e: number): void {
    const p = this.#reserve(e - s);
    src.copy(this.#slab, p, s, e);
    this.#pos = p + e - s;
  }

  /** A long payload goes out as it is (writev), after what the slab holds so far. */
  #chunk(b: Buffer): void {
    this.#reserve(0);
    if (this.#pos > this.#start) this.#chunks.push(this.#slab.subarray(this.#start, this.#pos));
    this.#start = this.#pos;
    this.#chunks.push(b);
  }

  #windowUpdate(sid: number, n: number): void {
    this.#frameHeader(4, WINDOW_UPDATE, 0, sid);
    this.#u32(n);
  }

  /**
   * Lets go of the output slab (64 KiB) and a header-block buffer if nothing
   * waits in them: for the role's idle sweep, so idle connections hold only
   * their state. The next write allocates a slab again.
   */
  trim(): void {
    if (this.#pos === this.#start && this.#chunks.length === 0) {
      this.#slab = NO_SLAB;
      this.#start = this.#pos = 0;
    }
    if (this.#contSid === 0) this.#contBuf = null;
  }

  /** Writes out what was added since the last flush (called by the dirty list; close() calls it directly). */
  flush(): void {
    this.#dirty = false;
    const socket = this.socket;
    if (socket.destroyed || !socket.writable) {
      this.#chunks = [];
      this.#start = this.#pos;
      return;
    }
    const tail = this.#pos > this.#start ? this.#slab.subarray(this.#start, this.#pos) : null;
    this.#start = this.#pos;
    let ok = true;
    if (this.#chunks.length === 0) {
      if (tail !== null) ok = socket.write(tail);
    } else {
      socket.cork();
      for (const c of this.#chunks) socket.write(c);
      if (tail !== null) socket.write(tail);
      socket.uncork();
      this.#chunks = [];
      ok = socket.writableLength < socket.writableHighWaterMark;
    }
    if (!ok) this.needDrain = true;
  }
}
