// switchyard weights ROUTE BACKEND=W ... | --shift BACKEND=+N
import type { EditOp, RouteData } from '../config/edit.ts';
import { ChangeError, updateRoute, type UpdateResult } from '../config/update.ts';
import { CONFIG_OPTION, configSources, parse, UsageError } from './args.ts';

export const HELP = `usage: switchyard weights ROUTE BACKEND=WEIGHT ... --config SOURCE
       switchyard weights ROUTE --shift BACKEND=+N|-N --config SOURCE

Sets a route's backend weights where the config lives, keeping comments and
layout. The whole resulting config is validated first; nothing is written if
the router would reject it.

  BACKEND=WEIGHT       a whole number >= 0; backends not named keep their weight
  --shift NAME=+N|-N   move N percentage points of the route's traffic to (or
                       from) NAME, taken from (or given to) the route's other
                       backend; the route must have two backends. The result is
                       clamped to 0..100 and written as percent
  -c, --config SOURCE  a YAML file, a directory of them, or
                       kubernetes://NAMESPACE/CONFIGMAP; repeatable (merged as
                       for serve); default $SWITCHYARD_CONFIG
  -h, --help           this help

Exit status: 0 written (or nothing to change), 1 refused (invalid result, no
such route or backend, write failed), 2 usage error.
`;

export async function run(args: readonly string[]): Promise<number> {
  const parsed = parse<{ config?: string[]; shift?: string }>(args, { ...CONFIG_OPTION, shift: { type: 'string' } }, HELP);
  if (!parsed) return 0;
  const [route, ...assignments] = parsed.positionals;
  if (route === undefined) throw new UsageError('ROUTE is required (switchyard weights ROUTE BACKEND=WEIGHT ... or --shift BACKEND=+N)');
  const sources = configSources(parsed.values.config);
  const shift = parsed.values.shift;
  if (shift !== undefined && assignments.length > 0) throw new UsageError('give BACKEND=WEIGHT pairs or --shift, not both');
  if (shift === undefined && assignments.length === 0) throw new UsageError('nothing to change: give BACKEND=WEIGHT pairs or --shift BACKEND=+N');
  const plan = shift !== undefined ? shiftPlan(parseShift(shift)) : setPlan(parseAssignments(assignments));
  const result = await updateRoute(sources, { route, plan });
  process.stdout.write(`${describe(route, result)}\n`);
  const ramp = result.after.ramp;
  if (ramp !== undefined && ramp['halted'] === undefined && ramp['startedAt'] !== undefined) {
    process.stdout.write(`note: route "${route}" has a started ramp: its step splits the ${String(ramp['from'])}+${String(ramp['to'])} weight (docs/ramps.md)\n`);
  }
  return 0;
}

function parseAssignments(args: readonly string[]): Map<string, number> {
  const set = new Map<string, number>();
  for (const arg of args) {
    const m = /^([^=]+)=(.*)$/.exec(arg);
    if (!m) throw new UsageError(`"${arg}": expected BACKEND=WEIGHT`);
    const [, name, value] = m as unknown as [string, string, string];
    if (!/^\d+$/.test(value)) throw new UsageError(`"${arg}": the weight must be a whole number >= 0`);
    if (set.has(name)) throw new UsageError(`"${arg}": backend "${name}" is given twice`);
    set.set(name, Number(value));
  }
  return set;
}

function parseShift(arg: string): { name: string; by: number } {
  const m = /^([^=]+)=([+-])(\d+)$/.exec(arg);
  if (!m) throw new UsageError(`--shift "${arg}": expected BACKEND=+N or BACKEND=-N`);
  return { name: m[1]!, by: (m[2] === '-' ? -1 : 1) * Number(m[3]) };
}

function backendsOf(route: RouteData): NonNullable<RouteData['backends']> {
  return route.backends ?? [];
}

function requireBackend(route: RouteData, name: string): number {
  const i = backendsOf(route).findIndex((b) => b.name === name);
  if (i < 0) throw new ChangeError(`route "${route.name}" has no backend "${name}" (backends: ${backendsOf(route).map((b) => b.name).join(', ')})`);
  return i;
}

function setPlan(set: ReadonlyMap<string, number>): (route: RouteData) => EditOp[] {
  return (route) => [...set].map(([name, weight]) => ({ op: 'set', path: ['backends', requireBackend(route, name), 'weight'], value: weight }));
}

/**
 * Percentage points between the two backends: with weights summing to 100
 * that is plain addition; other sums are first read as percent (rounded), so
 * `--shift new=+10` always means ten points more of the traffic.
 */
function shiftPlan({ name, by }: { name: string; by: number }): (route: RouteData) => EditOp[] {
  return (route) => {
    const i = requireBackend(route, name);
    const backends = backendsOf(route);
    if (backends.length !== 2) throw new ChangeError(`--shift needs a route with exactly two backends; route "${route.name}" has ${backends.length}: set each with BACKEND=WEIGHT`);
    const j = 1 - i;
    const total = backends[i]!.weight + backends[j]!.weight;
    const share = total === 0 ? 0 : Math.round((backends[i]!.weight * 100) / total);
    const next = Math.min(100, Math.max(0, share + by));
    return [
      { op: 'set', path: ['backends', i, 'weight'], value: next },
      { op: 'set', path: ['backends', j, 'weight'], value: 100 - next },
    ];
  };
}

function describe(route: string, r: UpdateResult): string {
  const before = new Map(backendsOf(r.before).map((b) => [b.name, b.weight]));
  const weights = backendsOf(r.after).map((b) => (before.get(b.name) === b.weight ? `${b.name}=${b.weight}` : `${b.name} ${before.get(b.name)}→${b.weight}`)).join(', ');
  if (!r.written) return `${route}: ${weights} already; nothing written`;
  const notes = [r.file];
  if (r.attempts > 1) notes.push(`made again after ${r.attempts - 1} conflicting write${r.attempts > 2 ? 's' : ''}`);
  if (!r.layoutKept) notes.push('layout re-rendered, comments kept');
  return `${route}: ${weights} (${notes.join('; ')})`;
}
