// The blast-radius guard. One careless edit — an empty file, `routes: []`, a
// `helm upgrade` without the routes values — would otherwise hot-reload into
// every replica at once and answer every request with 404. A config that has
// no routes, or that removes more than removalGuard.maxRemovedHostsPercent of
// the hosts in force, is refused unless it says `allowRouteRemoval: true`.
// It runs in the one path every config source loads through (ConfigLoader),
// on the main thread: it needs the config in force, and costs a set lookup
// per host.
import { diffConfigs, hostsOf, type ConfigDiff } from './diff.ts';
import { ConfigError, type Config, type LoadedConfig } from './model.ts';

// Enough hosts to recognise the change in a log line; all of them are in `removedHosts`.
const HOSTS_IN_MESSAGE = 10;

/** A config the guard refused: the ConfigIssue says why, the fields say what would have gone. */
export class ConfigRefused extends ConfigError {
  readonly removedRoutes: readonly string[];
  readonly removedHosts: readonly string[];

  constructor(file: string, message: string, removedRoutes: readonly string[], removedHosts: readonly string[]) {
    super([{ file, line: 0, column: 0, path: 'routes', message }]);
    this.name = 'ConfigRefused';
    this.removedRoutes = removedRoutes;
    this.removedHosts = removedHosts;
  }
}

/**
 * Throws ConfigRefused when `next` may not replace `inForce` (undefined at
 * startup and for `validate`): it has no routes, or it removes every route or
 * too large a share of the hosts. Returns the diff against `inForce` otherwise.
 */
export function checkRemoval(inForce: Config | undefined, next: LoadedConfig): ConfigDiff | undefined {
  const { config } = next;
  const diff = inForce === undefined ? undefined : diffConfigs(inForce, config);
  if (config.removal.allowRouteRemoval) return diff;
  const file = next.files[0] ?? '(no config files)';
  const allow = 'set allowRouteRemoval: true for this change if it is meant';
  if (config.routes.length === 0) {
    if (inForce === undefined) {
      throw new ConfigRefused(file, `no routes: every request would get 404 SY_NO_ROUTE; add routes, or ${allow}`, [], []);
    }
    if (inForce.routes.length > 0) {
      const hosts = [...hostsOf(inForce)];
      throw new ConfigRefused(file, `refused: this config removes every route (${inForce.routes.length} routes, ${hosts.length} hosts: ${list(hosts)}); the config in force stays; ${allow}`, inForce.routes.map((r) => r.name), hosts);
    }
  }
  if (diff === undefined || diff.hostsRemoved.length === 0) return diff;
  const total = hostsOf(inForce!).size;
  const percent = (diff.hostsRemoved.length / total) * 100;
  const max = config.removal.maxRemovedHostsPercent;
  if (percent > max) {
    throw new ConfigRefused(file, `refused: this config removes ${diff.hostsRemoved.length} of the ${total} hosts in force (${Math.round(percent)}%, more than removalGuard.maxRemovedHostsPercent ${max}%): ${list(diff.hostsRemoved)}; the config in force stays; ${allow}`, diff.routesRemoved, diff.hostsRemoved);
  }
  return diff;
}

function list(hosts: readonly string[]): string {
  const shown = hosts.slice(0, HOSTS_IN_MESSAGE).join(', ');
  return hosts.length > HOSTS_IN_MESSAGE ? `${shown} and ${hosts.length - HOSTS_IN_MESSAGE} more` : shown;
}
