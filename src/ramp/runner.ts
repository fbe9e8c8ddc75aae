// A route's ramp at run time: puts the schedule's weights in force at each
// step boundary (a timer, never per request), judges the step's traffic once
// a second, and on a breach rolls this replica back at once — before any
// config source has carried the halt to the others.
import { Guard, type GuardSide, type Verdict } from './guard.ts';
import { rampPosition, type RampPlan, type RampPosition } from './schedule.ts';

const JUDGE_EVERY_MS = 1000;

export interface RampHooks {
  /** Put these weights in force (in the order of the route's backends). */
  setWeights(weights: readonly number[]): void;
  /** Where the outcomes of `from` and `to` are recorded (null: not recorded). */
  attach(from: GuardSide | null, to: GuardSide | null): void;
  /** A mirror step: copy requests to `to` and record the copies' answers here; null: stop. */
  mirror(recorder: GuardSide | null): void;
  /** `to` is down (ejected or failing health checks) while `from` is up. */
  toDown(): boolean;
  /** A breach was acted on locally; persist the change (halted, or paused) through the config source. */
  breached(verdict: Verdict, change: RampChange): void;
}

/** What a breach writes into the route's `ramp` block. */
export type RampChange =
  | { readonly halted: { readonly at: number; readonly reason: string } }
  | { readonly pausedAt: number; readonly pauseReason: string };

/** The schedule's position plus what the runner knows: the ramp's settings, the pause or halt, the guard. */
export interface RampStatus extends RampPosition {
  readonly from: string;
  readonly to: string;
  readonly steps: RampPlan['steps'];
  readonly intervalMs: number;
  readonly halted: RampPlan['halted'];
  readonly pausedAt: number | null;
  readonly pauseReason: string | null;
  /** The guard's latest verdict in this step (null when not judging). */
  readonly verdict: Verdict | null;
  readonly breaches: number;
}

export class RampRun {
  readonly route: string;
  readonly guard: Guard;
  readonly #backends: readonly { readonly name: string; readonly weight: number }[];
  readonly #hooks: RampHooks;
  readonly #now: () => number;
  #ramp: RampPlan;
  #pos: RampPosition | undefined;
  #verdict: Verdict | null = null;
  #breaches = 0;
  #stepTimer: NodeJS.Timeout | undefined;
  #judgeTimer: NodeJS.Timeout | undefined;

  constructor(route: string, ramp: RampPlan, backends: readonly { name: string; weight: number }[], hooks: RampHooks, now: () => number = Date.now) {
    this.route = route;
    this.#ramp = ramp;
    this.#backends = backends;
    this.#hooks = hooks;
    this.#now = now;
    this.guard = new Guard(ramp.guard);
  }

  get ramp(): RampPlan {
    return this.#ramp;
  }

  /** Puts the position in force now and keeps it so until stop(). */
  start(): void {
    this.#apply();
    this.#judgeTimer = setInterval(() => this.judge(), JUDGE_EVERY_MS);
    this.#judgeTimer.unref();
  }

  stop(): void {
    clearTimeout(this.#stepTimer);
    clearInterval(this.#judgeTimer);
    this.#hooks.attach(null, null);
    this.#hooks.mirror(null);
  }

  /**
   * Applies a halt or pause locally: a breach, or one this replica acted on
   * before a reload, so a rebuilt runner does not ramp up again while the
   * config source has not caught up.
   */
  overlay(change: RampChange): void {
    this.#ramp = { ...this.#ramp, ...change };
    this.#apply();
  }

  /** Recomputes the position; on a new step the guard starts over. Schedules the next boundary. */
  #apply(): void {
    clearTimeout(this.#stepTimer);
    const now = this.#now();
    const pos = rampPosition(this.#ramp, this.#backends, now);
    const prev = this.#pos;
    this.#pos = pos;
    if (prev === undefined || prev.step !== pos.step || prev.state !== pos.state) {
      this.guard.reset();
      this.#verdict = null;
    }
    if (prev === undefined || !sameWeights(prev.weights, pos.weights)) this.#hooks.setWeights(pos.weights);
    const judging = pos.state === 'ramping';
    this.#hooks.attach(judging ? this.guard.from : null, judging ? this.guard.to : null);
    this.#hooks.mirror(pos.mirror && judging ? this.guard.to : null);
    if (pos.nextChangeAt !== null) {
      // Timers may fire a little early; #apply then sees the same step and sets the timer again.
      this.#stepTimer = setTimeout(() => this.#apply(), Math.max(1, pos.nextChangeAt - now));
      this.#stepTimer.unref();
    }
  }

  /** Judges the current step (the timer calls this every second while ramping). */
  judge(): Verdict | null {
    const pos = this.#pos;
    if (pos === undefined || pos.state !== 'ramping') return null;
    const v = this.#hooks.toDown() ? this.guard.healthBreach() : this.guard.judge();
    this.#verdict = v;
    if (v.status !== 'breach') return v;
    this.#breaches++;
    const at = this.#now();
    const reason = `guard: ${v.reason}`;
    const change: RampChange = this.#ramp.onBreach === 'pause'
      ? { pausedAt: at, pauseReason: reason }
      : { halted: { at, reason } };
    this.overlay(change);
    this.#verdict = v;
    this.#hooks.breached(v, change);
    return v;
  }

  status(): RampStatus {
    const r = this.#ramp;
    const pos = this.#pos ?? rampPosition(r, this.#backends, this.#now());
    return {
      from: r.from,
      to: r.to,
      steps: r.steps,
      intervalMs: r.intervalMs,
      state: pos.state,
      step: pos.step,
      percent: pos.percent,
      mirror: pos.mirror,
      stepStartedAt: pos.stepStartedAt,
      nextChangeAt: pos.nextChangeAt,
      weights: pos.weights,
      halted: r.halted,
      pausedAt: r.pausedAt,
      pauseReason: r.pauseReason,
      verdict: this.#verdict,
      breaches: this.#breaches,
    };
  }
}

function sameWeights(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
