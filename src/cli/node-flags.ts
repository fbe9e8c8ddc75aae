// The V8 flags (and the malloc setting, SERVE_ENV) the router runs with,
// applied by `serve` itself so that every way of starting it (the image's CMD,
// the Helm chart, `npm start`, the bench, a plain `node src/cli/main.ts
// serve`) gets them. The young generation's size
// is fixed when V8 creates the heap — v8.setFlagsFromString() at run time
// changes the flag but not the heap — so the process re-executes itself once
// with the flags (process.execve: same pid, same stdio, so a container's PID 1
// still gets SIGTERM). Why these values: docs/operations.md, "GC and memory",
// and bench/results/gc-2026-11-30.md.

/** Each flag as node takes it on its command line. */
export const SERVE_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=8'];

/**
 * Environment the router runs with, unless the operator set it. glibc gives
 * each thread that allocates its own malloc arena (up to 8 per core); V8's GC
 * worker threads then each keep what their busiest collection left resident
 * (~7 MiB over four arenas after a burst of 9,000 connections). Two arenas
 * (the main thread's and one shared) hold less of it; the main thread, where
 * requests are handled, allocates from its own as before. Ignored by other C
 * libraries (musl).
 */
export const SERVE_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

/** Set to `off` to run with V8's own defaults and the C library's (A/B measurements). */
export const OPT_OUT_ENV = 'SWITCHYARD_NODE_DEFAULTS';

/** `--no-foo`, `--foo=1`, `--foo_bar` → `foo-bar`: the setting a flag is about. */
function flagName(arg: string): string {
  return arg.replace(/^--(no-)?/, '').replace(/=.*$/, '').replaceAll('_', '-');
}

/**
 * The flags of SERVE_NODE_FLAGS the operator has not set either way (on
 * node's command line or in NODE_OPTIONS): an explicit choice always wins.
 */
export function missingFlags(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  const given = new Set([...execArgv, ...(nodeOptions ?? '').split(/\s+/)].filter((a) => a.startsWith('--')).map(flagName));
  return SERVE_NODE_FLAGS.filter((f) => !given.has(flagName(f)));
}

/** The SERVE_ENV entries `env` does not set (an operator's own value, even empty, wins). */
export function missingEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(Object.entries(SERVE_ENV).filter(([k]) => env[k] === undefined));
}

/**
 * Re-executes this process with the missing flags and environment (glibc
 * reads its malloc settings at start); returns only if there are none (or the
 * platform cannot exec, or the operator opted out).
 */
export function relaunchWithFlags(): void {
  if (process.env[OPT_OUT_ENV] === 'off' || typeof process.execve !== 'function') return;
  const missing = missingFlags(process.execArgv, process.env['NODE_OPTIONS']);
  const env = missingEnv(process.env);
  if (missing.length === 0 && Object.keys(env).length === 0) return;
  try {
    process.execve(process.execPath, [process.execPath, ...missing, ...process.execArgv, ...process.argv.slice(1)], { ...process.env, ...env });
  } catch {
    // Not fatal: the router works with V8's defaults, only its GC pauses are longer.
  }
}
