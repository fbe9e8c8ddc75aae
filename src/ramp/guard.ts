// The ramp guard: judges the ramped backend (`to`) against the baseline
// (`from`) on the traffic of the current step. Recording is on the hot path and
// writes into preallocated typed arrays only; judging runs about once a second.
//
// Errors: one-sided two-proportion z-test of rate(to) − rate(from) against the
// allowed increase (Agresti–Caffo adjusted, so zero counts behave), plus a
// minimum number of errors on `to`. Latency, three one-sided tests, any of
// which breaches:
//  - whole distribution: Mann–Whitney U (Kayenta's judge) on reservoir samples
//    of `to` shrunk by the allowed increase against `from`;
//  - tail: a rank test scoring only the pooled slowest 5 %, from histograms of
//    every request. A slowdown confined to the tail (p99 +30 %, median equal)
//    moves a whole-distribution rank test by a few percent of its pairs only;
//    this test sees nothing else;
//  - p99: the share of `to` above (1 + allowed) × `from`'s p99 against the share
//    of `from` above its p99 (two-proportion). Exact where it is asked, weak
//    (a 1 % quantile has few requests beyond it): the tail test does the work.
// Latency changes under LATENCY_FLOOR_MS never breach.

/** One-sided z for 99.9 %: a look trips by chance about once in a thousand when the true change is exactly at the limit. */
const Z = 3.09;
/** `to` needs at least this many errors before an error breach: a handful of errors is never proof. */
const MIN_ERRORS = 5;
/**
 * A latency change smaller than this is never a breach, whatever the ratio:
 * on sub-millisecond loopback or in-cluster latencies +20 % is scheduling noise.
 */
export const LATENCY_FLOOR_MS = 1;
/** Latency samples kept per side and step (uniform over the step's requests). */
export const RESERVOIR = 2048;
/** The tail the tail test scores: the pooled slowest 5 %. */
export const TAIL = 0.05;
/** The tail test waits until TAIL × `to`'s requests reaches this (normal approximation). */
const MIN_TAIL = 40;
/** The p99 test waits for this many requests of `to` above the threshold, and for ~10 expected above p99: fewer is not normal enough for z. */
const MIN_OVER = 5;
const MIN_P99 = 1000;
// Histogram: bucket i holds [BASE·R^i, BASE·R^(i+1)) ms; 3150 buckets of 0.5 % reach from 50 µs to ~340 s.
// Fine enough that rounding to a bucket costs the tests ~0.5 % of a 20 % limit.
const BASE_MS = 0.05;
const R = 1.005;
const LOG_R = Math.log(R);
const BUCKETS = 3150;

/** Error outcomes for the guard: HTTP 5xx, gRPC UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS. Resets and timeouts arrive as 502/504 or gRPC 14/4. */
export function isGuardError(code: number, grpc: boolean): boolean {
  if (!grpc) return code >= 500;
  return code === 2 || code === 4 || code === 13 || code === 14 || code === 15;
}

/** One side's outcomes in the current step. */
export class GuardSide {
  requests = 0;
  errors = 0;
  /** Latencies of successful requests seen (the reservoir's population). */
  seen = 0;
  readonly sample = new Float64Array(RESERVOIR);
  readonly hist = new Uint32Array(BUCKETS);
  #rng: number;

  constructor(seed: number) {
    this.#rng = seed >>> 0 || 1;
  }

  /** A finished request as the request path reports it (OutcomeRecorder). A client that went away (499) says nothing about the backend. */
  outcome(code: number, grpc: boolean, ms: number): void {
    if (code === 499) return;
    this.record(ms, isGuardError(code, grpc));
  }

  /** A finished request: latency in ms (to the end of the response) and whether it failed. */
  record(latencyMs: number, error: boolean): void {
    this.requests++;
    if (error) {
      this.errors++;
      return;
    }
    // Algorithm R: every request of the step has the same chance to be in the sample.
    const seen = this.seen++;
    if (seen < RESERVOIR) this.sample[seen] = latencyMs;
    else {
      const j = this.#next() % (seen + 1);
      if (j < RESERVOIR) this.sample[j] = latencyMs;
    }
    let b = latencyMs <= BASE_MS ? 0 : Math.floor(Math.log(latencyMs / BASE_MS) / LOG_R);
    if (b >= BUCKETS) b = BUCKETS - 1;
    this.hist[b]!++;
  }

  reset(): void {
    this.requests = 0;
    this.errors = 0;
    this.seen = 0;
    this.hist.fill(0);
  }

  /** xorshift32: deterministic for a seed, no allocation. */
  #next(): number {
    let x = this.#rng;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#rng = x >>> 0;
    return this.#rng;
  }

  /** Latency at quantile q of the histogram (bucket's geometric middle); NaN without data. */
  quantile(q: number): number {
    return this.seen === 0 ? NaN : bucketMid(rankBucket(this.hist, Math.min(this.seen - 1, Math.floor(q * this.seen))));
  }

  figures(): SideFigures {
    return {
      requests: this.requests,
      errors: this.errors,
      errorRate: this.requests === 0 ? 0 : this.errors / this.requests,
      p50Ms: round(this.quantile(0.5)),
      p99Ms: round(this.quantile(0.99)),
    };
  }
}

export interface SideFigures {
  readonly requests: number;
  readonly errors: number;
  readonly errorRate: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

export interface Verdict {
  /** waiting: not enough requests on a side yet; pass: no evidence of a breach; breach: `to` is worse beyond the limits. */
  readonly status: 'waiting' | 'pass' | 'breach';
  /** What breached (null unless breach). */
  readonly kind: 'errors' | 'latency' | 'health' | null;
  /** One line with both sides' figures (for breaches, the log and the halt's reason). */
  readonly reason: string;
  readonly from: SideFigures;
  readonly to: SideFigures;
  /** z of the error test (> 3.09 breaches); null while waiting. */
  readonly errorZ: number | null;
  /** z of the Mann–Whitney test on shifted log latency; null while waiting. */
  readonly latencyZ: number | null;
  /** z of the tail rank test (pooled slowest 5 %), `to` shrunk by the allowed increase; null until `to` has enough requests. */
  readonly tailZ: number | null;
  /** z of the p99 test (share of `to` above the allowed p99 vs share of `from` above its p99); null until enough of `to` is above. */
  readonly p99Z: number | null;
}

/** What the guard tolerates: a ramp's `guard` block, percentages as fractions. */
export interface GuardLimits {
  readonly minRequests: number;          // per side, in the current step
  readonly maxErrorRateIncrease: number; // 0.005 is 0.5 percentage points
  readonly maxLatencyIncrease: number;   // 0.2 is +20 %
}

export class Guard {
  readonly from: GuardSide;
  readonly to: GuardSide;
  readonly config: GuardLimits;
  // Scratch for the rank tests, allocated once.
  readonly #x = new Float64Array(RESERVOIR);
  readonly #y = new Float64Array(RESERVOIR);
  readonly #shifted = new Float64Array(BUCKETS);

  constructor(config: GuardLimits, seed = 0x9e3779b9) {
    this.config = config;
    this.from = new GuardSide(seed);
    this.to = new GuardSide(seed ^ 0x5bd1e995);
  }

  /** A new step: judge only its traffic. */
  reset(): void {
    this.from.reset();
    this.to.reset();
  }

  judge(): Verdict {
    const { from, to, config } = this;
    const f = from.figures();
    const t = to.figures();
    const min = config.minRequests;
    const waiting = from.requests < min || to.requests < min;
    // A failing `to` gets few requests (outlier detection ejects it after a few
    // failures), so errors are judged as soon as `to` has MIN_ERRORS of them:
    // the test itself weighs how few requests that is.
    if (from.requests >= min && to.errors >= MIN_ERRORS) {
      const errorZ = errorTest(from, to, config.maxErrorRateIncrease);
      if (errorZ > Z) return this.#errorBreach(f, t, errorZ);
    }
    if (waiting) {
      return { status: 'waiting', kind: null, reason: `waiting for ${min} requests per side (old ${from.requests}, new ${to.requests})`, from: f, to: t, errorZ: null, latencyZ: null, tailZ: null, p99Z: null };
    }
    const errorZ = errorTest(from, to, config.maxErrorRateIncrease);
    const enoughLatency = from.seen >= min && to.seen >= min;
    const latencyZ = enoughLatency ? this.#rankTest(config.maxLatencyIncrease) : null;
    const tailZ = enoughLatency ? this.#tailTest(config.maxLatencyIncrease) : null;
    const p99Z = enoughLatency ? p99Test(from, to, config.maxLatencyIncrease) : null;
    const figures = bothSides(f, t);
    const allowed = `+${Math.round(config.maxLatencyIncrease * 100)}%`;
    const why = latencyZ !== null && latencyZ > Z ? `latency new slower than old by more than ${allowed} (Mann-Whitney z ${latencyZ.toFixed(2)})`
      : tailZ !== null && tailZ > Z ? `latency tail (slowest ${TAIL * 100}%) new slower than old by more than ${allowed} (tail rank z ${tailZ.toFixed(2)})`
      : p99Z !== null && p99Z > Z ? `latency new p99 above old p99 ${allowed} (share above it z ${p99Z.toFixed(2)})`
      : null;
    if (why !== null) return { status: 'breach', kind: 'latency', reason: `${why}; ${figures}`, from: f, to: t, errorZ, latencyZ, tailZ, p99Z };
    return { status: 'pass', kind: null, reason: figures, from: f, to: t, errorZ, latencyZ, tailZ, p99Z };
  }

  /** `to` is down (ejected after consecutive failures, or failing its health checks) while `from` is up: the router itself judged it bad. */
  healthBreach(): Verdict {
    const f = this.from.figures();
    const t = this.to.figures();
    return { status: 'breach', kind: 'health', reason: `new is down (ejected by outlier detection or failing health checks) while old is up; ${bothSides(f, t)}`, from: f, to: t, errorZ: null, latencyZ: null, tailZ: null, p99Z: null };
  }

  #errorBreach(f: SideFigures, t: SideFigures, errorZ: number): Verdict {
    const why = `error rate new ${pct(t.errorRate)} vs old ${pct(f.errorRate)}: +${pp(t.errorRate - f.errorRate)} points > allowed ${pct(this.config.maxErrorRateIncrease)} (z ${errorZ.toFixed(2)})`;
    return { status: 'breach', kind: 'errors', reason: `${why}; ${bothSides(f, t)}`, from: f, to: t, errorZ, latencyZ: null, tailZ: null, p99Z: null };
  }

  /**
   * Mann–Whitney U of log(to) − log(1 + max) against log(from): z > Z means
   * `to` is slower than `from` by more than the allowed factor with 99.9 %
   * confidence. Sorted copies and one merge walk: O(n log n), no allocation.
   */
  #rankTest(max: number): number {
    const n = Math.min(this.from.seen, RESERVOIR);
    const m = Math.min(this.to.seen, RESERVOIR);
    const x = this.#x.subarray(0, n);
    const y = this.#y.subarray(0, m);
    const shift = 1 + max;
    for (let i = 0; i < n; i++) x[i] = this.from.sample[i]!;
    // The allowed increase is the larger of the relative one and the floor; both maps are monotone, so ranks stay sound.
    for (let j = 0; j < m; j++) y[j] = Math.min(this.to.sample[j]! / shift, this.to.sample[j]! - LATENCY_FLOOR_MS);
    x.sort();
    y.sort();
    // U = pairs with y > x, ties count half.
    let u = 0;
    let below = 0; // x[i] < y[j]
    let upTo = 0; // x[i] <= y[j]
    for (let j = 0; j < m; j++) {
      const v = y[j]!;
      while (below < n && x[below]! < v) below++;
      if (upTo < below) upTo = below;
      while (upTo < n && x[upTo]! <= v) upTo++;
      u += below + (upTo - below) / 2;
    }
    const mean = (n * m) / 2;
    const sd = Math.sqrt((n * m * (n + m + 1)) / 12);
    return (u - mean) / sd;
  }

  /**
   * A two-sample linear rank test whose score counts only the tail: the
   * pooled values (`to` shrunk by the allowed increase, and `from`) are
   * ranked, a value at pooled quantile u scores max(0, u − (1 − TAIL)) / TAIL,
   * and z compares `to`'s score sum with its permutation mean and variance.
   * So `to` is judged by how many of its requests reach the pooled tail and
   * how far up they rank there, and by nothing below it. Exact in
   * distribution when `to` shrunk is distributed like `from` (exactly at the
   * limit); the score rises with the value, so a `to` that is faster after
   * shrinking scores lower. Ranks come from the histograms (every request, not
   * a sample); a bucket's values tie and share their ranks' mean score. Each
   * `to` bucket moves down to the bucket holding its low edge shrunk, so `to`
   * is never made slower than it is. O(BUCKETS), no per-request work.
   */
  #tailTest(max: number): number | null {
    const a = this.from.hist;
    const b = this.to.hist;
    const n = this.from.seen;
    const m = this.to.seen;
    if (m * TAIL < MIN_TAIL) return null;
    const shifted = this.#shifted;
    shifted.fill(0);
    let under = 0; // `to` shrunk below every bucket: lowest ranks, score 0
    for (let j = 0; j < BUCKETS; j++) {
      const w = b[j]!;
      if (w === 0) continue;
      const low = bucketLow(j);
      const target = bucketOf(Math.min(low / (1 + max), low - LATENCY_FLOOR_MS));
      if (target < 0) under += w;
      else shifted[target]! += w;
    }
    const total = n + m;
    // Mean score of the pooled ranks (r0, r0 + t]: the integral of the score over (r0/N, (r0 + t)/N] over its width.
    const integral = (u: number) => (u <= 1 - TAIL ? 0 : (u - (1 - TAIL)) ** 2 / (2 * TAIL));
    const score = (r0: number, t: number) => (integral((r0 + t) / total) - integral(r0 / total)) / (t / total);
    // Two passes: the mean score, then to's score sum and the scores' spread.
    let rank = under;
    let sum = 0;
    for (let i = 0; i < BUCKETS; i++) {
      const t = a[i]! + shifted[i]!;
      if (t === 0) continue;
      sum += t * score(rank, t);
      rank += t;
    }
    const mean = sum / total;
    let s = 0;
    let spread = under * mean * mean;
    rank = under;
    for (let i = 0; i < BUCKETS; i++) {
      const t = a[i]! + shifted[i]!;
      if (t === 0) continue;
      const sc = score(rank, t);
      s += shifted[i]! * sc;
      spread += t * (sc - mean) ** 2;
      rank += t;
    }
    const variance = ((n * m) / (total * (total - 1))) * spread;
    return variance > 0 ? (s - m * mean) / Math.sqrt(variance) : null;
  }


}

function bothSides(f: SideFigures, t: SideFigures): string {
  return `new ${pct(t.errorRate)} errors, p50 ${t.p50Ms} ms, p99 ${t.p99Ms} ms over ${t.requests} requests; old ${pct(f.errorRate)} errors, p50 ${f.p50Ms} ms, p99 ${f.p99Ms} ms over ${f.requests} requests`;
}

function errorTest(from: GuardSide, to: GuardSide, allowed: number): number {
  return proportionZ(from.errors, from.requests, to.errors, to.requests, allowed);
}

/** z of H0: k2/n2 − k1/n1 ≤ allowed, Agresti–Caffo adjusted (one success and one failure added per side). */
function proportionZ(k1: number, n1: number, k2: number, n2: number, allowed: number): number {
  const p1 = (k1 + 1) / (n1 + 2);
  const p2 = (k2 + 1) / (n2 + 2);
  const se = Math.sqrt((p1 * (1 - p1)) / (n1 + 2) + (p2 * (1 - p2)) / (n2 + 2));
  return (p2 - p1 - allowed) / se;
}

/**
 * H0: to's p99 ≤ (1 + max) × from's. With c = the top edge of from's p99
 * bucket, under H0 the share of `to` above (1 + max)·c is no larger than the
 * share of `from` above c; z of the two-proportion test of that (Agresti–Caffo
 * adjusted). `to` is counted only from the first bucket wholly above the
 * threshold, so it is never overcounted. Null until each side has MIN_P99
 * requests and MIN_OVER of `to` are above.
 */
function p99Test(from: GuardSide, to: GuardSide, max: number): number | null {
  if (to.seen < MIN_P99 || from.seen < MIN_P99) return null;
  const cutBucket = rankBucket(from.hist, Math.min(from.seen - 1, Math.floor(0.99 * from.seen)));
  const c = bucketLow(cutBucket + 1);
  const fromOver = countFrom(from.hist, cutBucket + 1);
  const threshold = Math.max((1 + max) * c, c + LATENCY_FLOOR_MS);
  const toOver = countFrom(to.hist, Math.ceil(Math.log(threshold / BASE_MS) / LOG_R));
  if (toOver < MIN_OVER) return null;
  return proportionZ(fromOver, from.seen, toOver, to.seen, 0);
}

/** Requests in buckets i and above. */
function countFrom(hist: Uint32Array, i: number): number {
  let n = 0;
  for (let k = Math.max(0, i); k < hist.length; k++) n += hist[k]!;
  return n;
}

/** The bucket holding ms; −1 below the first bucket's range (0 and less). */
function bucketOf(ms: number): number {
  if (ms <= 0) return -1;
  if (ms <= BASE_MS) return 0;
  return Math.min(BUCKETS - 1, Math.floor(Math.log(ms / BASE_MS) / LOG_R));
}

/** The bucket holding the value of the given 0-based rank. */
function rankBucket(hist: Uint32Array, rank: number): number {
  let acc = 0;
  for (let i = 0; i < hist.length; i++) {
    acc += hist[i]!;
    if (acc > rank) return i;
  }
  return hist.length - 1;
}

function bucketLow(i: number): number {
  return i === 0 ? 0 : BASE_MS * R ** i;
}

function bucketMid(i: number): number {
  return BASE_MS * R ** (i + 0.5);
}

function round(ms: number): number {
  return Number.isNaN(ms) ? 0 : Math.round(ms * 100) / 100;
}

function pct(f: number): string {
  return `${(f * 100).toFixed(2)}%`;
}

function pp(f: number): string {
  return (f * 100).toFixed(2);
}
