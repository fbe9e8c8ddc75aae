// Where the Kubernetes API is and how to authenticate to it: the pod's
// service account when running in a cluster, a kubeconfig outside one.
//
// Order, as client-go's BuildConfigFromFlags and kubectl behave: an explicit
// kubeconfig (option or KUBECONFIG) first, so an operator can override what a
// pod would use; then the in-cluster service account; then ~/.kube/config.
// Only static credentials are supported (bearer token or token file, client
// certificate, basic auth); exec and auth-provider plugins would run
// arbitrary programs from a config file and are refused with a clear error.
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, dirname, isAbsolute, join } from 'node:path';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeCredentials {
  /** API server base URL, e.g. `https://10.0.0.1:443`, no trailing slash. */
  readonly server: string;
  /** PEM bundle to verify the server with; undefined: the system's CAs. */
  readonly ca: string | undefined;
  /** Client certificate and key (PEM), for certificate authentication. */
  readonly cert: string | undefined;
  readonly key: string | undefined;
  readonly insecureSkipTLSVerify: boolean;
  /** SNI / name to verify, when it differs from the server URL's host. */
  readonly tlsServerName: string | undefined;
  /**
   * The `Authorization` header value, or undefined. A function because a
   * projected service-account token is rotated on disk (hourly by kubelet)
   * and must be re-read while the process runs.
   */
  readonly authorization: () => Promise<string | undefined>;
  /** The namespace the context or the pod names, if any. */
  readonly namespace: string | undefined;
  /** For logs: `in-cluster` or `kubeconfig PATH (context NAME)`. */
  readonly origin: string;
}

export interface LoadCredentialsOptions {
  /** A kubeconfig path (or a KUBECONFIG-style list); overrides the environment. */
  readonly kubeconfig?: string;
  /** A context name instead of the kubeconfig's current-context. */
  readonly context?: string;
  /** Defaults to process.env. */
  readonly env?: NodeJS.ProcessEnv;
  /** Defaults to SERVICE_ACCOUNT_DIR. */
  readonly serviceAccountDir?: string;
}

export class KubeCredentialsError extends Error {
  override name = 'KubeCredentialsError';
}

export async function loadCredentials(opts: LoadCredentialsOptions = {}): Promise<KubeCredentials> {
  const env = opts.env ?? process.env;
  const explicit = opts.kubeconfig ?? nonEmpty(env['KUBECONFIG']);
  if (explicit !== undefined) return fromKubeconfig(explicit.split(delimiter).filter((p) => p !== ''), opts.context);
  const saDir = opts.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  const host = nonEmpty(env['KUBERNETES_SERVICE_HOST']);
  if (host !== undefined && existsSync(join(saDir, 'token'))) {
    return inCluster(host, nonEmpty(env['KUBERNETES_SERVICE_PORT']) ?? '443', saDir);
  }
  const home = join(env['HOME'] ?? homedir(), '.kube', 'config');
  if (existsSync(home)) return fromKubeconfig([home], opts.context);
  throw new KubeCredentialsError(
    'no Kubernetes credentials: not in a cluster (KUBERNETES_SERVICE_HOST unset or no service-account token), '
    + `no KUBECONFIG and no ${home}`);
}

async function inCluster(host: string, port: string, dir: string): Promise<KubeCredentials> {
  const tokenFile = join(dir, 'token');
  const caFile = join(dir, 'ca.crt');
  const nsFile = join(dir, 'namespace');
  const ca = existsSync(caFile) ? await readFile(caFile, 'utf8') : undefined;
  const namespace = existsSync(nsFile) ? (await readFile(nsFile, 'utf8')).trim() : undefined;
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    ca, cert: undefined, key: undefined, insecureSkipTLSVerify: false, tlsServerName: undefined,
    authorization: rereadToken(tokenFile),
    namespace,
    origin: 'in-cluster',
  };
}

/** Re-reads the token file at most once a minute (client-go does the same). */
function rereadToken(file: string): () => Promise<string> {
  let value = '';
  let readAt = 0;
  return async () => {
    const now = Date.now();
    if (now - readAt > 60_000 || value === '') {
      value = (await readFile(file, 'utf8')).trim();
      readAt = now;
    }
    return `Bearer ${value}`;
  };
}

// --- kubeconfig -------------------------------------------------------------

interface Named<T> { name: string; [k: string]: unknown; cluster?: T; user?: T; context?: T }
interface RawCluster {
  server?: string;
  'certificate-authority'?: string;
  'certificate-authority-data'?: string;
  'insecure-skip-tls-verify'?: boolean;
  'tls-server-name'?: string;
}
interface RawUser {
  token?: string;
  tokenFile?: string;
  'client-certificate'?: string;
  'client-certificate-data'?: string;
  'client-key'?: string;
  'client-key-data'?: string;
  username?: string;
  password?: string;
  exec?: unknown;
  'auth-provider'?: unknown;
}
interface RawContext { cluster?: string; user?: string; namespace?: string }
interface RawKubeconfig {
  'current-context'?: string;
  clusters?: Named<RawCluster>[];
  users?: Named<RawUser>[];
  contexts?: Named<RawContext>[];
}

/**
 * Several files (KUBECONFIG=a:b) merge as kubectl merges them: the first file
 * that sets current-context wins, and a cluster/user/context name is taken
 * from the first file that defines it.
 */
async function fromKubeconfig(files: string[], contextName: string | undefined): Promise<KubeCredentials> {
  // Imported here: a router in a cluster never loads a YAML parser on its main thread.
  const { parse } = await import('yaml');
  const loaded: { file: string; doc: RawKubeconfig }[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      // kubectl skips missing files of a list; a single missing file is an error.
      if (files.length > 1 && (err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new KubeCredentialsError(`cannot read kubeconfig ${file}: ${(err as Error).message}`);
    }
    let doc: unknown;
    try {
      doc = parse(text);
    } catch (err) {
      throw new KubeCredentialsError(`kubeconfig ${file} is not valid YAML: ${(err as Error).message}`);
    }
    if (doc !== null && typeof doc === 'object') loaded.push({ file, doc: doc as RawKubeconfig });
  }
  const where = files.join(delimiter);
  const ctxName = contextName ?? loaded.map((l) => l.doc['current-context']).find((c) => c !== undefined && c !== '');
  if (ctxName === undefined) throw new KubeCredentialsError(`kubeconfig ${where}: no current-context and no context given`);
  const find = <T>(kind: 'clusters' | 'users' | 'contexts', name: string): { file: string; value: T } => {
    for (const { file, doc } of loaded) {
      const entry = (doc[kind] ?? []).find((e) => e.name === name);
      const value = entry?.[kind.slice(0, -1) as 'cluster' | 'user' | 'context'];
      if (value !== undefined) return { file, value: value as T };
    }
    throw new KubeCredentialsError(`kubeconfig ${where}: no ${kind.slice(0, -1)} named "${name}"`);
  };
  const ctx = find<RawContext>('contexts', ctxName).value;
  if (ctx.cluster === undefined) throw new KubeCredentialsError(`kubeconfig ${where}: context "${ctxName}" names no cluster`);
  const { file: clusterFile, value: cluster } = find<RawCluster>('clusters', ctx.cluster);
  const { file: userFile, value: user } = ctx.user === undefined ? { file: clusterFile, value: {} as RawUser } : find<RawUser>('users', ctx.user);
  if (cluster.server === undefined) throw new KubeCredentialsError(`kubeconfig ${clusterFile}: cluster "${ctx.cluster}" has no server`);
  if (user.exec !== undefined || user['auth-provider'] !== undefined) {
    throw new KubeCredentialsError(
      `kubeconfig ${userFile}: user "${ctx.user}" uses an exec/auth-provider plugin, which switchyard does not run; `
      + 'use a token (e.g. a ServiceAccount token) or a client certificate');
  }
  // Relative paths in a kubeconfig are relative to the file that holds them.
  const path = (file: string, p: string): string => (isAbsolute(p) ? p : join(dirname(file), p));
  const pem = async (file: string, data: string | undefined, p: string | undefined): Promise<string | undefined> => {
    if (data !== undefined) return Buffer.from(data, 'base64').toString('utf8');
    if (p !== undefined) return readFile(path(file, p), 'utf8');
    return undefined;
  };
  const token = user.token;
  const tokenFile = user.tokenFile;
  let authorization: () => Promise<string | undefined>;
  if (token !== undefined && token !== '') authorization = async () => `Bearer ${token}`;
  else if (tokenFile !== undefined) authorization = rereadToken(path(userFile, tokenFile));
  else if (user.username !== undefined) {
    const basic = `Basic ${Buffer.from(`${user.username}:${user.password ?? ''}`).toString('base64')}`;
    authorization = async () => basic;
  } else authorization = async () => undefined;
  return {
    server: cluster.server.replace(/\/+$/, ''),
    ca: await pem(clusterFile, cluster['certificate-authority-data'], cluster['certificate-authority']),
    cert: await pem(userFile, user['client-certificate-data'], user['client-certificate']),
    key: await pem(userFile, user['client-key-data'], user['client-key']),
    insecureSkipTLSVerify: cluster['insecure-skip-tls-verify'] === true,
    tlsServerName: cluster['tls-server-name'],
    authorization,
    namespace: ctx.namespace,
    origin: `kubeconfig ${where} (context ${ctxName})`,
  };
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s;
}
