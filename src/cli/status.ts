// switchyard status [ROUTE]: the config's weights next to what every replica
// runs (each one's admin /api/config), and whether all have converged; above
// them the fleet board, one migration stage per route.
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { loadConfigSources } from '../config/load.ts';
import { parseDuration } from '../config/parse.ts';
import { parseKubernetesSource } from '../config/source-spec.ts';
import { SourceAccess } from '../config/update.ts';
import { CONFIG_OPTION, configSources, parse, UsageError } from './args.ts';
import { table } from './table.ts';

export const HELP = `usage: switchyard status [ROUTE] --config SOURCE [--admin URL ...] [--wait DURATION] [--json]

Shows, per route, the migration stage and the weights in the config, then the
config version and weights each replica actually runs (read from its admin
/api/config), and whether every replica has converged on the config.

  -c, --config SOURCE  a YAML file, a directory of them, or
                       kubernetes://NAMESPACE/CONFIGMAP; repeatable; default
                       $SWITCHYARD_CONFIG
  --admin URL          a replica's admin address (http://host:port);
                       repeatable. Default: with a kubernetes:// source, every
                       pod matching --selector, reached through the API
                       server's pod proxy; else the config's admin address
  --selector LABELS    pods of the replicas (default
                       app.kubernetes.io/name=switchyard), in the ConfigMap's
                       namespace (or --namespace)
  --namespace NS       where the pods are
  --wait DURATION      poll until converged or DURATION passed (e.g. 30s)
  --json               the same as JSON
  -h, --help           this help

Exit status: 0 every replica runs the config, 1 not converged (a replica
behind, rejecting the config, or unreachable) or an invalid config, 2 usage.
`;

interface Values {
  config?: string[];
  admin?: string[];
  selector?: string;
  namespace?: string;
  wait?: string;
  json?: boolean;
}

interface Backend { readonly name: string; readonly weight: number }
interface Route {
  readonly name: string;
  readonly backends: readonly Backend[];
  readonly ramp?: { readonly from?: string; readonly to?: string; readonly halted?: unknown };
  readonly mirror?: { readonly to?: string; readonly percent?: number };
}

/** What a replica's /api/config says of a route's ramp (the fields used here). */
interface RampState {
  readonly from: string;
  readonly to: string;
  readonly state: string;
  readonly percent: number;
  readonly mirror: boolean;
}

/** What /api/config answers (the fields used here). */
interface ApiConfig {
  readonly version?: string;
  readonly lastError?: { readonly message?: string } | null;
  /** Per route: the weights in force and the ramp's state. */
  readonly routes?: readonly { readonly name: string; readonly backends: readonly Backend[]; readonly ramp?: RampState | null }[];
}

/** What one replica answered. */
interface ReplicaStatus {
  readonly name: string;
  readonly version: string | null;
  /** Route name → the weights in force there, "old=90 new=10". */
  readonly weights: Readonly<Record<string, string>>;
  readonly lastError: string | null;
  readonly error: string | null;
  readonly converged: boolean;
}

interface Status {
  readonly version: string;
  readonly files: readonly string[];
  readonly routes: readonly { readonly name: string; readonly stage: string; readonly weights: string }[];
  readonly replicas: readonly ReplicaStatus[];
  readonly converged: boolean;
}

/** A replica to ask: its name for the table, and how to GET its /api/config. */
interface Replica {
  readonly name: string;
  get(): Promise<{ status: number; text: string }>;
}

export async function run(args: readonly string[]): Promise<number> {
  const parsed = parse<Values>(args, {
    ...CONFIG_OPTION,
    admin: { type: 'string', multiple: true },
    selector: { type: 'string' },
    namespace: { type: 'string' },
    wait: { type: 'string' },
    json: { type: 'boolean' },
  }, HELP);
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  if (positionals.length > 1) throw new UsageError(`unexpected argument "${positionals[1]}"`);
  const only = positionals[0];
  const access = new SourceAccess(configSources(values.config));
  const waitMs = values.wait === undefined ? 0 : durationFlag('--wait', values.wait);
  const admins = (values.admin ?? []).map(adminUrl);
  const deadline = Date.now() + waitMs;
  try {
    for (;;) {
      const s = await collect(access, values, admins, only);
      if (s.converged || Date.now() >= deadline) {
        process.stdout.write(values.json ? `${JSON.stringify(s, null, 2)}\n` : render(s));
        return s.converged ? 0 : 1;
      }
      await sleep(Math.min(500, Math.max(0, deadline - Date.now())));
    }
  } finally {
    await access.close();
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

async function collect(access: SourceAccess, values: Values, admins: readonly string[], only: string | undefined): Promise<Status> {
  const loaded = loadConfigSources((await access.read()).files);
  const { effective } = loaded;
  const all = effective.routes as unknown as readonly Route[];
  const routes = only === undefined ? all : all.filter((r) => r.name === only);
  if (only !== undefined && routes.length === 0) throw new UsageError(`no route "${only}" in the config (routes: ${all.map((r) => r.name).join(', ')})`);
  const replicas = await Promise.all((await replicasOf(access, values, admins, effective.admin.address)).map((r) => ask(r, loaded.version, routes)));
  return {
    version: loaded.version,
    files: loaded.files,
    routes: routes.map((r) => ({ name: r.name, stage: stage(r, replicas.find((p) => p.ramps[r.name] !== undefined)?.ramps[r.name]), weights: weightsText(r.backends) })),
    replicas: replicas.map(({ ramps: _, ...rest }) => rest),
    converged: replicas.every((r) => r.converged),
  };
}

/** --admin URLs; else the pods behind a kubernetes:// source; else the config's own admin address on this machine. */
async function replicasOf(access: SourceAccess, values: Values, admins: readonly string[], adminAddress: string): Promise<Replica[]> {
  if (admins.length > 0) return admins.map((url) => ({ name: url, get: () => httpGet(`${url}/api/config`) }));
  const ref = access.specs.map(parseKubernetesSource).find((r) => r !== undefined);
  if (ref === undefined) {
    const url = localAdmin(adminAddress);
    return [{ name: url, get: () => httpGet(`${url}/api/config`) }];
  }
  const kube = await access.kube();
  const namespace = values.namespace ?? ref.namespace;
  const selector = values.selector ?? 'app.kubernetes.io/name=switchyard';
  const port = portOf(adminAddress);
  const pods = await kube.listPods(namespace, selector).catch((err: unknown) => {
    throw new Error(`cannot list pods ${selector} in ${namespace}: ${(err as Error).message}`);
  });
  if (pods.items.length === 0) throw new Error(`no pods match ${selector} in namespace ${namespace} (--selector, --namespace)`);
  return pods.items.map((pod) => ({ name: `pod/${pod.metadata.name}`, get: () => kube.podProxyGet(namespace, pod.metadata.name, port, '/api/config') }));
}

async function httpGet(url: string): Promise<{ status: number; text: string }> {
  // undici's request, not fetch(): fetch refuses some ports (the WHATWG "bad ports").
  const res = await request(url, { headersTimeout: 5_000, bodyTimeout: 5_000 });
  return { status: res.statusCode, text: await res.body.text() };
}

function portOf(address: string): number {
  return Number(/:(\d+)$/.exec(address)?.[1] ?? 9901);
}

/** The config's own admin address as a URL to reach from this machine (a wildcard address means this host). */
function localAdmin(address: string): string {
  const m = /^(?:\[(.*)\]|(.*)):(\d+)$/.exec(address);
  const host = m?.[1] ?? m?.[2] ?? '';
  const reachable = host === '' || host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '[::1]' : host.includes(':') ? `[${host}]` : host;
  return `http://${reachable}:${m?.[3] ?? '9901'}`;
}

async function ask(replica: Replica, version: string, routes: readonly Route[]): Promise<ReplicaStatus & { ramps: Record<string, RampState> }> {
  let body: ApiConfig;
  try {
    const { status, text } = await replica.get();
    if (status !== 200) throw new Error(`HTTP ${status}`);
    body = JSON.parse(text) as ApiConfig;
  } catch (err) {
    const { code, message } = err as NodeJS.ErrnoException;
    return { name: replica.name, version: null, weights: {}, lastError: null, error: code ?? message, converged: false, ramps: {} };
  }
  const running = new Map((body.routes ?? []).map((r) => [r.name, r]));
  const weights: Record<string, string> = {};
  const ramps: Record<string, RampState> = {};
  for (const r of routes) {
    const there = running.get(r.name);
    weights[r.name] = there ? weightsText(there.backends) : '(no such route)';
    if (there?.ramp) ramps[r.name] = there.ramp;
  }
  const runsIt = body.version === version;
  return {
    name: replica.name,
    version: body.version ?? null,
    weights,
    // A rejection matters only while the replica is not on the config.
    lastError: runsIt ? null : body.lastError?.message?.split('\n')[0] ?? null,
    error: null,
    converged: runsIt,
    ramps,
  };
}

function weightsText(backends: readonly Backend[]): string {
  return backends.map((b) => `${b.name}=${b.weight}`).join(' ');
}

/**
 * Where a route stands in its migration (the live page's fleet board says the
 * same): with a ramp, `from` is the old cluster and `to` the new one, and the
 * ramp's state as a replica runs it decides; without, the first backend is old
 * and the others new, and the configured weights decide.
 */
function stage(route: Route, ramp: RampState | undefined): string {
  if (ramp !== undefined) {
    if (ramp.state === 'halted') return 'halted';
    if (ramp.state === 'paused') return `paused at ${ramp.percent}%`;
    if (ramp.mirror) return 'mirroring';
    if (ramp.state === 'ramping' || ramp.state === 'done') return ramp.percent === 100 ? 'new only' : `ramping ${ramp.percent}%`;
  }
  if (route.ramp?.halted !== undefined) return 'halted';
  const from = route.ramp?.from ?? route.backends[0]?.name;
  if (route.backends.length < 2) return 'old only';
  const total = route.backends.reduce((sum, b) => sum + b.weight, 0);
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
