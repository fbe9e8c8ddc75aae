// `switchyard demo`: the quick start with nothing else running. Before serving
// the config (config/example.yaml unless --config says otherwise) it starts a
// tiny backend on every loopback address its routes point at, each answering
// which route and backend it is, so the first curl shows the split instead of
// a 502. Backends elsewhere are left alone: they are somebody's real services.
import http from 'node:http';
import http2 from 'node:http2';
import { isIP } from 'node:net';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ConfigError, type Config } from '../config/model.ts';

export const EXAMPLE_CONFIG = fileURLToPath(new URL('../../config/example.yaml', import.meta.url));

export const HELP = `usage: switchyard demo [--config PATH]

The quick start (npm start): starts a small backend on every loopback address
the config's routes point at, each answering with its backend and route name,
then serves the config as \`switchyard serve\` does. Backends elsewhere are left
alone. Ctrl-C (SIGINT) or SIGTERM drains and stops both.

  -c, --config PATH  the config to serve (default: config/example.yaml)
  -h, --help         this help
`;

/**
 * `switchyard demo [--config PATH]`: starts the demo backends and returns the
 * arguments for `serve`, which runs the router (and reports a bad config).
 * Exits 2 on a usage error, 1 when a demo backend cannot listen.
 */
export async function demo(args: readonly string[]): Promise<string[]> {
  let path: string;
  try {
    const { values } = parseArgs({ args: [...args], options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } } });
    if (values.help === true) {
      process.stdout.write(HELP);
      process.exit(0);
    }
    path = values.config ?? EXAMPLE_CONFIG;
  } catch (err) {
    process.stderr.write(`switchyard demo: ${(err as Error).message} (see switchyard demo --help)\n`);
    process.exit(2);
  }
  let config: Config;
  try {
    // Validation loads the YAML parsers and ajv, which `serve` keeps off the main thread; the demo can afford them.
    const { loadConfig } = await import('../config/load.ts');
    config = (await loadConfig(path)).config;
  } catch (err) {
    if (err instanceof ConfigError) return ['--config', path]; // serve says what is wrong with it
    throw err;
  }
  try {
    const { started } = await startDemoBackends(config);
    process.stderr.write(demoBanner(config, started, relative(process.cwd(), path) || path));
  } catch (err) {
    process.stderr.write(`switchyard demo: ${(err as Error).message}\n`);
    process.exit(1);
  }
  return ['--config', path];
}

export interface DemoBackend {
  readonly route: string;
  readonly backend: string;
  /** host:port it listens on. */
  readonly address: string;
}

export interface DemoBackends {
  readonly started: readonly DemoBackend[];
  close(): Promise<void>;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/** The answer names the backend first, so `curl | cut -d' ' -f1` tallies a split. */
function answer(backend: string, route: string, host: string | undefined): string {
  return `${backend} (route ${route}; demo backend saw Host: ${host ?? '-'})\n`;
}

/**
 * Starts one demo backend per distinct loopback URL in `config` (HTTP/1.1 for
 * `http` routes, h2c for `h2c` ones). A URL two routes share answers as the
 * first of them. Rejects, with everything already started closed again, when
 * a port is taken.
 */
export async function startDemoBackends(config: Config): Promise<DemoBackends> {
  const servers: (http.Server | http2.Http2Server)[] = [];
  const started: DemoBackend[] = [];
  const seen = new Set<string>();
  const close = async (): Promise<void> => {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => {
      if ('closeAllConnections' in s) s.closeAllConnections();
      s.close(() => resolve());
    })));
  };
  try {
    for (const route of config.routes) {
      for (const b of route.backends) {
        const url = new URL(b.url);
        const host = url.hostname.replace(/^\[|\]$/g, '');
        if (!isLoopback(host) || seen.has(b.url)) continue;
        seen.add(b.url);
        const server = route.protocol === 'h2c'
          ? http2.createServer((req, res) => {
            res.setHeader('x-demo-backend', b.name);
            res.end(answer(b.name, route.name, req.headers[':authority']));
          })
          : http.createServer((req, res) => {
            req.resume();
            res.setHeader('x-demo-backend', b.name);
            res.end(answer(b.name, route.name, req.headers.host));
          });
        await new Promise<void>((resolve, reject) => {
          server.once('error', (err: NodeJS.ErrnoException) => reject(new Error(
            err.code === 'EADDRINUSE'
              ? `cannot start the demo backend ${route.name}/${b.name}: ${url.host} is already in use (another demo still running?)`
              : `cannot start the demo backend ${route.name}/${b.name} on ${url.host}: ${err.message}`)));
          server.listen(Number(url.port), host, () => resolve());
        });
        servers.push(server);
        started.push({ route: route.name, backend: b.name, address: url.host });
      }
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { started, close };
}

/** What the demo prints on stderr before the router's JSON logs start. */
export function demoBanner(config: Config, backends: readonly DemoBackend[], configPath: string): string {
  const { host, port } = config.entrypoint;
  const entry = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  const lines = [
    `switchyard demo: ${backends.length} demo backends (${backends.map((b) => `${b.route}/${b.backend} on ${b.address}`).join(', ')})`,
    `serving ${configPath}; try:`,
  ];
  const first = config.routes.find((r) => r.protocol === 'http' && !r.hosts[0]!.startsWith('*.'));
  if (first !== undefined) {
    const h = first.hosts[0]!;
    lines.push(
      `  for i in $(seq 10); do curl -s -H 'Host: ${h}' ${entry}/; done`,
      `  curl -H 'Host: ${h}' -H 'x-switchyard-backend: ${first.backends.at(-1)!.name}' ${entry}/`,
    );
  }
  lines.push(`  then edit the weights in ${configPath} and save: the next requests follow them. Ctrl-C stops it.`, '');
  return lines.join('\n');
}
