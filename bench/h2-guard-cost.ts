// CPU cost of the HTTP/2 frame guard alone, A/B: a bare node:http2 server
// (every call answered with a 23-byte gRPC message and grpc-status 0) behind
// each checkout's src/ingress/h2-guard.ts, or behind none, driven by h2load
// (-c8 -m32 unary calls, as the grpc scenario of cpu-cost.ts). Without the
// router's own work around it the guard's share is large enough to see on a
// busy machine, where the whole router's is lost in the noise.
//
//   node bench/h2-guard-cost.ts [--a DIR|none] [--b DIR|none] [--requests N] [--rounds R]
//
// Both run in this process (pinned to the proxy core), alternating round by
// round; printed per round and as medians: µs of CPU per call and scavenges
// per 100,000 calls.
import http2 from 'node:http2';
import net, { type AddressInfo, type Socket } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { LOAD_CORE, PROXY_CORE, pinSelf, runCommand } from './procs.ts';
import { median } from './stats.ts';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');

const { values: opts } = parseArgs({
  options: {
    a: { type: 'string', default: 'none' },
    b: { type: 'string', default: ROOT },
    requests: { type: 'string', default: '60000' },
    rounds: { type: 'string', default: '7' },
  },
});
const requests = Number(opts.requests);
const rounds = Number(opts.rounds);

type Wrap = (socket: Socket) => Socket;
const GUARD_OPTIONS = { idleTimeoutMs: 60_000, headersTimeoutMs: 10_000 };

async function variant(dir: string): Promise<{ name: string; wrap: Wrap }> {
  if (dir === 'none') return { name: 'no guard', wrap: (s) => s };
  const path = join(resolve(dir), 'src/ingress/h2-guard.ts');
  const { H2Guard } = await import(path) as { H2Guard: new (s: Socket, o: typeof GUARD_OPTIONS) => Socket };
  return { name: resolve(dir), wrap: (s) => new H2Guard(s, GUARD_OPTIONS) };
}

const MESSAGE = Buffer.from('000000000d0a0b6563686f2d7265706c79', 'hex');

function server(wrap: Wrap): Promise<net.Server> {
  const h2 = http2.createServer({ settings: { initialWindowSize: 1 << 20, maxConcurrentStreams: 1000 } });
  h2.on('stream', (stream) => {
    stream.on('error', () => {});
    stream.resume();
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(MESSAGE);
    });
  });
  const srv = net.createServer({ noDelay: true }, (s) => { h2.emit('connection', wrap(s)); });
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv)));
}

let scavenges = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if ((e as unknown as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) scavenges++;
}).observe({ entryTypes: ['gc'] });

async function load(port: number, n: number, body: string): Promise<void> {
  const r = await runCommand('h2load', ['-t1', '-c8', '-m32', `-n${n}`, '-H', 'content-type: application/grpc', '-H', 'te: trailers',
    '-d', body, `http://127.0.0.1:${port}/bench.Echo/Unary`], { core: LOAD_CORE, timeoutMs: 300_000 });
  const ok = /status codes: (\d+) 2xx/.exec(r.stdout);
  if (ok === null || Number(ok[1]) !== n) throw new Error(`h2load: not all ${n} calls succeeded:\n${r.stdout.slice(-600)}${r.stderr.slice(-300)}`);
}

async function main(): Promise<void> {
  pinSelf(PROXY_CORE);
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-guard-'));
  const body = join(dir, 'request.bin');
  writeFileSync(body, Buffer.from('00000000120a1073776974636879617264', 'hex'));
  const variants = [await variant(opts.a), await variant(opts.b)];
  const servers = await Promise.all(variants.map((v) => server(v.wrap)));
  const cpu = variants.map(() => [] as number[]);
  const gcs = variants.map(() => [] as number[]);
  try {
    for (let round = 0; round < rounds; round++) {
      for (const [i, v] of variants.entries()) {
        const port = (servers[i]!.address() as AddressInfo).port;
        await load(port, Math.max(1000, Math.floor(requests / 5)), body);
        const s0 = scavenges;
        const c0 = process.cpuUsage();
        await load(port, requests, body);
        const c = process.cpuUsage(c0);
        await new Promise((r) => setImmediate(r)); // the last gc entries
        const us = (c.user + c.system) / requests;
        const sc = (scavenges - s0) * 100_000 / requests;
        cpu[i]!.push(us);
        gcs[i]!.push(sc);
        console.log(`round ${round + 1} ${String.fromCharCode(65 + i)} ${v.name}: ${us.toFixed(2)} µs CPU/call, ${sc.toFixed(0)} scavenges per 100,000`);
      }
    }
    console.log(`\n${requests.toLocaleString('en-US')} calls x ${rounds} rounds (medians):`);
    for (const [i, v] of variants.entries()) {
      console.log(`  ${String.fromCharCode(65 + i)} ${v.name}: ${median(cpu[i]!).toFixed(2)} µs/call [${cpu[i]!.map((x) => x.toFixed(1)).join(', ')}], ${median(gcs[i]!).toFixed(0)} scavenges per 100,000`);
    }
    console.log(`  B/A = ${(median(cpu[1]!) / median(cpu[0]!)).toFixed(3)}`);
  } finally {
    for (const s of servers) s.close();
    rmSync(dir, { recursive: true, force: true });
  }
  process.exit(0);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
