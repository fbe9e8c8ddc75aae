// The peers: what each proxy is, how its config is generated, how it starts.
// Every proxy gets the same job, configured the way its own documentation
// recommends for this kind of load:
//   - one core (taskset -c 1; one worker / one thread / GOMAXPROCS=1),
//   - routing by Host: h1.bench and split.bench on its HTTP/1.1 port,
//     h2c.bench and grpc.bench on its HTTP/2 cleartext port,
//   - upstream keep-alive (HTTP/1.1) and HTTP/2 to the h2c and gRPC backends,
//   - X-Forwarded-For added (switchyard always does it), no access log.
// Configs are written into the run's temp directory.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import type { Backends } from './backends.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { PROXY_CORE, freePort, logTail, startProcess, stopProcess, treeRss, waitForPort, type Started } from './procs.ts';
import { traefikBinary } from './traefik.ts';

export const PEER_NAMES = ['direct', 'haproxy', 'nginx', 'caddy', 'traefik', 'switchyard'] as const;
/** 'switchyard-before': a second switchyard checkout in the same run (run.ts --before DIR), for before/after on equal terms. */
export type PeerName = (typeof PEER_NAMES)[number] | 'switchyard-before';

/** Hosts the peers route by. */
export const HOSTS = { h1: 'h1.bench', split: 'split.bench', h2c: 'h2c.bench', grpc: 'grpc.bench' } as const;

/** What a load generator aims at: which port carries which kind of traffic. */
export interface Targets {
  readonly h1: number;
  readonly h2c: number;
  readonly grpc: number;
  /** undefined: the peer has no weighted balancing (direct, Caddy 2.6). */
  readonly split: number | undefined;
}

export interface RunningPeer {
  readonly name: PeerName;
  readonly targets: Targets;
  /** The proxy's process (tree root) for CPU and RSS; undefined for direct. */
  readonly pid: number | undefined;
  /** Resident memory right after start (bytes); 0 for direct. */
  readonly startRss: number;
  stop(): Promise<void>;
}

export interface PeerContext {
  readonly dir: string;
  readonly backends: Backends;
  readonly root: string;
  /** The checkout the 'switchyard-before' peer runs. */
  readonly beforeRoot?: string;
  /** Client connections a proxy must accept at once (the memory scenario's, plus room). */
  readonly maxConns: number;
  /** Extra switchyard routes (the many-routes scenario). */
  readonly extraRoutes?: number;
  /** Node flags for switchyard (bench/cpu-cost.ts: --trace-gc, --cpu-prof). */
  readonly nodeArgs?: readonly string[];
}

export async function startPeer(name: PeerName, ctx: PeerContext): Promise<RunningPeer> {
  switch (name) {
    case 'direct': return direct(ctx);
    case 'haproxy': return haproxy(ctx);
    case 'nginx': return nginx(ctx);
    case 'caddy': return caddy(ctx);
    case 'traefik': return traefik(ctx);
    case 'switchyard': return switchyard(ctx, 'switchyard', ctx.root);
    case 'switchyard-before':
      if (ctx.beforeRoot === undefined) throw new Error('switchyard-before: no checkout given (--before DIR)');
      return switchyard(ctx, 'switchyard-before', ctx.beforeRoot);
  }
}

/** No proxy: the load generator talks to the backends. The ceiling of every scenario. */
function direct({ backends: b }: PeerContext): RunningPeer {
  return { name: 'direct', pid: undefined, startRss: 0, targets: { h1: b.h1, h2c: b.h2c, grpc: b.grpc, split: undefined }, stop: async () => {} };
}

async function running(name: PeerName, proc: Started, h1: number, h2: number, split: boolean, ready?: () => Promise<void>): Promise<RunningPeer> {
  try {
    await waitForPort(h1, proc);
    await waitForPort(h2, proc);
    await ready?.();
  } catch (err) {
    await stopProcess(proc);
    throw err;
  }
  await sleep(300); // past start-up work, before any traffic
  return {
    name, pid: proc.pid, startRss: treeRss(proc.pid),
    targets: { h1, h2c: h2, grpc: h2, split: split ? h1 : undefined }, stop: () => stopProcess(proc),
  };
}

// --- HAProxy ---------------------------------------------------------------

async function haproxy({ dir, backends: b, maxConns }: PeerContext): Promise<RunningPeer> {
  const [h1, h2] = [await freePort(), await freePort()];
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, `# HAProxy peer of the switchyard benchmark (generated)
global
  nbthread 1
  # room for the idle connections of the memory scenario (HAProxy insists on
  # 2 fds per connection under the process's fd limit)
  maxconn ${maxConns}

defaults
  mode http
  maxconn ${maxConns}
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  option forwardfor
  # share idle upstream connections between client connections, and
  # multiplex streams on HTTP/2 upstream connections
  http-reuse always

frontend h1
  bind 127.0.0.1:${h1}
  use_backend split if { hdr(host) -i ${HOSTS.split} }
  default_backend h1

frontend h2
  bind 127.0.0.1:${h2} proto h2
  use_backend grpc if { hdr(host) -i ${HOSTS.grpc} }
  default_backend h2c

backend h1
  server nginx 127.0.0.1:${b.h1}

backend split
  balance roundrobin
  server a 127.0.0.1:${b.splitA} weight 90
  server b 127.0.0.1:${b.splitB} weight 10

backend h2c
  server nginx 127.0.0.1:${b.h2c} proto h2

backend grpc
  server go 127.0.0.1:${b.grpc} proto h2
`);
  const proc = startProcess('haproxy', 'haproxy', ['-db', '-f', file], join(dir, 'haproxy.log'), { core: PROXY_CORE });
  return running('haproxy', proc, h1, h2, true);
}

// --- nginx -----------------------------------------------------------------

async function nginx({ dir, backends: b, maxConns }: PeerContext): Promise<RunningPeer> {
  const [h1, h2] = [await freePort(), await freePort()];
  const file = join(dir, 'nginx-proxy.conf');
  const h1Proxy = (upstream: string): string => `
      proxy_pass http://${upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;`;
  const h2Proxy = (upstream: string): string => `
      grpc_pass grpc://${upstream};
      grpc_set_header Host $host;
      grpc_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`;
  writeFileSync(file, `# nginx peer of the switchyard benchmark (generated)
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid ${dir}/nginx-proxy.pid;
error_log ${dir}/nginx-proxy.err warn;
events { worker_connections ${maxConns}; }
http {
  access_log off;
  tcp_nodelay on;
  keepalive_timeout 75s;
  keepalive_requests 100000000;
  http2_max_concurrent_streams 1000;
  # 64 KB bodies fit in memory instead of being spooled to a temp file.
  proxy_buffer_size 16k;
  proxy_buffers 16 16k;
  client_body_temp_path ${dir}/nginx-tmp-body;
  proxy_temp_path ${dir}/nginx-tmp-proxy;
  fastcgi_temp_path ${dir}/nginx-tmp-fastcgi;
  uwsgi_temp_path ${dir}/nginx-tmp-uwsgi;
  scgi_temp_path ${dir}/nginx-tmp-scgi;

  # Idle upstream connections kept per worker. grpc_pass runs one stream per
  # upstream connection, so the h2 pools are sized for the streams in flight.
  upstream h1 { server 127.0.0.1:${b.h1}; keepalive 128; keepalive_requests 100000000; }
  upstream split {
    server 127.0.0.1:${b.splitA} weight=90;
    server 127.0.0.1:${b.splitB} weight=10;
    keepalive 128; keepalive_requests 100000000;
  }
  upstream h2c { server 127.0.0.1:${b.h2c}; keepalive 1024; keepalive_requests 100000000; }
  upstream grpc { server 127.0.0.1:${b.grpc}; keepalive 1024; keepalive_requests 100000000; }

  server {
    listen 127.0.0.1:${h1} default_server backlog=4096;
    server_name ${HOSTS.h1};
    location / {${h1Proxy('h1')}
    }
  }
  server {
    listen 127.0.0.1:${h1};
    server_name ${HOSTS.split};
    location / {${h1Proxy('split')}
    }
  }
  server {
    listen 127.0.0.1:${h2} http2 default_server backlog=4096;
    server_name ${HOSTS.h2c};
    location / {${h2Proxy('h2c')}
    }
  }
  server {
    listen 127.0.0.1:${h2} http2;
    server_name ${HOSTS.grpc};
    location / {${h2Proxy('grpc')}
    }
  }
}
`);
  const proc = startProcess('nginx', 'nginx', ['-p', dir, '-c', file, '-e', join(dir, 'nginx-proxy.err')],
    join(dir, 'nginx-proxy.log'), { core: PROXY_CORE });
  return running('nginx', proc, h1, h2, true);
}

// --- Caddy -----------------------------------------------------------------

async function caddy({ dir, backends: b }: PeerContext): Promise<RunningPeer> {
  const [h1, h2] = [await freePort(), await freePort()];
  const file = join(dir, 'caddy.json');
  const proxy = (port: number, h2c: boolean): object => ({
    handler: 'reverse_proxy',
    upstreams: [{ dial: `127.0.0.1:${port}` }],
    transport: h2c
      ? { protocol: 'http', versions: ['h2c', '2'] }
      : { protocol: 'http', keep_alive: { max_idle_conns_per_host: 128 } },
  });
  const server = (port: number, routes: object[]): object => ({
    listen: [`127.0.0.1:${port}`],
    protocols: ['h1', 'h2c'],
    automatic_https: { disable: true },
    routes,
  });
  // JSON rather than a Caddyfile: every setting explicit, nothing adapted.
  const config = {
    admin: { disabled: true },
    logging: { logs: { default: { level: 'ERROR' } } },
    apps: {
      http: {
        servers: {
          h1: server(h1, [{ handle: [proxy(b.h1, false)] }]),
          h2: server(h2, [
            { match: [{ host: [HOSTS.grpc] }], handle: [proxy(b.grpc, true)], terminal: true },
            { handle: [proxy(b.h2c, true)] },
          ]),
        },
      },
    },
  };
  writeFileSync(file, JSON.stringify(config, null, 2));
  // Caddy 2.6 has no weighted load balancing (weighted_round_robin came in
  // 2.8), so it sits the split scenario out.
  const proc = startProcess('caddy', 'caddy', ['run', '--config', file], join(dir, 'caddy.log'), {
    core: PROXY_CORE,
    env: { GOMAXPROCS: '1', HOME: dir, XDG_DATA_HOME: join(dir, 'caddy-data'), XDG_CONFIG_HOME: join(dir, 'caddy-config') },
  });
  return running('caddy', proc, h1, h2, false);
}

// --- Traefik ---------------------------------------------------------------

/**
 * Traefik v3 (bench/traefik.ts builds it once into ~/.cache): file provider,
 * one entry point per port (its cleartext entry points take h2c as well),
 * Prometheus metrics on their own entry point as a production setup has them,
 * and the split as a weighted service 90/10, as the migration used it.
 */
async function traefik({ dir, backends: b }: PeerContext): Promise<RunningPeer> {
  const [h1, h2, metrics] = [await freePort(), await freePort(), await freePort()];
  const dynamic = join(dir, 'traefik-dynamic.json');
  const server = (scheme: string, port: number): object => ({ loadBalancer: { servers: [{ url: `${scheme}://127.0.0.1:${port}` }] } });
  const router = (entryPoint: string, host: string, service: string): object => ({ entryPoints: [entryPoint], rule: `Host(\`${host}\`)`, service });
  writeFileSync(dynamic, JSON.stringify({
    http: {
      routers: {
        h1: router('h1', HOSTS.h1, 'h1'),
        split: router('h1', HOSTS.split, 'split'),
        h2c: router('h2', HOSTS.h2c, 'h2c'),
        grpc: router('h2', HOSTS.grpc, 'grpc'),
      },
      services: {
        h1: server('http', b.h1),
        'split-a': server('http', b.splitA),
        'split-b': server('http', b.splitB),
        split: { weighted: { services: [{ name: 'split-a', weight: 90 }, { name: 'split-b', weight: 10 }] } },
        h2c: server('h2c', b.h2c),
        grpc: server('h2c', b.grpc),
      },
    },
  }, null, 1));
  const file = join(dir, 'traefik.json');
  // JSON rather than YAML or TOML: Traefik reads all three; every setting explicit.
  writeFileSync(file, JSON.stringify({
    global: { checkNewVersion: false, sendAnonymousUsage: false },
    log: { level: 'ERROR' },
    entryPoints: {
      h1: { address: `127.0.0.1:${h1}` },
      h2: { address: `127.0.0.1:${h2}` },
      metrics: { address: `127.0.0.1:${metrics}` },
    },
    metrics: { prometheus: { entryPoint: 'metrics' } },
    providers: { file: { filename: dynamic, watch: false } },
    // Keep-alive to the backends like the others (Traefik's default is 200 idle per host).
    serversTransport: { maxIdleConnsPerHost: 128 },
  }, null, 1));
  const proc = startProcess('traefik', traefikBinary(), [`--configFile=${file}`], join(dir, 'traefik.log'), {
    core: PROXY_CORE,
    env: { GOMAXPROCS: '1', HOME: dir },
  });
  // The entry points listen before the file provider's routers are in: wait for a routed answer.
  return running('traefik', proc, h1, h2, true, () => routed(proc, h1, HOSTS.h1));
}

/** Resolves once a GET for `host` on `port` is answered 200. */
async function routed(proc: Started, port: number, host: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await new Promise<number>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/small', headers: { host }, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.once('error', () => resolve(0));
    });
    if (status === 200) return;
    if (Date.now() > deadline) throw new Error(`${proc.name} does not route ${host} after ${timeoutMs} ms (last status ${status}):\n${logTail(proc)}`);
    await sleep(100);
  }
}

// --- switchyard ------------------------------------------------------------

/** The many-routes scenario's hosts: svc-0.bench … svc-(n-1).bench. */
export function manyHost(i: number): string {
  return `svc-${i}.bench`;
}

// What the Dockerfile's build runs to fill Node's compile cache (every src/
// module and what it imports, then the CLI): the bench starts switchyard with
// a cache filled the same way, as the image ships it. Without it a checkout
// whose files changed since the last start strips their types again and
// loads the type stripper, ~20 MiB of idle RSS that no deployed image has.
const FILL_COMPILE_CACHE = "import { readdirSync } from 'node:fs'; for (const f of readdirSync('src', { recursive: true })) if (f.endsWith('.ts') && f !== 'cli/main.ts') await import('./src/' + f).catch(() => {});";
const compileCaches = new Map<string, string>();

/** The compile cache for `root` in this run's directory, filled on first use. */
export function compileCache(dir: string, name: PeerName, root: string, cli: string): string {
  let cache = compileCaches.get(root);
  if (cache === undefined) {
    cache = join(dir, `${name}-compile-cache`);
    mkdirSync(cache, { recursive: true });
    const opts = { cwd: root, env: { ...process.env, NODE_COMPILE_CACHE: cache }, stdio: 'ignore' as const };
    execFileSync(process.execPath, ['--input-type=module', '-e', FILL_COMPILE_CACHE], opts);
    execFileSync(process.execPath, [cli, '--version'], opts);
    compileCaches.set(root, cache);
  }
  return cache;
}

async function switchyard({ dir, backends: b, extraRoutes = 0, nodeArgs = [] }: PeerContext, name: PeerName, root: string): Promise<RunningPeer> {
  const [port, admin] = [await freePort(), await freePort()];
  const nginxBackend = (port: number): { name: string; url: string; weight: number } => ({ name: 'nginx', url: `http://127.0.0.1:${port}`, weight: 1 });
  const routes: object[] = [
    { name: 'h1', hosts: [HOSTS.h1], protocol: 'http', backends: [nginxBackend(b.h1)] },
    {
      name: 'split', hosts: [HOSTS.split], protocol: 'http', backends: [
        { name: 'a', url: `http://127.0.0.1:${b.splitA}`, weight: 90 },
        { name: 'b', url: `http://127.0.0.1:${b.splitB}`, weight: 10 },
      ],
    },
    { name: 'h2c', hosts: [HOSTS.h2c], protocol: 'h2c', backends: [nginxBackend(b.h2c)] },
    { name: 'grpc', hosts: [HOSTS.grpc], protocol: 'h2c', backends: [{ name: 'go', url: `http://127.0.0.1:${b.grpc}`, weight: 1 }] },
  ];
  // Many routes, all to the same backend: what grows is the routing table,
  // not the number of upstream pools.
  for (let i = 0; i < extraRoutes; i++) {
    routes.push({ name: `svc-${i}`, hosts: [manyHost(i)], protocol: 'http', backends: [nginxBackend(b.h1)] });
  }
  const file = join(dir, extraRoutes > 0 ? `${name}-${extraRoutes}.yaml` : `${name}.yaml`);
  // JSON is YAML; a file of 10,000 routes is generated faster this way.
  writeFileSync(file, JSON.stringify({
    version: 1,
    entrypoint: { address: `127.0.0.1:${port}` },
    admin: { address: `127.0.0.1:${admin}` },
    shutdown: { drainDelay: '0s', timeout: '2s' },
    routes,
  }, null, 1));
  // process.execPath: the Node 24 that runs this harness (the npm script puts
  // the pinned `node` devDependency first on the PATH).
  // src/cli/main.ts since the layout of issue 10; src/cli.ts in older checkouts (A/B runs).
  // serve re-executes itself with its V8 flags (src/cli/node-flags.ts), so the
  // bench runs what production runs; checkouts before 2026-11-30 lack them.
  const cli = existsSync(join(root, 'src/cli/main.ts')) ? join(root, 'src/cli/main.ts') : join(root, 'src/cli.ts');
  const proc = startProcess(name, process.execPath, [...nodeArgs, cli, 'serve', '--config', file],
    join(dir, extraRoutes > 0 ? `${name}-many.log` : `${name}.log`), {
      core: PROXY_CORE,
      cwd: root,
      env: { SWITCHYARD_LOG_LEVEL: 'warn', NODE_ENV: 'production', NODE_COMPILE_CACHE: compileCache(dir, name, root, cli) },
    });
  return running(name, proc, port, port, true);
}
