// A small Kubernetes API client: just what switchyard needs — ConfigMaps (get,
// list, watch, patch, replace), Events and the pods' admin API through the
// API server's pod proxy.
//
// Why not @kubernetes/client-node: measured here (2.0.1, Node 24), it installs
// 68 packages / 83 MB (openid-client, ws, tar-fs, socks, js-yaml 5, ...) and
// takes 1.1–1.7 s to import on this 2-core machine, about 10× undici alone;
// it pins @types/node ^26 against our 24; it makes requests through undici's
// fetch(), which PITFALLS.md tells us to avoid; and its Watch still arms a 30 s
// client-side timer (since 2.0 an inactivity timer rather than 1.x's abort of
// healthy streams, kubernetes-client/javascript#3020), so a quiet watch is
// torn down and re-established twice a minute. Switchyard needs four REST
// calls and one watch loop over undici, which is already a dependency: a few
// hundred lines we control, with the watch semantics spelled out in watch.ts.
import { Pool } from 'undici';
import type { KubeCredentials } from './credentials.ts';

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generateName?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  creationTimestamp?: string;
}

export interface ConfigMap {
  apiVersion?: 'v1';
  kind?: 'ConfigMap';
  metadata: ObjectMeta;
  data?: Record<string, string>;
  binaryData?: Record<string, string>;
}

export interface Pod {
  metadata: ObjectMeta;
  spec?: { containers?: { name: string; ports?: { name?: string; containerPort: number }[] }[] };
  status?: {
    phase?: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
  };
}

export interface ObjectReference {
  apiVersion: string;
  kind: string;
  namespace: string;
  name: string;
  uid?: string;
  resourceVersion?: string;
}

/** A core/v1 Event as `kubectl describe` and `kubectl get events` show it. */
export interface KubeEvent {
  metadata: ObjectMeta;
  involvedObject: ObjectReference;
  reason: string;
  message: string;
  type: 'Normal' | 'Warning';
  source?: { component?: string; host?: string };
  reportingComponent?: string;
  reportingInstance?: string;
  firstTimestamp?: string;
  lastTimestamp?: string;
  count?: number;
}

export interface List<T> {
  metadata: { resourceVersion: string };
  items: T[];
}

/** A Kubernetes `Status` answer (4xx/5xx). `status` is the HTTP status. */
export class KubeError extends Error {
  override name = 'KubeError';
  readonly status: number;
  /** The Status reason, e.g. `Conflict`, `NotFound`, `Forbidden`, `Expired`, `Gone`. */
  readonly reason: string;

  constructor(status: number, reason: string, message: string) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

export interface RequestOptions {
  readonly query?: Record<string, string | number | boolean | undefined>;
  readonly body?: unknown;
  /** Defaults to application/json; PATCH takes application/merge-patch+json etc. */
  readonly contentType?: string;
  readonly signal?: AbortSignal;
  /** For this request's headers and body; defaults to the client's. */
  readonly timeoutMs?: number;
}

export interface KubeClientOptions {
  /** Per-request timeout (headers and body) of ordinary requests; watches have their own. Default 10 s. */
  readonly timeoutMs?: number;
  /** Connections kept to the API server; each open watch holds one. Default 4. */
  readonly connections?: number;
}

const enc = encodeURIComponent;

export class KubeClient {
  readonly credentials: KubeCredentials;
  readonly #pool: Pool;
  readonly #timeoutMs: number;

  constructor(credentials: KubeCredentials, opts: KubeClientOptions = {}) {
    this.credentials = credentials;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#pool = new Pool(credentials.server, {
      connections: opts.connections ?? 4,
      connect: {
        ca: credentials.ca,
        cert: credentials.cert,
        key: credentials.key,
        rejectUnauthorized: !credentials.insecureSkipTLSVerify,
        servername: credentials.tlsServerName,
        // TCP keep-alive probes find a watch whose peer vanished without a FIN.
        keepAlive: true,
        keepAliveInitialDelay: 30_000,
      },
    });
  }

  /** One API call; a JSON answer is parsed, a non-2xx answer throws KubeError. */
  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const { status, text } = await this.send(method, path, opts);
    if (status < 200 || status > 299) throw errorOf(status, text);
    return (text === '' ? undefined : JSON.parse(text)) as T;
  }

  /**
   * Starts a request and hands back the status and the body stream without
   * reading it (watches). No body timeout unless given: a watch is quiet for
   * as long as nothing changes.
   */
  async stream(path: string, opts: RequestOptions & { readonly bodyTimeoutMs?: number } = {}): Promise<{ status: number; body: AsyncIterable<Buffer> & { destroy(err?: Error): void } }> {
    const res = await this.#pool.request({
      method: 'GET',
      path: withQuery(path, opts.query),
      headers: await this.#headers(undefined),
      signal: opts.signal,
      headersTimeout: opts.timeoutMs ?? this.#timeoutMs,
      bodyTimeout: opts.bodyTimeoutMs ?? 0,
    });
    return { status: res.statusCode, body: res.body };
  }

  /** One API call answered with its status and body text, whatever the status; only transport failures throw. */
  async send(method: string, path: string, opts: RequestOptions = {}): Promise<{ status: number; text: string }> {
    const timeout = opts.timeoutMs ?? this.#timeoutMs;
    const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const res = await this.#pool.request({
      method: method as 'GET',
      path: withQuery(path, opts.query),
      headers: await this.#headers(body === undefined ? undefined : opts.contentType ?? 'application/json'),
      body,
      signal: opts.signal,
      headersTimeout: timeout,
      bodyTimeout: timeout,
    });
    return { status: res.statusCode, text: await res.body.text() };
  }

  async #headers(contentType: string | undefined): Promise<Record<string, string>> {
    const h: Record<string, string> = { accept: 'application/json', 'user-agent': 'switchyard' };
    const auth = await this.credentials.authorization();
    if (auth !== undefined) h['authorization'] = auth;
    if (contentType !== undefined) h['content-type'] = contentType;
    return h;
  }

  // --- ConfigMaps -------------------------------------------------------------

  getConfigMap(namespace: string, name: string, signal?: AbortSignal): Promise<ConfigMap> {
    return this.request('GET', `/api/v1/namespaces/${enc(namespace)}/configmaps/${enc(name)}`, { signal });
  }

  /**
   * Lists the one ConfigMap `name` (zero or one item) with the list's
   * resourceVersion to watch from. A Role that grants list/watch with
   * `resourceNames` allows exactly this request: the field selector is what
   * the authorizer matches the name against (without it: 403).
   */
  listConfigMap(namespace: string, name: string, signal?: AbortSignal): Promise<List<ConfigMap>> {
    return this.request('GET', `/api/v1/namespaces/${enc(namespace)}/configmaps`, {
      query: { fieldSelector: `metadata.name=${name}` }, signal,
    });
  }

  createConfigMap(namespace: string, cm: ConfigMap): Promise<ConfigMap> {
    return this.request('POST', `/api/v1/namespaces/${enc(namespace)}/configmaps`, {
      body: { apiVersion: 'v1', kind: 'ConfigMap', ...cm },
    });
  }

  /**
   * Replaces the whole ConfigMap. With `metadata.resourceVersion` set (as a
   * ConfigMap just read has it) the API server refuses the write with 409
   * Conflict if someone else wrote in between: read again and retry.
   */
  replaceConfigMap(namespace: string, cm: ConfigMap): Promise<ConfigMap> {
    return this.request('PUT', `/api/v1/namespaces/${enc(namespace)}/configmaps/${enc(cm.metadata.name)}`, {
      body: { apiVersion: 'v1', kind: 'ConfigMap', ...cm },
    });
  }

  /**
   * Sets (string) or removes (null) keys of `data` with a JSON merge patch,
   * leaving the other keys alone. Given `resourceVersion`, the patch carries
   * it as a precondition: 409 Conflict if the object has moved on since.
   */
  patchConfigMapData(namespace: string, name: string, data: Record<string, string | null>, resourceVersion?: string): Promise<ConfigMap> {
    const body: Record<string, unknown> = { data };
    if (resourceVersion !== undefined) body['metadata'] = { resourceVersion };
    return this.request('PATCH', `/api/v1/namespaces/${enc(namespace)}/configmaps/${enc(name)}`, {
      body, contentType: 'application/merge-patch+json',
    });
  }

  // --- Events -----------------------------------------------------------------

  createEvent(namespace: string, event: KubeEvent): Promise<KubeEvent> {
    return this.request('POST', `/api/v1/namespaces/${enc(namespace)}/events`, {
      body: { apiVersion: 'v1', kind: 'Event', ...event },
    });
  }

  listEvents(namespace: string, fieldSelector?: string): Promise<List<KubeEvent>> {
    return this.request('GET', `/api/v1/namespaces/${enc(namespace)}/events`, { query: { fieldSelector } });
  }

  // --- Pods (for `switchyard status`) -------------------------------------------

  listPods(namespace: string, labelSelector: string): Promise<List<Pod>> {
    return this.request('GET', `/api/v1/namespaces/${enc(namespace)}/pods`, { query: { labelSelector } });
  }

  /**
   * GET `path` on a pod's `port` through the API server's pod proxy
   * (`/api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH`), so the admin port
   * of every replica is reachable from outside the cluster with nothing but
   * API credentials (RBAC: `get` on `pods/proxy`). Any HTTP status is
   * returned as is; only transport failures throw.
   */
  async podProxyGet(namespace: string, pod: string, port: number | string, path: string, signal?: AbortSignal): Promise<{ status: number; text: string }> {
    const p = path.startsWith('/') ? path : `/${path}`;
    return this.send('GET', `/api/v1/namespaces/${enc(namespace)}/pods/${enc(pod)}:${enc(String(port))}/proxy${p}`, { signal });
  }

  close(): Promise<void> {
    return this.#pool.close();
  }
}

function withQuery(path: string, query: RequestOptions['query']): string {
  if (query === undefined) return path;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
  const s = q.toString();
  return s === '' ? path : `${path}?${s}`;
}

/** A KubeError from a non-2xx answer, using its Status object when there is one. */
export function errorOf(status: number, text: string): KubeError {
  try {
    const s = JSON.parse(text) as { kind?: string; reason?: string; message?: string };
    if (s.kind === 'Status') return new KubeError(status, s.reason ?? '', s.message ?? `HTTP ${status}`);
  } catch {
    // not JSON: fall through
  }
  return new KubeError(status, '', `HTTP ${status}: ${text.slice(0, 200)}`);
}
