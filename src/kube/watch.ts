// Follows one ConfigMap through the API: list, then watch from the list's
// resourceVersion, for as long as the process runs.
//
// - The requests carry `fieldSelector=metadata.name=NAME`: it limits the
//   stream to the one object, and it is what lets a Role with
//   `resourceNames: [NAME]` authorize list and watch at all.
// - `allowWatchBookmarks=true`: the server sends BOOKMARK events that move
//   the resourceVersion on while the object is quiet, so a resumed watch
//   starts near the present and rarely meets 410.
// - The server ends every watch after `timeoutSeconds` (5–10 min, randomised
//   like client-go so replicas do not reconnect in step); the watch is then
//   re-opened from the last resourceVersion seen, which loses no event.
// - 410 Gone (as an HTTP status or as an ERROR event: the resourceVersion is
//   older than the history etcd / the watch cache keeps) means events may have
//   been missed: list again and start over from the fresh state.
// - Any other failure (connection refused or reset, 5xx, 429 while the API
//   server starts, 403 while RBAC is being fixed) is retried with exponential
//   back-off and jitter, resuming from the last resourceVersion.
// - There is no client-side timer on a healthy stream (the bug behind
//   kubernetes-client/javascript#3020): only a body timeout a little longer
//   than the server's own watch timeout, which fires only if the connection
//   died silently.
import { StringDecoder } from 'node:string_decoder';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorOf, KubeError, type ConfigMap, type KubeClient } from './client.ts';

export interface ConfigMapWatchOptions {
  /** First retry delay; doubles per failure up to backoffMaxMs, each jittered to 50–100 %. */
  readonly backoffBaseMs?: number;
  readonly backoffMaxMs?: number;
  /** Server-side watch timeout range in seconds (default 300–600). */
  readonly watchTimeoutSeconds?: readonly [number, number];
}

export type WatchState =
  | { readonly up: true }
  /** `since`: epoch ms of the first failure in this outage. */
  | { readonly up: false; readonly since: number; readonly error: Error };

export interface ConfigMapWatchHandlers {
  /**
   * The object as it is now, after the first list, every relist and every
   * change; null while it does not exist. Each resourceVersion is delivered
   * once.
   */
  onObject(cm: ConfigMap | null): void;
  /** Connection state changes: up after a list or watch request succeeds, down on the first failure. */
  onState?(state: WatchState): void;
}

export interface ConfigMapWatchStats {
  /** Full lists: the first one and one per 410. */
  lists: number;
  /** Watch requests opened. */
  watches: number;
  /** 410 Gone answers that forced a relist. */
  gone: number;
  /** Failed requests (each followed by a back-off). */
  failures: number;
}

export class ConfigMapWatch {
  readonly namespace: string;
  readonly name: string;
  readonly stats: ConfigMapWatchStats = { lists: 0, watches: 0, gone: 0, failures: 0 };
  readonly #client: KubeClient;
  readonly #handlers: ConfigMapWatchHandlers;
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #timeouts: readonly [number, number];
  readonly #abort = new AbortController();
  #rv = '';
  #emittedRv: string | undefined;
  #state: WatchState | undefined;
  #loop: Promise<void> | undefined;

  constructor(client: KubeClient, namespace: string, name: string, handlers: ConfigMapWatchHandlers, opts: ConfigMapWatchOptions = {}) {
    this.#client = client;
    this.namespace = namespace;
    this.name = name;
    this.#handlers = handlers;
    this.#baseMs = opts.backoffBaseMs ?? 200;
    this.#maxMs = opts.backoffMaxMs ?? 10_000;
    this.#timeouts = opts.watchTimeoutSeconds ?? [300, 600];
  }

  /** The last resourceVersion seen (object or bookmark); '' before the first list. */
  get resourceVersion(): string {
    return this.#rv;
  }

  get state(): WatchState | undefined {
    return this.#state;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  async close(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    let attempt = 0;
    while (!signal.aborted) {
      try {
        if (this.#rv === '') await this.#list(signal);
        const opened = Date.now();
        const events = await this.#watch(signal);
        attempt = 0;
        // A watch the server ends at once, again and again, must not spin.
        if (events === 0 && Date.now() - opened < 1000) await sleep(this.#baseMs, undefined, { signal });
      } catch (err) {
        if (signal.aborted) break;
        this.stats.failures++;
        if (this.#state === undefined || this.#state.up) this.#setState({ up: false, since: Date.now(), error: err as Error });
        else this.#state = { ...this.#state, error: err as Error };
        const ceiling = Math.min(this.#maxMs, this.#baseMs * 2 ** attempt);
        attempt = Math.min(attempt + 1, 30);
        try {
          await sleep(ceiling / 2 + Math.random() * ceiling / 2, undefined, { signal });
        } catch {
          break;
        }
      }
    }
  }

  async #list(signal: AbortSignal): Promise<void> {
    const list = await this.#client.listConfigMap(this.namespace, this.name, signal);
    this.stats.lists++;
    this.#rv = list.metadata.resourceVersion;
    this.#setState({ up: true });
    this.#emit(list.items[0] ?? null);
  }

  /** One watch request, read to its end. Returns the number of events it carried. */
  async #watch(signal: AbortSignal): Promise<number> {
    const [lo, hi] = this.#timeouts;
    const timeoutSeconds = Math.round(lo + Math.random() * (hi - lo));
    const { status, body } = await this.#client.stream(`/api/v1/namespaces/${encodeURIComponent(this.namespace)}/configmaps`, {
      query: {
        watch: 1, fieldSelector: `metadata.name=${this.name}`, allowWatchBookmarks: true,
        resourceVersion: this.#rv, timeoutSeconds,
      },
      signal,
      bodyTimeoutMs: (timeoutSeconds + 30) * 1000,
    });
    this.stats.watches++;
    if (status !== 200) {
      let text = '';
      for await (const chunk of body) text += chunk.toString();
      if (status === 410) {
        this.#gone();
        return 0;
      }
      throw errorOf(status, text);
    }
    this.#setState({ up: true });
    let events = 0;
    let buf = '';
    // A multi-byte character may be split between two chunks.
    const utf8 = new StringDecoder('utf8');
    try {
      for await (const chunk of body) {
        buf += utf8.write(chunk);
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.trim() === '') continue;
          events++;
          if (!this.#event(JSON.parse(line) as WatchEvent)) return events;
        }
      }
    } finally {
      body.destroy();
    }
    return events;
  }

  /** Applies one watch event; false when the watch must stop (410: relist). */
  #event(ev: WatchEvent): boolean {
    switch (ev.type) {
      case 'ADDED':
      case 'MODIFIED':
        this.#rv = ev.object.metadata.resourceVersion ?? this.#rv;
        this.#emit(ev.object as ConfigMap);
        return true;
      case 'DELETED':
        this.#rv = ev.object.metadata.resourceVersion ?? this.#rv;
        this.#emit(null);
        return true;
      case 'BOOKMARK':
        this.#rv = ev.object.metadata.resourceVersion ?? this.#rv;
        return true;
      case 'ERROR': {
        const s = ev.object as unknown as { code?: number; reason?: string; message?: string };
        if (s.code === 410) {
          this.#gone();
          return false;
        }
        throw new KubeError(s.code ?? 500, s.reason ?? '', s.message ?? 'watch error');
      }
      default:
        return true;
    }
  }

  #gone(): void {
    this.stats.gone++;
    this.#rv = '';
  }

  #emit(cm: ConfigMap | null): void {
    const rv = cm === null ? null : cm.metadata.resourceVersion ?? '';
    const key = rv === null ? '' : `rv:${rv}`;
    if (key === this.#emittedRv) return;
    this.#emittedRv = key;
    this.#handlers.onObject(cm);
  }

  #setState(state: WatchState): void {
    const was = this.#state;
    this.#state = state;
    if (was === undefined || was.up !== state.up) this.#handlers.onState?.(state);
  }
}

interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: { metadata: { resourceVersion?: string } };
}
