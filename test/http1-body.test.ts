// The one HTTP/1.1 body decoder (src/http1-body.ts) as each parser uses it:
// the same bodies through the request parser (strict rules) and the response
// parser (lenient ones), whole and one byte at a time, so each rule that
// differs between the sides is pinned on both.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { BadRequestError } from '../src/errors.ts';
import { RequestParser } from '../src/ingress/h1-parser.ts';
import { ParseError, ResponseParser } from '../src/upstream/http1-parser.ts';

interface Decoded { body: string; ended: boolean; trailers: unknown; rest: string }

/** `body` after a chunked request head, through RequestParser.body(). */
function request(body: string, split: boolean): Decoded {
  const out: Decoded = { body: '', ended: false, trailers: null, rest: '' };
  const p = new RequestParser(16 * 1024, {
    onBody(chunk) { out.body += chunk.toString('latin1'); },
    onBodyEnd() { out.ended = true; },
  });
  const head = Buffer.from('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n', 'latin1');
  assert.equal(p.head(head, 0), head.length);
  const buf = Buffer.from(body, 'latin1');
  const step = split ? 1 : buf.length;
  for (let i = 0; i < buf.length; i += step) {
    const piece = buf.subarray(i, i + step);
    const used = p.body(piece, 0);
    if (used < piece.length) {
      out.rest = Buffer.concat([piece.subarray(used), buf.subarray(i + step)]).toString('latin1');
      break;
    }
  }
  out.trailers = p.trailers;
  return out;
}

/** `body` after a chunked response head, through ResponseParser.execute(). */
function response(body: string, split: boolean): Decoded {
  const out: Decoded = { body: '', ended: false, trailers: null, rest: '' };
  const p = new ResponseParser({
    onHead() {},
    onData(chunk) { out.body += chunk.toString('latin1'); },
    onEnd() { out.ended = true; },
  });
  p.start(false, false);
  const head = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n';
  const buf = Buffer.from(head + body, 'latin1');
  const step = split ? 1 : buf.length;
  for (let i = 0; i < buf.length; i += step) {
    const piece = buf.subarray(i, i + step);
    const used = p.execute(piece);
    if (used < piece.length) {
      out.rest = Buffer.concat([piece.subarray(used), buf.subarray(i + step)]).toString('latin1');
      break;
    }
  }
  return out;
}

const sides = [['request', request, BadRequestError], ['response', response, ParseError]] as const;

describe('HTTP/1.1 chunked body, both sides', () => {
  for (const [side, decode] of sides) {
    for (const split of [false, true]) {
      test(`${side}${split ? ', byte by byte' : ''}: chunks, extensions, and what follows the body is left`, () => {
        const r = decode('3;a=b\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\nNEXT', split);
        assert.equal(r.body, 'abc0123456789abcdef');
        assert.equal(r.ended, true);
        assert.equal(r.rest, 'NEXT');
      });
    }
  }

  for (const [side, decode, Refused] of sides) {
    for (const [what, body] of [
      ['a bare LF after a chunk size', '3\nabc\r\n0\r\n\r\n'],
      ['a bare LF after chunk data', '3\r\nabc\n0\r\n\r\n'],
      ['chunk data longer than its size', '3\r\nabcd\r\n0\r\n\r\n'],
      ['a size that is not hex', 'zz\r\n'],
      ['a size of 13 digits', '1000000000000\r\n'],
      ['a leading space before the size', ' 3\r\nabc\r\n0\r\n\r\n'],
      ['a bare LF in an extension', '3;a\nb\r\nabc\r\n0\r\n\r\n'],
      ['a bare LF in the trailers', '0\r\nX-T: 1\n\r\n'],
    ] as const) {
      test(`${side} refuses ${what}`, () => {
        assert.throws(() => decode(body, false), Refused);
        assert.throws(() => decode(body, true), Refused);
      });
    }
  }

  test('whitespace after a chunk size: refused on requests, skipped with the rest of the line on responses', () => {
    for (const split of [false, true]) {
      assert.throws(() => request('3 ;a=b\r\nabc\r\n0\r\n\r\n', split), BadRequestError);
      assert.throws(() => request('3 \r\nabc\r\n0\r\n\r\n', split), BadRequestError);
      assert.equal(response('3 ;a=b\r\nabc\r\n0\r\n\r\n', split).body, 'abc');
      assert.equal(response('3\t\r\nabc\r\n0\r\n\r\n', split).body, 'abc');
    }
  });

  test('a chunk extension over 16 KiB: refused on requests, skipped on responses', () => {
    const body = `3;a=${'x'.repeat(20_000)}\r\nabc\r\n0\r\n\r\n`;
    assert.throws(() => request(body, false), BadRequestError);
    const r = response(body, false);
    assert.equal(r.body, 'abc');
    assert.equal(r.ended, true);
  });

  test('trailers: kept on requests (framing fields left out), dropped on responses', () => {
    for (const split of [false, true]) {
      const body = '1\r\nx\r\n0\r\nX-Sum: 42\r\nContent-Length: 9\r\n\r\nNEXT';
      const req = request(body, split);
      assert.deepEqual({ ...req.trailers as object }, { 'x-sum': '42' });
      assert.equal(req.rest, 'NEXT');
      const res = response(body, split);
      assert.equal(res.body, 'x');
      assert.equal(res.ended, true);
      assert.equal(res.rest, 'NEXT');
    }
  });

  test('trailers: a malformed field line is refused on requests only', () => {
    const body = '0\r\nnot a field\r\n\r\n';
    assert.throws(() => request(body, false), BadRequestError);
    assert.equal(response(body, false).ended, true);
  });

  test('trailers: the request side bounds the section, the response side each line', () => {
    // ~20 KiB in short lines, arriving in pieces (the request side counts what it holds while it waits for the end)
    const many = `0\r\n${'X-T: 0123456789\r\n'.repeat(1200)}\r\n`;
    assert.throws(() => request(many, true), BadRequestError);
    assert.equal(response(many, true).ended, true);
    assert.throws(() => response(`0\r\nX-T: ${'a'.repeat(70 * 1024)}\r\n\r\n`, false), ParseError);
  });
});
