// The ramp guard's false-positive and detection rates on simulated traffic.
// Per-request samples at a fixed request rate, split by the step's percent,
// latencies from a realistic mixture (lognormal body, 3 % slow mode, so p99 is
// ~3× p50), judged once per simulated second as the router does.
//  - A/A: identical old and new for many ramps of [1, 5, 25, 50, 100]: must never trip.
//  - +2 % errors on new (0.5 % → 2.5 %): must trip within one step.
//  - new 30 % slower (every quantile ×1.3, so p99 +30 %): must trip within one step.
//  - tail only: requests over the old p95 30 % slower (p99 +30 %, p50 unchanged): must trip
//    where the step has enough requests for it (see docs/ramps.md).
//  - tail only +20 % (exactly the limit): may trip, rarely (each look is a 99.9 % test).
//  - tail only +10 % (inside the allowed +20 %): must not trip.
// Each at the 1, 5, 25 and 50 % steps. For A/A, the largest z each latency test reached in any look.
// Usage: node bench/ramp-guard.ts [rate=500] [intervalSeconds=300] [trials=20] [aaRamps=40]
import { Guard } from '../src/ramp/guard.ts';

const rate = Number(process.argv[2] ?? 500);
const interval = Number(process.argv[3] ?? 300);
const trials = Number(process.argv[4] ?? 20);
const aaRamps = Number(process.argv[5] ?? 40);
const STEPS = [1, 5, 25, 50, 100];
const config = { minRequests: 200, maxErrorRateIncrease: 0.005, maxLatencyIncrease: 0.2 };
const BASE_ERRORS = 0.005;

/** mulberry32 */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function normal(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

/** Body: lognormal median 20 ms, σ 0.35; 3 %: median 70 ms, σ 0.5. */
function latency(r: () => number): number {
  return r() < 0.03 ? 70 * Math.exp(0.5 * normal(r)) : 20 * Math.exp(0.35 * normal(r));
}

// The old side's p50, p95 (for the tail-only scenario) and p99.
const [P50, P95, P99] = (() => {
  const r = rng(7);
  const xs = Float64Array.from({ length: 200_000 }, () => latency(r)).sort();
  return [0.5, 0.95, 0.99].map((q) => xs[Math.floor(xs.length * q)]!);
})();

interface Behaviour {
  errors: number;
  latency: (r: () => number) => number;
}
const same: Behaviour = { errors: BASE_ERRORS, latency };
const scenarios: Record<string, Behaviour> = {
  errors: { errors: BASE_ERRORS + 0.02, latency },
  slower: { errors: BASE_ERRORS, latency: (r) => latency(r) * 1.3 },
  tail: { errors: BASE_ERRORS, latency: (r) => { const x = latency(r); return x > P95! ? x * 1.3 : x; } },
  'tail +20% (the limit)': { errors: BASE_ERRORS, latency: (r) => { const x = latency(r); return x > P95! ? x * 1.2 : x; } },
  'tail +10%': { errors: BASE_ERRORS, latency: (r) => { const x = latency(r); return x > P95! ? x * 1.1 : x; } },
};
const JUDGED = [1, 5, 25, 50];

/** The largest z each latency test reached in the A/A looks. */
const aaMax = { latencyZ: -Infinity, tailZ: -Infinity, p99Z: -Infinity, errorZ: -Infinity };

/** One step: seconds until the first breach, or null. */
function runStep(percent: number, to: Behaviour, seed: number): { tripAt: number | null; kind: string | null; reason: string | null } {
  const r = rng(seed);
  const guard = new Guard(config, seed * 2654435761);
  const share = percent / 100;
  for (let s = 1; s <= interval; s++) {
    for (let i = 0; i < rate; i++) {
      // Chosen by the draw, not by comparing behaviours: in A/A both are the same object.
      const onTo = r() < share;
      const side = onTo ? to : same;
      const g = onTo ? guard.to : guard.from;
      const error = r() < side.errors;
      g.record(side.latency(r), error);
    }
    const v = guard.judge();
    if (to === same) {
      for (const k of ['latencyZ', 'tailZ', 'p99Z', 'errorZ'] as const) {
        const z = v[k];
        if (z !== null && z > aaMax[k]) aaMax[k] = z;
      }
    }
    if (v.status === 'breach') return { tripAt: s, kind: by(v.kind!, v.reason), reason: v.reason };
  }
  return { tripAt: null, kind: null, reason: null };
}

/** Which test tripped. */
function by(kind: string, reason: string): string {
  if (kind !== 'latency') return kind;
  return reason.startsWith('latency tail') ? 'tail rank' : reason.startsWith('latency new p99') ? 'p99 share' : 'rank';
}

const out: string[] = [];
const log = (line: string) => { out.push(line); console.log(line); };
log(`# Ramp guard: false positives and detection`);
log('');
log(`${rate} req/s, ${interval} s per step, judged every second; guard ${JSON.stringify(config)}; old: ${BASE_ERRORS * 100}% errors, p50 ${P50!.toFixed(1)} ms, p99 ${P99!.toFixed(1)} ms.`);
log('');

const t0 = performance.now();
let aaSteps = 0;
let aaTrips = 0;
const aaReasons: string[] = [];
for (let k = 0; k < aaRamps; k++) {
  for (const p of STEPS) {
    aaSteps++;
    const res = runStep(p, same, 1000 + k * 10 + p);
    if (res.tripAt !== null) { aaTrips++; aaReasons.push(`step ${p}%: ${res.reason}`); }
  }
}
log(`A/A (identical old and new): ${aaTrips} trips in ${aaSteps} steps (${aaRamps} ramps of ${STEPS.join(', ')} %, a seed each), ${aaSteps * interval} looks`);
for (const r of aaReasons) log(`  - ${r}`);
log(`largest z in any A/A look (a test trips above 3.09): errors ${aaMax.errorZ.toFixed(2)}, whole-distribution rank ${aaMax.latencyZ.toFixed(2)}, tail rank ${aaMax.tailZ.toFixed(2)}, p99 share ${aaMax.p99Z.toFixed(2)}`);
log('');
log('| scenario | step | detected | median time to trip | slowest | by |');
log('|---|---|---|---|---|---|');
for (const [name, beh] of Object.entries(scenarios)) {
  for (const p of JUDGED) {
    const times: number[] = [];
    const kinds = new Set<string>();
    for (let t = 0; t < trials; t++) {
      const res = runStep(p, beh, 50_000 + t * 97 + p);
      if (res.tripAt !== null) { times.push(res.tripAt); kinds.add(res.kind!); }
    }
    times.sort((a, b) => a - b);
    const med = times.length ? `${times[Math.floor(times.length / 2)]} s` : '-';
    const max = times.length ? `${times[times.length - 1]} s` : '-';
    log(`| ${name} | ${p}% | ${times.length}/${trials} | ${med} | ${max} | ${[...kinds].join(', ') || '-'} |`);
  }
}
log('');
log(`(${((performance.now() - t0) / 1000).toFixed(1)} s of CPU)`);
if (process.env.RAMP_GUARD_OUT) {
  const { writeFileSync } = await import('node:fs');
  writeFileSync(process.env.RAMP_GUARD_OUT, out.join('\n') + '\n');
}
