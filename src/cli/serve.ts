// switchyard serve --config SOURCE: runs the router until SIGTERM/SIGINT.
import { getHeapStatistics } from 'node:v8';
import { DEFAULT_WATCH } from '../config/watch.ts';
import { ConfigError } from '../config/model.ts';
import { createLogger } from '../observe/log.ts';
import { ListenError, Switchyard } from '../server.ts';
import { CONFIG_OPTION, configSources, parse } from './args.ts';

export const HELP = `usage: switchyard serve --config SOURCE ... [--no-watch]

Runs the router: the entrypoint (HTTP/1.1 and h2c on one port) and the admin
port, as the config says. Logs are JSON lines on stdout.

  -c, --config SOURCE  a YAML file, a directory whose *.yaml/*.yml files merge
                       (a mounted ConfigMap), or kubernetes://NAMESPACE/CONFIGMAP
                       (its *.yaml keys, read and watched through the API);
                       repeat to merge sources like the files of one
                       directory; default $SWITCHYARD_CONFIG
  --no-watch           reload on SIGHUP only, not on changes
  -h, --help           this help

SIGHUP reloads the config; SIGTERM/SIGINT drain and exit 0.
Exit status: 1 invalid config or a listener that cannot bind, 2 usage error.
`;

export async function run(args: readonly string[]): Promise<number | undefined> {
  const parsed = parse<{ config?: string[]; watch?: boolean }>(args, { ...CONFIG_OPTION, watch: { type: 'boolean' } }, HELP, { positionals: false, allowNegative: true });
  if (!parsed) return 0;
  const sources = configSources(parsed.values.config);
  const log = createLogger();
  // The V8 flags in force (src/cli/node-flags.ts); heapSizeLimit includes the
  // young generation's (3 semi-spaces), so it shows whether they took effect.
  log.info({ node: process.version, execArgv: process.execArgv, heapSizeLimit: getHeapStatistics().heap_size_limit }, 'node runtime');
  // Listening from the start: SIGHUP's default action kills the process, and a
  // script may send one as soon as the router says it started. One that comes
  // while starting reloads once running.
  let sy: Switchyard | undefined;
  let hupWhileStarting = false;
  process.on('SIGHUP', () => {
    if (sy === undefined) hupWhileStarting = true;
    else void sy.reload('SIGHUP');
  });
  let running: Switchyard;
  try {
    running = await Switchyard.start(sources, log, parsed.values.watch === false ? false : DEFAULT_WATCH);
  } catch (err) {
    if (err instanceof ConfigError) log.fatal({ issues: err.issues }, 'invalid config');
    else if (err instanceof ListenError) log.fatal({ listener: err.listener, address: err.address, code: err.code }, 'cannot listen');
    throw err;
  }
  sy = running;
  if (hupWhileStarting) void running.reload('SIGHUP');
  const stop = (signal: string): void => {
    log.info({ signal }, 'signal received');
    running.shutdown().then(() => process.exit(0), (err: unknown) => {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  // Running: the exit code comes from the signal handlers.
  return undefined;
}
