// Loaded into a router with --import (bench/latency-ab.ts --probe): once a
// second, appends to $SWITCHYARD_PROBE_OUT the event loop's delay (max, p99),
// the longest stretch of main-thread CPU between two 1 ms ticks, and the GC
// pauses of that second, so a latency tail can be told apart into "the loop
// was blocked by its own work" (GC, JavaScript), "the loop waited for the
// core" (delay without CPU) and "a request waited for I/O" (neither).
// $SWITCHYARD_PROBE_STALL_MS adds a busy stall of that length once a second,
// to see how the router recovers from one.
import { appendFileSync } from 'node:fs';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { isMainThread } from 'node:worker_threads';

const out = process.env['SWITCHYARD_PROBE_OUT'];
// Main thread only: --import loads it into the config worker too.
if (out !== undefined && out !== '' && isMainThread) {
  const eld = monitorEventLoopDelay({ resolution: 1 });
  eld.enable();
  let gcCount = 0;
  let gcMs = 0;
  let gcMax = 0;
  let gcMaxKind = 0;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gcCount++;
      gcMs += e.duration;
      if (e.duration > gcMax) {
        gcMax = e.duration;
        gcMaxKind = (e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0;
      }
    }
  }).observe({ entryTypes: ['gc'] });
  // The main thread's CPU time between two 1 ms ticks: how long it ran without
  // coming back to the loop's timers (GC or JavaScript), not stretched by
  // other processes taking the core the way wall-clock delays are.
  let cpuLast = process.threadCpuUsage();
  let burstMax = 0;
  let bursts2 = 0;
  setInterval(() => {
    const now = process.threadCpuUsage();
    const d = (now.user + now.system - cpuLast.user - cpuLast.system) / 1000;
    cpuLast = now;
    if (d > burstMax) burstMax = d;
    if (d > 2) bursts2++;
  }, 1).unref();
  const stallMs = Number(process.env['SWITCHYARD_PROBE_STALL_MS'] ?? 0);
  if (stallMs > 0) {
    // A stall of known length once a second (as a GC pause or a preemption would be): how the router recovers.
    setInterval(() => {
      const until = performance.now() + stallMs;
      while (performance.now() < until);
    }, 1000).unref();
  }
  setInterval(() => {
    appendFileSync(out, `${JSON.stringify({
      t: Date.now(), burstMax, bursts2, eldMax: eld.max / 1e6, eldP99: eld.percentile(99) / 1e6, gcCount, gcMs, gcMax, gcMaxKind,
    })}\n`);
    eld.reset();
    gcCount = gcMs = gcMax = gcMaxKind = 0;
    burstMax = bursts2 = 0;
  }, 1000).unref();
}
