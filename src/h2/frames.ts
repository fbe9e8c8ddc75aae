// HTTP/2 wire constants (RFC 9113) and the few byte layouts the frame layer
// builds. Flags, error codes and settings ids are node:http2's constants (only
// the constants are used from it); frame types it does not export.
import http2 from 'node:http2';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const DATA = 0x0, HEADERS = 0x1, PRIORITY = 0x2, RST_STREAM = 0x3, SETTINGS = 0x4, PUSH_PROMISE = 0x5,
  PING = 0x6, GOAWAY = 0x7, WINDOW_UPDATE = 0x8, CONTINUATION = 0x9;

export const {
  NGHTTP2_FLAG_END_STREAM: END_STREAM, NGHTTP2_FLAG_ACK: ACK, NGHTTP2_FLAG_END_HEADERS: END_HEADERS,
  NGHTTP2_FLAG_PADDED: PADDED, NGHTTP2_FLAG_PRIORITY: PRIORITY_FLAG,
  NGHTTP2_NO_ERROR: NO_ERROR, NGHTTP2_PROTOCOL_ERROR: PROTOCOL_ERROR, NGHTTP2_INTERNAL_ERROR: INTERNAL_ERROR,
  NGHTTP2_FLOW_CONTROL_ERROR: FLOW_CONTROL_ERROR,
  NGHTTP2_STREAM_CLOSED: STREAM_CLOSED, NGHTTP2_FRAME_SIZE_ERROR: FRAME_SIZE_ERROR,
  NGHTTP2_REFUSED_STREAM: REFUSED_STREAM, NGHTTP2_CANCEL: CANCEL, NGHTTP2_COMPRESSION_ERROR: COMPRESSION_ERROR,
  NGHTTP2_ENHANCE_YOUR_CALM: ENHANCE_YOUR_CALM,
  NGHTTP2_SETTINGS_HEADER_TABLE_SIZE: SETTINGS_HEADER_TABLE_SIZE, NGHTTP2_SETTINGS_ENABLE_PUSH: SETTINGS_ENABLE_PUSH,
  NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS: SETTINGS_MAX_CONCURRENT_STREAMS,
  NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE: SETTINGS_INITIAL_WINDOW_SIZE,
  NGHTTP2_SETTINGS_MAX_FRAME_SIZE: SETTINGS_MAX_FRAME_SIZE, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE: SETTINGS_MAX_HEADER_LIST_SIZE,
  MAX_INITIAL_WINDOW_SIZE: MAX_WINDOW, MIN_MAX_FRAME_SIZE: DEFAULT_MAX_FRAME, MAX_MAX_FRAME_SIZE: MAX_MAX_FRAME,
  DEFAULT_SETTINGS_INITIAL_WINDOW_SIZE: DEFAULT_WINDOW,
} = http2.constants;

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
