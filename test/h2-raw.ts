// A raw HTTP/2 client over a plain TCP socket: frames written by hand, frames
// read back and kept. For what no well-behaved client sends (floods, resets in
// a loop, trickled header blocks). HPACK is literal-only, never indexed.
import net, { type Socket } from 'node:net';

export const FRAME = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

export interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

export function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK integer with an n-bit prefix (RFC 7541 §5.1); `first` holds the bits above the prefix. */
function hpackInt(value: number, prefixBits: number, first = 0): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

function hpackString(s: string): Buffer {
  const b = Buffer.from(s);
  return Buffer.concat([Buffer.from(hpackInt(b.length, 7)), b]);
}

/** A header block of literal fields without indexing (RFC 7541 §6.2.2). */
export function hpack(fields: [string, string][]): Buffer {
  return Buffer.concat(fields.flatMap(([n, v]) => [Buffer.from([0]), hpackString(n), hpackString(v)]));
}

export function requestBlock(authority: string, path = '/', method = 'GET', extra: [string, string][] = []): Buffer {
  return hpack([[':method', method], [':scheme', 'http'], [':path', path], [':authority', authority], ...extra]);
}

export function rstStream(stream: number, code: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(FRAME.RST_STREAM, 0, stream, p);
}

export function windowUpdate(stream: number, increment: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(increment);
  return frame(FRAME.WINDOW_UPDATE, 0, stream, p);
}

export function ping(ack: boolean, data = Buffer.alloc(8)): Buffer {
  return frame(FRAME.PING, ack ? FLAG.ACK : 0, 0, data);
}

export class RawH2 {
  readonly socket: Socket;
  readonly frames: Frame[] = [];
  /** Resolves when the connection is closed, whoever closed it. */
  readonly closed: Promise<void>;
  #buf: Buffer = Buffer.alloc(0);
  #waiters: (() => void)[] = [];
  isClosed = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => socket.once('close', () => {
      this.isClosed = true;
      this.#wake();
      resolve();
    }));
    socket.on('data', (c: Buffer) => this.#onData(c));
  }

  /**
   * Connects, sends the preface and SETTINGS, and resolves once the server's
   * SETTINGS are in and ACKed (they are ACKed as they come, so a header block
   * started later is not split by an ACK).
   */
  static async connect(port: number, settings: [number, number][] = []): Promise<RawH2> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const c = new RawH2(socket);
    const p = Buffer.alloc(6 * settings.length);
    settings.forEach(([id, v], i) => { p.writeUInt16BE(id, 6 * i); p.writeUInt32BE(v, 6 * i + 2); });
    c.send(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0, p)]));
    await c.until((fs) => fs.some((f) => f.type === FRAME.SETTINGS && !(f.flags & FLAG.ACK)), 10_000, 'server SETTINGS');
    return c;
  }

  #onData(c: Buffer): void {
    this.#buf = this.#buf.length === 0 ? c : Buffer.concat([this.#buf, c]);
    while (this.#buf.length >= 9) {
      const length = this.#buf.readUIntBE(0, 3);
      if (this.#buf.length < 9 + length) break;
      const f: Frame = { type: this.#buf[3]!, flags: this.#buf[4]!, stream: this.#buf.readUInt32BE(5) & 0x7fffffff, payload: this.#buf.subarray(9, 9 + length) };
      this.#buf = this.#buf.subarray(9 + length);
      if (f.type === FRAME.SETTINGS && !(f.flags & FLAG.ACK) && !this.socket.destroyed) this.socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
      this.frames.push(f);
    }
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const fn of w) fn();
  }

  /** Writes bytes unless the connection is gone; false once it is. */
  send(b: Buffer): boolean {
    if (this.socket.destroyed || this.socket.writableEnded) return false;
    return this.socket.write(b);
  }

  /** Resolves once `cond` holds over the frames (or the connection closed), or rejects after `ms`. */
  async until(cond: (frames: Frame[]) => boolean, ms: number, what: string): Promise<void> {
    const end = Date.now() + ms;
    while (!cond(this.frames) && !this.isClosed) {
      const left = end - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${ms} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }

  goaway(): { lastStream: number; code: number } | undefined {
    const g = this.frames.find((f) => f.type === FRAME.GOAWAY);
    return g === undefined ? undefined : { lastStream: g.payload.readUInt32BE(0) & 0x7fffffff, code: g.payload.readUInt32BE(4) };
  }

  close(): void {
    this.socket.destroy();
  }
}
