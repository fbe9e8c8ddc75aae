// A coarse clock for per-request timeouts of two seconds and more (the
// defaults are 30 s and 60 s). A native timer per request costs ~10% of
// throughput (measured with undici's native timers): setting a deadline here
// is one field write, and one interval checks them all. Shorter timeouts,
// where a 250 ms resolution matters, stay on native timers.

export const TICK_MS = 250;
/** Timeouts below this run on native timers. */
export const NATIVE_BELOW_MS = 2_000;

/** Ticks since the clock started; a deadline is a tick number (0: none). */
export let tick = 1;

/** A deadline `ms` from now: never early, at most one tick late. */
export function deadlineIn(ms: number): number {
  return tick + Math.ceil(ms / TICK_MS) + 1;
}

/** Something with deadlines to check on every tick. */
export interface Swept {
  sweep(now: number): void;
}

const swept = new Set<Swept>();
let interval: NodeJS.Timeout | undefined;

function run(): void {
  tick++;
  for (const s of swept) s.sweep(tick);
}

export function watch(s: Swept): void {
  swept.add(s);
  if (interval === undefined) {
    interval = setInterval(run, TICK_MS);
    interval.unref();
  }
}

export function unwatch(s: Swept): void {
  swept.delete(s);
  if (swept.size === 0 && interval !== undefined) {
    clearInterval(interval);
    interval = undefined;
  }
}
