// switchyard validate SOURCE|- : the router's own validation, without serving.
// `-` reads stdin: a config, or Kubernetes manifests such as `helm template`
// output or `kubectl get configmap -o yaml`, whose ConfigMaps' *.yaml keys are
// checked as the files of one directory — what every pod would load.
import { text as readStream } from 'node:stream/consumers';
import { parseAllDocuments } from 'yaml';
import { loadConfigSources } from '../config/load.ts';
import { ConfigError, type ConfigSource } from '../config/model.ts';
import { readSources } from '../config/update.ts';
import { parse, UsageError } from './args.ts';

export const HELP = `usage: switchyard validate SOURCE ... [--configmap NAME]
       helm template ... | switchyard validate - [--configmap NAME]

Checks a config exactly as serve would load it and exits 0, or prints every
error as file:line:column: field: message and exits 1.

  SOURCE            a YAML file, a directory of them, or
                    kubernetes://NAMESPACE/CONFIGMAP; several merge as for serve
  -                 read stdin: a config, or manifests (helm template output, a
                    ConfigMap from kubectl): the *.yaml keys of the ConfigMaps
                    in it are the files
  --configmap NAME  with -, check only the ConfigMap called NAME
  -h, --help        this help

Exit status: 0 valid, 1 invalid, 2 usage error.
`;

export async function run(args: readonly string[]): Promise<number> {
  const parsed = parse<{ configmap?: string }>(args, { configmap: { type: 'string' } }, HELP);
  if (!parsed) return 0;
  const paths = parsed.positionals;
  if (paths.length === 0) throw new UsageError('SOURCE is required (a file, a directory, kubernetes://NAMESPACE/CONFIGMAP, or - for stdin)');
  if (paths.includes('-') && paths.length > 1) throw new UsageError('- (stdin) cannot be combined with other sources');
  if (parsed.values.configmap !== undefined && paths[0] !== '-') throw new UsageError('--configmap applies to - (stdin) only');
  const sources = paths[0] === '-' ? fromManifests(await readStream(process.stdin), parsed.values.configmap) : await readSources(paths);
  const loaded = loadConfigSources(sources);
  process.stdout.write(`${paths.join(' ')}: valid (version ${loaded.version}, ${loaded.config.routes.length} routes, files: ${loaded.files.join(', ')})\n`);
  return 0;
}

const CONFIG_KEY = /\.ya?ml$/;

/**
 * Stdin as config files: the *.yaml/*.yml keys of every ConfigMap in it
 * (named ConfigMap/NAME/KEY, lines counted within the key), or, when it holds
 * no Kubernetes objects, the text itself as one file named "-".
 */
function fromManifests(text: string, only: string | undefined): ConfigSource[] {
  // A stream that does not parse is no manifest: validating it as a config reports where it breaks.
  const docs = parseAllDocuments(text);
  if (docs.some((d) => d.errors.length > 0)) return [{ file: '-', text }];
  // `kubectl get configmaps -o yaml` wraps them in a List.
  const objects = docs.map((d) => d.toJS() as KubeObject | null)
    .flatMap((o): (KubeObject | null)[] => (o?.kind === 'List' && Array.isArray(o.items) ? o.items as KubeObject[] : [o]))
    .filter((o): o is KubeObject => typeof o?.kind === 'string' && typeof o.apiVersion === 'string');
  if (objects.length === 0) {
    if (only !== undefined) throw new ConfigError([{ file: '-', line: 0, column: 0, path: '', message: `no ConfigMap "${only}" on stdin (it holds no Kubernetes objects)` }]);
    return [{ file: '-', text }];
  }
  const sources: ConfigSource[] = [];
  const seen: string[] = [];
  for (const object of objects) {
    if (object.kind !== 'ConfigMap') continue;
    const name = object.metadata?.name ?? '?';
    seen.push(name);
    if (only !== undefined && name !== only) continue;
    for (const [key, value] of Object.entries(object.data ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (CONFIG_KEY.test(key) && typeof value === 'string') sources.push({ file: `ConfigMap/${name}/${key}`, text: value });
    }
  }
  if (sources.length === 0) {
    const why = only !== undefined
      ? `no ConfigMap "${only}" with *.yaml keys on stdin (ConfigMaps: ${seen.join(', ') || 'none'})`
      : `no ConfigMap with *.yaml keys among the ${objects.length} Kubernetes objects on stdin`;
    throw new ConfigError([{ file: '-', line: 0, column: 0, path: '', message: why }]);
  }
  return sources;
}

interface KubeObject {
  readonly apiVersion?: unknown;
  readonly kind?: unknown;
  readonly metadata?: { readonly name?: string };
  readonly data?: Record<string, unknown>;
  readonly items?: unknown[];
}
