// A frame-level look at an HTTP/2 client connection, between the socket and
// node:http2. nghttp2 lets a few protocol errors pass that RFC 9113 says end
// the stream or the connection (h2spec finds them: frames on streams the client
// closed, a smaller stream id than one already used, PRIORITY on stream 0 or
// on itself, a stream window pushed past 2^31-1, which nghttp2 1.70 answers
// with a connection error instead of a stream error), and Node tears the whole
// session down on a PING ACK it did not ask for. It also closes sessions that
// sit idle or trickle a header block. Only frame headers are read (and the few
// bytes of PRIORITY, WINDOW_UPDATE and SETTINGS payloads); everything else
// passes as the socket delivered it.
import { Socket, type SocketConstructorOpts } from 'node:net';
import http2 from 'node:http2';
import { performance } from 'node:perf_hooks';

const DATA = 0x0, HEADERS = 0x1, PRIORITY = 0x2, RST_STREAM = 0x3, SETTINGS = 0x4, PING = 0x6, WINDOW_UPDATE = 0x8, CONTINUATION = 0x9;
// Flags, error codes and settings as node:http2 names them (frame types it does not export).
const {
  NGHTTP2_FLAG_END_STREAM: END_STREAM, NGHTTP2_FLAG_ACK: ACK, NGHTTP2_FLAG_END_HEADERS: END_HEADERS,
  NGHTTP2_NO_ERROR: NO_ERROR, NGHTTP2_PROTOCOL_ERROR: PROTOCOL_ERROR, NGHTTP2_FLOW_CONTROL_ERROR: FLOW_CONTROL_ERROR,
  NGHTTP2_STREAM_CLOSED: STREAM_CLOSED, NGHTTP2_CANCEL: CANCEL, NGHTTP2_ENHANCE_YOUR_CALM: ENHANCE_YOUR_CALM,
  NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE: SETTINGS_INITIAL_WINDOW_SIZE, MAX_INITIAL_WINDOW_SIZE: MAX_WINDOW,
} = http2.constants;
const PREFACE_LENGTH = 24;
/** Streams the client closed that are remembered, to answer frames on them with STREAM_CLOSED. */
const CLOSED_MEMORY = 128;
/** Stream id ranges the client skipped (implicitly closed, RFC 9113 §5.1.1); clients rarely skip any. */
const MAX_GAPS = 16;

export interface H2GuardOptions {
  /** A session with no stream in flight for this long is sent GOAWAY and closed. */
  readonly idleTimeoutMs: number;
  /** A header block (HEADERS and its CONTINUATIONs) must be complete within this. */
  readonly headersTimeoutMs: number;
}

function frameHead(length: number, type: number, flags: number, stream: number): Buffer {
  const b = Buffer.alloc(9 + length);
  b.writeUIntBE(length, 0, 3);
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(stream, 5);
  return b;
}

function goawayFrame(lastStream: number, code: number): Buffer {
  const b = frameHead(8, 0x7, 0, 0);
  b.writeUInt32BE(lastStream, 9);
  b.writeUInt32BE(code, 13);
  return b;
}

function rstFrame(stream: number, code: number): Buffer {
  const b = frameHead(4, RST_STREAM, 0, stream);
  b.writeUInt32BE(code, 9);
  return b;
}

/** Payload bytes a frame must have in hand before it is inspected. */
function needed(type: number, flags: number, length: number): number {
  switch (type) {
    case PRIORITY: return length === 5 ? 5 : 0;
    case WINDOW_UPDATE: return length === 4 ? 4 : 0;
    case PING: return flags & ACK && length === 8 ? 8 : 0; // a dropped frame must be whole
    case SETTINGS: return !(flags & ACK) && length % 6 === 0 && length <= 6 * 64 ? length : 0;
    default: return 0;
  }
}

// JSStream is the native stream whose reads and writes are JS calls (node's
// own JSStreamSocket is built on it). A socket on it is one node:http2 takes
// as a native stream: its session reads what readBuffer() hands it and calls
// onwrite() with its frames. Wrapping a JS Duplex instead makes node put a
// JSStreamSocket around it, and every chunk then crosses two JS streams each
// way (~18% of the CPU of a gRPC call in the profile).
interface JSStreamHandle {
  readBuffer(chunk: Buffer): void;
  emitEOF(): void;
  finishWrite(req: object, status: number): void;
  finishShutdown(req: object, status: number): void;
  close: (cb: () => void) => void;
  isClosing: () => boolean;
  onreadstart: () => number;
  onreadstop: () => number;
  onshutdown: (req: object) => number;
  onwrite: (req: object, bufs: Buffer[]) => number;
}
// process.binding() is deprecated (DEP0111, a warning only under
// --pending-deprecation) but has no public replacement for these; Node is
// pinned (package.json), and the h2spec, abuse and gRPC suites cover this file.
type Binding = (name: string) => Record<string, unknown>;
const binding = (process as unknown as { binding: Binding }).binding;
const { JSStream } = binding('js_stream') as { JSStream: new () => JSStreamHandle };
const UV_ECANCELED = binding('uv')['UV_ECANCELED'] as number;
// The client socket's own handle is read and written directly too (as
// net.Socket does it underneath): its JS stream layers would cost as much
// again per chunk.
const streamWrap = binding('stream_wrap') as {
  WriteWrap: new () => WriteReq;
  streamBaseState: Int32Array;
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
  kLastWriteWasAsync: number;
};
const { WriteWrap, streamBaseState } = streamWrap;
const { kReadBytesOrError, kArrayBufferOffset, kLastWriteWasAsync } = streamWrap;
interface WriteReq {
  handle: TcpHandle;
  oncomplete: (this: WriteReq, status: number) => void;
  /** What the native write reads from, kept alive until it is done. */
  buffers: Buffer[] | null;
  guard: H2Guard | null;
}
interface TcpHandle {
  onread: (this: TcpHandle, ab: ArrayBuffer | undefined) => unknown;
  reading: boolean;
  readStart(): number;
  readStop(): number;
  writev(req: WriteReq, chunks: Buffer[], allBuffers: boolean): number;
  writeBuffer(req: WriteReq, chunk: Buffer): number;
}

function rawWriteDone(this: WriteReq, status: number): void {
  this.buffers = null;
  this.guard?.rawWriteDone(status);
}

/** Writes `bufs` on the client socket's handle; false when the kernel did not take them all at once (`guard` hears when it has). */
function rawWrite(handle: TcpHandle, bufs: Buffer[], guard: H2Guard | null): boolean {
  const req = new WriteWrap();
  req.handle = handle;
  req.oncomplete = rawWriteDone;
  req.guard = guard;
  const err = bufs.length === 1 ? handle.writeBuffer(req, bufs[0]!) : handle.writev(req, bufs, true);
  if (err !== 0) {
    guard?.rawWriteDone(err);
    return false;
  }
  if (streamBaseState[kLastWriteWasAsync] === 0) return true;
  req.buffers = bufs;
  return false;
}

/** Where a walk through frames on a byte stream stands: payload bytes of the current frame still to pass over. */
class FrameWalk {
  skip: number;
  constructor(skip: number) {
    this.skip = skip;
  }

  /** Passes over what `buf` holds of the current payload from `i`; returns where the next frame head starts (buf.length if not in `buf`). */
  next(buf: Buffer, i: number): number {
    if (this.skip === 0) return i;
    const k = Math.min(this.skip, buf.length - i);
    this.skip -= k;
    return i + k;
  }
}

/** The socket node:http2 reads the client from and writes to it through. */
export class H2Guard extends Socket {
  readonly #socket: Socket;
  readonly #tcp: TcpHandle;
  readonly #handle: JSStreamHandle;
  readonly #opts: H2GuardOptions;
  /** The native side's write and shutdown waiting for the client socket. */
  #writeReq: object | null = null;
  #shutdownReq: object | null = null;
  #handleClosed = false;
  // --- inbound (client to node:http2) ---
  /** Inbound frames, the preface passed over unread like a payload. */
  readonly #in = new FrameWalk(PREFACE_LENGTH);
  /** An inbound frame head (or inspected payload) cut by a chunk boundary. */
  #held: Buffer | undefined;
  #lastStream = 0;
  readonly #closed = new Set<number>();
  readonly #closedRing = new Int32Array(CLOSED_MEMORY);
  #closedNext = 0;
  readonly #gaps: number[] = [];
  /** Send windows of the streams in flight, as the client grants them (RFC 9113 §6.9). */
  readonly #windows = new Map<number, number>();
  #initialWindow = 65_535;
  /** When the current header block started (performance.now()), -1 when none is open. */
  #blockSince = -1;
  #idleSince = performance.now();
  #dead = false;
  // --- outbound (node:http2 to client) ---
  readonly #out = new FrameWalk(0);
  readonly #outHead = Buffer.alloc(9);
  #outHeadLength = 0;
  /** Frames of the guard's own, waiting for the output to reach a frame boundary. */
  #injected: Buffer[] = [];
  readonly #timer: NodeJS.Timeout;

  constructor(socket: Socket, opts: H2GuardOptions) {
    const handle = new JSStream();
    super({ handle, manualStart: true } as unknown as SocketConstructorOpts);
    this.#handle = handle;
    this.#socket = socket;
    this.#opts = opts;
    handle.close = this.#closeHandle;
    handle.isClosing = () => !this.readable || !this.writable;
    const tcp = (socket as unknown as { _handle: TcpHandle })._handle;
    this.#tcp = tcp;
    handle.onreadstart = () => { tcp.reading = true; return tcp.readStart(); };
    handle.onreadstop = () => { tcp.reading = false; return tcp.readStop(); };
    handle.onshutdown = this.#onShutdown;
    handle.onwrite = this.#onWrite;
    // Data comes straight from the handle; EOF and errors still go through
    // net.Socket, so the socket ends and closes as usual.
    const netOnread = tcp.onread;
    const onData = this.#onData;
    tcp.onread = function (this: TcpHandle, ab: ArrayBuffer | undefined): unknown {
      const n = streamBaseState[kReadBytesOrError]!;
      if (n > 0) {
        onData(Buffer.from(ab!, streamBaseState[kArrayBufferOffset]!, n));
        return undefined;
      }
      return netOnread.call(this, ab);
    };
    socket.once('end', () => { if (!this.#handleClosed) handle.emitEOF(); });
    socket.on('error', (err) => this.destroy(err));
    socket.once('close', () => this.destroy());
    // The sniffer put the preface back into the socket's stream: node:http2
    // has taken this socket's handle by the time it is read (next tick).
    process.nextTick(() => {
      const head = socket.read() as Buffer | null;
      if (head !== null) onData(head);
    });
    this.#timer = setInterval(this.#check, Math.max(50, Math.min(opts.idleTimeoutMs, opts.headersTimeoutMs) / 2));
    this.#timer.unref();
  }

  // --- the native stream's side ----------------------------------------------

  // node:http2 sends its next frames once a write is done: when the kernel
  // took it all at once, a turn later (as JSStreamSocket does: the session is
  // still inside its write call here), else when the kernel has it.
  readonly #onWrite = (req: object, bufs: Buffer[]): number => {
    this.#writeReq = req;
    if (this.#dead || this.#socket.destroyed) {
      setImmediate(this.#writeDone);
      return 0;
    }
    for (let i = 0; i < bufs.length; i++) this.#scanOut(bufs[i]!);
    if (this.#injected.length > 0 && this.#out.skip === 0 && this.#outHeadLength === 0) {
      bufs.push(...this.#injected);
      this.#injected = [];
    }
    if (rawWrite(this.#tcp, bufs, this)) setImmediate(this.#writeDone);
    return 0;
  };

  /** @internal the kernel took a write that had to wait, or it failed. */
  rawWriteDone(status: number): void {
    if (status < 0) this.#socket.destroy();
    else this.#writeDone();
  }

  readonly #writeDone = (): void => {
    const req = this.#writeReq;
    if (req === null || this.#handleClosed) return;
    this.#writeReq = null;
    this.#handle.finishWrite(req, 0);
    if (this.#shutdownReq !== null) this.#shutdown();
  };

  readonly #onShutdown = (req: object): number => {
    this.#shutdownReq = req;
    // A shutdown may come while a write is pending: it follows that write.
    if (this.#writeReq === null) setImmediate(() => this.#shutdown());
    return 0;
  };

  #shutdown(): void {
    this.#socket.end(() => {
      const req = this.#shutdownReq;
      if (req === null || this.#handleClosed) return;
      this.#shutdownReq = null;
      this.#handle.finishShutdown(req, 0);
    });
  }

  /** net.Socket closes its handle on destroy: the client socket goes too, and what the native side waits for is cancelled. */
  readonly #closeHandle = (cb: () => void): void => {
    clearInterval(this.#timer);
    this.#socket.destroy();
    setImmediate(() => {
      const write = this.#writeReq, shutdown = this.#shutdownReq;
      this.#writeReq = this.#shutdownReq = null;
      if (write !== null) this.#handle.finishWrite(write, UV_ECANCELED);
      if (shutdown !== null) this.#handle.finishShutdown(shutdown, UV_ECANCELED);
      this.#handleClosed = true;
      cb();
    });
  };

  /** Hands client bytes to node:http2 (it copies them); not once net.Socket has let go of the handle (destroyed). */
  #pass(buf: Buffer, from: number, to: number): void {
    if (to > from && (this as unknown as { _handle: unknown })._handle !== null) {
      this.#handle.readBuffer(from === 0 && to === buf.length ? buf : buf.subarray(from, to));
    }
  }

  // --- inbound ---------------------------------------------------------------

  readonly #onData = (chunk: Buffer): void => {
    if (this.#dead) return;
    const buf = this.#held === undefined ? chunk : Buffer.concat([this.#held, chunk]);
    this.#held = undefined;
    let i = 0;
    let from = 0; // start of the bytes not yet passed on
    while ((i = this.#in.next(buf, i)) < buf.length) {
      if (buf.length - i < 9) break;
      const length = buf.readUIntBE(i, 3);
      const type = buf[i + 3]!;
      const flags = buf[i + 4]!;
      const stream = buf.readUInt32BE(i + 5) & MAX_WINDOW;
      if (buf.length - i - 9 < needed(type, flags, length)) break;
      const verdict = this.#inspect(type, flags, stream, length, buf, i + 9);
      if (verdict === 'pass') {
        i += 9;
        this.#in.skip = length;
        continue;
      }
      this.#pass(buf, from, i);
      if (verdict === 'dead' || this.#dead) return;
      if (verdict !== 'drop') this.#pass(verdict, 0, verdict.length); // a frame put in its place
      i += 9 + length;
      from = i;
    }
    if (i < buf.length) this.#held = Buffer.from(buf.subarray(i));
    this.#pass(buf, from, i);
  };

  /** What to do with one inbound frame: pass it, drop it, put another in its place, or end the connection. */
  #inspect(type: number, flags: number, stream: number, length: number, buf: Buffer, p: number): 'pass' | 'drop' | 'dead' | Buffer {
    switch (type) {
      case DATA:
        if (this.#closed.has(stream)) return this.#fail(STREAM_CLOSED);
        if (flags & END_STREAM) this.#clientClosed(stream);
        return 'pass';
      case HEADERS:
        if (this.#closed.has(stream)) return this.#fail(STREAM_CLOSED);
        if (stream > this.#lastStream) this.#opened(stream);
        else if (this.#inGap(stream)) return this.#fail(PROTOCOL_ERROR);
        if (flags & END_STREAM) this.#clientClosed(stream);
        this.#blockSince = flags & END_HEADERS ? -1 : performance.now();
        return 'pass';
      case CONTINUATION:
        if (flags & END_HEADERS) this.#blockSince = -1;
        return 'pass';
      case PRIORITY:
        if (stream === 0) return this.#fail(PROTOCOL_ERROR);
        // A stream cannot depend on itself (§5.3.1); a stream error, made a connection error.
        if (length === 5 && (buf.readUInt32BE(p) & MAX_WINDOW) === stream) return this.#fail(PROTOCOL_ERROR);
        return 'pass';
      case RST_STREAM:
        if (stream !== 0) {
          this.#clientClosed(stream);
          this.#done(stream);
        }
        return 'pass';
      case SETTINGS:
        if (needed(type, flags, length) > 0) this.#settings(buf, p, length);
        return 'pass';
      case PING:
        // The entrypoint never pings, so every ACK is unsolicited: ignore it,
        // as RFC 9113 allows, rather than let Node end the session.
        return flags & ACK && length === 8 ? 'drop' : 'pass';
      case WINDOW_UPDATE:
        if (stream !== 0 && length === 4) return this.#windowUpdate(stream, buf.readUInt32BE(p) & MAX_WINDOW);
        return 'pass';
      default:
        return 'pass';
    }
  }

  #opened(stream: number): void {
    if (stream % 2 === 0) return; // not a client stream: nghttp2 answers that
    const next = this.#lastStream === 0 ? 1 : this.#lastStream + 2;
    if (stream > next && this.#gaps.length < 2 * MAX_GAPS) this.#gaps.push(next, stream - 2);
    this.#lastStream = stream;
    if (this.#windows.size === 0) this.#idleSince = -1;
    this.#windows.set(stream, this.#initialWindow);
  }

  #inGap(stream: number): boolean {
    const g = this.#gaps;
    for (let i = 0; i < g.length; i += 2) if (stream >= g[i]! && stream <= g[i + 1]!) return true;
    return false;
  }

  /** The client sent END_STREAM or RST_STREAM on `stream`: it may send no more DATA or HEADERS there. */
  #clientClosed(stream: number): void {
    if (this.#closed.has(stream)) return;
    const evicted = this.#closedRing[this.#closedNext]!;
    if (evicted !== 0) this.#closed.delete(evicted);
    this.#closedRing[this.#closedNext] = stream;
    this.#closedNext = (this.#closedNext + 1) % CLOSED_MEMORY;
    this.#closed.add(stream);
  }

  /** Nothing more will be sent on `stream`: its window no longer matters. */
  #done(stream: number): void {
    if (this.#windows.delete(stream) && this.#windows.size === 0) this.#idleSince = performance.now();
  }

  #settings(buf: Buffer, p: number, length: number): void {
    for (let q = p; q < p + length; q += 6) {
      if (buf.readUInt16BE(q) !== SETTINGS_INITIAL_WINDOW_SIZE) continue;
      const value = buf.readUInt32BE(q + 2);
      if (value > MAX_WINDOW) return; // nghttp2 answers FLOW_CONTROL_ERROR
      // A new initial size moves every stream window by the difference (§6.9.2).
      const delta = value - this.#initialWindow;
      this.#initialWindow = value;
      for (const [s, w] of this.#windows) this.#windows.set(s, w + delta);
    }
  }

  /**
   * A stream window over 2^31-1 is a stream error (§6.9.1). The client is
   * sent RST_STREAM FLOW_CONTROL_ERROR, and node:http2 reads a client
   * RST_STREAM CANCEL in place of the update, so the stream ends on both sides.
   */
  #windowUpdate(stream: number, increment: number): 'pass' | Buffer {
    const w = this.#windows.get(stream);
    if (w === undefined) return 'pass';
    if (w + increment <= MAX_WINDOW) {
      this.#windows.set(stream, w + increment);
      return 'pass';
    }
    this.#done(stream);
    this.#clientClosed(stream);
    this.#inject(rstFrame(stream, FLOW_CONTROL_ERROR));
    return rstFrame(stream, CANCEL);
  }

  /** A connection error: GOAWAY with `code`, nothing more read, the connection closed. */
  #fail(code: number): 'dead' {
    if (this.#dead) return 'dead';
    this.#dead = true;
    this.#held = undefined;
    clearInterval(this.#timer);
    this.#inject(goawayFrame(this.#lastStream, code));
    this.#socket.end();
    return 'dead';
  }

  readonly #check = (): void => {
    const now = performance.now();
    if (this.#blockSince >= 0 && now - this.#blockSince > this.#opts.headersTimeoutMs) this.#fail(ENHANCE_YOUR_CALM);
    else if (this.#idleSince >= 0 && now - this.#idleSince > this.#opts.idleTimeoutMs) this.#fail(NO_ERROR);
  };

  // --- outbound --------------------------------------------------------------

  /** Writes a frame of the guard's own between node:http2's frames. */
  #inject(frame: Buffer): void {
    if (this.#socket.destroyed) return;
    if (this.#out.skip === 0 && this.#outHeadLength === 0) rawWrite(this.#tcp, [frame], null);
    else this.#injected.push(frame);
  }

  /** Follows node:http2's frames: DATA spends stream windows; END_STREAM or RST_STREAM ends a stream. */
  #scanOut(buf: Buffer): void {
    let i = 0;
    while ((i = this.#out.next(buf, i)) < buf.length) {
      let head = buf;
      let h = i;
      if (this.#outHeadLength > 0 || buf.length - i < 9) {
        const k = Math.min(9 - this.#outHeadLength, buf.length - i);
        buf.copy(this.#outHead, this.#outHeadLength, i, i + k);
        this.#outHeadLength += k;
        i += k;
        if (this.#outHeadLength < 9) return;
        this.#outHeadLength = 0;
        head = this.#outHead;
        h = 0;
      } else {
        i += 9;
      }
      const length = head.readUIntBE(h, 3);
      const type = head[h + 3]!;
      const flags = head[h + 4]!;
      const stream = head.readUInt32BE(h + 5) & MAX_WINDOW;
      if (type === DATA) {
        const w = this.#windows.get(stream);
        if (w !== undefined) this.#windows.set(stream, w - length);
      }
      if (((type === DATA || type === HEADERS) && flags & END_STREAM) || type === RST_STREAM) this.#done(stream);
      this.#out.skip = length;
    }
  }
}
