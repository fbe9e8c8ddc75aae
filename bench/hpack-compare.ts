// src/h2/hpack.ts's decoder against the two HPACK packages on npm, on the
// header blocks of the bench's gRPC unary call: what choosing one would cost.
// The packages are not dependencies of switchyard; install them aside first:
//
//   npm install --prefix /tmp/hpackcmp hpack.js@2.1.6 hpack@1.0.0
//   node bench/hpack-compare.ts /tmp/hpackcmp
//
// Two cases per decoder, each over one decoding context as on a connection:
//   - repeat: the request block h2load sends for every call after the first
//     (all dynamic-table references), 200,000 times;
//   - fresh: the first block of a connection (literals, Huffman-coded),
//     100,000 times, a new context each time.
// Prints µs of CPU (process.cpuUsage) per block.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { HpackDecoder } from '../src/h2/hpack.ts';

const dir = process.argv[2];
if (dir === undefined) throw new Error('usage: hpack-compare.ts DIR (where hpack.js@2.1.6 and hpack@1.0.0 are installed)');
const require = createRequire(join(dir, 'node_modules', 'x.js'));

interface HpackJsStream { write(x: unknown): void; execute(): void; read(): unknown }
interface HpackJs {
  compressor: { create(o: object): HpackJsStream };
  decompressor: { create(o: object): HpackJsStream };
}
const hpackJs = require('hpack.js') as HpackJs;
const HPACK = require('hpack') as new () => { decode(b: Buffer): unknown[] };

// The request headers of bench/cpu-cost.ts's grpc scenario, as h2load sends them.
const headers = [
  [':method', 'POST'], [':path', '/bench.Echo/Unary'], [':scheme', 'http'], [':authority', 'grpc.bench'],
  ['accept', '*/*'], ['accept-encoding', 'gzip, deflate'], ['user-agent', 'h2load nghttp2/1.52.0'],
  ['content-type', 'application/grpc'], ['te', 'trailers'], ['content-length', '23'],
].map(([name, value]) => ({ name: name!, value: value! }));

// Blocks encoded with incremental indexing and Huffman, as nghttp2 does.
const comp = hpackJs.compressor.create({ table: { size: 4096 } });
comp.write(headers);
const first = comp.read() as Buffer;
comp.write(headers);
const repeat = comp.read() as Buffer;

function measure(name: string, n: number, run: () => void): void {
  for (let i = 0; i < 2000; i++) run(); // warm-up
  const t0 = process.cpuUsage();
  for (let i = 0; i < n; i++) run();
  const t = process.cpuUsage(t0);
  console.log(`${name}: ${((t.user + t.system) / n).toFixed(3)} µs per block`);
}

const out: string[] = [];
let check = 0;
{
  const d = new HpackDecoder();
  d.decode(first, 0, first.length, out);
  measure('src/h2/hpack.ts, repeat', 200_000, () => { check += d.decode(repeat, 0, repeat.length, out); });
  measure('src/h2/hpack.ts, fresh ', 100_000, () => { check += new HpackDecoder().decode(first, 0, first.length, out); });
}
{
  const decodeWith = (d: HpackJsStream, b: Buffer): void => {
    d.write(b);
    d.execute();
    while (d.read() !== null) check++;
  };
  const d = hpackJs.decompressor.create({ table: { size: 4096 } });
  decodeWith(d, first);
  measure('hpack.js 2.1.6, repeat', 200_000, () => decodeWith(d, repeat));
  measure('hpack.js 2.1.6, fresh ', 100_000, () => decodeWith(hpackJs.decompressor.create({ table: { size: 4096 } }), first));
}
{
  const d = new HPACK();
  d.decode(first);
  measure('hpack 1.0.0, repeat', 200_000, () => { check += d.decode(repeat).length; });
  measure('hpack 1.0.0, fresh ', 100_000, () => { check += new HPACK().decode(first).length; });
}
// The three must agree on what the blocks say.
const a = new HpackDecoder();
const n = a.decode(first, 0, first.length, out);
const mine = out.slice(0, n).join('\n');
const theirs = (new HPACK().decode(first) as [string, string][]).flat().join('\n');
console.log(`decoders agree: ${mine === theirs} (${check > 0 ? 'ran' : 'no run'})`);
