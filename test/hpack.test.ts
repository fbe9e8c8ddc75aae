// src/h2/hpack.ts against RFC 7541 Appendix C (decoding, Huffman, dynamic
// table eviction), its error cases, and encode→decode round trips.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { HpackDecoder, HpackEncoder, HpackError, blockBound } from '../src/h2/hpack.ts';

function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

function decode(d: HpackDecoder, block: Buffer): [string, string][] {
  const out: string[] = [];
  const n = d.decode(block, 0, block.length, out);
  const pairs: [string, string][] = [];
  for (let i = 0; i < n; i += 2) pairs.push([out[i]!, out[i + 1]!]);
  return pairs;
}

describe('RFC 7541 C.2: single fields', () => {
  test('C.2.1 literal with indexing', () => {
    const d = new HpackDecoder();
    assert.deepEqual(decode(d, hex('400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572')), [['custom-key', 'custom-header']]);
    assert.equal(d.tableSize, 55);
  });
  test('C.2.2 literal without indexing', () => {
    const d = new HpackDecoder();
    assert.deepEqual(decode(d, hex('040c 2f73 616d 706c 652f 7061 7468')), [[':path', '/sample/path']]);
    assert.equal(d.tableSize, 0);
  });
  test('C.2.3 literal never indexed', () => {
    const d = new HpackDecoder();
    assert.deepEqual(decode(d, hex('1008 7061 7373 776f 7264 0673 6563 7265 74')), [['password', 'secret']]);
    assert.equal(d.tableSize, 0);
  });
  test('C.2.4 indexed', () => {
    assert.deepEqual(decode(new HpackDecoder(), hex('82')), [[':method', 'GET']]);
  });
});

const req1: [string, string][] = [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com']];
const req2: [string, string][] = [...req1, ['cache-control', 'no-cache']];
const req3: [string, string][] = [[':method', 'GET'], [':scheme', 'https'], [':path', '/index.html'], [':authority', 'www.example.com'], ['custom-key', 'custom-value']];

test('RFC 7541 C.3: requests without Huffman, one decoder', () => {
  const d = new HpackDecoder();
  assert.deepEqual(decode(d, hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d')), req1);
  assert.equal(d.tableSize, 57);
  assert.deepEqual(decode(d, hex('8286 84be 5808 6e6f 2d63 6163 6865')), req2);
  assert.equal(d.tableSize, 110);
  assert.deepEqual(decode(d, hex('8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65')), req3);
  assert.equal(d.tableSize, 164);
});

test('RFC 7541 C.4: requests with Huffman, one decoder', () => {
  const d = new HpackDecoder();
  assert.deepEqual(decode(d, hex('8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff')), req1);
  assert.equal(d.tableSize, 57);
  assert.deepEqual(decode(d, hex('8286 84be 5886 a8eb 1064 9cbf')), req2);
  assert.equal(d.tableSize, 110);
  assert.deepEqual(decode(d, hex('8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf')), req3);
  assert.equal(d.tableSize, 164);
});

const date1 = 'Mon, 21 Oct 2013 20:13:21 GMT';
const date2 = 'Mon, 21 Oct 2013 20:13:22 GMT';
const loc = 'https://www.example.com';
const resp1: [string, string][] = [[':status', '302'], ['cache-control', 'private'], ['date', date1], ['location', loc]];
const resp2: [string, string][] = [[':status', '307'], ['cache-control', 'private'], ['date', date1], ['location', loc]];
const resp3: [string, string][] = [[':status', '200'], ['cache-control', 'private'], ['date', date2], ['location', loc],
  ['content-encoding', 'gzip'], ['set-cookie', 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1']];

test('RFC 7541 C.5: responses without Huffman, a 256-octet table with eviction', () => {
  const d = new HpackDecoder(256);
  assert.deepEqual(decode(d, hex(`4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
    2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d`)), resp1);
  assert.equal(d.tableSize, 222);
  // :status 307 evicts :status 302; the indexes c1, c0, bf then name the older entries.
  assert.deepEqual(decode(d, hex('4803 3330 37c1 c0bf')), resp2);
  assert.equal(d.tableSize, 222);
  assert.deepEqual(decode(d, hex(`88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
    54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b
    206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31`)), resp3);
  assert.equal(d.tableSize, 215);
});

test('RFC 7541 C.6: responses with Huffman, a 256-octet table with eviction', () => {
  const d = new HpackDecoder(256);
  assert.deepEqual(decode(d, hex(`4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
    2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3`)), resp1);
  assert.equal(d.tableSize, 222);
  assert.deepEqual(decode(d, hex('4883 640e ffc1 c0bf')), resp2);
  assert.equal(d.tableSize, 222);
  assert.deepEqual(decode(d, hex(`88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
    77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5
    b106 3d50 07`)), resp3);
  assert.equal(d.tableSize, 215);
});

describe('dynamic table size updates', () => {
  test('an update to 0 empties the table; entries after it are indexed again', () => {
    const d = new HpackDecoder();
    decode(d, hex('400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572'));
    assert.equal(d.tableSize, 55);
    assert.deepEqual(decode(d, hex('20 82')), [[':method', 'GET']]);
    assert.equal(d.tableSize, 0);
    assert.throws(() => decode(d, hex('be')), HpackError, 'the evicted entry is gone');
    // Back up to 4096 (3f e1 1f: 31 + 4065) within the same block, then an insert.
    assert.deepEqual(decode(d, hex('20 3fe11f 4003 6162 6303 7879 7a be')), [['abc', 'xyz'], ['abc', 'xyz']]);
    assert.equal(d.tableSize, 38);
  });
  test('an update to a smaller size evicts the oldest entries', () => {
    const d = new HpackDecoder();
    decode(d, hex('4001 6101 31 4001 6201 32')); // a: 1 (34), then b: 2 (34)
    assert.equal(d.tableSize, 68);
    assert.deepEqual(decode(d, hex('3f 04 be')), [['b', '2']]); // 35 octets: only the newest fits
    assert.equal(d.tableSize, 34);
  });
  test('an update above the advertised limit is an error', () => {
    assert.throws(() => decode(new HpackDecoder(), hex('3f e2 1f')), /above the limit/); // 4097
    assert.throws(() => decode(new HpackDecoder(256), hex('3f e2 01')), /above the limit/); // 257
  });
  test('an update after a field is an error', () => {
    assert.throws(() => decode(new HpackDecoder(), hex('82 20')), /after a header/);
  });
  test('an entry larger than the table empties it and is not added', () => {
    const d = new HpackDecoder(40);
    decode(d, hex('4001 6101 31'));
    assert.equal(d.tableSize, 34);
    assert.deepEqual(decode(d, hex('4001 6208 3132 3334 3536 3738')), [['b', '12345678']]);
    assert.equal(d.tableSize, 0);
  });
});

describe('errors', () => {
  const cases: [string, string, RegExp][] = [
    ['index 0', '80', /index 0/],
    ['an index past the static and dynamic table', 'be', /past the table/],
    ['a name index past the table', '7f 00 01 61', /past the table/],
    ['a truncated integer', 'ff', /truncated integer/],
    ['an integer past 2^28', 'ff ff ff ff ff ff 7f', /integer overflow/],
    ['a string past the block', '00 05 61', /past the block/],
    ['a truncated string', '00', /truncated string/],
    ['Huffman padding that is not all ones', '00 81 00 01 61', /padding/], // '0' is 00000, then 000
    ['Huffman padding longer than 7 bits', '00 82 1f ff 01 61', /padding|EOS/], // 'a' then 8 ones... and 3 more
    ['EOS inside a Huffman string', '00 84 ff ff ff ff 01 61', /EOS/],
  ];
  for (const [name, block, re] of cases) {
    test(name, () => {
      assert.throws(() => decode(new HpackDecoder(), hex(block)), (err: unknown) => err instanceof HpackError && re.test(err.message));
    });
  }
});

describe('encode → decode', () => {
  /** Encodes `h` with `enc`, decodes it with `dec`, checks the fields came through; returns the block's length. */
  function roundTrip(h: string[], enc = new HpackEncoder(), dec = new HpackDecoder()): number {
    const dst = Buffer.alloc(blockBound(h, h.length));
    const end = enc.encode(h, h.length, dst, 0);
    assert.ok(end <= dst.length);
    const out: string[] = [];
    assert.equal(dec.decode(dst, 0, end, out), h.length);
    assert.deepEqual(out.slice(0, h.length), h);
    return end;
  }
  const grpcRequest = [':method', 'POST', ':scheme', 'http', ':authority', 'grpc.bench:50051', ':path', '/bench.Echo/Unary',
    'content-type', 'application/grpc', 'te', 'trailers', 'grpc-timeout', '1S', 'user-agent', 'grpc-go/1.85.0'];

  test('a repeated gRPC request: the second block is indexes, but for the fields that vary', () => {
    const enc = new HpackEncoder();
    const dec = new HpackDecoder();
    const first = roundTrip(grpcRequest, enc, dec);
    const second = roundTrip(grpcRequest, enc, dec);
    // POST and http are static (1 byte each); authority, path, content-type, te, user-agent are dynamic
    // indexes (1 byte each); grpc-timeout, which varies, is a literal: 1 + (1 + 12) + (1 + 2).
    assert.equal(second, 2 + 5 + 17, `first ${first} bytes`);
    assert.ok(first > 100);
    assert.equal(dec.tableSize, [':authority', 'grpc.bench:50051', ':path', '/bench.Echo/Unary', 'content-type', 'application/grpc',
      'te', 'trailers', 'user-agent', 'grpc-go/1.85.0'].reduce((n, s) => n + s.length, 0) + 5 * 32);
    roundTrip([':status', '200', 'content-type', 'application/grpc', 'grpc-status', '0', 'grpc-message', ''], enc, dec);
  });
  test(':status, content-length and credentials are never added to the table; credentials are marked never-indexed', () => {
    const enc = new HpackEncoder();
    const dec = new HpackDecoder();
    const h = [':status', '431', 'content-length', '12', 'authorization', 'Bearer x', 'cookie', 'a=b', 'x-custom', 'v'.repeat(600)];
    const dst = Buffer.alloc(blockBound(h, h.length));
    const end = enc.encode(h, h.length, dst, 0);
    assert.deepEqual([...dst.subarray(0, 2)], [0x08, 3], ':status as a literal with the static name, without indexing');
    const out: string[] = [];
    dec.decode(dst, 0, end, out);
    assert.deepEqual(out.slice(0, h.length), h);
    assert.equal(dec.tableSize, 0);
    assert.ok(dst.subarray(0, end).includes(Buffer.from([0x10 | 0x0f, 23 - 15])), 'authorization (static 23) never indexed');
  });
  test('a small table: entries are evicted in step with the decoder', () => {
    const enc = new HpackEncoder();
    enc.setTableSize(100);
    const dec = new HpackDecoder();
    for (let i = 0; i < 200; i++) {
      roundTrip(['x-a', String(i % 7), 'x-b', 'same', 'x-' + 'c'.repeat(i % 50), String(i % 3)], enc, dec);
      assert.ok(dec.tableSize <= 100);
    }
  });
  test('size updates: lowered then raised between blocks sends both; 0 stops indexing', () => {
    const enc = new HpackEncoder();
    const dec = new HpackDecoder();
    roundTrip(grpcRequest, enc, dec);
    enc.setTableSize(0);
    enc.setTableSize(2048);
    const h = ['x-one', '1'];
    const dst = Buffer.alloc(blockBound(h, 2));
    const end = enc.encode(h, 2, dst, 0);
    assert.deepEqual([...dst.subarray(0, 4)], [0x20, 0x3f, 0xe1, 0x0f], 'update to 0, then to 2048');
    const out: string[] = [];
    dec.decode(dst, 0, end, out);
    assert.deepEqual(out.slice(0, 2), h);
    enc.setTableSize(0);
    roundTrip(grpcRequest, enc, dec);
    assert.equal(dec.tableSize, 0);
    enc.setTableSize(65536); // more than 4,096 is not used
    roundTrip(grpcRequest, enc, dec);
    assert.ok(dec.tableSize > 0 && dec.tableSize <= 4096);
  });
  test('every static name, common and uncommon values', () => {
    roundTrip([':method', 'GET', ':method', 'DELETE', ':scheme', 'https', ':path', '/', ':path', '/index.html',
      ':status', '204', ':status', '503', 'www-authenticate', 'Basic', 'accept-encoding', 'gzip, deflate', 'age', '']);
  });
  test('long names and values (multi-byte lengths), latin1 octets', () => {
    roundTrip(['x-' + 'n'.repeat(300), 'v'.repeat(70_000), 'x-latin1', 'caf\u00e9 \u00ff', 'cookie', 'a=1; b=2']);
  });
  test('random lists against one decoder, 4,096-octet table', () => {
    const enc = new HpackEncoder();
    const dec = new HpackDecoder();
    let x = 1;
    const rnd = (n: number): number => { x = (x * 1103515245 + 12345) >>> 0; return (x >>> 8) % n; };
    const names = [':authority', ':path', 'content-type', 'x-a', 'x-b', 'accept', 'user-agent', 'grpc-timeout', 'cookie', 'x-long'];
    for (let i = 0; i < 2000; i++) {
      const h: string[] = [];
      for (let f = rnd(8); f >= 0; f--) {
        const name = names[rnd(names.length)]!;
        h.push(name, name === 'x-long' ? 'l'.repeat(rnd(900)) : `v${rnd(40)}`);
      }
      roundTrip(h, enc, dec);
    }
  });
  test('into the middle of a buffer', () => {
    const h = ['x-a', '1', 'x-b', '2'];
    const dst = Buffer.alloc(5 + blockBound(h, 4));
    const end = new HpackEncoder().encode(h, 4, dst, 5);
    const out: string[] = [];
    assert.equal(new HpackDecoder().decode(dst, 5, end, out), 4);
    assert.deepEqual(out, h);
  });
});
