// Idle RSS of a freshly started router, settled: what issue 15's "idle RSS"
// means. A router is not idle a second after start: its config worker thread
// lives until 5 s after the last load, and V8's memory reducer returns the
// start-up heap's free pages only ~8 s later; so this samples for --seconds
// (default 30) and reports the last sample, with RSS split into anonymous
// memory and the node binary's file pages.
//
//   npm run bench:idle-rss -- [--root DIR] [--seconds 30]
//
// The config: the bench's four routes (HTTP/1.1, split, h2c, gRPC) to
// loopback ports nothing needs to answer (no health checks: idle means idle).
// Node's compile cache is filled by a first start, as the image's build does.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { PROXY_CORE, freePort, startProcess, stopAll, stopProcess, waitForPort, type Started } from './procs.ts';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');
const { values: opts } = parseArgs({ options: { root: { type: 'string' }, seconds: { type: 'string', default: '30' } } });
const SWITCHYARD = resolve(opts.root ?? ROOT);
const SECONDS = Number(opts.seconds);

/** VmRSS, RssAnon and RssFile of a process, MiB. */
function rss(pid: number): { rss: number; anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) / 1024;
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-idle-'));
  try {
    const [port, admin] = [await freePort(), await freePort()];
    const backend = (name: string, weight = 1): object => ({ name, url: 'http://127.0.0.1:9', weight });
    const file = join(dir, 'switchyard.yaml');
    writeFileSync(file, JSON.stringify({
      version: 1,
      entrypoint: { address: `127.0.0.1:${port}` },
      admin: { address: `127.0.0.1:${admin}` },
      // A prompt exit on SIGTERM: the compile cache is written at exit.
      shutdown: { drainDelay: '0s', timeout: '2s' },
      routes: [
        { name: 'h1', hosts: ['h1.bench'], protocol: 'http', backends: [backend('nginx')] },
        { name: 'split', hosts: ['split.bench'], protocol: 'http', backends: [backend('a', 90), backend('b', 10)] },
        { name: 'h2c', hosts: ['h2c.bench'], protocol: 'h2c', backends: [backend('nginx')] },
        { name: 'grpc', hosts: ['grpc.bench'], protocol: 'h2c', backends: [backend('go')] },
      ],
    }));
    const cache = join(dir, 'compile-cache');
    mkdirSync(cache);
    const start = async (): Promise<Started> => {
      const p = startProcess('switchyard', process.execPath, [join(SWITCHYARD, 'src/cli/main.ts'), 'serve', '--config', file], join(dir, 'switchyard.log'), {
        core: PROXY_CORE, cwd: SWITCHYARD, env: { SWITCHYARD_LOG_LEVEL: 'warn', NODE_ENV: 'production', NODE_COMPILE_CACHE: cache },
      });
      await waitForPort(port, p);
      await waitForPort(admin, p);
      return p;
    };
    await stopProcess(await start());
    const router = await start();
    const t0 = Date.now();
    let last = rss(router.pid);
    for (let s = 2; s <= SECONDS; s += 2) {
      await sleep(t0 + s * 1000 - Date.now());
      last = rss(router.pid);
      console.log(`${String(s).padStart(3)} s: RSS ${last.rss.toFixed(1)} MiB (anonymous ${last.anon.toFixed(1)}, file ${last.file.toFixed(1)})`);
    }
    console.log(`\nidle RSS ${last.rss.toFixed(1)} MiB after ${SECONDS} s (anonymous ${last.anon.toFixed(1)}, the node binary and libraries ${last.file.toFixed(1)}) — ${SWITCHYARD}`);
    await stopProcess(router);
  } finally {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch(async (err: unknown) => {
  console.error(err instanceof Error ? err.stack : String(err));
  await stopAll();
  process.exitCode = 1;
});
