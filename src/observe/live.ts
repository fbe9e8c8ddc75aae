// What the live page shows: per route and backend, the last minute of traffic,
// taken from the request counters once a second (nothing on the request path),
// plus weights, health and ramp state; and a fleet board of migration stages.
import type { RampStatus } from '../ramp/runner.ts';

const WINDOW_S = 60;

/** The cumulative counters of one (route, backend), as the request path keeps them. */
export interface Counters {
  /** Requests by code: HTTP status (>= 100), gRPC status (< 100), 499 client gone. */
  readonly byCode: readonly number[];
  /** Requests in all. */
  readonly count: number;
  /** Durations per bucket (not cumulative), the +Inf overflow last. */
  readonly buckets: Float64Array;
}

export interface LiveBackendInput {
  readonly name: string;
  readonly configuredWeight: number;
  readonly weight: number;
  readonly up: boolean;
  readonly counters: Counters;
}

export interface LiveRouteInput {
  readonly name: string;
  readonly hosts: readonly string[];
  readonly backends: readonly LiveBackendInput[];
  readonly ramp: RampStatus | null;
  readonly mirror: { readonly to: string; readonly percent: number } | null;
}

export interface LiveBackend {
  readonly name: string;
  readonly configuredWeight: number;
  readonly weight: number;
  /** Share of the route's weighted traffic, percent. */
  readonly share: number;
  readonly up: boolean;
  readonly rps: number;
  readonly errorRate: number;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly requests: number;
}

export type Stage = 'old only' | 'override-only testing' | 'mirroring' | 'ramping' | 'paused' | 'new only' | 'halted';

export interface LiveRoute {
  readonly name: string;
  readonly hosts: readonly string[];
  readonly stage: Stage;
  /** Percent on the new backend (ramping, paused). */
  readonly percent: number;
  readonly backends: readonly LiveBackend[];
  readonly ramp: RampStatus | null;
}

interface Ring {
  /** WINDOW_S + 1 snapshots of [requests, errors, ...buckets], oldest overwritten. */
  readonly snaps: Float64Array[];
  filled: number;
  next: number;
  seen: number;
}

/** 5xx, and the gRPC statuses the guard counts as failures. */
function errorsOf(byCode: readonly number[]): number {
  let e = (byCode[2] ?? 0) + (byCode[4] ?? 0) + (byCode[13] ?? 0) + (byCode[14] ?? 0) + (byCode[15] ?? 0);
  for (let c = 500; c < byCode.length && c < 600; c++) e += byCode[c] ?? 0;
  return e;
}

export class LiveStats {
  readonly #bounds: readonly number[];
  readonly #rings = new Map<Counters, Ring>();
  #tick = 0;

  /** `bounds`: the upper bounds of the duration buckets in seconds (the last bucket is +Inf). */
  constructor(bounds: readonly number[]) {
    this.#bounds = bounds;
  }

  /** Takes one snapshot of every backend's counters; call once a second. Rings of backends that are gone are dropped. */
  sample(routes: Iterable<LiveRouteInput>): void {
    const tick = ++this.#tick;
    const width = 2 + this.#bounds.length + 1;
    for (const r of routes) {
      for (const b of r.backends) {
        let ring = this.#rings.get(b.counters);
        if (ring === undefined) {
          ring = { snaps: Array.from({ length: WINDOW_S + 1 }, () => new Float64Array(width)), filled: 0, next: 0, seen: tick };
          this.#rings.set(b.counters, ring);
        }
        const s = ring.snaps[ring.next]!;
        s[0] = b.counters.count;
        s[1] = errorsOf(b.counters.byCode);
        s.set(b.counters.buckets, 2);
        ring.next = (ring.next + 1) % ring.snaps.length;
        ring.filled = Math.min(ring.filled + 1, ring.snaps.length);
        ring.seen = tick;
      }
    }
    for (const [k, ring] of this.#rings) if (ring.seen !== tick) this.#rings.delete(k);
  }

  /** The page's view of the routes (last minute, or what there is of it). */
  view(routes: Iterable<LiveRouteInput>): LiveRoute[] {
    const out: LiveRoute[] = [];
    for (const r of routes) {
      let total = 0;
      for (const b of r.backends) total += b.weight;
      const backends = r.backends.map((b) => this.#backend(b, total));
      const { stage, percent } = stageOf(r, backends);
      out.push({ name: r.name, hosts: r.hosts, stage, percent, backends, ramp: r.ramp });
    }
    return out;
  }

  #backend(b: LiveBackendInput, total: number): LiveBackend {
    const base = { name: b.name, configuredWeight: b.configuredWeight, weight: b.weight, share: total === 0 ? 0 : round((b.weight / total) * 100), up: b.up };
    const ring = this.#rings.get(b.counters);
    if (ring === undefined || ring.filled < 2) return { ...base, rps: 0, errorRate: 0, p50Ms: null, p99Ms: null, requests: 0 };
    const n = ring.snaps.length;
    const newest = ring.snaps[(ring.next - 1 + n) % n]!;
    const oldest = ring.snaps[(ring.next - ring.filled + n) % n]!;
    const seconds = ring.filled - 1;
    const requests = newest[0]! - oldest[0]!;
    const errors = newest[1]! - oldest[1]!;
    const diff = new Float64Array(newest.length - 2);
    for (let i = 0; i < diff.length; i++) diff[i] = newest[i + 2]! - oldest[i + 2]!;
    return {
      ...base,
      rps: round(requests / seconds),
      errorRate: requests === 0 ? 0 : errors / requests,
      p50Ms: this.#quantile(diff, 0.5),
      p99Ms: this.#quantile(diff, 0.99),
      requests,
    };
  }

  /** Linear interpolation inside the histogram bucket holding quantile q, in ms. */
  #quantile(buckets: Float64Array, q: number): number | null {
    let total = 0;
    for (const v of buckets) total += v;
    if (total === 0) return null;
    const rank = q * total;
    let acc = 0;
    for (let i = 0; i < buckets.length; i++) {
      const c = buckets[i]!;
      if (acc + c >= rank && c > 0) {
        const lo = i === 0 ? 0 : this.#bounds[i - 1]!;
        const hi = i < this.#bounds.length ? this.#bounds[i]! : lo * 2;
        return round((lo + ((rank - acc) / c) * (hi - lo)) * 1000);
      }
      acc += c;
    }
    return null;
  }
}

/**
 * The migration stage of a route. With a ramp, `from` is old and `to` new;
 * without, the first backend is old and the last new (the order configs use).
 */
function stageOf(r: LiveRouteInput, backends: readonly LiveBackend[]): { stage: Stage; percent: number } {
  const ramp = r.ramp;
  const oldName = ramp?.from ?? backends[0]?.name;
  const newName = ramp?.to ?? backends.at(-1)?.name;
  const oldB = backends.find((b) => b.name === oldName);
  const newB = backends.find((b) => b.name === newName);
  if (ramp !== null) {
    if (ramp.state === 'halted') return { stage: 'halted', percent: 0 };
    if (ramp.state === 'paused') return { stage: 'paused', percent: ramp.percent };
    if (ramp.mirror) return { stage: 'mirroring', percent: 0 };
  }
  if (newB === undefined || oldB === undefined || newB === oldB) return { stage: 'old only', percent: 0 };
  const percent = newB.share;
  if (newB.weight > 0 && oldB.weight === 0) return { stage: 'new only', percent: 100 };
  if (newB.weight > 0) return { stage: 'ramping', percent };
  if (r.mirror !== null && r.mirror.to === newB.name && r.mirror.percent > 0) return { stage: 'mirroring', percent: 0 };
  if (newB.requests > 0) return { stage: 'override-only testing', percent: 0 };
  return { stage: 'old only', percent: 0 };
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
