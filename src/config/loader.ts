// The main thread's side of config loading: a worker thread does the parsing
// and validation (see worker.ts), so the main thread never loads the YAML
// parsers, ajv or the schema.
import { Worker } from 'node:worker_threads';
import { checkRemoval } from './guard.ts';
import { ConfigError, type Config, type ConfigSource, type EffectiveConfig, type LoadedConfig, type RouteConfig } from './model.ts';
import type { WorkerReply, WorkerRequest } from './protocol.ts';

/**
 * Parses and validates configs on a worker thread: a 5,000-route config takes
 * ~100 ms to check, which on the main thread would stall every request in
 * flight. The main thread only receives the finished config. The worker is
 * an isolate of its own with the YAML parsers, ajv and the schema (~25 MB of
 * RSS): it ends once no load has come for `idleMs`, and the next load starts
 * another (~150 ms on a quiet machine).
 */
/** Long enough for a burst of reloads (a ConfigMap edit, a rollout) to share one worker. */
export const DEFAULT_WORKER_IDLE_MS = 5_000;

export class ConfigLoader {
  #worker: Worker | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  readonly #idleMs: number;
  #next = 0;
  readonly #pending = new Map<number, { resolve: (l: LoadedConfig) => void; reject: (e: Error) => void; known: ReadonlyMap<string, RouteConfig> }>();
  /** The fingerprint of every route this loader handed out, so a later load can send back only new ones. */
  readonly #fingerprints = new WeakMap<RouteConfig, string>();

  /**
   * Validates `sources` and applies the removal guard against `current`, the
   * config in force (none at startup): every config source loads through
   * here, so none can skip the guard. Rejects with ConfigError (ConfigRefused
   * from the guard). Routes identical to one in `current` (same fingerprint)
   * come back as that object.
   */
  constructor(opts: { idleMs?: number } = {}) {
    this.#idleMs = opts.idleMs ?? DEFAULT_WORKER_IDLE_MS;
  }

  /** Whether a worker thread is running now. */
  get running(): boolean {
    return this.#worker !== undefined;
  }

  async load(sources: readonly ConfigSource[], current?: Config): Promise<LoadedConfig> {
    clearTimeout(this.#idleTimer);
    const id = this.#next++;
    const known = new Map<string, RouteConfig>();
    for (const r of current?.routes ?? []) {
      const fp = this.#fingerprints.get(r);
      if (fp !== undefined) known.set(fp, r);
    }
    const loaded = await new Promise<LoadedConfig>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, known });
      this.#start().postMessage({ id, sources, known: [...known.keys()] } satisfies WorkerRequest);
    });
    checkRemoval(current, loaded);
    return loaded;
  }

  #start(): Worker {
    if (this.#worker !== undefined) return this.#worker;
    const worker = new Worker(new URL('./worker.ts', import.meta.url));
    worker.unref();
    worker.on('message', (reply: WorkerReply) => {
      const p = this.#pending.get(reply.id);
      this.#pending.delete(reply.id);
      if ('issues' in reply) p?.reject(new ConfigError(reply.issues));
      else if (p !== undefined) {
        const loaded = fromWorker(reply, p.known);
        loaded.config.routes.forEach((r, i) => this.#fingerprints.set(r, loaded.fingerprints[i]!));
        p.resolve(loaded);
      }
      if (this.#pending.size === 0) {
        this.#idleTimer = setTimeout(() => void this.close(), this.#idleMs);
        this.#idleTimer.unref();
      }
    });
    worker.on('error', (err) => this.#failAll(err));
    worker.on('exit', (code) => {
      // A worker ended for idleness may exit after its successor started.
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      this.#failAll(new Error(`config worker exited with code ${code}`));
    });
    this.#worker = worker;
    return worker;
  }

  #failAll(err: Error): void {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }

  async close(): Promise<void> {
    clearTimeout(this.#idleTimer);
    const w = this.#worker;
    this.#worker = undefined;
    await w?.terminate();
  }
}

/** The worker's reply as a LoadedConfig: routes the main thread has are reused as they are. */
function fromWorker(reply: Extract<WorkerReply, { config: string }>, known: ReadonlyMap<string, RouteConfig>): LoadedConfig {
  const config = JSON.parse(reply.config) as Config;
  const fresh = new Map<string, RouteConfig>();
  let i = 0;
  for (const fp of reply.fingerprints) if (!known.has(fp)) fresh.set(fp, config.routes[i++]!);
  const routes = reply.fingerprints.map((fp) => fresh.get(fp) ?? known.get(fp)!);
  const sections = JSON.parse(reply.effective) as Omit<EffectiveConfig, 'routes'>;
  return {
    config: { ...config, routes },
    effective: { ...sections, routes },
    fingerprints: reply.fingerprints,
    version: reply.version,
    files: reply.files,
  };
}
