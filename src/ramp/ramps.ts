// Every route's ramp runner, kept in step with the route table: a reload that
// rebuilds a route gets a new runner bound to the new route; one that keeps
// the route keeps its runner (and its guard's counts).
import type { RouteConfig } from '../config/model.ts';
import type { Route } from '../routing/route.ts';
import type { Verdict } from './guard.ts';
import { RampRun, type RampChange, type RampStatus } from './runner.ts';
import { rampPlan } from './schedule.ts';

export interface RampsOptions {
  /** The weights in force of a route changed (step boundary, breach). */
  readonly weightsChanged: (route: Route) => void;
  /** A breach was acted on; count it and persist the change through the config source. */
  readonly breached: (route: string, verdict: Verdict, change: RampChange) => void;
}

interface Entry {
  readonly run: RampRun;
  readonly route: Route;
  /** The halt or pause this replica made itself, until the config source carries it. */
  readonly own: { change: RampChange | null };
}

export class Ramps {
  readonly #opts: RampsOptions;
  readonly #entries = new Map<string, Entry>();

  constructor(opts: RampsOptions) {
    this.#opts = opts;
  }

  /** Binds runners to the routes of a new table (`routes` and `configs` in the same order), before the table serves. */
  sync(routes: readonly Route[], configs: readonly RouteConfig[]): void {
    const seen = new Set<string>();
    routes.forEach((route, i) => {
      const config = configs[i]!.ramp;
      if (config === undefined) return;
      seen.add(route.name);
      const old = this.#entries.get(route.name);
      if (old?.route === route) return;
      const ramp = rampPlan(config);
      old?.run.stop();
      const own: Entry['own'] = { change: null };
      const run = new RampRun(route.name, ramp, route.backends, {
        setWeights: (w) => {
          route.setWeights(w);
          this.#opts.weightsChanged(route);
        },
        attach: (from, to) => {
          for (const b of route.backends) b.metrics.outcomes = b.name === ramp.from ? from : b.name === ramp.to ? to : b.metrics.outcomes;
        },
        mirror: (recorder) => {
          if (route.mirror === null) return;
          route.mirror.step = recorder !== null;
          route.mirror.recorder = recorder;
        },
        toDown: () => {
          const f = route.backends.find((b) => b.name === ramp.from);
          const t = route.backends.find((b) => b.name === ramp.to);
          return t !== undefined && f !== undefined && !t.health.up && f.health.up;
        },
        breached: (verdict, change) => {
          own.change = change;
          this.#opts.breached(route.name, verdict, change);
        },
      });
      run.start();
      // Our own halt of this very ramp (same start) holds until the source says otherwise.
      const carried = old?.own.change ?? null;
      if (carried !== null && old!.run.ramp.startedAt === ramp.startedAt && ramp.halted === null && ramp.pausedAt === null) {
        own.change = carried;
        run.overlay(carried);
      }
      this.#entries.set(route.name, { run, route, own });
    });
    for (const [name, entry] of this.#entries) {
      if (!seen.has(name)) {
        entry.run.stop();
        this.#entries.delete(name);
      }
    }
  }

  status(route: string): RampStatus | null {
    return this.#entries.get(route)?.run.status() ?? null;
  }

  *all(): IterableIterator<[string, RampStatus]> {
    for (const [name, e] of this.#entries) yield [name, e.run.status()];
  }

  close(): void {
    for (const e of this.#entries.values()) e.run.stop();
    this.#entries.clear();
  }
}
