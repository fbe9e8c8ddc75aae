// switchyard status [ROUTE]: the config's weights next to what every replica
// runs (each one's admin /api/config), and whether all have converged; above
// them the fleet board, one migration stage per route.
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { loadConfigSources } from '../config/load.ts';
import type { EffectiveConfig } from '../config/model.ts';
import { parseDuration } from '../config/parse.ts';
import { readSources } from '../config/update.ts';
import { configSources, parse, UsageError } from './args.ts';
import { table } from './table.ts';

export const HELP = `usage: switchyard status [ROUTE] --config SOURCE [--admin URL ...] [--wait DURATION] [--json]

Shows, per route, the migration stage and the weights in the config, then the
config version and weights each replica actually runs (read from its admin
/api/config), and whether every replica has converged on the config.

  -c, --config SOURCE  a YAML file, a directory of them, or
                       kubernetes://NAMESPACE/CONFIGMAP; repeatable; default
                       $SWITCHYARD_CONFIG
  --admin URL          a replica's admin address (http://host:port);
                       repeatable. Default: the config's admin address
  --wait DURATION      poll until converged or DURATION passed (e.g. 30s)
  --json               the same as JSON
  -h, --help           this help

Exit status: 0 every replica runs the config, 1 not converged (a replica
behind, rejecting the config, or unreachable) or an invalid config, 2 usage.
`;

interface Values {
  config?: string[];
  admin?: string[];
  wait?: string;
  json?: boolean;
}

interface Backend { readonly name: string; readonly weight: number }
interface Route {
  readonly name: string;
  readonly backends: readonly Backend[];
  readonly ramp?: { readonly from?: string; readonly halted?: unknown };
  readonly mirror?: { readonly to?: string; readonly percent?: number };
}

/** What one replica answered. */
export interface ReplicaStatus {
  readonly name: string;
  readonly version: string | null;
  /** Route name → the weights it runs, "old=90 new=10". */
  readonly weights: Readonly<Record<string, string>>;
  readonly lastError: string | null;
  readonly error: string | null;
  readonly converged: boolean;
}

export interface Status {
  readonly version: string;
  readonly files: readonly string[];
  readonly routes: readonly { readonly name: string; readonly stage: string; readonly weights: string }[];
  readonly replicas: readonly ReplicaStatus[];
  readonly converged: boolean;
}

export async function run(args: readonly string[]): Promise<number> {
  const parsed = parse<Values>(args, {
    config: { type: 'string', short: 'c', multiple: true },
    admin: { type: 'string', multiple: true },
    wait: { type: 'string' },
    json: { type: 'boolean' },
  }, HELP);
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  if (positionals.length > 1) throw new UsageError(`unexpected argument "${positionals[1]}"`);
  const only = positionals[0];
  const sources = configSources(values.config);
  const waitMs = values.wait === undefined ? 0 : durationFlag('--wait', values.wait);
  const admins = (values.admin ?? []).map(adminUrl);
  const deadline = Date.now() + waitMs;
  for (;;) {
    const s = await collect(sources, admins, only);
    if (s.converged || Date.now() >= deadline) {
      process.stdout.write(values.json ? `${JSON.stringify(s, null, 2)}\n` : render(s));
      return s.converged ? 0 : 1;
    }
    await sleep(Math.min(500, Math.max(0, deadline - Date.now())));
  }
}

function durationFlag(flag: string, text: string): number {
  try {
    return parseDuration(text);
  } catch (err) {
    throw new UsageError(`${flag}: ${(err as Error).message}`);
  }
}

function adminUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`--admin "${text}": expected a URL such as http://10.0.0.7:9901`);
  }
  if (url.protocol !== 'http:') throw new UsageError(`--admin "${text}": only http:// admin addresses are supported`);
  return url.origin;
}

async function collect(sources: readonly string[], admins: readonly string[], only: string | undefined): Promise<Status> {
  const loaded = loadConfigSources(await readSources(sources));
  const effective = loaded.effective as EffectiveConfig;
  const all = effective.routes as unknown as readonly Route[];
  const routes = only === undefined ? all : all.filter((r) => r.name === only);
  if (only !== undefined && routes.length === 0) throw new UsageError(`no route "${only}" in the config (routes: ${all.map((r) => r.name).join(', ')})`);
  const urls = admins.length > 0 ? admins : [localAdmin(effective.admin.address)];
  const replicas = await Promise.all(urls.map((url) => replica(url, url, loaded.version, routes)));
  return {
    version: loaded.version,
    files: loaded.files,
    routes: routes.map((r) => ({ name: r.name, stage: stage(r), weights: weightsText(r.backends) })),
    replicas,
    converged: replicas.every((r) => r.converged),
  };
}

/** The config's own admin address as a URL to reach from this machine (a wildcard address means this host). */
function localAdmin(address: string): string {
  const m = /^(?:\[(.*)\]|(.*)):(\d+)$/.exec(address);
  const host = m?.[1] ?? m?.[2] ?? '';
  const reachable = host === '' || host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '[::1]' : host.includes(':') ? `[${host}]` : host;
  return `http://${reachable}:${m?.[3] ?? '9901'}`;
}

async function replica(name: string, url: string, version: string, routes: readonly Route[]): Promise<ReplicaStatus> {
  let body: { version?: string; config?: { routes?: Route[] }; lastError?: { message?: string } | null };
  try {
    // undici's request, not fetch(): fetch refuses some ports (the WHATWG "bad ports").
    const res = await request(`${url}/api/config`, { headersTimeout: 5_000, bodyTimeout: 5_000 });
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new Error(`HTTP ${res.statusCode}`);
    }
    body = await res.body.json() as typeof body;
  } catch (err) {
    const { code, message } = err as NodeJS.ErrnoException;
    return { name, version: null, weights: {}, lastError: null, error: code ?? message, converged: false };
  }
  const running = new Map((body.config?.routes ?? []).map((r) => [r.name, r]));
  const weights: Record<string, string> = {};
  for (const r of routes) weights[r.name] = running.has(r.name) ? weightsText(running.get(r.name)!.backends) : '(no such route)';
  const runsIt = body.version === version;
  return {
    name,
    version: body.version ?? null,
    weights,
    // A rejection matters only while the replica is not on the config.
    lastError: runsIt ? null : body.lastError?.message?.split('\n')[0] ?? null,
    error: null,
    converged: runsIt,
  };
}

function weightsText(backends: readonly Backend[]): string {
  return backends.map((b) => `${b.name}=${b.weight}`).join(' ');
}

/**
 * Where a route stands in its migration, from its config: the first backend
 * (or the ramp's `from`) is the old cluster, the others the new one.
 */
export function stage(route: Route): string {
  if (route.ramp?.halted !== undefined) return 'halted';
  const from = route.ramp?.from ?? route.backends[0]?.name;
  const total = route.backends.reduce((sum, b) => sum + b.weight, 0);
  if (route.backends.length < 2) return 'old only';
  if (total === 0) return 'no traffic (all weights 0)';
  const moved = route.backends.filter((b) => b.name !== from).reduce((sum, b) => sum + b.weight, 0);
  if (moved === 0) return route.mirror !== undefined && (route.mirror.percent ?? 100) > 0 ? 'mirroring' : 'override-only';
  if (moved === total) return 'new only';
  return `ramping ${Math.round((moved * 100) / total)}%`;
}

function render(s: Status): string {
  const board = table([['ROUTE', 'STAGE', 'CONFIG', ...s.replicas.map((r) => r.name)],
    ...s.routes.map((r) => [r.name, r.stage, r.weights, ...s.replicas.map((p) => (p.error ? '-' : p.weights[r.name] === r.weights ? 'same' : p.weights[r.name] ?? '-'))])]);
  const replicas = table([['REPLICA', 'VERSION', 'STATE'], ...s.replicas.map((r) => [
    r.name, r.version ?? '-', r.error ? `unreachable: ${r.error}` : r.converged ? 'current' : r.lastError ? `rejects the config: ${r.lastError}` : 'behind',
  ])]);
  const current = s.replicas.filter((r) => r.converged).length;
  const verdict = s.converged
    ? `converged: all ${s.replicas.length} replicas run version ${s.version}`
    : `not converged: ${current} of ${s.replicas.length} replicas run version ${s.version}`;
  return `config version ${s.version} (${s.files.join(', ')})\n\n${board}\n${replicas}\n${verdict}\n`;
}
