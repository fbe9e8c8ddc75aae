#!/usr/bin/env node
// switchyard serve --config PATH | switchyard validate PATH
import { parseArgs } from 'node:util';
import { ConfigError, formatIssue } from '../config/model.ts';
import { createLogger } from '../observe/log.ts';
import { demo } from './demo.ts';
import { Switchyard } from '../server.ts';
import { DEFAULT_WATCH } from '../config/watch.ts';
import { checkSourceSpecs } from '../config/sources.ts';

const USAGE = `usage:
  switchyard serve --config SOURCE   run the router; SOURCE: a YAML file, a directory, or
                                     kubernetes://NAMESPACE/CONFIGMAP (its *.yaml keys, read and
                                     watched through the API); repeat --config to merge sources
                                     like the files of one directory (or SWITCHYARD_CONFIG)
                   [--no-watch]      reload on SIGHUP only, not on changes
  switchyard validate PATH           check a config; exit 0 if valid, else print every error and exit 1
  switchyard demo [--config PATH]    the quick start: demo backends for the config's loopback URLs, then serve
`;

async function serve(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    allowNegative: true,
    options: { config: { type: 'string', short: 'c', multiple: true }, watch: { type: 'boolean', default: true } },
  });
  const env = process.env['SWITCHYARD_CONFIG'];
  const sources = values.config ?? (env === undefined ? [] : [env]);
  try {
    checkSourceSpecs(sources);
  } catch (err) {
    process.stderr.write(`switchyard serve: ${(err as Error).message} (--config SOURCE; see --help)\n`);
    process.exit(2);
  }
  const log = createLogger();
  let sy: Switchyard;
  try {
    sy = await Switchyard.start(sources, log, values.watch ? DEFAULT_WATCH : false);
  } catch (err) {
    if (err instanceof ConfigError) {
      log.fatal({ issues: err.issues }, 'invalid config');
      process.stderr.write(`${err.message}\n`);
    } else {
      log.fatal({ err }, 'failed to start');
    }
    process.exit(1);
  }
  process.on('SIGHUP', () => { void sy.reload('SIGHUP'); });
  const stop = (signal: string): void => {
    log.info({ signal }, 'signal received');
    sy.shutdown().then(() => process.exit(0), (err: unknown) => {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

async function validate(args: string[]): Promise<void> {
  const path = args[0];
  if (path === undefined) {
    process.stderr.write(USAGE);
    process.exit(2);
  }
  try {
    // Imported here: `serve` validates on a worker thread and never loads the YAML parsers or the schema.
    const { loadConfig } = await import('../config/load.ts');
    const loaded = await loadConfig(path);
    process.stdout.write(`${path}: valid (version ${loaded.version}, ${loaded.config.routes.length} routes, files: ${loaded.files.join(', ')})\n`);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const issue of err.issues) process.stderr.write(`${formatIssue(issue)}\n`);
    process.exit(1);
  }
}

const [command, ...rest] = process.argv.slice(2);
if (command === 'serve') await serve(rest);
else if (command === 'demo') await serve(await demo(rest));
else if (command === 'validate') await validate(rest);
else {
  process.stderr.write(USAGE);
  process.exit(command === undefined || command === '--help' || command === '-h' ? 0 : 2);
}
