// HTTP/1.1 message syntax shared by the two hand-written parsers: requests from
// clients (ingress/h1-parser.ts) and responses from backends
// (upstream/http1-parser.ts). Strict on both sides: bytes outside the grammar
// of RFC 9110/9112 are refused, never repaired.

export const CR = 13;
export const LF = 10;
export const SP = 32;
const HTAB = 9;

// RFC 9110 §5.6.2 tchar.
export const TOKEN = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TOKEN[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TOKEN[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TOKEN[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TOKEN[c] = 1;
// Field value bytes (RFC 9110 §5.5): VCHAR, obs-text, SP, HTAB. Node refuses
// to write anything else, so it must not get past a parser either.
export const VALUE = new Uint8Array(256);
for (let c = 0x20; c <= 0xff; c++) VALUE[c] = 1;
VALUE[0x7f] = 0;
VALUE[HTAB] = 1;
export const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX[0x30 + c] = c;
for (let c = 0; c < 6; c++) HEX[0x41 + c] = HEX[0x61 + c] = 10 + c;

export const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');

// Buffer#latin1Slice and #latin1Write are toString('latin1', ...) and
// write(s, off, 'latin1') without the argument checks; untyped in @types/node.
type Latin1 = { latin1Slice(start: number, end: number): string; latin1Write(s: string, offset: number): number };
export function latin1(b: Buffer, start: number, end: number): string {
  return (b as unknown as Latin1).latin1Slice(start, end);
}
/** Writes `s` (one byte per character) into `b` at `offset`; returns the offset after it. */
export function putLatin1(b: Buffer, s: string, offset: number): number {
  return offset + (b as unknown as Latin1).latin1Write(s, offset);
}
/** Writes "name: value" CRLF into `b` at `o`; returns the offset after it. */
export function putField(b: Buffer, o: number, name: string, value: string): number {
  o = putLatin1(b, name, o);
  b[o++] = 0x3a; // ':'
  b[o++] = SP;
  o = putLatin1(b, value, o);
  b[o++] = CR;
  b[o++] = LF;
  return o;
}
export const CHUNKED_FIELD = 'transfer-encoding: chunked\r\n';

/** A Content-Length value: 1-15 digits and nothing else, or -1. */
export function decimal(v: string): number {
  if (v.length === 0 || v.length > 15) return -1;
  let n = 0;
  for (let i = 0; i < v.length; i++) {
    const d = v.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/** Whether a Connection header value lists `token` (lowercase), case-insensitively. */
export function listsToken(value: string, token: string): boolean {
  const v = value.toLowerCase();
  if (v === token) return true;
  if (v === 'keep-alive' || v === 'close') return false; // the usual values: no split
  for (const t of v.split(',')) if (t.trim() === token) return true;
  return false;
}

// Header names as the exchange wants them (lowercase), kept for the names seen
// before in a direct-mapped table by a hash of the raw name's bytes: a hit
// costs no string at all (the raw name is compared in place), and the keys are
// the same strings every time. A peer sending ever new names only evicts.
const NAME_SLOTS = 512;
const rawNames: string[] = new Array<string>(NAME_SLOTS).fill('');
const lowerNames: string[] = new Array<string>(NAME_SLOTS).fill('');

function lowerName(h: string, start: number, end: number, hash: number): string {
  const slot = hash & (NAME_SLOTS - 1);
  const raw = rawNames[slot]!;
  if (raw.length === end - start && h.startsWith(raw, start)) return lowerNames[slot]!;
  const name = h.slice(start, end);
  rawNames[slot] = name;
  return (lowerNames[slot] = name.toLowerCase());
}

/**
 * Parses field lines (RFC 9112 §5) from `h` at `i` to its end, each ending in
 * CRLF, into `out` as flat [name, value, ...]: names lowercase, values
 * without their surrounding whitespace. Returns false for a malformed line:
 * obs-fold, whitespace before the colon, a bare CR or LF, a control byte.
 */
export function fieldLines(h: string, i: number, out: string[]): boolean {
  const end = h.length;
  while (i < end) {
    const nameStart = i;
    let c = h.charCodeAt(i);
    let hash = 0;
    while (TOKEN[c] === 1) {
      hash = (Math.imul(hash, 31) + c) | 0;
      c = h.charCodeAt(++i);
    }
    // Also catches obs-fold (a line starting with SP/HT) and space before the colon.
    if (i === nameStart || c !== 0x3a /* ':' */) return false;
    const name = lowerName(h, nameStart, i, hash ^ (hash >>> 9));
    c = h.charCodeAt(++i);
    while (c === SP || c === HTAB) c = h.charCodeAt(++i);
    const valueStart = i;
    while (VALUE[c] === 1) c = h.charCodeAt(++i);
    if (c !== CR || h.charCodeAt(i + 1) !== LF) return false;
    let valueEnd = i;
    for (c = h.charCodeAt(valueEnd - 1); valueEnd > valueStart && (c === SP || c === HTAB); c = h.charCodeAt(--valueEnd - 1));
    out.push(name, h.slice(valueStart, valueEnd));
    i += 2;
  }
  return true;
}
