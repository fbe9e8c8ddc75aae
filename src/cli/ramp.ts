// switchyard ramp start|pause|resume|abort ROUTE: writes the timestamps of a
// route's declared `ramp` block (docs/ramps.md, "What the CLI writes"); the
// router derives the weights in force from them and the clock.
import { parseDuration } from '../config/parse.ts';
import type { EditOp, RouteData } from '../config/edit.ts';
import { ChangeError, updateRoute } from '../config/update.ts';
import { CONFIG_OPTION, configSources, parse, UsageError } from './args.ts';

export const HELP = `usage: switchyard ramp start|pause|resume|abort ROUTE --config SOURCE [--reason TEXT]

Drives the declared ramp of ROUTE (its \`ramp:\` block) by writing its
timestamps where the config lives, validated first, comments kept:

  start    startedAt: now; clears pausedAt, pauseReason and halted (step 0 again)
  pause    pausedAt: now (and pauseReason with --reason); the step in force holds
  resume   moves startedAt on by the time spent paused and clears pausedAt, so
           the paused step continues with the time it had left
  abort    halted: { at: now, reason }: the ramped backend goes back to 0 %

  --reason TEXT        why (pause, abort); abort's default is "aborted"
  -c, --config SOURCE  a YAML file, a directory of them, or
                       kubernetes://NAMESPACE/CONFIGMAP; repeatable; default
                       $SWITCHYARD_CONFIG
  -h, --help           this help

Exit status: 0 written (or already so), 1 refused (no such route, no ramp block,
not in a state the action applies to, invalid result), 2 usage error.
`;

const ACTIONS = ['start', 'pause', 'resume', 'abort'] as const;
type Action = (typeof ACTIONS)[number];

export async function run(args: readonly string[]): Promise<number> {
  const parsed = parse<{ config?: string[]; reason?: string }>(args, { ...CONFIG_OPTION, reason: { type: 'string' } }, HELP);
  if (!parsed) return 0;
  const [action, route, ...extra] = parsed.positionals;
  if (action === undefined || !(ACTIONS as readonly string[]).includes(action)) {
    throw new UsageError(action === undefined ? 'an action is required: start, pause, resume or abort' : `unknown action "${action}": use start, pause, resume or abort`);
  }
  if (route === undefined) throw new UsageError(`ROUTE is required (switchyard ramp ${action} ROUTE)`);
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
  const reason = parsed.values.reason;
  if (reason !== undefined && (action === 'start' || action === 'resume')) throw new UsageError(`--reason applies to pause and abort, not ${action}`);
  const now = Date.now();
  const result = await updateRoute(configSources(parsed.values.config), { route, plan: (r) => planRamp(r, action as Action, now, reason) });
  const after = result.after.ramp ?? {};
  const shown = ['startedAt', 'pausedAt', 'pauseReason', 'halted'].filter((k) => after[k] !== undefined)
    .map((k) => `${k}: ${typeof after[k] === 'object' ? JSON.stringify(after[k]) : String(after[k])}`);
  process.stdout.write(`${route}: ramp ${action}${result.written ? '' : ' (already so; nothing written)'}: ${shown.join(', ') || 'pending'}${result.written ? ` (${result.file}${result.layoutKept ? '' : '; layout re-rendered, comments kept'})` : ''}\n`);
  return 0;
}

/** RFC 3339, UTC, whole seconds: what an operator reads and writes. */
function timestamp(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function time(route: RouteData, field: string, value: unknown): number {
  const ms = typeof value === 'string' ? Date.parse(value) : value instanceof Date ? value.getTime() : Number.NaN;
  if (Number.isNaN(ms)) throw new ChangeError(`route "${route.name}": ramp.${field} ${JSON.stringify(value)} is not a timestamp`);
  return ms;
}

function planRamp(route: RouteData, action: Action, now: number, reason: string | undefined): EditOp[] {
  const r = route.ramp;
  if (r === undefined) throw new ChangeError(`route "${route.name}" has no ramp block; declare one first (from, to, steps, interval; see docs/ramps.md)`);
  const refuse = (why: string): never => { throw new ChangeError(`cannot ${action} the ramp of route "${route.name}": ${why}`); };
  const clear = (...fields: string[]): EditOp[] => fields.filter((f) => r[f] !== undefined).map((f) => ({ op: 'delete', path: ['ramp', f] }));
  switch (action) {
    case 'start':
      return [{ op: 'set', path: ['ramp', 'startedAt'], value: timestamp(now) }, ...clear('pausedAt', 'pauseReason', 'halted')];
    case 'pause': {
      if (r['halted'] !== undefined) refuse('it is halted (ramp start begins again)');
      if (r['pausedAt'] !== undefined) return [];
      if (r['startedAt'] === undefined || time(route, 'startedAt', r['startedAt']) > now) refuse('it has not started (ramp start)');
      if (finished(route, now)) refuse('it is done');
      const ops: EditOp[] = [{ op: 'set', path: ['ramp', 'pausedAt'], value: timestamp(now) }];
      if (reason !== undefined) ops.push({ op: 'set', path: ['ramp', 'pauseReason'], value: reason });
      return ops;
    }
    case 'resume': {
      if (r['halted'] !== undefined) refuse('it is halted (ramp start begins again from step 0)');
      if (r['pausedAt'] === undefined) return [];
      const pausedAt = time(route, 'pausedAt', r['pausedAt']);
      const started = r['startedAt'] === undefined ? pausedAt : time(route, 'startedAt', r['startedAt']);
      return [
        { op: 'set', path: ['ramp', 'startedAt'], value: timestamp(started + Math.max(0, now - pausedAt)) },
        ...clear('pausedAt', 'pauseReason'),
      ];
    }
    case 'abort':
      if (r['halted'] !== undefined) return [];
      return [{ op: 'set', path: ['ramp', 'halted'], value: { at: timestamp(now), reason: reason ?? 'aborted' } }];
  }
}

/** Every step's interval has passed (state `done`). */
function finished(route: RouteData, now: number): boolean {
  const r = route.ramp!;
  const steps = Array.isArray(r['steps']) ? r['steps'].length : 0;
  const interval = typeof r['interval'] === 'string' ? safeDuration(r['interval']) : undefined;
  if (steps === 0 || interval === undefined) return false;
  return now >= time(route, 'startedAt', r['startedAt']) + steps * interval;
}

function safeDuration(text: string): number | undefined {
  try {
    return parseDuration(text);
  } catch {
    return undefined;
  }
}
