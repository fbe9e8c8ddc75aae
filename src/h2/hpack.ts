// HPACK (RFC 7541) for the frame layer (src/h2/connection.ts): a full decoder
// (static and dynamic table, Huffman, size updates) and a minimal encoder.
//
// Written here rather than taken from npm: the two HPACK packages there are
// hpack.js 2.1.6 (a stream API over readable-stream 2, an object per header;
// no release since 2016) and hpack 1.0.0 (a single release, arrays per block),
// and on h2load's gRPC request blocks they decode 4-20x slower than this one
// (bench/hpack-compare.ts; bench/results/frame-prototype-2026-11-30.md).
// This one decodes into a caller's flat array of strings; a header the peer
// sends as a dynamic-table reference (every header of a repeated RPC after the
// first) costs no allocation at all.
//
// Header strings are latin1 (one char per octet): values cross the proxy as
// the same octets, whatever their encoding.
//
// The encoder indexes fields that repeat (static-table names, a dynamic
// table, no Huffman: CPU is what the frame path is for).

export class HpackError extends Error {
  override name = 'HpackError';
}

const STATIC: ReadonlyArray<readonly [string, string]> = [
  ['', ''], // index 0 is not used
  [':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'], [':path', '/index.html'],
  [':scheme', 'http'], [':scheme', 'https'], [':status', '200'], [':status', '204'], [':status', '206'],
  [':status', '304'], [':status', '400'], [':status', '404'], [':status', '500'], ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'], ['accept-language', ''], ['accept-ranges', ''], ['accept', ''],
  ['access-control-allow-origin', ''], ['age', ''], ['allow', ''], ['authorization', ''], ['cache-control', ''],
  ['content-disposition', ''], ['content-encoding', ''], ['content-language', ''], ['content-length', ''],
  ['content-location', ''], ['content-range', ''], ['content-type', ''], ['cookie', ''], ['date', ''], ['etag', ''],
  ['expect', ''], ['expires', ''], ['from', ''], ['host', ''], ['if-match', ''], ['if-modified-since', ''],
  ['if-none-match', ''], ['if-range', ''], ['if-unmodified-since', ''], ['last-modified', ''], ['link', ''],
  ['location', ''], ['max-forwards', ''], ['proxy-authenticate', ''], ['proxy-authorization', ''], ['range', ''],
  ['referer', ''], ['refresh', ''], ['retry-after', ''], ['server', ''], ['set-cookie', ''],
  ['strict-transport-security', ''], ['transfer-encoding', ''], ['user-agent', ''], ['vary', ''], ['via', ''],
  ['www-authenticate', ''],
];
const STATIC_LAST = STATIC.length - 1; // 61

// Huffman code lengths of symbols 0..255 from RFC 7541 Appendix B (EOS, 256,
// is 30 ones). The code is canonical (codes assigned in order of length, then
// symbol), so the lengths alone define it.
const HUFFMAN_LENGTHS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  30,
];

/**
 * Huffman decoding tree, 8 bits at a time: state = tree node; for each input
 * byte the table gives the next node, up to two emitted symbols, and whether
 * the bits consumed so far end on a symbol boundary reachable only through
 * ones (valid padding). Built once from the canonical code.
 */
const EMIT_NONE = 256;
interface HuffTable { next: Uint16Array; emit1: Uint16Array; emit2: Uint16Array; fail: Uint8Array; accept: Uint8Array }
const HUFF: HuffTable = (() => {
  // Binary tree: child[node*2+bit]; leaves are -1 - symbol.
  const child: number[] = [0, 0];
  let nodes = 1;
  const order = [...Array(257).keys()].sort((a, b) => HUFFMAN_LENGTHS[a]! - HUFFMAN_LENGTHS[b]! || a - b);
  let code = 0;
  let prevLen = HUFFMAN_LENGTHS[order[0]!]!;
  for (const [k, sym] of order.entries()) {
    const len = HUFFMAN_LENGTHS[sym]!;
    if (k > 0) code = (code + 1) << (len - prevLen);
    prevLen = len;
    let node = 0;
    for (let b = len - 1; b >= 0; b--) {
      const bit = (code >>> b) & 1;
      if (b === 0) { child[node * 2 + bit] = -1 - sym; break; }
      let next = child[node * 2 + bit]!;
      if (next === 0) { next = nodes++; child.push(0, 0); child[node * 2 + bit] = next; }
      node = next;
    }
  }
  // A node is "all ones so far" (valid padding end) if reached from the root by ones only.
  const onesOnly = new Uint8Array(nodes);
  for (let n = 0, depth = 0; depth < 8; depth++) { onesOnly[n] = 1; const c = child[n * 2 + 1]!; if (c <= 0) break; n = c; }
  const next = new Uint16Array(nodes * 256);
  const emit1 = new Uint16Array(nodes * 256).fill(EMIT_NONE);
  const emit2 = new Uint16Array(nodes * 256).fill(EMIT_NONE);
  const fail = new Uint8Array(nodes * 256);
  for (let n = 0; n < nodes; n++) {
    for (let byte = 0; byte < 256; byte++) {
      let node = n;
      const i = n * 256 + byte;
      for (let b = 7; b >= 0; b--) {
        const c = child[node * 2 + ((byte >>> b) & 1)]!;
        if (c < 0) {
          const sym = -1 - c;
          if (sym === 256) { fail[i] = 1; break; } // EOS inside a string
          if (emit1[i] === EMIT_NONE) emit1[i] = sym; else emit2[i] = sym;
          node = 0;
        } else {
          node = c;
        }
      }
      next[i] = node;
    }
  }
  return { next, emit1, emit2, fail, accept: onesOnly };
})();

/** Huffman output; grows to the longest string seen (each input byte yields at most two octets). */
let scratch = Buffer.allocUnsafe(65536);

// Buffer#latin1Slice/latin1Write are toString/write('latin1') without the
// argument checks; untyped in @types/node.
type Latin1 = { latin1Slice(start: number, end: number): string; latin1Write(s: string, at: number): number };
function latin1(b: Buffer): Latin1 {
  return b as unknown as Latin1;
}

function huffmanDecode(src: Buffer, start: number, end: number): string {
  const { next, emit1, emit2, fail, accept } = HUFF;
  let node = 0;
  let n = 0;
  // Each input byte yields at most two symbols (the shortest code is 5 bits).
  if ((end - start) * 2 > scratch.length) scratch = Buffer.allocUnsafe((end - start) * 2);
  for (let p = start; p < end; p++) {
    const i = node * 256 + src[p]!;
    if (fail[i] === 1) throw new HpackError('EOS in huffman string');
    const e1 = emit1[i]!;
    if (e1 !== EMIT_NONE) {
      scratch[n++] = e1;
      const e2 = emit2[i]!;
      if (e2 !== EMIT_NONE) scratch[n++] = e2;
    }
    node = next[i]!;
  }
  // Padding: at most 7 bits, all ones (a partial walk down the all-ones path).
  if (node !== 0 && accept[node] !== 1) throw new HpackError('bad huffman padding');
  return latin1(scratch).latin1Slice(0, n);
}

/** One connection direction's decoding context (the peer's encoder's mirror). */
/**
 * The HPACK dynamic table (RFC 7541 §2.3.2, §4.4) of one direction: a ring
 * with the oldest entry at `#first`, evicted oldest first. Both sides keep
 * one; the encoder also keeps a lookup of what it holds (`dropped`).
 */
class DynamicTable {
  // Allocated on the first insert, 16 entries, doubled as needed: most
  // connections' tables hold a handful of entries.
  #names: string[] = [];
  #values: string[] = [];
  #first = 0;
  #count = 0;
  /** Octets held (RFC 7541 §4.1). */
  size = 0;

  get count(): number {
    return this.#count;
  }

  /** The name of entry `d`, counted from the newest (0); `d` < count. */
  name(d: number): string {
    return this.#names[(this.#first + this.#count - 1 - d) % this.#names.length]!;
  }

  value(d: number): string {
    return this.#values[(this.#first + this.#count - 1 - d) % this.#values.length]!;
  }

  /** Adds the newest entry; the caller evicted room for its `size` first. */
  add(name: string, value: string, size: number): void {
    if (this.#count === this.#names.length) this.#grow();
    const at = (this.#first + this.#count) % this.#names.length;
    this.#names[at] = name;
    this.#values[at] = value;
    this.#count++;
    this.size += size;
  }

  /** Drops the oldest entries until the table holds at most `room` octets. */
  evict(room: number): void {
    while (this.size > Math.max(0, room) && this.#count > 0) {
      const name = this.#names[this.#first]!;
      const value = this.#values[this.#first]!;
      this.size -= 32 + name.length + value.length;
      this.#first = (this.#first + 1) % this.#names.length;
      this.#count--;
      this.dropped(name, value);
    }
  }

  protected dropped(_name: string, _value: string): void {}

  #grow(): void {
    const cap = this.#names.length;
    const names: string[] = new Array(Math.max(16, cap * 2));
    const values: string[] = new Array(names.length);
    for (let k = 0; k < this.#count; k++) {
      names[k] = this.#names[(this.#first + k) % cap]!;
      values[k] = this.#values[(this.#first + k) % cap]!;
    }
    this.#names = names;
    this.#values = values;
    this.#first = 0;
  }
}

export class HpackDecoder {
  readonly #table = new DynamicTable();
  #max = 4096;
  /** The limit we advertised (SETTINGS_HEADER_TABLE_SIZE, default 4096). */
  readonly limit: number;
  #pos = 0;

  constructor(limit = 4096) {
    this.limit = limit;
    this.#max = limit;
  }

  /** The dynamic table's size in octets (RFC 7541 §4.1). */
  get tableSize(): number {
    return this.#table.size;
  }

  /**
   * Decodes one complete header block into `out` as name, value, name, value…
   * from index 0; returns the number of strings written. Throws HpackError
   * (a connection error, COMPRESSION_ERROR).
   */
  decode(block: Buffer, start: number, end: number, out: string[]): number {
    let n = 0;
    this.#pos = start;
    let first = true;
    while (this.#pos < end) {
      const b = block[this.#pos]!;
      if (b & 0x80) { // indexed
        const idx = this.#int(block, end, 7);
        if (idx === 0) throw new HpackError('index 0');
        out[n++] = this.#name(idx);
        out[n++] = this.#value(idx);
      } else if (b & 0x40) { // literal, incremental indexing
        const idx = this.#int(block, end, 6);
        const name = idx === 0 ? this.#string(block, end) : this.#name(idx);
        const value = this.#string(block, end);
        this.#insert(name, value);
        out[n++] = name;
        out[n++] = value;
      } else if (b & 0x20) { // dynamic table size update: only at the start of a block
        if (!first) throw new HpackError('table size update after a header');
        const size = this.#int(block, end, 5);
        if (size > this.limit) throw new HpackError('table size above the limit');
        this.#max = size;
        this.#table.evict(size);
        continue;
      } else { // literal without indexing / never indexed
        const idx = this.#int(block, end, 4);
        const name = idx === 0 ? this.#string(block, end) : this.#name(idx);
        out[n++] = name;
        out[n++] = this.#string(block, end);
      }
      first = false;
    }
    return n;
  }

  #int(block: Buffer, end: number, prefix: number): number {
    const mask = (1 << prefix) - 1;
    let v = block[this.#pos++]! & mask;
    if (v < mask) return v;
    let shift = 0;
    for (;;) {
      if (this.#pos >= end) throw new HpackError('truncated integer');
      const b = block[this.#pos++]!;
      v += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if ((b & 0x80) === 0) break;
      if (shift > 28) throw new HpackError('integer overflow');
    }
    return v;
  }

  #string(block: Buffer, end: number): string {
    if (this.#pos >= end) throw new HpackError('truncated string');
    const huffman = (block[this.#pos]! & 0x80) !== 0;
    const len = this.#int(block, end, 7);
    const s = this.#pos;
    if (s + len > end) throw new HpackError('string past the block');
    this.#pos = s + len;
    return huffman ? huffmanDecode(block, s, s + len) : latin1(block).latin1Slice(s, s + len);
  }

  #name(idx: number): string {
    if (idx <= STATIC_LAST) return STATIC[idx]![0];
    const d = idx - STATIC_LAST - 1;
    if (d >= this.#table.count) throw new HpackError(`index ${idx} past the table`);
    return this.#table.name(d);
  }

  #value(idx: number): string {
    if (idx <= STATIC_LAST) return STATIC[idx]![1];
    return this.#table.value(idx - STATIC_LAST - 1);
  }

  #insert(name: string, value: string): void {
    const size = 32 + name.length + value.length;
    if (size > this.#max) { this.#table.evict(0); return; } // empties the table (RFC 7541 §4.4)
    this.#table.evict(this.#max - size);
    this.#table.add(name, value, size);
  }
}

// Encoder side: the first static index of each name, and whole static entries
// worth a one-byte indexed form.
const STATIC_NAME = new Map<string, number>();
for (let i = STATIC_LAST; i >= 1; i--) STATIC_NAME.set(STATIC[i]![0], i);
/** Static index of a whole pseudo-header with a common value, or 0. */
function staticExact(name: string, value: string): number {
  switch (name) {
    case ':method': return value === 'POST' ? 3 : value === 'GET' ? 2 : 0;
    case ':scheme': return value === 'http' ? 6 : 0;
    case ':status': return value === '200' ? 8 : 0;
    case ':path': return value === '/' ? 4 : 0;
    default: return 0;
  }
}

/** Fields whose values differ message to message: indexing them would only churn the table. */
const NOT_INDEXED = new Set([':status', 'content-length', 'date', 'grpc-timeout', 'x-request-id', 'etag', 'last-modified',
  'expires', 'age']);
/** Credentials: never indexed, and marked so for any intermediary re-encoding them (RFC 7541 §7.1.3). */
const SENSITIVE = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie']);
/** Longer values go as literals: a table of 4,096 octets holds few of them. */
const MAX_INDEXED_VALUE = 512;
const DEFAULT_TABLE = 4096;

/**
 * One connection direction's encoding context: fields that repeat (a gRPC
 * client's method, content-type, te, user-agent, authority…) are added to the
 * dynamic table once and then sent as one- or two-byte indexes. No Huffman:
 * it would cost CPU on every block. Blocks must be sent in the order they are
 * encoded (the peer's decoder follows the table).
 */
export class HpackEncoder {
  /** The table size in use: the peer's SETTINGS_HEADER_TABLE_SIZE, at most 4,096. */
  #max = DEFAULT_TABLE;
  readonly #table = new EncoderTable();
  /** Size updates owed at the start of the next block (RFC 7541 §4.2): the smallest since the last block, then the final one. */
  #lowest = -1;
  #final = -1;

  /** The peer's SETTINGS_HEADER_TABLE_SIZE; a larger one than 4,096 is not used. */
  setTableSize(peerSize: number): void {
    const max = Math.min(peerSize, DEFAULT_TABLE);
    if (max === this.#max) return;
    this.#max = max;
    this.#table.evict(max);
    this.#lowest = this.#lowest < 0 ? max : Math.min(this.#lowest, max);
    this.#final = max;
  }

  /**
   * Encodes name/value pairs (flat, `count` strings) into `dst` from `at`;
   * returns the end offset. The caller sizes `dst` (blockBound).
   */
  encode(h: readonly string[], count: number, dst: Buffer, at: number): number {
    let p = at;
    if (this.#final >= 0) {
      if (this.#lowest < this.#final) p = writeInt(this.#lowest, 5, 0x20, dst, p);
      p = writeInt(this.#final, 5, 0x20, dst, p);
      this.#lowest = this.#final = -1;
    }
    for (let i = 0; i < count; i += 2) {
      const name = h[i]!;
      const value = h[i + 1]!;
      // Pseudo-headers with common values: one byte.
      if (name.charCodeAt(0) === 58 /* : */) {
        const exact = staticExact(name, value);
        if (exact !== 0) { dst[p++] = 0x80 | exact; continue; }
      }
      const k = this.#table.index?.get(name)?.get(value);
      if (k !== undefined) {
        p = writeInt(STATIC_LAST + this.#table.inserted - k, 7, 0x80, dst, p);
        continue;
      }
      const idx = STATIC_NAME.get(name) ?? 0;
      const size = 32 + name.length + value.length;
      if (SENSITIVE.has(name)) {
        p = writeInt(idx, 4, 0x10, dst, p); // literal never indexed
      } else if (size <= this.#max && value.length <= MAX_INDEXED_VALUE && !NOT_INDEXED.has(name)) {
        p = writeInt(idx, 6, 0x40, dst, p); // literal with incremental indexing
        this.#table.evict(this.#max - size);
        this.#table.insert(name, value, size);
      } else {
        p = writeInt(idx, 4, 0, dst, p); // literal without indexing
      }
      if (idx === 0) p = writeString(name, dst, p);
      p = writeString(value, dst, p);
    }
    return p;
  }
}

/** The encoder's table, with a lookup of what it holds. */
class EncoderTable extends DynamicTable {
  /** Entries ever inserted: the one inserted as number k has dynamic index 62 + (inserted - 1 - k). */
  inserted = 0;
  /** name → value → insertion number, of the entries in the table. */
  index: Map<string, Map<string, number>> | null = null;

  insert(name: string, value: string, size: number): void {
    this.add(name, value, size);
    const index = this.index ??= new Map();
    let values = index.get(name);
    if (values === undefined) index.set(name, values = new Map());
    values.set(value, this.inserted++);
  }

  protected dropped(name: string, value: string): void {
    const values = this.index!.get(name)!;
    values.delete(value);
    if (values.size === 0) this.index!.delete(name);
  }
}

/** Upper bound of HpackEncoder.encode's output for these headers. */
export function blockBound(h: readonly string[], count: number): number {
  let n = 12; // two table size updates
  for (let i = 0; i < count; i++) n += h[i]!.length + 6;
  return n;
}

function writeString(s: string, dst: Buffer, p: number): number {
  p = writeInt(s.length, 7, 0, dst, p);
  return p + latin1(dst).latin1Write(s, p);
}

function writeInt(v: number, prefix: number, flags: number, dst: Buffer, p: number): number {
  const mask = (1 << prefix) - 1;
  if (v < mask) { dst[p++] = flags | v; return p; }
  dst[p++] = flags | mask;
  v -= mask;
  while (v >= 128) { dst[p++] = (v & 0x7f) | 0x80; v = Math.floor(v / 128); }
  dst[p++] = v;
  return p;
}
