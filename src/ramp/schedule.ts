// The ramp schedule: where a declared ramp stands, as a pure function of its
// config, the route's configured weights and the wall clock. Every replica
// computes the same answer for the same moment without talking to the others.
import type { RampConfig, RampStep } from '../config/model.ts';
import { parseDuration, parsePercent, parseTimestamp } from '../config/parse.ts';
import type { GuardLimits } from './guard.ts';

/**
 * A ramp's config in the units the schedule and the guard compute in (epoch
 * ms, fractions, null for absent): derived once per config (rampPlan), and
 * what a breach overlays its halt or pause on (RampRun.overlay).
 */
export interface RampPlan {
  readonly from: string;
  readonly to: string;
  readonly steps: readonly RampStep[];
  readonly intervalMs: number;
  readonly startedAt: number | null;
  readonly pausedAt: number | null;
  readonly pauseReason: string | null;
  readonly halted: { readonly at: number; readonly reason: string } | null;
  readonly guard: GuardLimits;
  readonly onBreach: RampConfig['onBreach'];
}

export function rampPlan(r: RampConfig): RampPlan {
  return {
    from: r.from,
    to: r.to,
    steps: r.steps,
    intervalMs: parseDuration(r.interval),
    startedAt: r.startedAt === undefined ? null : parseTimestamp(r.startedAt),
    pausedAt: r.pausedAt === undefined ? null : parseTimestamp(r.pausedAt),
    pauseReason: r.pauseReason ?? null,
    halted: r.halted === undefined ? null : { at: parseTimestamp(r.halted.at), reason: r.halted.reason },
    guard: {
      minRequests: r.guard.minRequests,
      maxErrorRateIncrease: parsePercent(r.guard.maxErrorRateIncrease),
      maxLatencyIncrease: parsePercent(r.guard.maxLatencyIncrease),
    },
    onBreach: r.onBreach,
  };
}

export const RAMP_STATES = ['pending', 'ramping', 'paused', 'halted', 'done'] as const;
export type RampState = (typeof RAMP_STATES)[number];

export interface RampPosition {
  readonly state: RampState;
  /** Index of the step in force (at the pause or halt for those states); -1 before the first step. */
  readonly step: number;
  /** Percent of the from+to traffic on `to` in force now. */
  readonly percent: number;
  /** Requests are mirrored to `to` (a mirror step in force). */
  readonly mirror: boolean;
  /** When the step in force began; null while pending. */
  readonly stepStartedAt: number | null;
  /** When the position changes next by the clock alone (next step, or done); null when only a config change can move it. */
  readonly nextChangeAt: number | null;
  /** Weights in force, in the order of the route's backends. */
  readonly weights: readonly number[];
}

interface WeightedBackend {
  readonly name: string;
  readonly weight: number;
}

export function rampPosition(ramp: RampPlan, backends: readonly WeightedBackend[], now: number): RampPosition {
  const n = ramp.steps.length;
  const start = ramp.startedAt;
  const configured = backends.map((b) => b.weight);
  if (ramp.halted !== null) {
    const step = start === null ? -1 : clampStep(stepAt(ramp, start, ramp.halted.at), n);
    return { state: 'halted', step, percent: 0, mirror: false, stepStartedAt: null, nextChangeAt: null, weights: split(backends, ramp, 0) };
  }
  if (start === null || (ramp.pausedAt === null && now < start)) {
    return { state: 'pending', step: -1, percent: 0, mirror: false, stepStartedAt: null, nextChangeAt: start, weights: configured };
  }
  const at = ramp.pausedAt ?? now;
  const raw = stepAt(ramp, start, at);
  if (raw >= n) {
    const percent = percentOf(ramp.steps[n - 1]!);
    return { state: 'done', step: n - 1, percent, mirror: false, stepStartedAt: start + (n - 1) * ramp.intervalMs, nextChangeAt: null, weights: split(backends, ramp, percent) };
  }
  if (raw < 0) {
    // Paused before it began: nothing was ever in force but the configured weights.
    return { state: 'paused', step: -1, percent: 0, mirror: false, stepStartedAt: null, nextChangeAt: null, weights: configured };
  }
  const s = ramp.steps[raw]!;
  const percent = percentOf(s);
  const stepStartedAt = start + raw * ramp.intervalMs;
  const paused = ramp.pausedAt !== null;
  return {
    state: paused ? 'paused' : 'ramping',
    step: raw,
    percent,
    mirror: s === 'mirror',
    stepStartedAt,
    nextChangeAt: paused ? null : stepStartedAt + ramp.intervalMs,
    weights: split(backends, ramp, percent),
  };
}

function stepAt(ramp: RampPlan, start: number, at: number): number {
  return Math.floor((at - start) / ramp.intervalMs);
}

function clampStep(i: number, n: number): number {
  return i < 0 ? -1 : Math.min(i, n - 1);
}

function percentOf(s: RampStep): number {
  return s === 'mirror' ? 0 : s;
}

/**
 * `from` and `to` share their combined configured weight W as (100 − p) : p;
 * other backends keep theirs. Integer weights for the picker, scaled so that
 * from + to is 100 when they are the only backends (weights read as percent):
 * everything is multiplied by 100 and divided by the common divisor of W and
 * the other weights.
 */
function split(backends: readonly WeightedBackend[], ramp: RampPlan, percent: number): number[] {
  let shared = 0;
  for (const b of backends) if (b.name === ramp.from || b.name === ramp.to) shared += b.weight;
  if (shared === 0) shared = 100;
  let d = shared;
  for (const b of backends) if (b.name !== ramp.from && b.name !== ramp.to) d = gcd(d, b.weight);
  const w = shared / d;
  return backends.map((b) =>
    b.name === ramp.to ? w * percent : b.name === ramp.from ? w * (100 - percent) : (b.weight / d) * 100,
  );
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}
