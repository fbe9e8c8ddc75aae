#!/usr/bin/env node
// switchyard COMMAND ...: picks the subcommand, answers --help and --version,
// and is the one place where errors become output and exit codes: usage
// errors one line and exit 2, config errors file:line:field and exit 1,
// anything else one line and exit 1 — never a stack trace.
import module from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pkg from '../../package.json' with { type: 'json' };

// Before any other module is compiled: Node's compile cache keeps each
// module's compiled code (for .ts files: after type stripping) on disk, so a
// start neither strips types again nor loads the type stripper (~13 MB of idle
// RSS, more with a warm cache for this file too: the image sets
// NODE_COMPILE_CACHE, see Dockerfile, and serve's relaunch passes it on).
// Without a writable directory it stays off and nothing changes but the
// start-up cost.
enableCompileCache();

const { ConfigError, formatIssue } = await import('../config/model.ts');
const { UsageError } = await import('./args.ts');
const { relaunchWithFlags } = await import('./node-flags.ts');

interface Command {
  readonly HELP: string;
  /** The exit code, or undefined while the command keeps running (serve). */
  run(args: readonly string[]): Promise<number | undefined>;
}

// Imported on use: `serve` must not load the YAML parsers and the schema that
// the other commands need (it validates on a worker thread).
const COMMANDS: Record<string, () => Promise<Command>> = {
  serve: () => import('./serve.ts'),
  demo: () => import('./demo.ts'),
  validate: () => import('./validate.ts'),
  routes: () => import('./routes.ts'),
  weights: () => import('./weights.ts'),
  status: () => import('./status.ts'),
  ramp: () => import('./ramp.ts'),
};

/** Commands that run the router, with the V8 flags of node-flags.ts. */
const SERVERS = new Set(['serve', 'demo']);

/** Commands that write the config: a refused change says that nothing was written. */
const WRITERS = new Set(['weights', 'ramp']);

const USAGE = `usage: switchyard COMMAND [options]     (switchyard COMMAND --help for each)

  serve --config SOURCE                      run the router
  demo [--config PATH]                       the quick start: demo backends, then serve
  validate SOURCE ... | -                    check a config (- : stdin, e.g. helm template output)
  routes --config SOURCE                     list routes, hosts, backends and weights
  weights ROUTE BACKEND=W ... --config SOURCE
  weights ROUTE --shift BACKEND=+N --config SOURCE
                                             set a route's weights where the config lives
  status [ROUTE] --config SOURCE [--admin URL ...]
                                             the config vs what each replica runs
  ramp start|pause|resume|abort ROUTE --config SOURCE
                                             drive a route's declared ramp

SOURCE: a YAML file, a directory of them, or kubernetes://NAMESPACE/CONFIGMAP.
  -h, --help      this help
  -v, --version   the version
`;

async function main(argv: readonly string[]): Promise<number | undefined> {
  const [name, ...args] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(`switchyard ${pkg.version}\n`);
    return 0;
  }
  const load = COMMANDS[name];
  if (load === undefined) {
    process.stderr.write(`switchyard: unknown command "${name}" (commands: ${Object.keys(COMMANDS).join(', ')}; see switchyard --help)\n`);
    return 2;
  }
  if (SERVERS.has(name)) relaunchWithFlags();
  try {
    return await (await load()).run(args);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`switchyard ${name}: ${err.message} (see switchyard ${name} --help)\n`);
      return 2;
    }
    if (err instanceof ConfigError) {
      for (const issue of err.issues) process.stderr.write(`${formatIssue(issue)}\n`);
      if (WRITERS.has(name)) process.stderr.write(`switchyard ${name}: nothing written: the resulting config would be invalid\n`);
      return 1;
    }
    process.stderr.write(`switchyard ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

function enableCompileCache(): void {
  const dir = process.env['NODE_COMPILE_CACHE'] ?? join(tmpdir(), 'node-compile-cache');
  const { status } = module.enableCompileCache(dir);
  // The config worker thread enables its own from the environment.
  if (status === module.constants.compileCacheStatus.ENABLED) process.env['NODE_COMPILE_CACHE'] = dir;
}

const code = await main(process.argv.slice(2));
// A finished command exits now rather than when idle keep-alive sockets time out.
if (code !== undefined) process.exit(code);
