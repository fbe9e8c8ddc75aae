// HTTP/2 abuse, switchyard against HAProxy 2.6 (`bind ... proto h2`) in the
// same run: for each attack the same raw frames go to a fresh proxy process,
// and the CPU time and peak memory that proxy spent absorbing them are read
// from /proc, with how its connections ended. test/h2-abuse.test.ts asserts
// the behaviour; this measures the cost.
//
//   node bench/h2-abuse.ts [--out bench/results/h2-abuse.md] [--scale 1] [--only 'rapid reset']
//
// The proxy runs pinned to its own core, the attacker and the backend on the
// other (bench/procs.ts). Needs haproxy (apt-get install haproxy).
import http2 from 'node:http2';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AddressInfo } from 'node:net';
import { stringify } from 'yaml';
import { FLAG, FRAME, RawH2, frame, hpack, ping, requestBlock, rstStream } from '../test/h2-raw.ts';
import { checkoutVersion } from './tools.ts';
import { LOAD_CORE, PROXY_CORE, freePort, logTail, pinSelf, startProcess, stopProcess, waitForPort, type Started } from './procs.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const { values: opts } = parseArgs({ options: { out: { type: 'string' }, scale: { type: 'string', default: '1' }, only: { type: 'string' } } });
const SCALE = Number(opts.scale);
const AUTHORITY = '127.0.0.1';
const IDLE_S = 2;
const CODES: Record<number, string> = { 0: 'NO_ERROR', 1: 'PROTOCOL_ERROR', 2: 'INTERNAL_ERROR', 5: 'STREAM_CLOSED', 6: 'FRAME_SIZE_ERROR', 9: 'COMPRESSION_ERROR', 11: 'ENHANCE_YOUR_CALM' };

/** The :status of a response HEADERS block, as HPACK sends 431 (literal, indexed name 8, Huffman "431"). */
function status(block: Buffer): string {
  return block.subarray(0, 4).equals(Buffer.from([0x48, 0x82, 0x6c, 0x02])) ? '431' : 'HEADERS';
}

/** How the attack's connections ended, e.g. "20× GOAWAY ENHANCE_YOUR_CALM". */
function endings(conns: RawH2[]): string {
  const n = new Map<string, number>();
  for (const c of conns) {
    const g = c.goaway();
    const k = g !== undefined ? `GOAWAY ${CODES[g.code] ?? g.code}` : c.isClosed ? 'closed' : 'still open';
    n.set(k, (n.get(k) ?? 0) + 1);
  }
  return [...n].map(([k, v]) => `${v}× ${k}`).join(', ');
}

async function settle(conns: RawH2[], ms: number): Promise<void> {
  await Promise.race([Promise.all(conns.map((c) => c.closed)), sleep(ms)]);
}

interface Attack {
  readonly name: string;
  readonly what: string;
  run(port: number): Promise<string>;
}

/** `conns` connections each sending `make(i)` batches until `total` frames or the proxy ends it. */
async function flood(port: number, conns: number, batches: number, make: (c: RawH2, b: number) => Buffer, pauseReading = false): Promise<RawH2[]> {
  const cs = await Promise.all(Array.from({ length: conns }, () => RawH2.connect(port)));
  await Promise.all(cs.map(async (c) => {
    if (pauseReading) c.socket.pause();
    for (let b = 0; b < batches && !c.isClosed && c.goaway() === undefined; b++) {
      if (!c.send(make(c, b))) await Promise.race([new Promise((r) => c.socket.once('drain', r)), c.closed, sleep(200)]);
    }
  }));
  for (const c of cs) c.socket.resume();
  await settle(cs, 3000);
  return cs;
}

const ATTACKS: Attack[] = [
  {
    name: 'rapid reset',
    what: '20 connections × up to 5,000 HEADERS+RST_STREAM(CANCEL)',
    async run(port) {
      const block = requestBlock(AUTHORITY, '/', 'POST');
      const cs = await flood(port, 20, 25 * SCALE, (_c, b) => Buffer.concat(Array.from({ length: 200 }, (_, i) => {
        const id = 2 * (200 * b + i) + 1;
        return Buffer.concat([frame(FRAME.HEADERS, FLAG.END_HEADERS, id, block), rstStream(id, http2.constants.NGHTTP2_CANCEL)]);
      })));
      return endings(cs);
    },
  },
  {
    name: 'CONTINUATION flood',
    what: '20 connections × HEADERS + up to 5,000 CONTINUATION of 1 KB, never END_HEADERS',
    async run(port) {
      const filler = frame(FRAME.CONTINUATION, 0, 1, hpack([['x-filler', 'y'.repeat(1000)]]));
      const cs = await flood(port, 20, 50 * SCALE, (_c, b) => Buffer.concat([
        ...(b === 0 ? [frame(FRAME.HEADERS, 0, 1, requestBlock(AUTHORITY))] : []),
        ...Array.from({ length: 100 }, () => filler),
      ]));
      return endings(cs);
    },
  },
  {
    name: 'oversized header block',
    what: '200 requests with 32 KiB of headers each (limit 16 KiB), 10 per connection',
    async run(port) {
      const answers = new Map<string, number>();
      const cs: RawH2[] = [];
      for (let k = 0; k < 20 * SCALE; k++) {
        const c = await RawH2.connect(port);
        cs.push(c);
        for (let i = 0; i < 10 && !c.isClosed; i++) {
          const id = 2 * i + 1;
          const block = requestBlock(AUTHORITY, '/', 'GET', [['x-big', 'z'.repeat(32 * 1024)]]);
          const parts: Buffer[] = [];
          for (let at = 0; at < block.length; at += 16_384) parts.push(block.subarray(at, at + 16_384));
          c.send(Buffer.concat(parts.map((p, j) => frame(j === 0 ? FRAME.HEADERS : FRAME.CONTINUATION,
            (j === 0 ? FLAG.END_STREAM : 0) | (j === parts.length - 1 ? FLAG.END_HEADERS : 0), id, p))));
          try {
            await c.until((fs) => fs.some((f) => f.stream === id && (f.type === FRAME.HEADERS || f.type === FRAME.RST_STREAM)), 5000, 'an answer');
          } catch { /* counted below */ }
          const f = c.frames.find((x) => x.stream === id && (x.type === FRAME.HEADERS || x.type === FRAME.RST_STREAM));
          const k2 = f === undefined ? (c.isClosed ? 'connection closed' : 'no answer')
            : f.type === FRAME.RST_STREAM ? `RST_STREAM ${CODES[f.payload.readUInt32BE(0)] ?? f.payload.readUInt32BE(0)}` : `response ${status(f.payload)}`;
          answers.set(k2, (answers.get(k2) ?? 0) + 1);
        }
        c.close();
      }
      return [...answers].map(([k, v]) => `${v}× ${k}`).join(', ');
    },
  },
  {
    name: 'h2 slowloris',
    what: `500 sessions opened and left idle; idle timeout ${IDLE_S} s on both`,
    async run(port) {
      const cs: RawH2[] = [];
      for (let i = 0; i < 500 * SCALE; i++) cs.push(await RawH2.connect(port));
      await settle(cs, (IDLE_S + 4) * 1000);
      return `${cs.filter((c) => c.isClosed).length} of ${cs.length} closed within ${IDLE_S + 4} s; ${endings(cs)}`;
    },
  },
  {
    name: 'SETTINGS flood',
    what: '20 connections × up to 50,000 SETTINGS, replies not read',
    async run(port) {
      const batch = Buffer.concat(Array.from({ length: 1000 }, () => frame(FRAME.SETTINGS, 0, 0)));
      return endings(await flood(port, 20, 50 * SCALE, () => batch, true));
    },
  },
  {
    name: 'PING flood',
    what: '20 connections × up to 50,000 PING, replies not read',
    async run(port) {
      const batch = Buffer.concat(Array.from({ length: 1000 }, () => ping(false)));
      return endings(await flood(port, 20, 50 * SCALE, () => batch, true));
    },
  },
];

// --- proxies -------------------------------------------------------------------

interface Proxy {
  readonly name: string;
  start(dir: string, backendPort: number): Promise<{ proc: Started; port: number }>;
}

const PROXIES: Proxy[] = [
  {
    name: 'switchyard',
    async start(dir, backendPort) {
      const [port, admin] = [await freePort(), await freePort()];
      const file = join(dir, 'switchyard.yaml');
      writeFileSync(file, stringify({
        entrypoint: { address: `127.0.0.1:${port}`, idleTimeout: `${IDLE_S}s`, headersTimeout: `${IDLE_S}s`, maxHeaderBytes: 16_384 },
        admin: { address: `127.0.0.1:${admin}` },
        routes: [{ name: 'abuse', hosts: [AUTHORITY], protocol: 'h2c', backends: [{ name: 'b', url: `http://127.0.0.1:${backendPort}`, weight: 1 }] }],
      }));
      const proc = startProcess('switchyard', process.execPath, [join(ROOT, 'src/cli/main.ts'), 'serve', '--config', file], join(dir, 'switchyard.log'), { core: PROXY_CORE, env: { SWITCHYARD_LOG_LEVEL: 'warn' } });
      await waitForPort(port, proc);
      return { proc, port };
    },
  },
  {
    name: 'HAProxy',
    async start(dir, backendPort) {
      const port = await freePort();
      const file = join(dir, 'haproxy.cfg');
      writeFileSync(file, `global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client ${IDLE_S}s
  timeout http-request ${IDLE_S}s
  timeout server 30s
frontend h2
  bind 127.0.0.1:${port} proto h2
  # the same 16 KiB header limit as switchyard's maxHeaderBytes
  default_backend b
backend b
  server b 127.0.0.1:${backendPort} proto h2
`);
      const proc = startProcess('haproxy', 'haproxy', ['-db', '-f', file], join(dir, 'haproxy.log'), { core: PROXY_CORE });
      await waitForPort(port, proc);
      return { proc, port };
    },
  },
];

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

function rssBytes(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
}

interface Row { attack: Attack; proxy: string; cpu: number; baseRss: number; peakRss: number; outcome: string }

async function measure(proxy: Proxy, attack: Attack, backendPort: number): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), 'h2-abuse-'));
  const { proc, port } = await proxy.start(dir, backendPort);
  try {
    await sleep(500); // settled after start
    const baseRss = rssBytes(proc.pid);
    let peakRss = baseRss;
    const sampler = setInterval(() => { try { peakRss = Math.max(peakRss, rssBytes(proc.pid)); } catch { /* exited */ } }, 20);
    const cpu0 = cpuSeconds(proc.pid);
    const outcome = await attack.run(port);
    await sleep(300);
    clearInterval(sampler);
    const cpu = cpuSeconds(proc.pid) - cpu0;
    if (proc.child.exitCode !== null) throw new Error(`${proxy.name} exited during ${attack.name}:\n${logTail(proc)}`);
    return { attack, proxy: proxy.name, cpu, baseRss, peakRss, outcome };
  } finally {
    await stopProcess(proc);
  }
}

const mb = (b: number): string => (b / 1048576).toFixed(1);

async function main(): Promise<void> {
  pinSelf(LOAD_CORE);
  const backend = http2.createServer();
  backend.on('stream', (s) => { s.on('error', () => {}); s.resume(); s.respond({ ':status': 200 }); s.end('ok'); });
  backend.on('session', (s) => s.on('error', () => {}));
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
  const backendPort = (backend.address() as AddressInfo).port;
  const rows: Row[] = [];
  try {
    for (const attack of ATTACKS.filter((a) => opts.only === undefined || a.name === opts.only)) {
      for (const proxy of PROXIES) {
        const row = await measure(proxy, attack, backendPort);
        rows.push(row);
        console.log(`${attack.name.padEnd(24)} ${row.proxy.padEnd(11)} cpu ${row.cpu.toFixed(2)} s  rss ${mb(row.baseRss)} → ${mb(row.peakRss)} MB  ${row.outcome}`);
      }
    }
  } finally {
    backend.close();
  }
  const lines = [
    '# HTTP/2 abuse: switchyard and HAProxy in the same run',
    '',
    `\`node bench/h2-abuse.ts\` on ${new Date().toISOString().slice(0, 10)}: each attack against a fresh proxy process pinned to its own core;`,
    'CPU is the proxy\'s user+system time while it absorbed the attack, memory its resident set before and at its peak.',
    `${spawnSync('haproxy', ['-v'], { encoding: 'utf8' }).stdout.split('\n')[0]!.replace(/ - https?:.*$/, '')}; switchyard ${checkoutVersion(ROOT)} on Node ${process.versions.node}, HTTP/2 served by its own frame layer (src/h2/);`,
    `the backend behind both is node:http2 (nghttp2 ${process.versions.nghttp2}).`,
    '',
    '| attack | what is sent | proxy | CPU s | RSS MB (before → peak) | how it ended |',
    '|---|---|---|---:|---:|---|',
    ...rows.map((r) => `| ${r.attack.name} | ${r.attack.what} | ${r.proxy} | ${r.cpu.toFixed(2)} | ${mb(r.baseRss)} → ${mb(r.peakRss)} | ${r.outcome} |`),
    '',
  ];
  if (opts.out !== undefined) writeFileSync(opts.out, lines.join('\n'));
  console.log(lines.join('\n'));
}

await main();
process.exit(0);
