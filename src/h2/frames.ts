// HTTP/2 wire constants (RFC 9113) and the few byte layouts the frame layer
// builds. The numbers are written out rather than taken from node:http2's
// constants, so the router never loads node:http2 (its nghttp2 binding and
// JS core cost idle memory and nothing here uses them).

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** Frame types (§6.1-§6.10). */
export const DATA = 0x0, HEADERS = 0x1, PRIORITY = 0x2, RST_STREAM = 0x3, SETTINGS = 0x4, PUSH_PROMISE = 0x5,
  PING = 0x6, GOAWAY = 0x7, WINDOW_UPDATE = 0x8, CONTINUATION = 0x9;

/** Flags: END_STREAM (§6.1, §6.2), ACK (§6.5, §6.7), END_HEADERS (§6.2, §6.10), PADDED (§6.1, §6.2), PRIORITY (§6.2). */
export const END_STREAM = 0x1, ACK = 0x1, END_HEADERS = 0x4, PADDED = 0x8, PRIORITY_FLAG = 0x20;

/** Error codes (§7). */
export const NO_ERROR = 0x0, PROTOCOL_ERROR = 0x1, INTERNAL_ERROR = 0x2, FLOW_CONTROL_ERROR = 0x3,
  STREAM_CLOSED = 0x5, FRAME_SIZE_ERROR = 0x6, REFUSED_STREAM = 0x7, CANCEL = 0x8, COMPRESSION_ERROR = 0x9,
  ENHANCE_YOUR_CALM = 0xb;

/** Settings identifiers (§6.5.2). */
export const SETTINGS_HEADER_TABLE_SIZE = 0x1, SETTINGS_ENABLE_PUSH = 0x2, SETTINGS_MAX_CONCURRENT_STREAMS = 0x3,
  SETTINGS_INITIAL_WINDOW_SIZE = 0x4, SETTINGS_MAX_FRAME_SIZE = 0x5, SETTINGS_MAX_HEADER_LIST_SIZE = 0x6;

/** Flow-control window: initial 65,535 (§6.5.2, §6.9.2), at most 2^31-1 (§6.9.1). */
export const DEFAULT_WINDOW = 65_535, MAX_WINDOW = 2 ** 31 - 1;
/** Frame payload size: 16,384 until the peer allows more, at most 2^24-1 (§4.2, §6.5.2). */
export const DEFAULT_MAX_FRAME = 16_384, MAX_MAX_FRAME = 2 ** 24 - 1;

export const FRAME_HEADER = 9;

/** Writes a frame header at `p`; returns the offset after it. */
export function writeFrameHeader(dst: Buffer, p: number, length: number, type: number, flags: number, stream: number): number {
  dst[p] = length >>> 16;
  dst[p + 1] = (length >>> 8) & 0xff;
  dst[p + 2] = length & 0xff;
  dst[p + 3] = type;
  dst[p + 4] = flags;
  dst.writeUInt32BE(stream, p + 5);
  return p + FRAME_HEADER;
}

/** A SETTINGS payload from [id, value] pairs, in order (built once per configuration, not per connection). */
export function settingsPayload(pairs: readonly (readonly [number, number])[]): Buffer {
  const b = Buffer.alloc(pairs.length * 6);
  for (let i = 0; i < pairs.length; i++) {
    b.writeUInt16BE(pairs[i]![0], i * 6);
    b.writeUInt32BE(pairs[i]![1], i * 6 + 2);
  }
  return b;
}
