// Idle memory per HTTP/1.1 keep-alive client connection (issue 15 item 4: 10,000
// idle keep-alive connections at ≤ 2 KiB each), for switchyard checkouts and
// for a bare net.Server that answers each request with a fixed response (what a
// socket costs in Node before any HTTP code).
//
//   node bench/idle-conns.ts [--a DIR] [--b DIR] [--connections N] [--floor]
//                            [--settle S] [--after S1,S2,..] [--slope N1,N2] [--probe] [--snapshot]
//
// Each target is started fresh (a router as the bench starts it: Node's compile
// cache filled first, as the image's build does; without it the type stripper
// stays loaded, ~30 MiB of RSS no deployed router has) and warmed (200
// connections, one request each, closed); then N connections each send one
// GET, read the answer and stay open. The figure is the target's RSS growth
// over those N, divided by N, read 3 s after the last answer (--after). RSS
// moves in pages and heap chunks: use N ≥ 5,000.
//
// --settle S: "before" is read S s after the warm-up (default 1.5: a router
//   still holds its config worker and start-up heap then; 20 lets it settle,
//   as the full bench's fresh instance does).
// --after S1,S2,..: "after" is read at each of these times (s after the last
//   answer; default 3), one figure each; the last is the one --slope and
//   --probe use. Shows whether the process gives memory back once idle.
// --slope N1,N2: a fresh instance for each N; prints the marginal cost
//   (RSS at N2 − RSS at N1) / (N2 − N1), which leaves out one-off growth (the
//   young generation reaching its cap, arenas, the fd table).
// --probe: a preloaded module (node --import) answers SIGUSR2 with V8's heap
//   figures before and after a full GC and the process's anonymous memory by
//   region, so the growth splits into live JS heap, committed V8 heap (new
//   space, old space) and native memory; with --snapshot also a heap snapshot
//   after the GC, summed per constructor (with --slope: the difference).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { compileCache } from './peers.ts';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');
const { values: opts } = parseArgs({
  options: {
    a: { type: 'string' },
    b: { type: 'string' },
    connections: { type: 'string', default: '10000' },
    floor: { type: 'boolean', default: false },
    settle: { type: 'string', default: '1.5' },
    after: { type: 'string', default: '3' },
    slope: { type: 'string' },
    probe: { type: 'boolean', default: false },
    snapshot: { type: 'boolean', default: false },
  },
});
const COUNTS = opts.slope === undefined ? [Number(opts.connections)] : opts.slope.split(',').map(Number);
if (COUNTS.length > 2 || COUNTS.some((n) => !(n > 0))) throw new Error('--slope N1,N2: two connection counts');
const SETTLE_MS = Number(opts.settle) * 1000;
const AFTER_MS = opts.after.split(',').map((x) => Number(x) * 1000);
if (AFTER_MS.some((t, i) => !(t >= 0) || (i > 0 && t <= AFTER_MS[i - 1]!))) throw new Error('--after S1,S2,..: increasing times in seconds');
const HOST = 'idle.bench';

// The bare floor: a net.Server answering every read with a fixed response.
const FLOOR = `
import net from 'node:net';
const s = net.createServer({ noDelay: true }, (c) => {
  c.on('data', () => c.write('HTTP/1.1 200 OK\\r\\ncontent-length: 5\\r\\n\\r\\nhello'));
  c.on('error', () => {});
});
s.listen(0, '127.0.0.1', () => console.log('listening ' + s.address().port));
`;

// --probe: loaded into the target (and its relaunch) with --import. On SIGUSR2
// it writes its figures to PROBE_OUT, then writes PROBE_OUT.done.
const PROBE = `
import { isMainThread } from 'node:worker_threads';
import { readFileSync, writeFileSync } from 'node:fs';
import v8 from 'node:v8';
import vm from 'node:vm';
function heap() {
  const h = v8.getHeapStatistics();
  const spaces = {};
  for (const s of v8.getHeapSpaceStatistics()) spaces[s.space_name] = { committed: s.physical_space_size, used: s.space_used_size };
  return { used: h.used_heap_size, committed: h.total_physical_size, external: h.external_memory, malloced: h.malloced_memory, spaces };
}
// Resident anonymous memory by kind of mapping: brk heap, thread stacks, other anonymous (V8's heap pages, mmapped malloc chunks and arenas).
function regions() {
  const out = { brk: 0, anon: 0, file: 0, anonMappings: 0 };
  let kind = 'file';
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \\S+ \\S+ \\S+ \\S+\\s*(.*)$/.exec(line);
    if (head !== null) {
      const name = head[1];
      kind = name === '[heap]' ? 'brk' : name === '' || name.startsWith('[anon') || name.startsWith('[stack') ? 'anon' : 'file';
      if (kind === 'anon') out.anonMappings++;
      continue;
    }
    const rss = /^Rss:\\s+(\\d+) kB/.exec(line);
    if (rss !== null) out[kind] += Number(rss[1]) * 1024;
  }
  return out;
}
if (isMainThread) {
  process.on('SIGUSR2', () => {
    const out = { before: heap(), regions: regions() };
    v8.setFlagsFromString('--expose-gc');
    vm.runInNewContext('gc')();
    out.after = heap();
    if (process.env.PROBE_SNAPSHOT === '1') out.snapshot = v8.writeHeapSnapshot(process.env.PROBE_OUT + '.heapsnapshot');
    writeFileSync(process.env.PROBE_OUT, JSON.stringify(out));
    writeFileSync(process.env.PROBE_OUT + '.done', '');
  });
}
`;

interface HeapFigures { used: number; committed: number; external: number; malloced: number; spaces: Record<string, { committed: number; used: number }> }
interface Probe { before: HeapFigures; after: HeapFigures; regions: { brk: number; anon: number; file: number; anonMappings: number }; snapshot?: string }

/** VmRSS and its anonymous and file-backed parts, bytes. */
function rssOf(pid: number): { rss: number; anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1]) * 1024;
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
}

/** One keep-alive connection that has had one answer, left open. */
function oneRequest(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', reject);
    // Refused (entrypoint.maxConnections, an fd limit): fail rather than wait forever.
    s.on('close', () => reject(new Error(`connection closed before its answer (${got.length} bytes)`)));
    let got = '';
    const onData = (c: Buffer): void => {
      got += c.toString('latin1');
      if (got.endsWith('hello')) {
        s.off('data', onData);
        resolve(s);
      }
    };
    s.on('data', onData);
    s.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
  });
}

async function openMany(port: number, n: number): Promise<net.Socket[]> {
  const out: net.Socket[] = [];
  for (let i = 0; i < n; i += 100) out.push(...await Promise.all(Array.from({ length: Math.min(100, n - i) }, () => oneRequest(port))));
  return out;
}

/** Waits for the line of `child`'s output that gives its port; its output is read (and dropped) to the end. */
function portOf(child: ChildProcess, pattern: RegExp): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer): void => {
      text += String(chunk);
      const m = pattern.exec(text);
      if (m === null) return;
      child.stdout!.off('data', onData).resume();
      resolve(Number(m[1]));
    };
    child.stdout!.on('data', onData);
    child.once('exit', () => reject(new Error(`exited before listening: ${text}`)));
  });
}

async function probe(child: ChildProcess, out: string): Promise<Probe> {
  rmSync(`${out}.done`, { force: true });
  child.kill('SIGUSR2');
  while (!existsSync(`${out}.done`)) await sleep(100);
  return JSON.parse(readFileSync(out, 'utf8')) as Probe;
}

interface Measured { n: number; before: number; after: number; probe?: Probe }

async function measure(label: string, start: () => Promise<{ child: ChildProcess; port: number; out: string }>, n: number): Promise<Measured> {
  const { child, port, out } = await start();
  for (const s of await openMany(port, 200)) s.destroy();
  await sleep(SETTLE_MS);
  const at = rssOf(child.pid!);
  const before = at.rss;
  const socks = await openMany(port, n);
  const answered = Date.now();
  let after = 0;
  for (const t of AFTER_MS) {
    await sleep(Math.max(0, answered + t - Date.now()));
    const now = rssOf(child.pid!);
    after = now.rss;
    console.log(`${label}: ${n.toLocaleString('en-US')} idle connections, ${t / 1000} s after, RSS ${(before / 1048576).toFixed(1)} -> ${(after / 1048576).toFixed(1)} MB, ${Math.round((after - before) / n).toLocaleString('en-US')} bytes per connection (anonymous ${B((now.anon - at.anon) / n)}, file ${B((now.file - at.file) / n)})`);
  }
  const m: Measured = { n, before, after };
  if (opts.probe) m.probe = await probe(child, out);
  for (const s of socks) s.destroy();
  child.kill('SIGKILL');
  await once(child, 'exit');
  return m;
}

const B = (x: number): string => Math.round(x).toLocaleString('en-US');

/** Live objects per constructor in a heap snapshot: count and self size. */
function constructors(file: string): Map<string, { count: number; size: number }> {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as { snapshot: { meta: { node_fields: string[]; node_types: [string[]] } }; nodes: number[]; strings: string[] };
  const fields = snap.snapshot.meta.node_fields;
  const [typeAt, nameAt, sizeAt] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f)) as [number, number, number];
  const types = snap.snapshot.meta.node_types[0];
  const out = new Map<string, { count: number; size: number }>();
  for (let i = 0; i < snap.nodes.length; i += fields.length) {
    const type = types[snap.nodes[i + typeAt]!]!;
    const key = type === 'object' || type === 'closure' || type === 'native' || type === 'hidden' || type === 'array' ? `${type} ${snap.strings[snap.nodes[i + nameAt]!]}` : `(${type})`;
    const e = out.get(key) ?? { count: 0, size: 0 };
    e.count++;
    e.size += snap.nodes[i + sizeAt]!;
    out.set(key, e);
  }
  return out;
}

/** Per connection between two measurements (or over one: from its own "before"). */
function report(label: string, lo: Measured, hi: Measured | undefined): void {
  if (hi === undefined) return;
  const dn = hi.n - lo.n;
  const per = (a: number, b: number): string => `${B((b - a) / dn)} B`;
  console.log(`${label}: slope ${lo.n} -> ${hi.n}: RSS ${per(lo.after, hi.after)} per connection`);
  const [p, q] = [lo.probe, hi.probe];
  if (p === undefined || q === undefined) return;
  console.log(`  live JS heap (after a full GC) ${per(p.after.used, q.after.used)}; heap used before the GC ${per(p.before.used, q.before.used)}`);
  console.log(`  V8 committed ${per(p.before.committed, q.before.committed)}: ${Object.keys(q.before.spaces).map((k) => `${k} ${per(p.before.spaces[k]!.committed, q.before.spaces[k]!.committed)}`).join(', ')}`);
  console.log(`  V8 external ${per(p.before.external, q.before.external)}, V8 malloced ${per(p.before.malloced, q.before.malloced)}`);
  const native = (x: Probe): number => x.regions.brk + x.regions.anon - x.before.committed;
  console.log(`  resident: brk heap ${per(p.regions.brk, q.regions.brk)}, other anonymous ${per(p.regions.anon, q.regions.anon)} (${q.regions.anonMappings - p.regions.anonMappings} mappings more), file ${per(p.regions.file, q.regions.file)}; anonymous minus V8 committed (native) ${per(native(p), native(q))}`);
  if (p.snapshot === undefined || q.snapshot === undefined) return;
  const [a, b] = [constructors(p.snapshot), constructors(q.snapshot)];
  const rows = [...b].map(([k, v]) => ({ k, count: (v.count - (a.get(k)?.count ?? 0)) / dn, size: (v.size - (a.get(k)?.size ?? 0)) / dn }))
    .filter((r) => Math.abs(r.size) >= 4).sort((x, y) => y.size - x.size);
  console.log(`  live objects per connection (heap snapshots after GC, ${B(rows.reduce((t, r) => t + r.size, 0))} B in all):`);
  for (const r of rows) console.log(`    ${r.size.toFixed(0).padStart(5)} B  ${r.count.toFixed(2).padStart(5)}x  ${r.k}`);
}

const backend = http.createServer((req, res) => { req.resume(); res.end('hello'); });
await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
const backendPort = (backend.address() as AddressInfo).port;
const dir = mkdtempSync(join(tmpdir(), 'switchyard-idle-'));
const config = join(dir, 'switchyard.yaml');
writeFileSync(config, [
  // No connection cap (10,000 by default): --slope goes past it.
  'entrypoint:', '  address: 127.0.0.1:0', '  maxConnections: 0', 'admin:', '  address: 127.0.0.1:0',
  'routes:', '  - name: idle', `    hosts: [${HOST}]`, '    backends:', '      - name: b', `        url: http://127.0.0.1:${backendPort}`, '        weight: 1', '',
].join('\n'));
const probeFile = join(dir, 'probe.mjs');
writeFileSync(probeFile, PROBE);
let runs = 0;
/** The child's environment: with --probe, the probe preloaded and where it writes. */
function envOf(): { env: NodeJS.ProcessEnv; out: string } {
  const out = join(dir, `probe-${++runs}.json`);
  if (!opts.probe) return { env: process.env, out };
  const nodeOptions = `${process.env['NODE_OPTIONS'] ?? ''} --import=${probeFile}`.trim();
  return { env: { ...process.env, NODE_OPTIONS: nodeOptions, PROBE_OUT: out, PROBE_SNAPSHOT: opts.snapshot ? '1' : '0' }, out };
}
try {
  if (opts.floor) {
    const start = async (): Promise<{ child: ChildProcess; port: number; out: string }> => {
      const { env, out } = envOf();
      const child = spawn(process.execPath, ['--input-type=module', '-e', FLOOR], { stdio: ['ignore', 'pipe', 'inherit'], env });
      return { child, port: await portOf(child, /listening (\d+)/), out };
    };
    const ms: Measured[] = [];
    for (const n of COUNTS) ms.push(await measure('bare net.Server', start, n));
    report('bare net.Server', ms[0]!, ms[1]);
  }
  for (const [i, checkout] of [opts.a ?? ROOT, ...(opts.b === undefined ? [] : [opts.b])].map((d) => resolve(d)).entries()) {
    const cli = join(checkout, 'src/cli/main.ts');
    const cache = compileCache(dir, i === 0 ? 'switchyard' : 'switchyard-before', checkout, cli);
    const start = async (): Promise<{ child: ChildProcess; port: number; out: string }> => {
      const { env, out } = envOf();
      const child = spawn(join(checkout, 'node_modules/.bin/node'), [cli, 'serve', '--config', config], {
        cwd: checkout, stdio: ['ignore', 'pipe', 'inherit'], env: { ...env, NODE_ENV: 'production', NODE_COMPILE_CACHE: cache },
      });
      return { child, port: await portOf(child, /"entrypoint":"[^"]*:(\d+)"/), out };
    };
    const ms: Measured[] = [];
    for (const n of COUNTS) ms.push(await measure(checkout, start, n));
    report(checkout, ms[0]!, ms[1]);
  }
} finally {
  backend.close();
  rmSync(dir, { recursive: true, force: true });
}
