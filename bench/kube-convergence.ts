// Change → in effect on every replica, through a real kube-apiserver: N router
// processes read their routes with `--config kubernetes://NS/routes` (as the
// chart's pods do, with a Role limited to that ConfigMap); each of P weight
// changes is timed from just before it is made until every replica's admin
// /api/config shows the new resourceVersion in force with the new weights.
// Replicas are polled every 5 ms, so figures are ±5 ms. A change is either a
// merge patch sent by an admin client (mode `patch`) or `switchyard weights`
// (mode `weights`: the command's own run(), argument parsing included, called
// in this process so that a Node start of 1-2 s per change on a busy machine
// does not drown the figure; it reads the ConfigMap, validates the whole
// config and patches conditionally on the resourceVersion).
//
// Compare: a mounted ConfigMap volume reaches a pod only on kubelet's sync,
// 60–120 s (syncFrequency 1 m, jittered, plus the cache TTL), each pod at its
// own moment (Kubernetes docs, "ConfigMaps: mounted ConfigMaps are updated
// automatically").
//
// Usage: node bench/kube-convergence.ts [replicas=3] [changes=50] [patch|weights]   → one JSON line
// Needs the API server binaries (shared/tools/kube-apiserver/build.sh).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { run as weightsCommand } from '../src/cli/weights.ts';
import { createNamespace, grantConfigMaps, READER_USER, startApiServer, type ApiServer } from '../test/kube-apiserver.ts';

const CLI = new URL('../src/cli/main.ts', import.meta.url).pathname;

export interface Replica {
  readonly name: string;
  readonly child: ChildProcess;
  readonly adminUrl: string;
  readonly url: string;
}

/** The routes file of the ConfigMap: one route, old/new at the given weights. */
export function routesYaml(backends: { old: string; new: string }, oldWeight: number, newWeight: number): string {
  return `# weights moved by the convergence run\n${stringify({
    routes: [{
      name: 'billing', hosts: ['billing.example.com'],
      backends: [{ name: 'old', url: backends.old, weight: oldWeight }, { name: 'new', url: backends.new, weight: newWeight }],
    }],
  })}`;
}

/**
 * A namespace with the routes ConfigMap and the reader's Role on it, and a
 * listeners file: what `serve --config LISTENERS --config kubernetes://NS/routes` reads.
 */
export async function setUpRoutes(api: ApiServer, backends: { old: string; new: string }): Promise<{ namespace: string; listeners: string }> {
  const namespace = await createNamespace(api.admin, 'conv');
  await api.admin.createConfigMap(namespace, { metadata: { name: 'routes' }, data: { 'routes.yaml': routesYaml(backends, 100, 0) } });
  await grantConfigMaps(api.admin, namespace, READER_USER, ['routes'], ['get', 'list', 'watch']);
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-listeners-'));
  const listeners = join(dir, 'listeners.yaml');
  writeFileSync(listeners, stringify({ entrypoint: { address: '127.0.0.1:0' }, admin: { address: '127.0.0.1:0' }, shutdown: { drainDelay: '0s', timeout: '2s' } }));
  return { namespace, listeners };
}

/** Starts `switchyard serve` with the reader's kubeconfig as POD_NAME=name; resolves once it serves. */
export async function startReplica(api: ApiServer, name: string, sources: string[], extraEnv: Record<string, string> = {}): Promise<Replica> {
  const args = [CLI, 'serve', ...sources.flatMap((s) => ['--config', s])];
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, KUBECONFIG: api.readerKubeconfig, POD_NAME: name, SWITCHYARD_LOG_LEVEL: 'info', ...extraEnv },
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
  const started = await new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        if (entry['msg'] === 'switchyard started') resolve(entry);
      } catch { /* not a log line */ }
    });
    child.once('exit', (code) => reject(new Error(`replica ${name} exited with ${code}: ${stderr}`)));
  });
  const port = (addr: unknown): number => Number(String(addr).split(':').pop());
  return { name, child, adminUrl: `http://127.0.0.1:${port(started['admin'])}`, url: `http://127.0.0.1:${port(started['entrypoint'])}` };
}

export async function stopReplica(r: Replica): Promise<void> {
  if (r.child.exitCode !== null) return;
  const exited = new Promise((resolve) => r.child.once('exit', resolve));
  r.child.kill('SIGTERM');
  await exited;
}

interface ApiConfig {
  config: { routes: { name: string; backends: { name: string; weight: number }[] }[] };
  sources: { kind: string; resourceVersion?: string | null }[];
}

/** True when the replica runs `rv` of the ConfigMap with old at 100 - `newWeight` and new at `newWeight`. */
export async function runs(adminUrl: string, rv: string, newWeight: number): Promise<boolean> {
  const s = (await (await fetch(`${adminUrl}/api/config`)).json()) as ApiConfig;
  const src = s.sources.find((x) => x.kind === 'kubernetes');
  const backends = s.config.routes.find((r) => r.name === 'billing')?.backends ?? [];
  const weight = (name: string): number | undefined => backends.find((b) => b.name === name)?.weight;
  return src?.resourceVersion === rv && weight('old') === 100 - newWeight && weight('new') === newWeight;
}

/** Sets old = 100 - weight, new = weight in the routes ConfigMap; resolves with the ConfigMap's new resourceVersion. */
export type SetWeights = (weight: number) => Promise<string>;

/** SetWeights by a merge patch of routes.yaml with the admin client. */
export function patchWeights(api: ApiServer, namespace: string, backends: { old: string; new: string }): SetWeights {
  return async (weight) => {
    const cm = await api.admin.patchConfigMapData(namespace, 'routes', { 'routes.yaml': routesYaml(backends, 100 - weight, weight) });
    return cm.metadata.resourceVersion!;
  };
}

/** What one in-process run of a command printed, and its exit code. */
export interface CommandRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a command module's run(ARGS) in this process with ENV set meanwhile,
 * keeping what it writes to stdout/stderr as text. Only strings are kept: a
 * node:test child reports to its runner with Buffers, which pass through.
 */
export async function runInProcess(command: (args: readonly string[]) => Promise<number | undefined>, args: readonly string[], env: Readonly<Record<string, string>>): Promise<CommandRun> {
  const kept = { stdout: '', stderr: '' };
  const saved = { env: { ...process.env }, stdout: process.stdout.write, stderr: process.stderr.write };
  const capture = (stream: 'stdout' | 'stderr') => function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]): boolean {
    if (typeof chunk === 'string') {
      kept[stream] += chunk;
      return true;
    }
    return (saved[stream] as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  };
  Object.assign(process.env, env);
  process.stdout.write = capture('stdout') as typeof process.stdout.write;
  process.stderr.write = capture('stderr') as typeof process.stderr.write;
  try {
    const code = await command(args);
    return { code: code ?? 0, ...kept };
  } finally {
    process.stdout.write = saved.stdout;
    process.stderr.write = saved.stderr;
    for (const k of Object.keys(env)) {
      if (saved.env[k] === undefined) delete process.env[k];
      else process.env[k] = saved.env[k];
    }
  }
}

/**
 * SetWeights by `switchyard weights billing old=100-W new=W --config LISTENERS
 * --config kubernetes://NS/routes` with the admin's kubeconfig, in process
 * (runInProcess); throws unless it exits 0 having written that change.
 */
export function commandWeights(api: ApiServer, namespace: string, listeners: string): SetWeights {
  const source = `kubernetes://${namespace}/routes`;
  return async (weight) => {
    const args = ['weights', 'billing', `old=${100 - weight}`, `new=${weight}`, '--config', listeners, '--config', source];
    const r = await runInProcess(weightsCommand, args.slice(1), { KUBECONFIG: api.adminKubeconfig });
    const said = new RegExp(`^billing: old \\d+→${100 - weight}, new \\d+→${weight} \\(${source}/routes\\.yaml\\)\\n$`);
    if (r.code !== 0 || !said.test(r.stdout)) throw new Error(`switchyard ${args.join(' ')}: exit ${r.code}: ${r.stdout}${r.stderr}`);
    return (await api.admin.getConfigMap(namespace, 'routes')).metadata.resourceVersion!;
  };
}

/**
 * P successive weight changes (new = 1..P, old = 100 - new) made by `set`
 * (default: patchWeights; e.g. `switchyard weights` instead); for each, the
 * milliseconds from just before the change until every replica runs it.
 * Throws if one does not within timeoutMs.
 */
export async function convergence(replicas: readonly Replica[], set: SetWeights, patches: number, timeoutMs = 10_000): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 1; i <= patches; i++) {
    const weight = i % 100;
    const t0 = performance.now();
    const rv = await set(weight);
    const pending = new Set(replicas);
    while (pending.size > 0) {
      for (const r of [...pending]) if (await runs(r.adminUrl, rv, weight)) pending.delete(r);
      if (pending.size === 0) break;
      if (performance.now() - t0 > timeoutMs) throw new Error(`patch ${i} (rv ${rv}) not in effect on ${[...pending].map((r) => r.name).join(', ')} after ${timeoutMs} ms`);
      await sleep(5);
    }
    samples.push(performance.now() - t0);
  }
  return samples;
}

export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

if (import.meta.main) {
  const n = Number(process.argv[2] ?? 3);
  const patches = Number(process.argv[3] ?? 50);
  const mode = process.argv[4] ?? 'patch';
  if (mode !== 'patch' && mode !== 'weights') throw new Error(`mode: patch or weights, not "${mode}"`);
  const api = await startApiServer();
  // Backends are never called: only the config is measured.
  const backends = { old: 'http://127.0.0.1:9', new: 'http://127.0.0.1:10' };
  const replicas: Replica[] = [];
  try {
    const { namespace, listeners } = await setUpRoutes(api, backends);
    for (let i = 0; i < n; i++) replicas.push(await startReplica(api, `replica-${i}`, [listeners, `kubernetes://${namespace}/routes`]));
    const set = mode === 'patch' ? patchWeights(api, namespace, backends) : commandWeights(api, namespace, listeners);
    const samples = await convergence(replicas, set, patches);
    const sorted = [...samples].sort((a, b) => a - b);
    const r = (x: number): number => Math.round(x * 10) / 10;
    process.stdout.write(`${JSON.stringify({
      bench: 'kube-convergence', mode, replicas: n, patches,
      p50Ms: r(percentile(sorted, 50)), p99Ms: r(percentile(sorted, 99)), maxMs: r(sorted.at(-1)!), minMs: r(sorted[0]!),
      volumeModeSeconds: '60-120 (kubelet syncFrequency 1m + jitter + cache TTL; not measured here)',
    })}\n`);
  } finally {
    await Promise.all(replicas.map(stopReplica));
    await api.stop();
  }
}
