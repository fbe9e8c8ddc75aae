// The tools a run needs: found on the PATH, installed if missing (Debian
// packages with apt-get, ghz with `go install` at a pinned version), or a
// clear error naming what is missing and how to get it. Also the versions and
// the machine description that go into the report.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { delimiter, join } from 'node:path';
import type { PeerName } from './peers.ts';
import { TRAEFIK_VERSION, ensureTraefik, traefikBinary } from './traefik.ts';

export const GHZ_MODULE = 'github.com/bojand/ghz/cmd/ghz';
export const GHZ_VERSION = 'v0.120.0';

interface DebTool { readonly cmd: string; readonly pkg: string; readonly for: string }

/** Debian packages: what every run needs, and what each peer adds. */
function debTools(peers: readonly PeerName[]): DebTool[] {
  const tools: DebTool[] = [
    { cmd: 'taskset', pkg: 'util-linux', for: 'pinning processes to cores' },
    { cmd: 'nginx', pkg: 'nginx', for: 'the HTTP backend' },
    { cmd: 'wrk', pkg: 'wrk', for: 'HTTP/1.1 load' },
    { cmd: 'h2load', pkg: 'nghttp2-client', for: 'h2c load' },
  ];
  if (peers.includes('haproxy')) tools.push({ cmd: 'haproxy', pkg: 'haproxy', for: 'the HAProxy peer' });
  if (peers.includes('caddy')) tools.push({ cmd: 'caddy', pkg: 'caddy', for: 'the Caddy peer' });
  return tools;
}

function which(cmd: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    const path = join(dir, cmd);
    if (dir !== '' && existsSync(path)) return path;
  }
  return undefined;
}

function sh(cmd: string, args: string[], opts: { inherit?: boolean; env?: Record<string, string> } = {}): { code: number | null; out: string } {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    stdio: opts.inherit === true ? 'inherit' : ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env },
    timeout: 15 * 60_000,
  });
  return { code: r.error === undefined ? r.status : null, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
}

export interface Tools {
  readonly ghz: string;
}

/**
 * Makes sure every tool is there, installing what is missing when `install`
 * is set. Throws an error that lists what is missing and how to install it.
 */
export function ensureTools(peers: readonly PeerName[], install: boolean): Tools {
  const problems: string[] = [];
  if (which('go') === undefined) {
    problems.push('go (>= 1.26) — builds bench/go (the gRPC backend, the fixed-rate client) and ghz; install it from go.dev or your distribution');
  }
  // ghz lives where `go install` puts it.
  const gobin = which('go') === undefined ? '' : sh('go', ['env', 'GOPATH']).out.split('\n')[0]!;
  if (gobin !== '') process.env['PATH'] = `${process.env['PATH']}${delimiter}${join(gobin, 'bin')}`;

  let missing = debTools(peers).filter((t) => which(t.cmd) === undefined);
  if (missing.length > 0 && install) {
    const pkgs = [...new Set(missing.map((t) => t.pkg))];
    if (process.getuid?.() !== 0) {
      problems.push(`not root, so cannot apt-get install ${pkgs.join(' ')}`);
    } else {
      console.log(`bench: apt-get install ${pkgs.join(' ')}`);
      sh('apt-get', ['update', '-qq'], { inherit: true });
      sh('apt-get', ['install', '-y', '-qq', ...pkgs], { inherit: true, env: { DEBIAN_FRONTEND: 'noninteractive' } });
      missing = missing.filter((t) => which(t.cmd) === undefined);
    }
  }
  for (const t of missing) problems.push(`${t.cmd} (${t.for}) — apt-get install ${t.pkg}`);

  if (which('ghz') === undefined && install && gobin !== '') {
    console.log(`bench: go install ${GHZ_MODULE}@${GHZ_VERSION}`);
    sh('go', ['install', `${GHZ_MODULE}@${GHZ_VERSION}`], { inherit: true });
  }
  const ghz = which('ghz');
  if (ghz === undefined) problems.push(`ghz (gRPC load) — go install ${GHZ_MODULE}@${GHZ_VERSION}`);

  if (peers.includes('traefik') && !existsSync(traefikBinary())) {
    if (!install || gobin === '') problems.push(`traefik ${TRAEFIK_VERSION} — node bench/traefik.ts builds it (~8 min)`);
    else {
      try {
        ensureTraefik();
      } catch (err) {
        problems.push(`traefik ${TRAEFIK_VERSION}: ${err instanceof Error ? err.message.split('\n').slice(0, 4).join(' / ') : String(err)}`);
      }
    }
  }

  if (problems.length > 0) {
    throw new Error(`missing tools${install ? '' : ' (run without --no-install to install them)'}:\n  ${problems.join('\n  ')}`);
  }
  return { ghz: ghz! };
}

/** Builds bench/go (grpc-backend, fixedrate) into `bin`. */
export function buildGoTools(root: string, bin: string): void {
  const r = spawnSync('go', ['build', '-o', `${bin}/`, './...'], { cwd: join(root, 'bench/go'), encoding: 'utf8', timeout: 10 * 60_000 });
  if (r.status !== 0) throw new Error(`go build in bench/go failed:\n${r.stderr}${r.error?.message ?? ''}`);
}

function firstLine(cmd: string, args: string[], pattern?: RegExp): string {
  const { out } = sh(cmd, args);
  const line = out.split('\n').find((l) => pattern === undefined || pattern.test(l)) ?? out.split('\n')[0] ?? '';
  return line.trim() || 'unknown';
}

/** A switchyard checkout's package version and commit, e.g. "0.1.0 (92c03bd, src modified)". */
export function checkoutVersion(dir: string): string {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string };
  const git = sh('git', ['-C', dir, 'rev-parse', '--short', 'HEAD']);
  const rev = git.code === 0 ? git.out : '';
  const dirty = git.code === 0 && sh('git', ['-C', dir, 'status', '--porcelain', '--untracked-files=no', 'src']).out !== '';
  return `${pkg.version} (${rev || 'no git'}${dirty ? ', src modified' : ''})`;
}

/** Versions of everything measured or measuring, for the report. */
export function versions(root: string, switchyardRoot: string, peers: readonly PeerName[], ghz: string, beforeRoot?: string): Record<string, string> {
  const v: Record<string, string> = {};
  v['switchyard'] = checkoutVersion(switchyardRoot);
  if (beforeRoot !== undefined) v['switchyard (before)'] = `${checkoutVersion(beforeRoot)} ${beforeRoot}`;
  v['node'] = process.version;
  v['nginx'] = firstLine('nginx', ['-v']).replace(/^nginx version: /, '');
  if (peers.includes('haproxy')) v['haproxy'] = firstLine('haproxy', ['-v']).replace(/ - https?:.*$/, '');
  if (peers.includes('caddy')) v['caddy'] = firstLine('caddy', ['version']);
  if (peers.includes('traefik')) v['traefik'] = `${firstLine(traefikBinary(), ['version'], /^Version:/).replace(/^Version:\s*/, '')} (built by bench/traefik.ts)`;
  v['wrk'] = firstLine('wrk', ['-v'], /^wrk/).replace(/ Copyright.*$/, '');
  v['h2load'] = firstLine('h2load', ['--version']);
  // A `go install` build reports "dev": the pinned version is what ran.
  v['ghz'] = `${GHZ_VERSION} (${ghz})`;
  v['go'] = firstLine('go', ['version']);
  const grpcGo = /google\.golang\.org\/grpc (v[\d.]+)/.exec(readFileSync(join(root, 'bench/go/go.mod'), 'utf8'))?.[1];
  v['grpc-go (backend)'] = grpcGo ?? 'unknown';
  return v;
}

export interface Machine {
  readonly cpu: string;
  readonly nproc: number;
  readonly kernel: string;
  readonly memory: string;
}

export function machine(): Machine {
  let cpu = 'unknown';
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpu;
  } catch { /* not Linux */ }
  return { cpu, nproc: cpus().length, kernel: `Linux ${release()}`, memory: `${Math.round(totalmem() / 2 ** 30)} GiB` };
}

/** The hard limit on open files (`ulimit -Hn`), which bounds the memory scenario. */
export function fdHardLimit(): number {
  const n = Number(sh('sh', ['-c', 'ulimit -Hn']).out);
  return Number.isFinite(n) && n > 0 ? n : 1_048_576; // "unlimited"
}
