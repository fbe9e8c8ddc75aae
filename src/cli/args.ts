// Argument parsing shared by the subcommands: node:util parseArgs in strict
// mode, with its errors turned into one line that names the flag, and
// `--help` answered by every subcommand.
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { checkSourceSpecs } from '../config/sources.ts';

/** Wrong usage (unknown or incomplete flag, missing argument): one line on stderr, exit 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

interface Parsed<T> {
  readonly values: T;
  readonly positionals: string[];
}

const HELP_OPTION = { help: { type: 'boolean', short: 'h' } } as const;

/** `-c, --config SOURCE`, repeatable: the option every command that reads a config takes (see configSources). */
export const CONFIG_OPTION = { config: { type: 'string', short: 'c', multiple: true } } as const;

/**
 * Parses ARGS against OPTIONS; undefined after printing HELP when `--help` is
 * among them (the caller exits 0). Throws UsageError for anything parseArgs refuses.
 */
export function parse<V>(args: readonly string[], options: ParseArgsOptionsConfig, help: string, how: { positionals?: boolean; allowNegative?: boolean } = {}): Parsed<V> | undefined {
  // --help wins over every other mistake on the line, as users expect.
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(help);
    return undefined;
  }
  try {
    const { values, positionals: rest } = parseArgs({
      args: [...args], options: { ...options, ...HELP_OPTION }, strict: true,
      allowPositionals: how.positionals ?? true, allowNegative: how.allowNegative ?? false,
    });
    return { values: values as V, positionals: rest };
  } catch (err) {
    throw new UsageError(parseArgsMessage(err as Error & { code?: string }));
  }
}

/** parseArgs's messages, shortened to what was wrong and with which flag. */
function parseArgsMessage(err: Error & { code?: string }): string {
  const quoted = /'([^']*)'/.exec(err.message)?.[1] ?? '';
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option ${quoted}`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument "${quoted}"`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      // "-c, --config <value>" → "--config"
      const flag = /--[\w-]+/.exec(quoted)?.[0] ?? quoted;
      if (err.message.includes('argument missing')) return `${flag} needs a value`;
      if (err.message.includes('does not take an argument')) return `${flag} does not take a value`;
      if (err.message.includes('ambiguous')) return `${flag} needs a value (got what looks like a flag; write ${flag}=VALUE if that is the value)`;
      return err.message;
    }
    default:
      return err.message;
  }
}

/** The config sources of a migration command: every `--config`, else SWITCHYARD_CONFIG. */
export function configSources(given: readonly string[] | undefined): string[] {
  const env = process.env['SWITCHYARD_CONFIG'];
  const sources = given?.length ? [...given] : env ? [env] : [];
  if (sources.length === 0) throw new UsageError('--config SOURCE is required (a file, a directory or kubernetes://NAMESPACE/CONFIGMAP; or set SWITCHYARD_CONFIG)');
  try {
    checkSourceSpecs(sources);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return sources;
}
