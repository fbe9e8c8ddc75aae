// switchyard routes: what the config routes where, and by which weights.
import { loadConfigSources } from '../config/load.ts';
import { readSources } from '../config/update.ts';
import { CONFIG_OPTION, configSources, parse } from './args.ts';
import { table } from './table.ts';

export const HELP = `usage: switchyard routes --config SOURCE

Lists every route of the config: hosts, path prefix, upstream protocol, and
each backend with its weight, share of the traffic and URL. The config is
validated first (as serve does); an invalid one prints its errors, exit 1.

  -c, --config SOURCE  a YAML file, a directory of them, or
                       kubernetes://NAMESPACE/CONFIGMAP; repeatable; default
                       $SWITCHYARD_CONFIG
  -h, --help           this help
`;

export async function run(args: readonly string[]): Promise<number> {
  const parsed = parse<{ config?: string[] }>(args, CONFIG_OPTION, HELP, { positionals: false });
  if (!parsed) return 0;
  const loaded = loadConfigSources(await readSources(configSources(parsed.values.config)));
  const { effective } = loaded;
  const rows: string[][] = [['ROUTE', 'HOSTS', 'PREFIX', 'PROTOCOL', 'BACKEND', 'WEIGHT', 'SHARE', 'URL']];
  for (const r of effective.routes) {
    const total = r.backends.reduce((sum, b) => sum + b.weight, 0);
    r.backends.forEach((b, i) => {
      const share = total === 0 ? '-' : `${Math.round((b.weight * 1000) / total) / 10}%`;
      rows.push(i === 0 ? [r.name, r.hosts.join(','), r.pathPrefix, r.protocol, b.name, String(b.weight), share, b.url] : ['', '', '', '', b.name, String(b.weight), share, b.url]);
    });
  }
  process.stdout.write(`${table(rows)}${effective.routes.length} routes, version ${loaded.version}\n`);
  return 0;
}
