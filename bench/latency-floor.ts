// The floor under issue 15's "HTTP/1.1 at 5,000 req/s adds ≤ 1 ms at p99.9":
// what one hop to the proxy's core and back costs on this machine before any
// proxy does any work. The full bench's latency scenario (same client, rate,
// connections and backend) runs beside hops that do less and less:
//
//   direct             fixedrate → nginx backend, both on the load core (the bench's "direct")
//   backend on core 1  fixedrate → a second nginx backend alone on the proxy core: the hop, no proxy
//   HAProxy, TCP       HAProxy `mode tcp` on the proxy core → the backend: a proxy that only copies bytes
//   HAProxy, HTTP      the bench's HAProxy peer
//   switchyard         the bench's switchyard peer
//
//   npm run bench:latency-floor -- [--rounds N] [--duration S] [--warmup S] [--variant 'NAME=NODE FLAGS' ...]
//
// --variant adds one more switchyard, started with those node flags (e.g.
// 'noparscav=--no-parallel-scavenge'), beside the one as it ships.
//
// Rounds alternate the targets; the table gives each one's median over the
// rounds and what it adds over direct. Quiet machine only (it measures tails).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startBackends } from './backends.ts';
import { startPeer, HOSTS, type PeerContext, type RunningPeer } from './peers.ts';
import { LOAD_CORE, PROXY_CORE, freePort, pinSelf, runCommand, runScript, startProcess, stopAll, waitForPort } from './procs.ts';
import { buildGoTools } from './tools.ts';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');
const { values: opts } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '15' },
    warmup: { type: 'string', default: '5' },
    variant: { type: 'string', multiple: true, default: [] },
  },
});
const ROUNDS = Number(opts.rounds);
const RATE = 5000;

interface Tail { p50Us: number; p99Us: number; p999Us: number; maxUs: number; errors: number }

async function fixedRate(bin: string, port: number): Promise<Tail> {
  const secs = Number(opts.warmup) + Number(opts.duration);
  const r = await runCommand(join(bin, 'fixedrate'), [
    '-addr', `127.0.0.1:${port}`, '-host', HOSTS.h1, '-path', '/small', '-rate', String(RATE), '-conns', '50',
    '-warmup', `${opts.warmup}s`, '-duration', `${opts.duration}s`,
  ], { core: LOAD_CORE, timeoutMs: (secs + 20) * 1000 });
  const j = JSON.parse(r.stdout) as Record<string, number>;
  return { p50Us: j['p50Us']!, p99Us: j['p99Us']!, p999Us: j['p999Us']!, maxUs: j['maxUs']!, errors: j['errors']! + j['non2xx']! };
}

/** A second backend nginx, alone on the proxy core, serving the same body. */
async function backendOnProxyCore(dir: string, www: string): Promise<number> {
  const port = await freePort();
  const conf = join(dir, 'core1-nginx.conf');
  writeFileSync(conf, `daemon off;
worker_processes 1;
pid ${dir}/core1-nginx.pid;
error_log ${dir}/core1-nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off; sendfile on; tcp_nodelay on; keepalive_requests 100000000;
  client_body_temp_path ${dir}/c1-body; proxy_temp_path ${dir}/c1-proxy; fastcgi_temp_path ${dir}/c1-fcgi;
  uwsgi_temp_path ${dir}/c1-uwsgi; scgi_temp_path ${dir}/c1-scgi;
  server { listen 127.0.0.1:${port}; root ${www}; location / { } }
}
`);
  const p = startProcess('nginx on core 1', 'nginx', ['-p', dir, '-c', conf], join(dir, 'core1-nginx.log'), { core: PROXY_CORE });
  await waitForPort(port, p);
  return port;
}

/** HAProxy copying bytes only (mode tcp), on the proxy core. */
async function haproxyTcp(dir: string, backend: number): Promise<number> {
  const port = await freePort();
  const file = join(dir, 'haproxy-tcp.cfg');
  writeFileSync(file, `global
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen tcp
  bind 127.0.0.1:${port}
  server nginx 127.0.0.1:${backend}
`);
  const p = startProcess('haproxy tcp', 'haproxy', ['-f', file, '-db'], join(dir, 'haproxy-tcp.log'), { core: PROXY_CORE });
  await waitForPort(port, p);
  return port;
}

const ms = (us: number): string => (us / 1000).toFixed(2);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  pinSelf(LOAD_CORE);
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-floor-'));
  try {
    const bin = join(dir, 'bin');
    buildGoTools(ROOT, bin);
    const backends = await startBackends(dir, bin);
    const ctx: PeerContext = { dir, backends, root: ROOT, maxConns: 1000 };
    const peers: RunningPeer[] = [await startPeer('haproxy', ctx), await startPeer('switchyard', ctx)];
    const variants: Array<[string, number]> = [];
    for (const v of opts.variant) {
      const eq = v.indexOf('=');
      const peer = await startPeer('switchyard', { ...ctx, nodeArgs: v.slice(eq + 1).split(/\s+/).filter(Boolean) });
      variants.push([`switchyard, ${v.slice(0, eq)}`, peer.targets.h1]);
    }
    const targets: Array<[string, number]> = [
      ['direct', backends.h1],
      ['backend on core 1 (no proxy)', await backendOnProxyCore(dir, join(dir, 'www'))],
      ['HAProxy, mode tcp', await haproxyTcp(dir, backends.h1)],
      ['HAProxy, HTTP', peers[0]!.targets.h1],
      ['switchyard', peers[1]!.targets.h1],
      ...variants,
    ];
    const tails = new Map<string, Tail[]>(targets.map(([name]) => [name, []]));
    for (let round = 1; round <= ROUNDS; round++) {
      for (const [name, port] of targets) {
        const t = await fixedRate(bin, port);
        tails.get(name)!.push(t);
        console.log(`round ${round} ${name}: p50 ${ms(t.p50Us)} p99 ${ms(t.p99Us)} p99.9 ${ms(t.p999Us)} max ${ms(t.maxUs)} ms, ${t.errors} errors`);
      }
    }
    const med = (name: string, k: keyof Tail): number => median(tails.get(name)!.map((t) => t[k]));
    console.log(`\n${RATE.toLocaleString('en-US')} req/s, 50 connections, ${opts.duration} s measured, median of ${ROUNDS} rounds (ms)\n`);
    console.log('| target | p50 | p99 | p99.9 | p99.9 added over direct |\n|---|---:|---:|---:|---:|');
    for (const [name] of targets) {
      const added = name === 'direct' ? '—' : `+${ms(med(name, 'p999Us') - med('direct', 'p999Us'))}`;
      console.log(`| ${name} | ${ms(med(name, 'p50Us'))} | ${ms(med(name, 'p99Us'))} | ${ms(med(name, 'p999Us'))} | ${added} |`);
    }
  } finally {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

runScript(main);
