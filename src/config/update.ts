// Writing a change to one route back to where the config lives, for the
// migration commands. The whole resulting config is validated exactly as
// `serve` validates it before anything is written: a change the router would
// reject never reaches the files. Files are replaced atomically (temp file +
// rename, mode kept) under a lock file, so concurrent edits queue instead of
// overwriting each other; a ConfigMap is patched with optimistic concurrency
// (its resourceVersion as a precondition, the change made again on 409).
import { randomBytes } from 'node:crypto';
import { chmod, open, readFile, realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeClient, KubeError } from '../kube/client.ts';
import { loadCredentials } from '../kube/credentials.ts';
import { readConfigMapSource } from './kubernetes.ts';
import { loadConfigSources } from './load.ts';
import { ConfigError, type ConfigSource } from './model.ts';
import { readConfigSources } from './read.ts';
import { keyFile, parseKubernetesSource, type ConfigMapRef } from './source-spec.ts';
import { applyEdits, ChangeError, findRoute, routeNames, type EditOp, type RouteData } from './edit.ts';

export { ChangeError };

/** A change to one route: `plan` turns the route as written into edits (paths relative to the route). */
export interface RouteChange {
  readonly route: string;
  /** Throws ChangeError when the request does not fit the route (an unknown backend, no ramp block, ...). */
  plan(route: RouteData): readonly EditOp[];
}


export interface UpdateResult {
  /** The file written (or that would have been: `written` is false when the change changed nothing). */
  readonly file: string;
  readonly before: RouteData;
  readonly after: RouteData;
  readonly written: boolean;
  /** False when the file had to be re-rendered (comments kept, spacing normalised). */
  readonly layoutKept: boolean;
  /** Reads it took: more than 1 when a concurrent write to the ConfigMap won (409 Conflict) and the change was made again. */
  readonly attempts: number;
}

/** Where one of the files read came from, so a change to it can be written back. */
type Origin =
  | { readonly kind: 'file' }
  | { readonly kind: 'configmap'; readonly ref: ConfigMapRef; readonly key: string; readonly resourceVersion: string | undefined };

interface SourcesRead {
  readonly files: ConfigSource[];
  readonly origins: Origin[];
}

/**
 * The config sources of one command (files, directories, kubernetes://NS/CM),
 * and the Kubernetes client they need, made on first use and kept until close().
 */
export class SourceAccess {
  readonly specs: readonly string[];
  #client: Promise<KubeClient> | undefined;

  constructor(specs: readonly string[]) {
    this.specs = specs;
  }

  /** A client with KUBECONFIG's (else the pod's service-account) credentials. */
  kube(): Promise<KubeClient> {
    this.#client ??= loadCredentials().then((credentials) => new KubeClient(credentials));
    return this.#client;
  }

  /** The files of every source, in order (what `serve --config` would merge). ConfigError when one cannot be read. */
  async read(): Promise<SourcesRead> {
    const parts = await Promise.all(this.specs.map(async (spec) => {
      const ref = parseKubernetesSource(spec);
      if (ref === undefined) return (await readConfigSources(spec)).map((file) => ({ file, origin: { kind: 'file' } as Origin }));
      const { files, configMap } = await readConfigMapSource(await this.kube(), ref).catch((err: unknown) => {
        throw new ConfigError([{ file: spec, line: 0, column: 0, path: '', message: `cannot read ConfigMap ${ref.namespace}/${ref.name}: ${(err as Error).message}` }]);
      });
      const prefix = keyFile(ref, '');
      return files.map((file) => ({ file, origin: { kind: 'configmap', ref, key: file.file.slice(prefix.length), resourceVersion: configMap.metadata.resourceVersion } as Origin }));
    }));
    return { files: parts.flat().map((p) => p.file), origins: parts.flat().map((p) => p.origin) };
  }

  async close(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    await client?.then((c) => c.close(), () => undefined);
  }
}

/** The files of every source, in order. ConfigError when one cannot be read. */
export async function readSources(specs: readonly string[]): Promise<ConfigSource[]> {
  const access = new SourceAccess(specs);
  try {
    return (await access.read()).files;
  } finally {
    await access.close();
  }
}

// Concurrent writers to one ConfigMap: each 409 means another change landed, so this bounds how many can overtake one.
const MAX_ATTEMPTS = 30;

/**
 * Applies `change` to the route where SOURCES define it. File sources are
 * locked for the whole read-edit-write; a ConfigMap is patched with the
 * resourceVersion it was read at, and on 409 Conflict read and edited again.
 * Throws ChangeError or ConfigError; on either, nothing was written.
 */
export async function updateRoute(specs: readonly string[], change: RouteChange, lockWaitMs = 30_000): Promise<UpdateResult> {
  const access = new SourceAccess(specs);
  const files = specs.filter((spec) => parseKubernetesSource(spec) === undefined);
  const locks = [...new Set(await Promise.all(files.map(lockDirOf)))].sort();
  const held: string[] = [];
  try {
    for (const dir of locks) held.push(await acquireLock(join(dir, LOCK_NAME), lockWaitMs));
    for (let attempt = 1; ; attempt++) {
      const read = await access.read();
      const edit = editSources(read.files, change);
      const origin = read.origins[edit.source]!;
      const file = read.files[edit.source]!.file;
      const text = edit.sources[edit.source]!.text;
      const result = { file, before: edit.before, after: edit.after, written: edit.changed, layoutKept: edit.layoutKept, attempts: attempt };
      if (!edit.changed) return result;
      if (origin.kind === 'file') {
        await writeAtomically(file, text);
        return result;
      }
      const { ref, key, resourceVersion } = origin;
      try {
        await (await access.kube()).patchConfigMapData(ref.namespace, ref.name, { [key]: text }, resourceVersion);
        return result;
      } catch (err) {
        if (err instanceof KubeError && err.status === 409 && attempt < MAX_ATTEMPTS) {
          await sleep(Math.random() * 20 * Math.min(attempt, 10));
          continue;
        }
        throw new ChangeError(`cannot patch ConfigMap ${ref.namespace}/${ref.name}: ${(err as Error).message}`);
      }
    }
  } finally {
    await Promise.all(held.map((lock) => rm(lock, { force: true })));
    await access.close();
  }
}

interface SourcesEdit {
  /** Index of the changed source. */
  readonly source: number;
  readonly sources: readonly ConfigSource[];
  readonly before: RouteData;
  readonly after: RouteData;
  readonly changed: boolean;
  readonly layoutKept: boolean;
}

/** The change applied to already-read sources and validated as a whole (throws ConfigError); shared by every kind of source. */
function editSources(sources: readonly ConfigSource[], change: RouteChange): SourcesEdit {
  const texts = sources.map((s) => s.text);
  const found = findRoute(texts, change.route);
  if (!found) {
    const known = routeNames(texts);
    throw new ChangeError(`route "${change.route}" is not defined in ${sources.map((s) => s.file).join(', ') || 'the config'}${known.length ? ` (routes: ${known.join(', ')})` : ''}`);
  }
  const ops = change.plan(found.data).map((op) => ({ ...op, path: ['routes', found.index, ...op.path] }));
  const { text, layoutKept } = applyEdits(texts[found.source]!, ops);
  const next = sources.map((s, i) => (i === found.source ? { file: s.file, text } : s));
  // Same validation as `serve`; throws ConfigError with file:line:field.
  loadConfigSources(next);
  const after = findRoute([text], change.route)?.data ?? found.data;
  return { source: found.source, sources: next, before: found.data, after, changed: text !== texts[found.source], layoutKept };
}

const LOCK_NAME = '.switchyard.lock';

/** The directory whose lock guards PATH: the directory itself, or a file's directory (so a file and its directory share one). */
async function lockDirOf(path: string): Promise<string> {
  try {
    const real = await realpath(path);
    return (await stat(real)).isDirectory() ? real : dirname(real);
  } catch {
    // Unreadable: readConfigSources reports it with the path the user gave.
    return dirname(path);
  }
}

/** Creates LOCK exclusively, waiting while another live process holds it; a lock left by a dead process is taken over. */
async function acquireLock(lock: string, waitMs: number): Promise<string> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      const fh = await open(lock, 'wx');
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return lock;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new ChangeError(`cannot lock ${lock}: ${(err as Error).message}`);
    }
    const holder = Number.parseInt(await readFile(lock, 'utf8').catch(() => ''), 10);
    if (Number.isInteger(holder) && !alive(holder)) {
      await rm(lock, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new ChangeError(`${lock} is held by process ${Number.isInteger(holder) ? holder : '?'}; another edit is running (remove the file if it is not)`);
    await sleep(10 + Math.random() * 40);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Replaces FILE's contents at once (readers and watchers see the old or the new file, never a partial one), keeping its mode. */
async function writeAtomically(file: string, text: string): Promise<void> {
  // Through a symlink the target is replaced, so the link stays.
  const target = await realpath(file);
  const { mode } = await stat(target);
  const tmp = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, 'wx', mode & 0o777);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await chmod(tmp, mode & 0o7777);
    await rename(tmp, target);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new ChangeError(`cannot write ${file}: ${(err as Error).message}`);
  }
}
