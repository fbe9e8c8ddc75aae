// The fixed backends every peer forwards to, all on the load core:
// - nginx (one worker) serving static bodies over HTTP/1.1 and h2c, on
//   separate ports (nginx 1.22 cannot take both on one cleartext port);
// - two more nginx ports for the weighted split, which log one line per
//   request so the harness can count what each got;
// - a grpc-go echo server (bench/go/grpc-backend) for the gRPC scenario.
// nginx and grpc-go are among the fastest servers of their kind, so the
// backends cost little of the load core's time.
import { chmodSync, mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LOAD_CORE, freePort, startProcess, waitForPort, type Started } from './procs.ts';

/** Response bodies by request path. */
export const BODIES = { '/small': 13, '/1k': 1024, '/64k': 64 * 1024 } as const;
export type BodyPath = keyof typeof BODIES;

export interface Backends {
  readonly h1: number;
  readonly h2c: number;
  readonly grpc: number;
  readonly splitA: number;
  readonly splitB: number;
  /** Requests each split backend logged since the last reset. */
  splitCounts(): Promise<{ a: number; b: number }>;
  resetSplitCounts(): Promise<void>;
  readonly procs: Started[];
}

export async function startBackends(dir: string, bin: string): Promise<Backends> {
  const www = join(dir, 'www');
  mkdirSync(www, { recursive: true });
  writeFileSync(join(www, 'small'), 'hello, world\n');
  writeFileSync(join(www, '1k'), Buffer.alloc(1024, 'x'));
  writeFileSync(join(www, '64k'), Buffer.alloc(64 * 1024, 'x'));
  // nginx workers run as nobody; mkdtemp made the run directory 0700.
  chmodSync(dir, 0o755);
  chmodSync(www, 0o755);

  const [h1, h2c, grpc, splitA, splitB] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
  const splitLog = join(dir, 'split-access.log');
  writeFileSync(splitLog, '');
  const conf = join(dir, 'backend-nginx.conf');
  writeFileSync(conf, backendNginxConf({ dir, www, h1, h2c, splitA, splitB, splitLog }));
  const nginx = startProcess('backend nginx', 'nginx', ['-p', dir, '-c', conf, '-e', join(dir, 'backend-nginx.err')],
    join(dir, 'backend-nginx.log'), { core: LOAD_CORE });
  const grpcServer = startProcess('grpc backend', join(bin, 'grpc-backend'), ['-addr', `127.0.0.1:${grpc}`],
    join(dir, 'grpc-backend.log'), { core: LOAD_CORE });
  for (const port of [h1, h2c, splitA, splitB]) await waitForPort(port, nginx);
  await waitForPort(grpc, grpcServer);

  const count = (): { a: number; b: number } => {
    const counts = { a: 0, b: 0 };
    for (const line of readFileSync(splitLog, 'utf8').split('\n')) {
      if (line === String(splitA)) counts.a++;
      else if (line === String(splitB)) counts.b++;
    }
    return counts;
  };
  return {
    h1, h2c, grpc, splitA, splitB,
    procs: [nginx, grpcServer],
    // The log is buffered (flush=100ms): wait for the last lines before counting.
    splitCounts: async () => { await sleep(400); return count(); },
    resetSplitCounts: async () => { await sleep(400); truncateSync(splitLog, 0); },
  };
}

interface BackendConf {
  dir: string; www: string; h1: number; h2c: number; splitA: number; splitB: number; splitLog: string;
}

function backendNginxConf(c: BackendConf): string {
  // Files, not `return`: a real body with a real Content-Length, sent with
  // sendfile from an fd cache — nginx's fastest static path.
  const site = `
    root ${c.www};
    location / { }`;
  return `# backend nginx of the switchyard benchmark (generated)
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid ${c.dir}/backend-nginx.pid;
error_log ${c.dir}/backend-nginx.err warn;
events { worker_connections 16000; }
http {
  default_type application/octet-stream;
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  open_file_cache max=16 inactive=1h;
  open_file_cache_valid 1h;
  keepalive_timeout 75s;
  # Never close a busy keep-alive connection (HTTP/1.1) or send GOAWAY (h2)
  # during a run: the default of 1000 requests would make every peer reconnect.
  keepalive_requests 100000000;
  http2_max_concurrent_streams 1000;
  client_body_temp_path ${c.dir}/tmp-body;
  proxy_temp_path ${c.dir}/tmp-proxy;
  fastcgi_temp_path ${c.dir}/tmp-fastcgi;
  uwsgi_temp_path ${c.dir}/tmp-uwsgi;
  scgi_temp_path ${c.dir}/tmp-scgi;
  log_format port '$server_port';
  server { listen 127.0.0.1:${c.h1} backlog=4096; ${site} }
  # No sendfile over HTTP/2: with it, nginx 1.22 answers a connection that has
  # one stream at a time ~40 ms late (a delayed-ACK stall), which nginx's
  # grpc_pass (one stream per upstream connection) always hits.
  server { listen 127.0.0.1:${c.h2c} http2 backlog=4096; sendfile off; tcp_nopush off; ${site} }
  server {
    listen 127.0.0.1:${c.splitA} backlog=4096;
    listen 127.0.0.1:${c.splitB} backlog=4096;
    access_log ${c.splitLog} port buffer=64k flush=100ms;
    ${site}
  }
}
`;
}
