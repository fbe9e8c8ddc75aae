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
import { ConfigError, type Config } from '../config/model.ts';
import { parse } from './args.ts';

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
 * `switchyard demo [--config PATH]`: starts the demo backends, then runs
 * `serve` on the config (which reports a bad one). A port a demo backend
 * needs that is taken is an error naming it.
 */
export async function run(args: readonly string[]): Promise<number | undefined> {
  const parsed = parse<{ config?: string }>(args, { config: { type: 'string', short: 'c' } }, HELP, { positionals: false });
  if (!parsed) return 0;
  const path = parsed.values.config ?? EXAMPLE_CONFIG;
  let config: Config | undefined;
  try {
    // Validation loads the YAML parsers and ajv, which `serve` keeps off the main thread; the demo can afford them.
    const { loadConfig } = await import('../config/load.ts');
    config = (await loadConfig(path)).config;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
  }
  if (config !== undefined) {
    const { started } = await startDemoBackends(config);
    process.stderr.write(demoBanner(config, started, relative(process.cwd(), path) || path));
  }
  const serve = await import('./serve.ts');
  return serve.run(['--config', path]);
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
