// Idle memory per HTTP/1.1 keep-alive client connection (issue 15 item 4: 10,000
// idle keep-alive connections at ≤ 2 KiB each), for switchyard checkouts and
// for a bare net.Server that answers each request with a fixed response (what a
// socket costs in Node before any HTTP code).
//
//   node bench/idle-conns.ts [--a DIR] [--b DIR] [--connections N] [--floor]
//
// Each target is started fresh and warmed (200 connections, one request each,
// closed); then N connections each send one GET, read the answer and stay
// open. The figure is the target's RSS growth over those N, divided by N, read
// 3 s after the last answer. RSS moves in pages and heap chunks: use N ≥ 5,000.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');
const { values: opts } = parseArgs({
  options: {
    a: { type: 'string' },
    b: { type: 'string' },
    connections: { type: 'string', default: '10000' },
    floor: { type: 'boolean', default: false },
  },
});
const N = Number(opts.connections);
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

function rssOf(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) * 1024;
}

/** One keep-alive connection that has had one answer, left open. */
function oneRequest(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', reject);
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

async function measure(label: string, child: ChildProcess, port: number): Promise<void> {
  for (const s of await openMany(port, 200)) s.destroy();
  await sleep(1_500);
  const before = rssOf(child.pid!);
  const socks = await openMany(port, N);
  await sleep(3_000);
  const after = rssOf(child.pid!);
  console.log(`${label}: ${N.toLocaleString('en-US')} idle connections, RSS ${(before / 1048576).toFixed(1)} -> ${(after / 1048576).toFixed(1)} MB, ${Math.round((after - before) / N).toLocaleString('en-US')} bytes per connection`);
  for (const s of socks) s.destroy();
  child.kill('SIGKILL');
  await once(child, 'exit');
}

const backend = http.createServer((req, res) => { req.resume(); res.end('hello'); });
await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
const backendPort = (backend.address() as AddressInfo).port;
const dir = mkdtempSync(join(tmpdir(), 'switchyard-idle-'));
const config = join(dir, 'switchyard.yaml');
writeFileSync(config, [
  'entrypoint:', '  address: 127.0.0.1:0', 'admin:', '  address: 127.0.0.1:0',
  'routes:', '  - name: idle', `    hosts: [${HOST}]`, '    backends:', '      - name: b', `        url: http://127.0.0.1:${backendPort}`, '        weight: 1', '',
].join('\n'));
try {
  if (opts.floor) {
    const child = spawn(process.execPath, ['--input-type=module', '-e', FLOOR], { stdio: ['ignore', 'pipe', 'inherit'] });
    await measure('bare net.Server', child, await portOf(child, /listening (\d+)/));
  }
  for (const checkout of [opts.a ?? ROOT, ...(opts.b === undefined ? [] : [opts.b])].map((d) => resolve(d))) {
    const child = spawn(join(checkout, 'node_modules/.bin/node'), [join(checkout, 'src/cli/main.ts'), 'serve', '--config', config], { stdio: ['ignore', 'pipe', 'inherit'] });
    await measure(checkout, child, await portOf(child, /"entrypoint":"[^"]*:(\d+)"/));
  }
} finally {
  backend.close();
  rmSync(dir, { recursive: true, force: true });
}
