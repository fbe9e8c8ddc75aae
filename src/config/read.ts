// Reading a config source from disk: one YAML file, or the visible
// *.yaml/*.yml files of a directory (a mounted ConfigMap); and the digest that
// tells whether anything changed since the last read.
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, type ConfigSource } from './model.ts';

/** A digest of the raw files: equal digests mean nothing to reload. */
export function sourcesDigest(sources: readonly ConfigSource[]): string {
  const h = createHash('sha256');
  for (const s of sources) h.update(s.file).update('\0').update(s.text).update('\0');
  return h.digest('hex');
}

/** Reads PATH's config files (a file, or a directory's visible *.yaml/*.yml); an unreadable path is a ConfigError. */
export async function readConfigSources(path: string): Promise<ConfigSource[]> {
  try {
    const files = (await stat(path)).isDirectory() ? await configFilesIn(path) : [path];
    return await Promise.all(files.map(async (file) => ({ file, text: await readFile(file, 'utf8') })));
  } catch (err) {
    const { path: failed, message } = err as NodeJS.ErrnoException;
    throw new ConfigError([{ file: failed ?? path, line: 0, column: 0, path: '', message: `cannot read config: ${message}` }]);
  }
}

// A ConfigMap volume shows each key as a symlink into `..data`, which itself
// points at kubelet's current timestamped dir (`..2024_...`). Reading only the
// visible names, through their symlinks, reads each file once and always from
// the current generation.
async function configFilesIn(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((n) => !n.startsWith('.') && /\.ya?ml$/.test(n)).sort();
  const files: string[] = [];
  for (const name of names) {
    const file = join(dir, name);
    if ((await stat(file)).isFile()) files.push(file);
  }
  return files;
}
