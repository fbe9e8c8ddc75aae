// A real kube-apiserver + etcd on loopback for tests, started with
// shared/tools/kube-apiserver/start.sh (binaries built by its build.sh, which
// .ci/run calls). Each test file gets its own pair on free ports, so test
// files and other people's API servers on this machine do not collide; each
// test makes its own namespace.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeClient } from '../src/kube/client.ts';
import { loadCredentials } from '../src/kube/credentials.ts';
import { ROOT } from './helpers.ts';

export const ADMIN_TOKEN = 'admin-token-0123456789';
export const READER_TOKEN = 'reader-token-0123456789';
/** The user the reader token authenticates as (no rights until a Role is bound). */
export const READER_USER = 'cm-reader';

/**
 * The tool directory: `shared/` sits beside the clone in CI and beside the
 * main checkout here (worktrees live one level deeper), so look upwards.
 */
export function kapiTools(): string {
  const fromEnv = process.env['KAPI_TOOLS'];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  for (let dir = resolve(ROOT, '..'); ; dir = dirname(dir)) {
    const candidate = join(dir, 'shared', 'tools', 'kube-apiserver');
    if (existsSync(join(candidate, 'start.sh'))) return candidate;
    if (dirname(dir) === dir) throw new Error('shared/tools/kube-apiserver not found beside the checkout (set KAPI_TOOLS)');
  }
}

export interface ApiServer {
  readonly dir: string;
  /** https://127.0.0.1:PORT */
  readonly server: string;
  readonly port: number;
  readonly adminKubeconfig: string;
  readonly readerKubeconfig: string;
  /** The serving certificate the API server made for itself (also its CA). */
  readonly caFile: string;
  readonly etcdUrl: string;
  /** A client with the admin (system:masters) token. */
  readonly admin: KubeClient;
  /** Stops the API server only (etcd keeps the data). */
  stopApiServer(): Promise<void>;
  /** Starts it again with the same flags, data and certificates; resolves when /readyz is ok. */
  startApiServer(): Promise<void>;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export async function startApiServer(): Promise<ApiServer> {
  const tools = kapiTools();
  const dir = mkdtempSync(join(tmpdir(), 'kapi-'));
  const [port, etcdPort, peerPort] = [await freePort(), await freePort(), await freePort()];
  const env = { ...process.env, API_PORT: String(port), ETCD_PORT: String(etcdPort), ETCD_PEER_PORT: String(peerPort), ADMIN_TOKEN, READER_TOKEN };
  const started = await runEnv('bash', [join(tools, 'start.sh'), dir], env);
  if (started.code !== 0) {
    throw new Error(`kube-apiserver did not start (build it with ${join(tools, 'build.sh')}):\n${started.stdout}${started.stderr}`);
  }
  const server = `https://127.0.0.1:${port}`;
  const adminKubeconfig = join(dir, 'admin.kubeconfig');
  const admin = new KubeClient(await loadCredentials({ kubeconfig: adminKubeconfig }));
  // The command line of the running API server, to start it again the same way.
  const pidFile = join(dir, 'apiserver.pid');
  const argv = readFileSync(`/proc/${readFileSync(pidFile, 'utf8').trim()}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
  const api: ApiServer = {
    dir, server, port, adminKubeconfig,
    readerKubeconfig: join(dir, 'reader.kubeconfig'),
    caFile: join(dir, 'certs', 'apiserver.crt'),
    etcdUrl: `http://127.0.0.1:${etcdPort}`,
    admin,
    async stopApiServer() {
      const pid = Number(readFileSync(pidFile, 'utf8'));
      process.kill(pid, 'SIGTERM');
      for (let i = 0; i < 200 && alive(pid); i++) await sleep(50);
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    },
    async startApiServer() {
      const log = openSync(join(dir, 'apiserver.log'), 'a');
      const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', log, log], detached: true });
      child.unref();
      writeFileSync(pidFile, String(child.pid));
      const deadline = Date.now() + 120_000;
      while (Date.now() < deadline) {
        const ready = await admin.send('GET', '/readyz', { timeoutMs: 2000 }).then((r) => r.text === 'ok', () => false);
        if (ready) return;
        await sleep(100);
      }
      throw new Error('kube-apiserver did not become ready again');
    },
    async stop() {
      await admin.close();
      await runEnv('bash', [join(tools, 'stop.sh'), dir], env);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return api;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function runEnv(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
  });
}

let counter = 0;
/** A fresh namespace (the server runs no controllers, so it is never cleaned: throw the server away). */
export async function createNamespace(admin: KubeClient, prefix = 't'): Promise<string> {
  const name = `${prefix}-${process.pid}-${++counter}`;
  await admin.request('POST', '/api/v1/namespaces', { body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name } } });
  return name;
}

/**
 * Grants `user` the verbs on configmaps named `names` in `namespace` (a Role
 * with resourceNames, as the chart's), plus `create` on events.
 */
export async function grantConfigMaps(admin: KubeClient, namespace: string, user: string, names: string[], verbs: string[]): Promise<void> {
  const role = `cm-${names.join('-')}`.slice(0, 60);
  await admin.request('POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${namespace}/roles`, {
    body: {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: role },
      rules: [
        { apiGroups: [''], resources: ['configmaps'], resourceNames: names, verbs },
        { apiGroups: [''], resources: ['events'], verbs: ['create'] },
      ],
    },
  });
  await admin.request('POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${namespace}/rolebindings`, {
    body: {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: role },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: role },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: user }],
    },
  });
}

/** Polls `check` every 20 ms until it returns true or `timeoutMs` passes. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * Compacts etcd's history up to its current revision (physical: done when this
 * returns), through etcd's JSON gateway: a watch resuming from an older
 * resourceVersion then gets 410 Gone.
 */
export async function compactEtcd(etcdUrl: string): Promise<void> {
  // Any range request answers with a header holding the current revision.
  const res = await fetch(`${etcdUrl}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: Buffer.from('/').toString('base64') }) });
  const revision = ((await res.json()) as { header: { revision: string } }).header.revision;
  const c = await fetch(`${etcdUrl}/v3/kv/compaction`, { method: 'POST', body: JSON.stringify({ revision, physical: true }) });
  if (c.status !== 200) throw new Error(`etcd compaction failed: ${c.status} ${await c.text()}`);
}
