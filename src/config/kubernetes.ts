// The `kubernetes://NAMESPACE/CONFIGMAP` config source: the ConfigMap's
// `*.yaml`/`*.yml` keys, read through the API and followed with a watch, are
// the files of a directory. A change reaches the router within the watch's
// latency (tens of ms) instead of kubelet's 60–120 s volume sync.
//
// The source only holds the latest object and says when it changed; the
// router validates and applies it exactly like files, so validation, the
// last good config and the blast-radius guard are the same. When the API
// server is unreachable the last object stays (the router keeps serving
// what it runs) and the source reports itself stale.
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { KubeClient, KubeError, type ConfigMap, type ObjectReference } from '../kube/client.ts';
import { loadCredentials, type KubeCredentials } from '../kube/credentials.ts';
import { EventRecorder } from '../kube/events.ts';
import { ConfigMapWatch, type ConfigMapWatchOptions, type WatchState } from '../kube/watch.ts';
import { ConfigError, formatIssue, type ConfigIssue, type ConfigSource } from './model.ts';
import { KUBERNETES_SCHEME, keyFile, type ConfigMapRef } from './source-spec.ts';

/** The config files of a ConfigMap: its visible `*.yaml`/`*.yml` keys in name order, as a mounted volume shows them. */
export function configMapFiles(ref: ConfigMapRef, cm: ConfigMap | null): ConfigSource[] {
  if (cm === null) {
    throw new ConfigError([{ file: `${KUBERNETES_SCHEME}${ref.namespace}/${ref.name}`, line: 0, column: 0, path: '', message: `ConfigMap ${ref.namespace}/${ref.name} does not exist` }]);
  }
  return Object.keys(cm.data ?? {})
    .filter((k) => !k.startsWith('.') && /\.ya?ml$/.test(k))
    .sort()
    .map((k) => ({ file: keyFile(ref, k), text: cm.data![k]! }));
}

/** A client with the default credentials: in-cluster, else KUBECONFIG / ~/.kube/config. */
export async function defaultClient(): Promise<KubeClient> {
  return new KubeClient(await loadCredentials());
}

/** One read of the ConfigMap (for `switchyard validate` and the migration commands); a missing one is a ConfigError. */
export async function readConfigMapSource(client: KubeClient, ref: ConfigMapRef): Promise<{ files: ConfigSource[]; configMap: ConfigMap }> {
  let cm: ConfigMap | null;
  try {
    cm = await client.getConfigMap(ref.namespace, ref.name);
  } catch (err) {
    if (!(err instanceof KubeError && err.status === 404)) throw err;
    cm = null;
  }
  return { files: configMapFiles(ref, cm), configMap: cm! };
}

/** What /api/config and the metrics say about the source. */
export interface KubernetesSourceStatus {
  readonly kind: 'kubernetes';
  readonly source: string;
  readonly namespace: string;
  readonly name: string;
  /** The resourceVersion of the ConfigMap the config in force was read from (null: none applied yet). */
  readonly resourceVersion: string | null;
  /** The latest resourceVersion seen; differs from resourceVersion while a newer one is being applied or was rejected. */
  readonly latestResourceVersion: string | null;
  /** Connected to the API server (the watch is open or being re-opened after a normal end). */
  readonly up: boolean;
  /** When the current outage began (null while up). */
  readonly staleSince: string | null;
  readonly staleSeconds: number;
  readonly lastError: string | null;
  /** Lists (1 + one per 410 Gone), watch requests, 410s and failed requests since start. */
  readonly watch: { readonly lists: number; readonly watches: number; readonly gone: number; readonly failures: number };
}

export interface KubernetesSourceOptions {
  readonly log: Logger;
  /** Called when the ConfigMap changed (a new resourceVersion, or it vanished). */
  readonly onChange: () => void;
  /** Credentials; default: in-cluster, else KUBECONFIG / ~/.kube/config. */
  readonly credentials?: KubeCredentials;
  /** This replica's name in Events; default POD_NAME, else the host name. */
  readonly instance?: string;
  /** How long start() waits for the first read before failing. Default 30 s. */
  readonly startTimeoutMs?: number;
  readonly watch?: ConfigMapWatchOptions;
  /** How often to log that the source is still unreachable (default 60 s). */
  readonly staleLogMs?: number;
  /** Event rate limit (see EventRecorder). */
  readonly events?: { readonly burst?: number; readonly refillMs?: number };
}

export class KubernetesSource {
  readonly ref: ConfigMapRef;
  readonly spec: string;
  readonly #opts: KubernetesSourceOptions;
  readonly #instance: string;
  #client: KubeClient | undefined;
  #watch: ConfigMapWatch | undefined;
  #events: EventRecorder | undefined;
  #cm: ConfigMap | null | undefined;
  #state: WatchState = { up: false, since: Date.now(), error: new Error('not started') };
  #staleLog: NodeJS.Timeout | undefined;
  /** The object the last files() call read, whose outcome the router reports next. */
  #read: ConfigMap | null = null;
  #appliedRv: string | null = null;
  /** The resourceVersion whose outcome was last reported as an Event. */
  #reportedRv: string | undefined;

  constructor(ref: ConfigMapRef, opts: KubernetesSourceOptions) {
    this.ref = ref;
    this.spec = `${KUBERNETES_SCHEME}${ref.namespace}/${ref.name}`;
    this.#opts = opts;
    this.#instance = opts.instance ?? (process.env['POD_NAME'] || hostname());
  }

  /** Connects and waits for the first read of the ConfigMap (whether it exists or not). */
  async start(): Promise<void> {
    const { log } = this.#opts;
    const creds = this.#opts.credentials ?? await loadCredentials();
    const client = new KubeClient(creds);
    this.#client = client;
    this.#events = new EventRecorder(client, {
      component: 'switchyard', instance: this.#instance, ...this.#opts.events,
      onError: (err, ev) => log.warn({ err: err.message, reason: ev.reason }, 'cannot record a Kubernetes Event'),
    });
    let first: (() => void) | undefined;
    const firstRead = new Promise<void>((resolve) => { first = resolve; });
    this.#watch = new ConfigMapWatch(client, this.ref.namespace, this.ref.name, {
      onObject: (cm) => {
        // The watch delivers each resourceVersion once: every call after the first read is a change.
        this.#cm = cm;
        if (first !== undefined) {
          first();
          first = undefined;
        } else {
          this.#opts.onChange();
        }
      },
      onState: (state) => {
        const was = this.#state;
        this.#state = state;
        clearInterval(this.#staleLog);
        if (!state.up) {
          log.warn({ source: this.spec, err: state.error.message }, 'config source unreachable: serving the last config read from it');
          // And once a minute while it lasts, so the log alone says for how long.
          this.#staleLog = setInterval(() => {
            const s = this.status();
            log.warn({ source: this.spec, staleSeconds: Math.round(s.staleSeconds), err: s.lastError }, 'config source still unreachable');
          }, this.#opts.staleLogMs ?? 60_000);
          this.#staleLog.unref();
        } else if (!was.up && this.#cm !== undefined) {
          log.info({ source: this.spec, staleSeconds: Math.round((Date.now() - was.since) / 1000) }, 'config source reachable again');
        }
      },
    }, this.#opts.watch);
    log.info({ source: this.spec, credentials: creds.origin, server: creds.server }, 'reading config through the Kubernetes API');
    this.#watch.start();
    const timeoutMs = this.#opts.startTimeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), timeoutMs); });
    const outcome = await Promise.race([firstRead, timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      const why = this.#state.up ? 'no answer' : this.#state.error.message;
      await this.close();
      throw new ConfigError([{ file: this.spec, line: 0, column: 0, path: '', message: `cannot read ConfigMap ${this.ref.namespace}/${this.ref.name} within ${timeoutMs} ms: ${why}` }]);
    }
  }

  /** The config files of the ConfigMap as last seen; a ConfigError if it does not exist. */
  files(): ConfigSource[] {
    this.#read = this.#cm ?? null;
    return configMapFiles(this.ref, this.#read);
  }

  /**
   * Replaces the key that `file` (keyFile) names, if this ConfigMap holds it;
   * false otherwise. Conditional on the resourceVersion last read, so a
   * change made meanwhile is not overwritten (the API answers 409).
   */
  async writeFile(file: string, text: string): Promise<boolean> {
    const prefix = keyFile(this.ref, '');
    if (!file.startsWith(prefix) || this.#client === undefined || !this.#cm) return false;
    await this.#client.patchConfigMapData(this.ref.namespace, this.ref.name, { [file.slice(prefix.length)]: text }, this.#cm.metadata.resourceVersion);
    return true;
  }

  /**
   * The router's verdict on what files() returned last: the config it built
   * is in force. Recorded as an Event on the ConfigMap once per
   * resourceVersion (a reload for another reason says nothing new).
   */
  reportApplied(version: string): void {
    this.#appliedRv = this.#read?.metadata.resourceVersion ?? null;
    this.#report('Normal', 'ConfigApplied', `applied config version ${version}`);
  }

  /** The config of what files() returned last was refused; `inForce` is the version still serving (undefined at startup). */
  reportRejected(issues: readonly ConfigIssue[], inForce: string | undefined): void {
    const list = issues.slice(0, 5).map(formatIssue).join('; ');
    const more = issues.length > 5 ? `; and ${issues.length - 5} more` : '';
    const after = inForce === undefined ? 'not started' : `config version ${inForce} stays in force`;
    this.#report('Warning', 'ConfigRejected', `rejected: ${list}${more}; ${after}`);
  }

  #report(type: 'Normal' | 'Warning', reason: string, message: string): void {
    const cm = this.#read;
    const rv = cm?.metadata.resourceVersion;
    if (cm === null || rv === undefined || rv === this.#reportedRv) return;
    this.#reportedRv = rv;
    const target: ObjectReference = {
      apiVersion: 'v1', kind: 'ConfigMap', namespace: this.ref.namespace, name: this.ref.name, uid: cm.metadata.uid, resourceVersion: rv,
    };
    this.#events?.record({ target, type, reason, message: `${this.#instance}: resourceVersion ${rv} ${message}` });
  }

  status(): KubernetesSourceStatus {
    const s = this.#state;
    return {
      kind: 'kubernetes',
      source: this.spec,
      namespace: this.ref.namespace,
      name: this.ref.name,
      resourceVersion: this.#appliedRv,
      latestResourceVersion: this.#cm?.metadata.resourceVersion ?? null,
      up: s.up,
      staleSince: s.up ? null : new Date(s.since).toISOString(),
      staleSeconds: s.up ? 0 : (Date.now() - s.since) / 1000,
      lastError: s.up ? null : s.error.message,
      watch: { ...(this.#watch?.stats ?? { lists: 0, watches: 0, gone: 0, failures: 0 }) },
    };
  }

  /** Waits for Events under way (tests, shutdown). */
  flushEvents(): Promise<void> {
    return this.#events?.flush() ?? Promise.resolve();
  }

  async close(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    clearInterval(this.#staleLog);
    this.#events?.close();
    await this.#watch?.close();
    await client?.close();
  }
}
