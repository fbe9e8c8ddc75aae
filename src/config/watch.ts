// Watches the config source for changes. A ConfigMap volume updates by
// renaming a `..data` symlink inside the mounted directory, which a watch on
// the file itself never sees (chokidar#601, envoy#3928); so the directory is
// watched, events are debounced, and a slow poll covers whatever the watch
// misses (editors that replace files, network filesystems). Whether anything
// really changed is decided by the caller from a digest of the contents.
import { watch, type FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';

export interface WatchOptions {
  /** Quiet time after the last event before reloading; kubelet's swap is several events. */
  readonly debounceMs: number;
  /** Fallback re-read interval. */
  readonly pollMs: number;
}

export const DEFAULT_WATCH: WatchOptions = { debounceMs: 100, pollMs: 10_000 };

export class ConfigWatcher {
  readonly #path: string;
  readonly #onChange: (reason: string) => void;
  readonly #opts: WatchOptions;
  readonly #log: Logger;
  #watcher: FSWatcher | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #poll: NodeJS.Timeout | undefined;

  constructor(path: string, onChange: (reason: string) => void, log: Logger, opts: WatchOptions = DEFAULT_WATCH) {
    this.#path = path;
    this.#onChange = onChange;
    this.#opts = opts;
    this.#log = log;
  }

  async start(): Promise<void> {
    const dir = (await stat(this.#path)).isDirectory() ? this.#path : dirname(this.#path);
    try {
      this.#watcher = watch(dir, { persistent: false }, () => this.#changed());
      this.#watcher.on('error', (err) => this.#log.warn({ err, dir }, 'config watch failed; polling only'));
    } catch (err) {
      this.#log.warn({ err, dir }, 'cannot watch the config directory; polling only');
    }
    this.#poll = setInterval(() => this.#onChange('poll'), this.#opts.pollMs);
    this.#poll.unref();
  }

  #changed(): void {
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => this.#onChange('watch'), this.#opts.debounceMs);
    this.#debounce.unref();
  }

  close(): void {
    this.#watcher?.close();
    clearTimeout(this.#debounce);
    clearInterval(this.#poll);
  }
}
