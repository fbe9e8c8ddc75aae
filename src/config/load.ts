// Config: YAML files → validated, immutable runtime config.
//
// Pipeline: read the file (or every *.yaml/*.yml of a ConfigMap directory) →
// parse YAML, keeping the node tree for positions → validate each file against
// config/switchyard.schema.json → semantic checks across all files → build the
// effective config (YAML shape, defaults filled in) and the runtime config.
// Every problem found on the way becomes a ConfigIssue with file, line, column
// and field path, and all of them are thrown together as one ConfigError, so an
// operator can fix a config in one round instead of one error at a time.

import { checkAddresses, checkEntrypoint, checkRoutes, pickSections, routesOf } from './checks.ts';
import { build } from './compile.ts';
import { checkRemoval } from './guard.ts';
import { ConfigError, type ConfigIssue, type ConfigSource, type LoadedConfig } from './model.ts';
import { sortIssues } from './positions.ts';
import { readConfigSources } from './read.ts';
import { parseSource } from './schema.ts';

/** Loads PATH: a YAML file, or a directory (a mounted ConfigMap) whose *.yaml/*.yml files are merged. Throws ConfigError. */
export async function loadConfig(path: string): Promise<LoadedConfig> {
  return loadConfigSources(await readConfigSources(path));
}

/**
 * Validates and merges already-read sources, in the given order. Throws
 * ConfigError. With `guard` (the default) it also refuses what the removal
 * guard refuses with no config in force: a config with no routes; the
 * loader turns it off to guard against the config in force instead.
 */
export function loadConfigSources(sources: readonly ConfigSource[], { guard = true }: { guard?: boolean } = {}): LoadedConfig {
  const issues: ConfigIssue[] = [];
  const parsed = sources.flatMap((source) => parseSource(source, issues) ?? []);
  const sections = pickSections(parsed, issues);
  const routes = parsed.flatMap(routesOf);
  checkAddresses(sections, issues);
  checkEntrypoint(sections, issues);
  checkRoutes(routes, issues);
  if (issues.length > 0) throw new ConfigError(sortIssues(issues));
  const loaded = build(sections, routes, sources.map((s) => s.file));
  if (guard) checkRemoval(undefined, loaded);
  return loaded;
}
