// What a new config changes against the one in force, in the terms an
// operator reads in a reload log: routes added and removed, hosts no route
// serves any more, and each weight that moved.
import type { Config, RouteConfig } from './model.ts';

export interface ConfigDiff {
  readonly routesAdded: readonly string[];
  readonly routesRemoved: readonly string[];
  /** Routes in both whose settings changed (weights aside). */
  readonly routesChanged: readonly string[];
  /** Hosts that some route served before and none serves now (lowercased). */
  readonly hostsRemoved: readonly string[];
  /** "billing/new 10 → 50"; a backend added or removed shows "-" on its missing side. */
  readonly weights: readonly string[];
}

/** Every distinct host the routes of `config` serve (a host with several path prefixes counts once). */
export function hostsOf(config: Config): Set<string> {
  const hosts = new Set<string>();
  for (const r of config.routes) for (const h of r.hosts) hosts.add(h);
  return hosts;
}

export function diffConfigs(before: Config, after: Config): ConfigDiff {
  const old = new Map(before.routes.map((r) => [r.name, r]));
  const now = new Map(after.routes.map((r) => [r.name, r]));
  const routesAdded = after.routes.filter((r) => !old.has(r.name)).map((r) => r.name);
  const routesRemoved = before.routes.filter((r) => !now.has(r.name)).map((r) => r.name);
  const routesChanged: string[] = [];
  const weights: string[] = [];
  for (const r of after.routes) {
    const prev = old.get(r.name);
    // The loader hands back an unchanged route as the same object.
    if (prev === undefined || prev === r) continue;
    const was = new Map(prev.backends.map((b) => [b.name, b.weight]));
    const is = new Map(r.backends.map((b) => [b.name, b.weight]));
    for (const b of prev.backends) {
      const w = is.get(b.name);
      if (w !== b.weight) weights.push(`${r.name}/${b.name} ${b.weight} → ${w ?? '-'}`);
    }
    for (const b of r.backends) if (!was.has(b.name)) weights.push(`${r.name}/${b.name} - → ${b.weight}`);
    if (!sameExceptWeights(prev, r)) routesChanged.push(r.name);
  }
  const kept = hostsOf(after);
  const hostsRemoved = [...hostsOf(before)].filter((h) => !kept.has(h));
  return { routesAdded, routesRemoved, routesChanged, hostsRemoved, weights };
}

// A route whose only change is weights is not reported as changed, since the
// weights line says it all.
function sameExceptWeights(a: RouteConfig, b: RouteConfig): boolean {
  const strip = (r: RouteConfig) => JSON.stringify({ ...r, backends: r.backends.map((x) => ({ ...x, weight: 0 })) });
  return strip(a) === strip(b);
}

/** True when nothing a reload log would name changed. */
export function isEmptyDiff(d: ConfigDiff): boolean {
  return d.routesAdded.length + d.routesRemoved.length + d.routesChanged.length + d.hostsRemoved.length + d.weights.length === 0;
}
