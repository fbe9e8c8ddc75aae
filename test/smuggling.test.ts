// HTTP/1.1 request smuggling battery (RFC 9112): raw bytes in, exact
// behaviour out. The router runs as a child process; its upstreams are raw
// TCP servers that parse what they receive with the strictest reading of
// RFC 9112 and record it, so a request the router lets through ambiguously
// (two framings, two Hosts, an absolute-form target, a chunk extension passed
// on) shows up as a violation, and a smuggled request shows up by its path.
// Nothing here depends on the router's parser being node:http's: a raw-socket
// ingress must pass the same battery.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnRouter, writeConfig, type RouterProcess } from './helpers.ts';

// --- the recording upstream ------------------------------------------------------

/** One request as a strict RFC 9112 parser read it off the upstream connection. */
interface Seen {
  readonly method: string;
  readonly target: string;
  /** Field lines in order, names lowercased. */
  readonly headers: readonly (readonly [string, string])[];
  readonly body: Buffer;
}

interface Recorder {
  readonly name: string;
  readonly port: number;
  readonly url: string;
  readonly requests: Seen[];
  /** Anything a lenient parser might read differently; must stay empty. */
  readonly violations: string[];
  close(): Promise<void>;
}

class Violation extends Error {}

// field-value: VCHAR, obs-text, SP and HTAB inside; OWS trimmed (RFC 9110 §5.5).
const FIELD_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*$/;
// Upstream requests are origin-form (RFC 9112 §3.2.1): a proxy never passes an absolute-form target on.
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\/[\x21-\x7e]*) HTTP\/1\.1$/;
const CHUNK_SIZE = /^[0-9a-fA-F]{1,15}$/;
const MAX_HEAD = 64 * 1024;

/** Lines of a head (without its final empty line), each of which must end in CRLF and hold no other CR or LF. */
function lines(text: string): string[] {
  const out = text.split('\r\n');
  for (const l of out) if (/[\r\n]/.test(l)) throw new Violation(`bare CR or LF in ${JSON.stringify(l)}`);
  return out;
}

function fieldLine(l: string): [string, string] {
  const m = FIELD_LINE.exec(l);
  if (m === null) throw new Violation(`malformed field line ${JSON.stringify(l)}`);
  return [m[1]!.toLowerCase(), m[2]!];
}

/**
 * Parses one request from the start of `buf` with RFC 9112's strictest
 * reading: null when more bytes are needed. Throws a Violation for anything
 * two conforming parsers could frame or route differently.
 */
function parseRequest(buf: Buffer): { seen: Seen; length: number } | null {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) {
    if (buf.length > MAX_HEAD) throw new Violation('head over 64 KiB');
    return null;
  }
  const [requestLine, ...fieldLines] = lines(buf.subarray(0, end).toString('latin1'));
  const rl = REQUEST_LINE.exec(requestLine!);
  if (rl === null) throw new Violation(`request line ${JSON.stringify(requestLine)}`);
  const headers = fieldLines.map(fieldLine);
  const values = (name: string): string[] => headers.filter(([n]) => n === name).map(([, v]) => v);
  const hosts = values('host');
  if (hosts.length !== 1 || hosts[0] === '') throw new Violation(`Host lines: ${JSON.stringify(hosts)}`);
  const cl = values('content-length');
  const te = values('transfer-encoding');
  if (cl.length > 0 && te.length > 0) throw new Violation('both Content-Length and Transfer-Encoding');
  if (cl.length > 1 || (cl.length === 1 && !/^\d{1,15}$/.test(cl[0]!))) throw new Violation(`Content-Length ${JSON.stringify(cl)}`);
  if (te.length > 1 || (te.length === 1 && te[0]!.toLowerCase() !== 'chunked')) throw new Violation(`Transfer-Encoding ${JSON.stringify(te)}`);
  let pos = end + 4;
  let body: Buffer;
  if (te.length === 1) {
    const parts: Buffer[] = [];
    for (;;) {
      const eol = buf.indexOf('\r\n', pos);
      if (eol < 0) return null;
      const sizeLine = buf.subarray(pos, eol).toString('latin1');
      lines(sizeLine);
      // The router re-frames bodies; a client's chunk extension passed on means it passed raw framing on.
      if (!CHUNK_SIZE.test(sizeLine)) throw new Violation(`chunk size line ${JSON.stringify(sizeLine.slice(0, 40))}`);
      const size = parseInt(sizeLine, 16);
      pos = eol + 2;
      if (size === 0) break;
      if (buf.length < pos + size + 2) return null;
      parts.push(buf.subarray(pos, pos + size));
      if (buf[pos + size] !== 13 || buf[pos + size + 1] !== 10) throw new Violation('no CRLF after chunk data');
      pos += size + 2;
    }
    for (;;) { // trailer section
      const eol = buf.indexOf('\r\n', pos);
      if (eol < 0) return null;
      const l = buf.subarray(pos, eol).toString('latin1');
      pos = eol + 2;
      if (l === '') break;
      fieldLine(lines(l)[0]!);
    }
    body = Buffer.concat(parts);
  } else {
    const n = cl.length === 1 ? Number(cl[0]) : 0;
    if (buf.length < pos + n) return null;
    body = buf.subarray(pos, pos + n);
    pos += n;
  }
  return { seen: { method: rl[1]!, target: rl[2]!, headers, body: Buffer.from(body) }, length: pos };
}

/** A raw TCP upstream: parses strictly, records, answers each request with JSON describing what it read. */
async function startRecorder(name: string): Promise<Recorder> {
  const sockets = new Set<net.Socket>();
  const rec = { name, port: 0, url: '', requests: [] as Seen[], violations: [] as string[] } as Recorder & { port: number; url: string };
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      try {
        for (;;) {
          const r = parseRequest(buf);
          if (r === null) break;
          buf = buf.subarray(r.length);
          rec.requests.push(r.seen);
          const host = r.seen.headers.find(([n]) => n === 'host')![1];
          const json = JSON.stringify({
            backend: name, method: r.seen.method, target: r.seen.target, host,
            headers: r.seen.headers, body: r.seen.body.toString('latin1'),
          });
          sock.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(json)}\r\n\r\n${json}`);
        }
      } catch (e) {
        if (!(e instanceof Violation)) throw e;
        rec.violations.push(`${name}: ${e.message}`);
        sock.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  rec.port = (server.address() as AddressInfo).port;
  rec.url = `http://127.0.0.1:${rec.port}`;
  rec.close = () => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  });
  return rec;
}

// --- the raw client ----------------------------------------------------------------

interface Response {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** Splits complete HTTP/1.1 responses off `text` (Content-Length, chunked, or to the close); the rest is left. */
function parseResponses(text: string, closed: boolean): Response[] {
  const out: Response[] = [];
  let rest = text;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const [statusLine, ...fl] = rest.slice(0, end).split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine!)?.[1] ?? NaN);
    const headers: Record<string, string> = {};
    for (const l of fl) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    let pos = end + 4;
    let body = '';
    if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (rest.length < pos + n) break;
      body = rest.slice(pos, pos + n);
      pos += n;
    } else if (headers['transfer-encoding']?.toLowerCase() === 'chunked') {
      let ok = false;
      for (;;) {
        const eol = rest.indexOf('\r\n', pos);
        if (eol < 0) break;
        const size = parseInt(rest.slice(pos, eol), 16);
        if (size === 0) {
          const t = rest.indexOf('\r\n\r\n', eol);
          if (t < 0) break;
          pos = t + 4;
          ok = true;
          break;
        }
        if (rest.length < eol + 2 + size + 2) break;
        body += rest.slice(eol + 2, eol + 2 + size);
        pos = eol + 2 + size + 2;
      }
      if (!ok) break;
    } else if (status === 204 || status === 304 || (status >= 100 && status < 200)) {
      // no body
    } else {
      if (!closed) break;
      body = rest.slice(pos);
      pos = rest.length;
    }
    out.push({ status, headers, body });
    rest = rest.slice(pos);
  }
  return out;
}

interface Talk {
  readonly responses: Response[];
  /** The router closed the connection (within the wait). */
  readonly closed: boolean;
  readonly text: string;
}

/**
 * Opens a connection to the router, writes `parts` in order (a number is a
 * pause in ms, so pieces arrive in separate reads), and returns once
 * `expect` complete responses arrived and, if `untilClose`, the connection
 * closed, or after `waitMs`, whichever is first. Never half-closes: a close
 * seen here is the router's own.
 */
async function talk(port: number, parts: (string | Buffer | number)[], opts: { expect?: number; untilClose?: boolean; waitMs?: number } = {}): Promise<Talk> {
  const { expect = 1, untilClose = true, waitMs = 5_000 } = opts;
  const sock = net.connect(port, '127.0.0.1');
  sock.setNoDelay(true);
  sock.on('error', () => {});
  let text = '';
  let closed = false;
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, waitMs);
    const check = (): void => {
      const n = parseResponses(text, closed).length;
      if (closed || (!untilClose && n >= expect)) {
        clearTimeout(timer);
        resolve();
      }
    };
    sock.on('data', (c: Buffer) => { text += c.toString('latin1'); check(); });
    sock.once('close', () => { closed = true; check(); });
  });
  await once(sock, 'connect');
  for (const p of parts) {
    if (typeof p === 'number') await sleep(p);
    else if (!sock.destroyed) sock.write(p);
  }
  await done;
  sock.destroy();
  return { responses: parseResponses(text, closed), closed, text };
}

// --- a raw HTTP/2 client (frames written by hand) ---------------------------------
// node:http2's client refuses to send what these tests need to send
// (Transfer-Encoding, CR/LF in a value), so the frames are built here; HPACK
// literals without indexing or Huffman coding are enough for a request.

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

function h2Frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

function hpackLength(n: number): Buffer {
  if (n < 127) return Buffer.from([n]);
  const out = [127];
  for (n -= 127; n >= 128; n >>= 7) out.push((n & 127) | 128);
  out.push(n);
  return Buffer.from(out);
}

/** A header block of literal fields without indexing (RFC 7541 §6.2.2), names and values as given. */
function hpack(fields: [string, string][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    const n = Buffer.from(name, 'latin1');
    const v = Buffer.from(value, 'latin1');
    parts.push(Buffer.from([0]), hpackLength(n.length), n, hpackLength(v.length), v);
  }
  return Buffer.concat(parts);
}

/** What came back on stream 1: the first HEADERS block's first byte (0x88: 200, 0x8c: 400 ...), an RST_STREAM code, a GOAWAY. */
interface H2Outcome { headersByte: number | undefined; rstCode: number | undefined; goaway: boolean }

/** Sends one request on stream 1 of a fresh h2c connection: HEADERS (no END_STREAM if `data`), then DATA with END_STREAM. */
async function rawH2(port: number, fields: [string, string][], data?: string): Promise<H2Outcome> {
  const sock = net.connect(port, '127.0.0.1');
  sock.on('error', () => {});
  await once(sock, 'connect');
  const END_STREAM = 1;
  const END_HEADERS = 4;
  sock.write(Buffer.concat([
    PREFACE,
    h2Frame(4, 0, 0, Buffer.alloc(0)), // SETTINGS
    h2Frame(1, END_HEADERS | (data === undefined ? END_STREAM : 0), 1, hpack(fields)),
    ...(data === undefined ? [] : [h2Frame(0, END_STREAM, 1, Buffer.from(data, 'latin1'))]),
  ]));
  const out: H2Outcome = { headersByte: undefined, rstCode: undefined, goaway: false };
  let buf = Buffer.alloc(0);
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 5_000);
    const done = (): void => { clearTimeout(timer); resolve(); };
    sock.on('close', done);
    sock.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3]!;
        const flags = buf[4]!;
        const stream = buf.readUInt32BE(5) & 0x7fffffff;
        const payload = buf.subarray(9, 9 + len);
        buf = buf.subarray(9 + len);
        if (type === 4 && (flags & 1) === 0) sock.write(h2Frame(4, 1, 0, Buffer.alloc(0))); // ACK their SETTINGS
        if (stream === 1 && type === 1) out.headersByte ??= payload[(flags & 8) !== 0 ? 1 : 0];
        if (stream === 1 && type === 3) out.rstCode = payload.readUInt32BE(0);
        if (type === 7) out.goaway = true;
        if (out.rstCode !== undefined || out.goaway || out.headersByte !== undefined) done();
      }
    });
  });
  sock.destroy();
  return out;
}

// --- the battery -------------------------------------------------------------------

const HOST = 'smug.test';
/** A request pipelined after accepted ones: it must be answered as a request of its own. */
const FOLLOW = `GET /smuggled HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`;

/**
 * Shapes that must be answered 400 with the connection closed. Each request
 * targets its own path, so a recorder entry with that path means it reached
 * an upstream complete. `{P}` is replaced by the path.
 */
const REJECT: Record<string, string> = {
  // Content-Length
  'two Content-Length lines, different values': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd`,
  'two Content-Length lines, same value': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc`,
  'Content-Length as a list': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 3, 3\r\n\r\nabc`,
  'Content-Length with a sign': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: +3\r\n\r\nabc`,
  'negative Content-Length': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: -1\r\n\r\nabc`,
  'Content-Length with a space inside': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 1 3\r\n\r\nabc`,
  'Content-Length in hex': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 0x3\r\n\r\nabc`,
  'Content-Length over 2^64': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 99999999999999999999999\r\n\r\nabc`,
  // Content-Length and Transfer-Encoding together (CL.TE and TE.CL)
  'Content-Length then Transfer-Encoding (CL.TE)': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG`,
  'Transfer-Encoding then Content-Length (TE.CL)': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n`,
  'Transfer-Encoding: identity with Content-Length': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc`,
  // Transfer-Encoding other than a single "chunked"
  'Transfer-Encoding: chunked, identity': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`,
  'Transfer-Encoding: chunked, chunked': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n`,
  'Transfer-Encoding: identity': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: identity\r\n\r\nabc`,
  'two Transfer-Encoding lines, chunked first': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n`,
  'two Transfer-Encoding lines, chunked last': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
  'Transfer-Encoding: xchunked': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`,
  'Transfer-Encoding: chunkedx': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n`,
  'Transfer-Encoding: "chunked"': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n`,
  'Transfer-Encoding: , chunked (empty list element)': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: , chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
  'Transfer-Encoding on HTTP/1.0': `POST {P} HTTP/1.0\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
  // obfuscated Transfer-Encoding
  'space before the colon (Transfer-Encoding : chunked)': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n`,
  'tab before the colon': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n`,
  'vertical tab before the value': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n`,
  'vertical tab after the value': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n`,
  'form feed before the value': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: \x0cchunked\r\n\r\n0\r\n\r\n`,
  'Transfer-Encoding folded onto a continuation line': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n`,
  'Transfer-Encoding on a line starting with a space': `POST {P} HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: ${HOST}\r\n\r\n0\r\n\r\n`,
  'obs-fold of another field': `GET {P} HTTP/1.1\r\nHost: ${HOST}\r\nX-Foo: a\r\n  b\r\n\r\n`,
  // line endings and control characters
  'bare LF line endings': `GET {P} HTTP/1.1\nHost: ${HOST}\n\n`,
  'a bare LF after one field line': `GET {P} HTTP/1.1\r\nHost: ${HOST}\nX-Foo: y\r\n\r\n`,
  'a bare LF ending the head': `GET {P} HTTP/1.1\r\nHost: ${HOST}\r\n\n`,
  'a bare CR as line ending': `GET {P} HTTP/1.1\rHost: ${HOST}\r\n\r\n`,
  'a CR inside a field value': `GET {P} HTTP/1.1\r\nHost: ${HOST}\r\nX-Foo: a\rb\r\n\r\n`,
  'a NUL inside a field value': `GET {P} HTTP/1.1\r\nHost: ${HOST}\r\nX-Foo: a\x00b\r\n\r\n`,
  'a bare LF after a chunk size': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n`,
  'a bare LF after chunk data': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n`,
  'a bare LF after the last chunk': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\n\n`,
  // invalid chunk sizes and chunk data
  'chunk size not hex': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`,
  'negative chunk size': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n`,
  'chunk size with 0x prefix': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n`,
  'chunk size with a + sign': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n`,
  'chunk size with a leading space': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n`,
  'chunk size with a trailing space': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n`,
  'empty chunk size line': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n`,
  'chunk size over 2^64': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n`,
  'chunk data longer than its size': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcde\r\n0\r\n\r\n`,
  'whitespace between chunk size and extension': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3 ;a=b\r\nabc\r\n0\r\n\r\n`,
  'a bare LF inside a chunk extension': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3;a\nb\r\nabc\r\n0\r\n\r\n`,
  'a chunk extension over 16 KiB': `POST {P} HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3;a=${'x'.repeat(20_000)}\r\nabc\r\n0\r\n\r\n`,
  // Host
  'no Host': 'GET {P} HTTP/1.1\r\n\r\n',
  'two Host lines, different values': `GET {P} HTTP/1.1\r\nHost: other.test\r\nHost: ${HOST}\r\n\r\n`,
  'two Host lines, same value': `GET {P} HTTP/1.1\r\nHost: ${HOST}\r\nHost: ${HOST}\r\n\r\n`,
  'an empty Host': 'GET {P} HTTP/1.1\r\nHost:\r\n\r\n',
  'a Host with a space': `GET {P} HTTP/1.1\r\nHost: ${HOST} other.test\r\n\r\n`,
  'a Host that is a list': `GET {P} HTTP/1.1\r\nHost: ${HOST}, other.test\r\n\r\n`,
  'a Host with a path': `GET {P} HTTP/1.1\r\nHost: ${HOST}/x\r\n\r\n`,
  'a Host with userinfo': `GET {P} HTTP/1.1\r\nHost: user@${HOST}\r\n\r\n`,
  'a Host with a non-numeric port': `GET {P} HTTP/1.1\r\nHost: ${HOST}:80x\r\n\r\n`,
  'an absolute-form target without Host': `GET http://${HOST}{P} HTTP/1.1\r\n\r\n`,
  'an absolute-form target with userinfo': `GET http://user@${HOST}{P} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
  'an absolute-form target with an empty authority': `GET http://{P} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
  // request line
  'an unknown HTTP version': `GET {P} HTTP/1.2\r\nHost: ${HOST}\r\n\r\n`,
  'an HTTP/0.9 request line': 'GET {P}\r\n\r\n',
  'a lowercase method': `get {P} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
  'a field name with a slash': `GET {P} HTTP/1.1\r\nHost: ${HOST}\r\nX/Foo: a\r\n\r\n`,
};

describe('HTTP/1.1 request smuggling battery', () => {
  let router: RouterProcess, smug: Recorder, other: Recorder;

  before(async () => {
    smug = await startRecorder('smug');
    other = await startRecorder('other');
    router = await spawnRouter(writeConfig({
      routes: [
        { name: 'smug', hosts: [HOST], backends: [{ name: 'rec', url: smug.url, weight: 1 }] },
        { name: 'other', hosts: ['other.test'], backends: [{ name: 'rec', url: other.url, weight: 1 }] },
      ],
    }));
  });

  after(async () => {
    router.child.kill('SIGTERM');
    await router.exited;
    await Promise.all([smug.close(), other.close()]);
  });

  const reached = (path: string): Seen[] => [...smug.requests, ...other.requests].filter((r) => r.target.startsWith(path));

  let n = 0;
  for (const [name, shape] of Object.entries(REJECT)) {
    const path = `/shape/${++n}`;
    test(`400 and close: ${name}`, async () => {
      const r = await talk(router.port, [shape.replaceAll('{P}', path), `GET /smuggled${path} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`]);
      assert.equal(r.responses.length, 1, `one answer, got ${JSON.stringify(r.text.slice(0, 300))}`);
      assert.equal(r.responses[0]!.status, 400, JSON.stringify(r.text.slice(0, 300)));
      assert.ok(r.closed, 'the connection is closed after the 400');
      assert.deepEqual(reached(path), [], 'the request never reached an upstream complete');
      assert.deepEqual(reached(`/smuggled${path}`), [], 'nor did the request pipelined after it');
    });
  }

  // --- what must pass, and reach the upstream exactly as meant ---------------------

  /** The upstream's view of one request the router accepted (the recorder's JSON answer). */
  interface View { backend: string; method: string; target: string; host: string; headers: [string, string][]; body: string }
  const view = (r: Response): View => JSON.parse(r.body) as View;
  const header = (v: View, name: string): string[] => v.headers.filter(([n]) => n === name).map(([, x]) => x);

  test('pipelined requests are answered in order, each once', async () => {
    const r = await talk(router.port, [
      `GET /p1 HTTP/1.1\r\nHost: ${HOST}\r\n\r\nPOST /p2 HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 5\r\n\r\nhelloGET /p3 HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`,
    ], { expect: 3, untilClose: false });
    assert.deepEqual(r.responses.map((x) => [x.status, view(x).target, view(x).body]), [[200, '/p1', ''], [200, '/p2', 'hello'], [200, '/p3', '']]);
    assert.equal(r.closed, false, 'keep-alive');
  });

  test('a Content-Length body that holds a request is a body, never a request', async () => {
    const inner = `GET /inner HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`;
    const r = await talk(router.port, [`POST /cl-body HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: ${inner.length}\r\n\r\n${inner}`], { untilClose: false });
    assert.equal(r.responses[0]?.status, 200);
    assert.equal(view(r.responses[0]!).body, inner);
    assert.deepEqual(reached('/inner'), []);
  });

  test('a chunked body: chunk extensions and trailers are not passed on as framing; the body arrives whole', async () => {
    const r = await talk(router.port, [
      `POST /chunked HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2;a="b c"\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n`,
    ], { untilClose: false });
    assert.equal(r.responses[0]?.status, 200);
    const v = view(r.responses[0]!);
    assert.equal(v.body, 'abcde');
    assert.deepEqual(header(v, 'content-length').length + header(v, 'transfer-encoding').length, 1, 'exactly one framing header upstream');
  });

  test('Transfer-Encoding with a tab as OWS, or in capitals, is chunked', async () => {
    // (Trailing OWS, `chunked<TAB>`, is legal too, but llhttp refuses it: a 400 is safe, so either is fine and it is not asserted.)
    for (const te of ['\tchunked', 'Chunked', 'CHUNKED', ' chunked ']) {
      const r = await talk(router.port, [`POST /te HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding:${te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n${FOLLOW}`], { expect: 2, untilClose: false });
      assert.deepEqual(r.responses.map((x) => x.status), [200, 200], `${JSON.stringify(te)}: ${r.text}`);
      assert.deepEqual(r.responses.map((x) => [x.status, view(x).target, view(x).body]), [[200, '/te', 'abc'], [200, '/smuggled', '']], JSON.stringify(te));
    }
  });

  test('Content-Length with trailing OWS is read as the number', async () => {
    const r = await talk(router.port, [`POST /cl-ows HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 3\t \r\n\r\nabc${FOLLOW}`], { expect: 2, untilClose: false });
    assert.deepEqual(r.responses.map((x) => [x.status, view(x).body]), [[200, 'abc'], [200, '']]);
  });

  test('a GET with a body: the upstream gets the body with its length, never the length alone', async () => {
    const r = await talk(router.port, [`GET /get-body HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 5\r\n\r\nhello${FOLLOW}`], { expect: 2, untilClose: false });
    assert.deepEqual(r.responses.map((x) => [x.status, view(x).target, view(x).body]), [[200, '/get-body', 'hello'], [200, '/smuggled', '']]);
  });

  test('Connection naming Content-Length or Transfer-Encoding does not unframe the body', async () => {
    for (const [named, framing] of [['Content-Length', 'Content-Length: 3\r\n\r\nabc'], ['Transfer-Encoding', 'Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n']] as const) {
      const r = await talk(router.port, [`POST /conn HTTP/1.1\r\nHost: ${HOST}\r\nConnection: ${named}\r\n${framing}${FOLLOW}`], { expect: 2, untilClose: false });
      assert.deepEqual(r.responses.map((x) => [x.status, view(x).target, view(x).body]), [[200, '/conn', 'abc'], [200, '/smuggled', '']], named);
    }
  });

  test('requests split across reads at every CR and LF parse the same', async () => {
    const req = `POST /split HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`;
    const parts: (string | number)[] = [];
    let from = 0;
    for (let i = 0; i < req.length; i++) {
      if (req[i] === '\r' || req[i] === '\n') {
        parts.push(req.slice(from, i + 1), 2);
        from = i + 1;
      }
    }
    parts.push(req.slice(from));
    const r = await talk(router.port, parts, { untilClose: false });
    assert.equal(r.responses[0]?.status, 200);
    assert.equal(view(r.responses[0]!).body, 'abc');
  });

  test('h2c upgrade over HTTP/1.1 is never passed upstream (no tunnel around the router)', async () => {
    const r = await talk(router.port, [
      `GET /h2c HTTP/1.1\r\nHost: ${HOST}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n`,
    ], { untilClose: false });
    assert.equal(r.responses[0]?.status, 200, r.text.slice(0, 300));
    const v = view(r.responses[0]!);
    assert.deepEqual([header(v, 'upgrade'), header(v, 'http2-settings')], [[], []]);
  });

  // --- absolute-form targets (RFC 9112 §3.2.2) --------------------------------------

  test('an absolute-form target is routed by its own authority, not by a Host that disagrees', async () => {
    const r = await talk(router.port, [`GET http://other.test/abs?q=1 HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`], { untilClose: false });
    assert.equal(r.responses[0]?.status, 200, r.text.slice(0, 300));
    const v = view(r.responses[0]!);
    assert.equal(v.backend, 'other');
    assert.equal(v.target, '/abs?q=1', 'origin-form upstream');
    assert.deepEqual(header(v, 'host'), ['other.test'], 'the upstream Host is the target\'s authority');
  });

  test('an absolute-form target with a port and capitals matches its host; no path is "/"', async () => {
    const r = await talk(router.port, [`GET HTTP://Other.TEST:8080 HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`], { untilClose: false });
    assert.equal(r.responses[0]?.status, 200, r.text.slice(0, 300));
    const v = view(r.responses[0]!);
    assert.equal(v.backend, 'other');
    assert.equal(v.target, '/');
    assert.deepEqual(header(v, 'host'), ['Other.TEST:8080']);
  });

  test('an absolute-form target for a host with no route is 404, whatever the Host says', async () => {
    const r = await talk(router.port, [`GET http://nowhere.test/x HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`], { untilClose: false });
    assert.equal(r.responses[0]?.status, 404, r.text.slice(0, 300));
  });

  // --- the upstream side as a whole --------------------------------------------------

  test('the upstreams never saw a request they would parse differently, nor any rejected one', () => {
    assert.deepEqual([...smug.violations, ...other.violations], []);
    assert.deepEqual([...reached('/shape/'), ...reached('/smuggled/shape/'), ...reached('/inner')].map((r) => r.target), []);
  });
});

// An HTTP/2 client's request goes to an HTTP/1.1 upstream re-framed: what
// HTTP/2 forbids (a Transfer-Encoding, CR/LF in a field, a content-length
// that the DATA contradicts) must never turn into a second request upstream.
describe('HTTP/2 to HTTP/1.1 downgrade smuggling', () => {
  let router: RouterProcess, smug: Recorder, other: Recorder;

  before(async () => {
    smug = await startRecorder('smug');
    other = await startRecorder('other');
    router = await spawnRouter(writeConfig({
      routes: [
        { name: 'smug', hosts: [HOST], backends: [{ name: 'rec', url: smug.url, weight: 1 }] },
        { name: 'other', hosts: ['other.test'], backends: [{ name: 'rec', url: other.url, weight: 1 }] },
      ],
    }));
  });

  after(async () => {
    router.child.kill('SIGTERM');
    await router.exited;
    await Promise.all([smug.close(), other.close()]);
  });

  const reached = (path: string): Seen[] => [...smug.requests, ...other.requests].filter((r) => r.target.startsWith(path));

  const h2Fields = (path: string, extra: [string, string][] = [], method = 'POST'): [string, string][] =>
    [[':method', method], [':path', path], [':scheme', 'http'], [':authority', HOST], ...extra];
  const smuggledAfter = (path: string): string => `0\r\n\r\nGET ${path} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`;

  test('HTTP/2 body without content-length reaches an HTTP/1.1 upstream framed and whole', async () => {
    const session = http2.connect(router.url);
    session.on('error', () => {});
    try {
      const stream = session.request({ ':method': 'POST', ':path': '/h2-body', ':authority': HOST });
      for (const part of ['abc', 'GET /inner HTTP/1.1\r\n\r\n', 'xyz']) stream.write(part);
      stream.end();
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      const [headers] = await once(stream, 'response') as [http2.IncomingHttpHeaders];
      await once(stream, 'end');
      assert.equal(headers[':status'], 200);
      const v = JSON.parse(Buffer.concat(chunks).toString()) as { body: string; headers: [string, string][] };
      assert.equal(v.body, 'abcGET /inner HTTP/1.1\r\n\r\nxyz');
      assert.equal(v.headers.filter(([n]) => n === 'content-length' || n === 'transfer-encoding').length, 1, 'one framing header');
    } finally {
      session.close();
    }
  });

  // [path, extra fields, DATA, field the upstream must never see]. A request
  // HTTP/2 calls malformed gets a reset or a 400; where the router instead
  // forwards it without the offending field, the upstream sees a clean request.
  const h2Reject: Record<string, [path: string, fields: [string, string][], data: string | undefined, dropped?: string]> = {
    'content-length that disagrees with the DATA (H2.CL)': ['/h2-cl', [['content-length', '0']], `GET /h2-cl-smuggled HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`],
    'a Transfer-Encoding header (H2.TE)': ['/h2-te', [['transfer-encoding', 'chunked']], smuggledAfter('/h2-te-smuggled')],
    'CR LF inside a header value': ['/h2-crlf', [['x-inject', `a\r\nTransfer-Encoding: chunked`]], smuggledAfter('/h2-crlf-smuggled'), 'x-inject'],
    'CR LF inside :path': ['/h2-path HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX: y', [], smuggledAfter('/h2-path-smuggled')],
    'a header name with a space': ['/h2-name', [['x foo', 'bar']], undefined, 'x foo'],
    'a header name in capitals': ['/h2-upper', [['X-Upper', 'bar']], undefined],
    'a connection header': ['/h2-conn', [['connection', 'keep-alive']], undefined],
  };
  for (const [name, [path, extra, data, dropped]] of Object.entries(h2Reject)) {
    test(`HTTP/2 → HTTP/1.1: ${name} never reaches the upstream as a request`, async () => {
      const out = await rawH2(router.port, h2Fields(path, extra), data);
      assert.ok(out.rstCode !== undefined || out.goaway || out.headersByte !== undefined, `stream 1 got no answer: ${JSON.stringify(out)}`);
      const first = path.split(' ')[0]!;
      assert.deepEqual(reached(`${first}-smuggled`).map((r) => r.target), [], 'no smuggled request');
      const forwarded = reached(first).filter((r) => r.target === first);
      if (dropped !== undefined) {
        for (const r of forwarded) assert.ok(!r.headers.some(([n]) => n === dropped), `the upstream saw ${dropped}`);
      } else if (!name.startsWith('content-length')) { // H2.CL: its head may leave before the DATA shows the lie; never with a body
        assert.ok(out.rstCode !== undefined || out.goaway || out.headersByte === 0x8c, `stream 1 answered ${JSON.stringify(out)} (want a reset or 400)`);
        assert.deepEqual(forwarded.map((r) => r.target), [], 'the malformed request itself was not forwarded');
      }
      if (name.startsWith('content-length')) for (const r of forwarded) assert.equal(r.body.length, 0, 'a forwarded H2.CL request carries no body');
    });
  }

  test('HTTP/2: an absolute URL in :path is not passed upstream as a target', async () => {
    const out = await rawH2(router.port, h2Fields('http://other.test/h2-abs', [], 'GET'));
    assert.deepEqual([...smug.violations, ...other.violations], []);
    if (out.headersByte === 0x88) assert.deepEqual(reached('/h2-abs').map((r) => r.target), ['/h2-abs']);
  });

  test('the router is still up and the upstreams saw nothing they would parse differently', async () => {
    assert.equal(router.child.exitCode, null, 'the router process is alive');
    const out = await rawH2(router.port, h2Fields('/h2-alive', [], 'GET'));
    assert.equal(out.headersByte, 0x88, '200');
    assert.deepEqual([...smug.violations, ...other.violations], []);
  });
});
