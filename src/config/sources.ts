// The config sources the router reads, in `--config` order: YAML files,
// directories (a mounted ConfigMap) and `kubernetes://NAMESPACE/CONFIGMAP`.
// Their files are merged like the files of one directory (e.g. listeners
// from a file, routes from the API), then validated as one config.
import { realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Logger } from 'pino';
import type { ConfigMap, KubeClient } from '../kube/client.ts';
import type { KubernetesSource, KubernetesSourceOptions, KubernetesSourceStatus } from './kubernetes.ts';
import type { ConfigIssue, ConfigSource } from './model.ts';
import { readConfigSources } from './read.ts';
import { parseKubernetesSource, type ConfigMapRef } from './source-spec.ts';
import { ConfigWatcher, type WatchOptions } from './watch.ts';

export type SourceStatus = { readonly kind: 'files'; readonly path: string } | KubernetesSourceStatus;

/** Checks the form of every source spec up front; throws an Error naming a malformed one. */
export function checkSourceSpecs(specs: readonly string[]): void {
  if (specs.length === 0) throw new Error('no config source given');
  for (const s of specs) parseKubernetesSource(s);
}

/** One source as read by readSourcesOnce: its files, and for kubernetes:// the ConfigMap read (with its resourceVersion). */
export interface SourceSnapshot {
  readonly spec: string;
  readonly files: readonly ConfigSource[];
  readonly configMap?: { readonly ref: ConfigMapRef; readonly object: ConfigMap };
}

/**
 * Reads each source once, without watching (`switchyard validate`, the
 * migration commands): files from disk, a kubernetes:// source with one GET,
 * through `client` or one made from the default credentials. The files of
 * all snapshots, in order, are the config. ConfigError if one is unreadable
 * or the ConfigMap does not exist; a KubeError for other API failures.
 */
export async function readSourcesOnce(specs: readonly string[], client?: KubeClient): Promise<SourceSnapshot[]> {
  checkSourceSpecs(specs);
  let own: KubeClient | undefined;
  try {
    const out: SourceSnapshot[] = [];
    for (const spec of specs) {
      const ref = parseKubernetesSource(spec);
      if (ref === undefined) {
        out.push({ spec, files: await readConfigSources(spec) });
        continue;
      }
      const kube = await import('./kubernetes.ts');
      const c = client ?? (own ??= await kube.defaultClient());
      const { files, configMap } = await kube.readConfigMapSource(c, ref);
      out.push({ spec, files, configMap: { ref, object: configMap } });
    }
    return out;
  } finally {
    await own?.close();
  }
}

export interface ConfigSourcesOptions {
  readonly log: Logger;
  /** A source changed; `reason` names it. Not called with `watch: false` (SIGHUP reloads then). */
  readonly onChange: (reason: string) => void;
  readonly watch: WatchOptions | false;
  /** For kubernetes:// sources: credentials (default in-cluster / KUBECONFIG), replica name, timeouts. */
  readonly kubernetes?: Omit<KubernetesSourceOptions, 'log' | 'onChange'>;
}

type Source = { readonly kind: 'files'; readonly path: string; watcher?: ConfigWatcher } | { readonly kind: 'kubernetes'; readonly source: KubernetesSource };

export class ConfigSources {
  readonly #sources: Source[];
  readonly #opts: ConfigSourcesOptions;

  private constructor(sources: Source[], opts: ConfigSourcesOptions) {
    this.#sources = sources;
    this.#opts = opts;
  }

  /** Opens the sources; a kubernetes:// one connects and waits for its first read (ConfigError if it cannot). */
  static async open(specs: readonly string[], opts: ConfigSourcesOptions): Promise<ConfigSources> {
    checkSourceSpecs(specs);
    const sources: Source[] = [];
    const all = new ConfigSources(sources, opts);
    try {
      for (const spec of specs) {
        const ref = parseKubernetesSource(spec);
        if (ref === undefined) {
          sources.push({ kind: 'files', path: spec });
          continue;
        }
        // Loaded only here: a router reading files never loads the API client (undici).
        const { KubernetesSource } = await import('./kubernetes.ts');
        const source = new KubernetesSource(ref, {
          ...opts.kubernetes,
          log: opts.log.child({ component: 'kubernetes' }),
          onChange: () => { if (opts.watch !== false) opts.onChange(spec); },
        });
        sources.push({ kind: 'kubernetes', source });
        await source.start();
      }
    } catch (err) {
      await all.close();
      throw err;
    }
    return all;
  }

  /** The files of every source, in order. ConfigError if one cannot be read. */
  async read(): Promise<ConfigSource[]> {
    const parts = await Promise.all(this.#sources.map((s) => (s.kind === 'files' ? readConfigSources(s.path) : s.source.files())));
    return parts.flat();
  }

  /**
   * Replaces one config file read from these sources: a file on disk
   * (atomically: temp file and rename) or a ConfigMap key (a conditional
   * patch). Throws when it cannot (a read-only ConfigMap volume, RBAC, a conflict).
   */
  async writeFile(file: string, text: string): Promise<void> {
    for (const s of this.#sources) {
      if (s.kind === 'kubernetes' && await s.source.writeFile(file, text)) return;
    }
    if (file.startsWith('kubernetes://')) throw new Error(`${file} is not in any ConfigMap source`);
    const target = await realpath(file);
    const tmp = join(dirname(target), `.${basename(target)}.${process.pid}.${Date.now()}.tmp`);
    try {
      await writeFile(tmp, text, { mode: (await stat(target)).mode & 0o777, flag: 'wx' });
      await rename(tmp, target);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  /** Starts watching the file sources (the API sources watch from open()). */
  async watch(): Promise<void> {
    const { watch, log, onChange } = this.#opts;
    if (watch === false) return;
    for (const s of this.#sources) {
      if (s.kind !== 'files') continue;
      s.watcher = new ConfigWatcher(s.path, onChange, log.child({ component: 'watch' }), watch);
      await s.watcher.start();
    }
  }

  /** The config built from the last read() is in force (Events on the ConfigMaps it came from). */
  applied(version: string): void {
    for (const s of this.#sources) if (s.kind === 'kubernetes') s.source.reportApplied(version);
  }

  /** The config of the last read() was refused; `inForce` stays (undefined: nothing runs yet). */
  rejected(issues: readonly ConfigIssue[], inForce: string | undefined): void {
    for (const s of this.#sources) if (s.kind === 'kubernetes') s.source.reportRejected(issues, inForce);
  }

  status(): SourceStatus[] {
    return this.#sources.map((s) => (s.kind === 'files' ? { kind: 'files', path: s.path } : s.source.status()));
  }

  /** Waits for Events under way (tests). */
  async flushEvents(): Promise<void> {
    await Promise.all(this.#sources.map((s) => (s.kind === 'kubernetes' ? s.source.flushEvents() : undefined)));
  }

  async close(): Promise<void> {
    await Promise.all(this.#sources.map(async (s) => {
      if (s.kind === 'files') s.watcher?.close();
      else await s.source.close();
    }));
  }
}
