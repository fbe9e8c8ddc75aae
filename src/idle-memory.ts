// Memory given back once the router goes idle (issue 15 item 4: idle
// keep-alive connections). A burst — thousands of clients connecting at once,
// a load peak — leaves V8's young generation grown to its cap (two semi-spaces
// of --max-semi-space-size, src/cli/node-flags.ts: 16 MiB) and the heap's
// free pages resident. V8's own memory reducer, which would give them back,
// only starts after a mark-compact that finds the heap 10 MiB (or 10%) larger
// than at its last run; connections that stay open are promoted by scavenges
// without one, so after such a burst it never runs and the memory stays
// resident for as long as the connections stay idle.
//
// So the entrypoint's coarse clock watches for the end of activity: once per
// busy → idle transition (IDLE_MS with no new connection, no request and
// nothing in flight), if V8's resident heap (total_physical_size: the pages
// it holds in RAM, the young generation's among them) grew by GROWTH since
// the last time, one memory-reducing full GC — what V8 runs itself under memory
// pressure, which also shrinks the young generation to its start size. Its
// pause (~20 ms for a small heap, ~50–100 ms with 10,000 connections) lands
// on no traffic; the first request after it finds a young generation that
// grows again within a few scavenges.
//
// The watch sees its own entrypoint's traffic only: production has one
// entrypoint, and the admin port's requests (metric scrapes, the live page)
// are not counted, so a pause can land on a scrape.
import v8 from 'node:v8';
import vm from 'node:vm';

/** Quiet this long (no accept, no request, nothing in flight) counts as idle. V8's own reducer waits 8 s after a mark-compact. */
export const IDLE_MS = 5_000;
/** Heap growth (V8 resident) since the last reduction that is worth a full GC: a trickle of requests grows nothing and pays nothing. */
export const GROWTH = 4 * 1024 * 1024;

/**
 * Decides when the process has gone idle, from the coarse clock's ticks:
 * a pure function of what it is told, once per busy → idle transition.
 */
export class IdleWatch {
  readonly #quietTicks: number;
  /** The activity count at the last tick: accepts and requests so far. */
  #seen = 0;
  #quietSince = 0;
  /** Activity since the last time tick() said idle. */
  #due = false;

  constructor(quietTicks: number) {
    this.#quietTicks = quietTicks;
  }

  /** One tick at `now`: true when the process has been quiet for quietTicks after some activity (once per such quiet spell). */
  tick(now: number, activity: number, inflight: number): boolean {
    if (activity !== this.#seen || inflight > 0) {
      this.#seen = activity;
      this.#quietSince = now;
      this.#due = true;
      return false;
    }
    if (!this.#due || now - this.#quietSince < this.#quietTicks) return false;
    this.#due = false;
    return true;
  }
}

/** V8's resident heap and young generation (new space) before and after a reduction, bytes; its pause, ms. */
export interface GivenBack {
  heapBefore: number;
  heapAfter: number;
  newSpaceBefore: number;
  newSpaceAfter: number;
  pauseMs: number;
}

type Gc = (options: { type: 'major'; flavor: 'last-resort' }) => void;
let gc: Gc | undefined;
/** V8's resident heap after the last reduction (process-wide, as the heap is). */
let residentAfter = 0;

/**
 * V8's gc(), without --expose-gc on the command line: the flag is on only
 * while one new context is made, so that context has gc() and the router's
 * own global does not (the flag is read when a context is created; Jest's
 * leak detector gets it the same way). Made on first use: ~160 KiB of heap.
 */
function v8Gc(): Gc {
  if (typeof globalThis.gc === 'function') return globalThis.gc;
  v8.setFlagsFromString('--expose-gc');
  try {
    return vm.runInNewContext('gc') as Gc;
  } finally {
    v8.setFlagsFromString('--no-expose-gc');
  }
}

/** Resident bytes: the whole V8 heap, and its young generation. */
function resident(): { heap: number; newSpace: number } {
  let newSpace = 0;
  for (const s of v8.getHeapSpaceStatistics()) if (s.space_name === 'new_space') newSpace = s.physical_space_size;
  return { heap: v8.getHeapStatistics().total_physical_size, newSpace };
}

/** One memory-reducing full GC if the heap grew by GROWTH since the last one; what it did, or undefined if it was not worth it. */
export function giveBackMemory(): GivenBack | undefined {
  const before = resident();
  if (before.heap < residentAfter + GROWTH) return undefined;
  gc ??= v8Gc();
  const start = performance.now();
  gc({ type: 'major', flavor: 'last-resort' });
  const pauseMs = performance.now() - start;
  const after = resident();
  residentAfter = after.heap;
  return { heapBefore: before.heap, heapAfter: after.heap, newSpaceBefore: before.newSpace, newSpaceAfter: after.newSpace, pauseMs };
}
