// How long a config of N routes takes to load and to reload, and how long the
// event loop stalls meanwhile (perf_hooks.monitorEventLoopDelay).
// Two reload cases: one route's weights change (a canary step), and every
// route's weights change (the worst case).
// Also: how long a change on disk takes to be in effect through the watch.
// Usage: node bench/reload-scale.ts [routes=5000]   → one JSON line
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { createLogger } from '../src/observe/log.ts';
import { Switchyard } from '../src/server.ts';

const n = Number(process.argv[2] ?? 5000);

/** The config with every route at `weightNew`, except route 0 at `first`. */
function doc(weightNew: number, first = weightNew): string {
  const routes = Array.from({ length: n }, (_, i) => {
    const w = i === 0 ? first : weightNew;
    return {
      name: `svc-${i}`,
      hosts: [`svc-${i}.migration.example.com`],
      backends: [
        { name: 'old', url: `http://10.0.${i >> 8}.${i & 255}:80`, weight: 100 - w },
        { name: 'new', url: `http://10.1.${i >> 8}.${i & 255}:80`, weight: w },
      ],
    };
  });
  return stringify({ entrypoint: { address: '127.0.0.1:0' }, admin: { address: '127.0.0.1:0' }, routes });
}

const dir = mkdtempSync(join(tmpdir(), 'switchyard-scale-'));
const file = join(dir, 'switchyard.yaml');
writeFileSync(file, doc(0));
// Rendered up front, so the bench's own garbage does not show up as stalls.
const oneRoute = [10, 20, 30, 40, 50].map((w) => doc(0, w));
const allRoutes = [10, 20, 30, 40, 50].map((w) => doc(w));

const delay = monitorEventLoopDelay({ resolution: 1 });
delay.enable();
let t0 = performance.now();
const sy = await Switchyard.start(file, createLogger('warn'), false);
const startMs = performance.now() - t0;

async function measure(docs: string[]): Promise<{ medianMs: number; maxMs: number; maxStallMs: number }> {
  const times: number[] = [];
  let stall = 0;
  for (const text of docs) {
    writeFileSync(file, text);
    await sleep(20);
    delay.reset();
    t0 = performance.now();
    if (!(await sy.reload('bench'))) throw new Error('reload failed');
    times.push(performance.now() - t0);
    await sleep(20); // let the delay monitor sample the last stretch
    stall = Math.max(stall, delay.max / 1e6);
  }
  times.sort((a, b) => a - b);
  return { medianMs: Math.round(times[2]!), maxMs: Math.round(times[4]!), maxStallMs: Math.round(stall) };
}

const one = await measure(oneRoute);
const all = await measure(allRoutes);
await sy.shutdown();

// Change on disk -> in effect, through the directory watch (default debounce),
// on a small config: what an operator waits for after editing a file.
const small = join(mkdtempSync(join(tmpdir(), 'switchyard-latency-')), 'switchyard.yaml');
const smallDoc = (w: number): string => stringify({
  entrypoint: { address: '127.0.0.1:0' }, admin: { address: '127.0.0.1:0' },
  routes: [{ name: 'svc', hosts: ['svc.example.com'], backends: [{ name: 'old', url: 'http://10.0.0.1:80', weight: 100 - w }, { name: 'new', url: 'http://10.0.0.2:80', weight: w }] }],
});
writeFileSync(small, smallDoc(0));
const watched = await Switchyard.start(small, createLogger('warn'));
const latencies: number[] = [];
for (const w of [10, 20, 30, 40, 50]) {
  const before = watched.configStatus().version;
  await sleep(200);
  t0 = performance.now();
  writeFileSync(small, smallDoc(w));
  while (watched.configStatus().version === before) await sleep(1);
  latencies.push(Math.round(performance.now() - t0));
}
await watched.shutdown();
console.log(JSON.stringify({ routes: n, startMs: Math.round(startMs), reloadOneRoute: one, reloadAllRoutes: all, watchLatencyMs: latencies }));
