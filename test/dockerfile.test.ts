// The Dockerfile without a Docker engine: parse it, check what the image must
// be (node:24-slim stages, production dependencies only, non-root, exec-form
// CMD), run its build stages' commands in temporary directories that stand in
// for each stage's filesystem (COPY from the build context, honouring
// .dockerignore, or from an earlier stage; RUN through sh with the stage's ENV
// and WORKDIR), then run the image's CMD from the final stage's WORKDIR as a
// process: it must serve, answer /healthz, write nothing to its filesystem,
// and exit 0 on SIGTERM.
//
// `npm ci` here reaches the npm registry (or npm's local cache).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, posix, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { parse, stringify } from 'yaml';
import { ROOT, startBackend, type Backend } from './helpers.ts';

interface Instruction { readonly op: string; readonly args: string; readonly line: number }

/** Instructions of a Dockerfile: comments dropped, `\` continuations joined. */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i + 1;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (/\\\s*$/.test(line) && i + 1 < lines.length) {
      line = line.replace(/\\\s*$/, ' ');
      i++;
      if (!/^\s*#/.test(lines[i]!)) line += lines[i]!;
    }
    const m = /^\s*(\S+)\s*(.*)$/.exec(line)!;
    out.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim(), line: start });
  }
  return out;
}

interface Stage {
  readonly index: number;
  readonly name: string | undefined;
  readonly from: string;
  readonly instructions: Instruction[];
}

function stagesOf(instructions: Instruction[]): { args: Map<string, string>; stages: Stage[] } {
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.op === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      assert.ok(m, `line ${ins.line}: FROM ${ins.args}`);
      const from = m[1]!.replace(/\$\{?(\w+)\}?/g, (_, name: string) => args.get(name) ?? '');
      stages.push({ index: stages.length, name: m[2], from, instructions: [] });
    } else if (stages.length === 0) {
      assert.equal(ins.op, 'ARG', `line ${ins.line}: only ARG may come before FROM`);
      const [name, value = ''] = ins.args.split('=', 2) as [string, string?];
      args.set(name, value);
    } else {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  return { args, stages };
}

/** Shell words of a COPY/ADD line, or the JSON form's array; flags (--from=…) split off. */
function copyArgs(args: string): { flags: Map<string, string>; sources: string[]; dest: string } {
  const words = args.startsWith('[') ? JSON.parse(args) as string[] : args.split(/\s+/);
  const flags = new Map<string, string>();
  while (words[0]?.startsWith('--')) {
    const [k, v = ''] = words.shift()!.slice(2).split('=', 2) as [string, string?];
    flags.set(k, v);
  }
  assert.ok(words.length >= 2, `COPY needs a source and a destination: ${args}`);
  return { flags, sources: words.slice(0, -1), dest: words.at(-1)! };
}

/** A .dockerignore as a predicate on context-relative paths (patterns, `**`, `!` exceptions; the last match wins). */
function dockerignore(text: string): (rel: string) => boolean {
  const rules = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')).map((l) => {
    const negate = l.startsWith('!');
    const pattern = posix.normalize((negate ? l.slice(1) : l).replace(/^\/+/, ''));
    let re = '';
    for (let i = 0; i < pattern.length; i++) {
      const c = pattern[i]!;
      if (c === '*' && pattern[i + 1] === '*') {
        re += pattern[i + 2] === '/' ? '(?:.*/)?' : '.*';
        i += pattern[i + 2] === '/' ? 2 : 1;
      } else if (c === '*') re += '[^/]*';
      else if (c === '?') re += '[^/]';
      else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
    return { negate, re: new RegExp(`^${re}(?:/.*)?$`) };
  });
  return (rel) => {
    let ignored = false;
    for (const r of rules) if (r.re.test(rel)) ignored = !r.negate;
    return ignored;
  };
}

/** Every file under `dir` with its size and mtime: what a process must leave unchanged. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const s = statSync(p);
      out.set(relative(dir, p), e.isDirectory() ? 'dir' : `${s.size}:${s.mtimeMs}`);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

function sh(command: string, cwd: string, env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', command], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => { output += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { output += c.toString(); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

interface Built {
  /** Root directory standing in for each stage's filesystem. */
  readonly roots: string[];
  readonly workdir: string;
  readonly env: Record<string, string>;
  readonly user: string | undefined;
  readonly cmd: string[];
}

/** Runs every stage's WORKDIR/ENV/COPY/RUN under `base`; the final stage's WORKDIR, ENV, USER and CMD come back. */
async function build(stages: Stage[], base: string, ignored: (rel: string) => boolean): Promise<Built> {
  const roots: string[] = [];
  const byName = new Map<string, number>();
  // The base image's PATH, with this test's Node 24 (and npm) standing in for the image's.
  const hostPath = `${dirname(process.execPath)}:${process.env['PATH'] ?? ''}`;
  // The machine's environment (CA certificates, proxies: what a docker build
  // would be given as build args), less the npm_* variables of the npm/npx
  // running this test, which would point npm at this checkout.
  const buildEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k))) as Record<string, string>;
  let last: Built | undefined;
  for (const stage of stages) {
    const root = join(base, `stage${stage.index}`);
    mkdirSync(root, { recursive: true });
    roots.push(root);
    if (stage.name !== undefined) byName.set(stage.name, stage.index);
    let workdir = '/';
    const env: Record<string, string> = {};
    let user: string | undefined;
    let cmd: string[] = [];
    const inRoot = (p: string): string => join(root, posix.resolve(workdir, p));
    for (const ins of stage.instructions) {
      switch (ins.op) {
        case 'WORKDIR':
          workdir = posix.resolve(workdir, ins.args);
          mkdirSync(inRoot('.'), { recursive: true });
          break;
        case 'ENV':
          for (const m of ins.args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env[m[1]!] = m[2]!.replace(/^"|"$/g, '');
          break;
        case 'USER':
          user = ins.args;
          break;
        case 'CMD':
          assert.ok(ins.args.startsWith('['), `line ${ins.line}: CMD must be exec form (JSON), or SIGTERM goes to a shell`);
          cmd = JSON.parse(ins.args) as string[];
          break;
        case 'COPY': {
          const { flags, sources, dest } = copyArgs(ins.args);
          const from = flags.get('from');
          const target = inRoot(dest);
          const intoDir = dest.endsWith('/') || sources.length > 1;
          for (const src of sources) {
            let source: string;
            if (from !== undefined) {
              const idx = byName.get(from) ?? Number(from);
              assert.ok(roots[idx] !== undefined, `line ${ins.line}: no stage ${from}`);
              source = join(roots[idx]!, posix.resolve('/', src));
            } else {
              const rel = posix.normalize(src).replace(/^\/+|\/+$/g, '');
              assert.ok(!ignored(rel), `line ${ins.line}: COPY ${src}, but .dockerignore leaves it out of the build context`);
              source = join(ROOT, rel);
            }
            assert.ok(existsSync(source), `line ${ins.line}: COPY source ${src} does not exist`);
            const to = intoDir && !statSync(source).isDirectory() ? join(target, posix.basename(src)) : target;
            mkdirSync(dirname(to), { recursive: true });
            cpSync(source, to, {
              recursive: true,
              filter: (p) => from !== undefined || !ignored(relative(ROOT, p)),
            });
          }
          break;
        }
        case 'RUN': {
          assert.ok(!ins.args.startsWith('--mount'), `line ${ins.line}: RUN --mount is not emulated`);
          const r = await sh(ins.args, inRoot('.'), { ...buildEnv, PATH: hostPath, ...env });
          assert.equal(r.code, 0, `line ${ins.line}: RUN ${ins.args} failed:\n${r.output}`);
          break;
        }
        case 'EXPOSE': case 'LABEL': case 'ARG': case 'STOPSIGNAL':
          break;
        default:
          assert.fail(`line ${ins.line}: ${ins.op} is not emulated by this test`);
      }
    }
    last = { roots, workdir, env, user, cmd };
  }
  return last!;
}

const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const instructions = parseDockerfile(dockerfile);
const { stages } = stagesOf(instructions);
const final = stages.at(-1)!;
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };

describe('Dockerfile', { timeout: 240_000 }, () => {
  test('multi-stage on node:24-slim; npm ci --omit=dev; non-root numeric USER; node directly in exec form', () => {
    assert.ok(stages.length >= 2, 'multi-stage');
    for (const s of stages) assert.equal(s.from, 'node:24-slim', `stage ${s.index} base`);
    const runs = stages.flatMap((s) => s.instructions.filter((i) => i.op === 'RUN').map((i) => i.args));
    assert.ok(runs.some((r) => /\bnpm ci\b/.test(r) && /--omit=dev\b/.test(r)), 'npm ci --omit=dev');
    assert.ok(!runs.some((r) => /\bnpm (i|install)\b/.test(r)), 'npm ci (the lockfile), not npm install');
    // The final stage installs nothing: its one RUN is node filling the compile cache.
    const finalRuns = final.instructions.filter((i) => i.op === 'RUN').map((i) => i.args);
    assert.equal(finalRuns.length, 1, 'one RUN in the final stage');
    assert.ok(finalRuns[0]!.startsWith('node ') && !/\b(npm|npx|apt-get|curl)\b/.test(finalRuns[0]!), finalRuns[0]);
    assert.ok(final.instructions.some((i) => i.op === 'ENV' && /\bNODE_COMPILE_CACHE=\.node-compile-cache\b/.test(i.args)), 'ENV NODE_COMPILE_CACHE, relative to WORKDIR');
    const copies = final.instructions.filter((i) => i.op === 'COPY').map((i) => copyArgs(i.args));
    assert.ok(copies.some((c) => c.flags.has('from') && c.sources.some((s) => s.endsWith('node_modules'))), 'node_modules from the build stage');
    const user = final.instructions.filter((i) => i.op === 'USER').at(-1)?.args;
    assert.match(user ?? '', /^[1-9]\d*(:\d+)?$/, 'a numeric non-root USER (runAsNonRoot can verify it)');
    assert.ok(!instructions.some((i) => i.op === 'ENTRYPOINT'), 'no ENTRYPOINT (no shell or npm before node)');
    const cmd = final.instructions.filter((i) => i.op === 'CMD').at(-1)?.args;
    assert.deepEqual(JSON.parse(cmd ?? 'null'), ['node', 'src/cli/main.ts', 'serve', '--config', '/etc/switchyard']);
  });

  test('.dockerignore keeps node_modules, .git and the tests out of the build context', () => {
    const ignored = dockerignore(readFileSync(join(ROOT, '.dockerignore'), 'utf8'));
    for (const p of ['node_modules', 'node_modules/undici/package.json', '.git', 'test/helpers.ts']) assert.ok(ignored(p), p);
    for (const p of ['package.json', 'package-lock.json', 'src/cli/main.ts']) assert.ok(!ignored(p), p);
  });

  describe('built in temporary directories, the image command run as a process', () => {
    let base: string;
    let built: Built;
    let app: string;
    let backend: Backend;
    before(async () => {
      base = mkdtempSync(join(tmpdir(), 'switchyard-image-'));
      built = await build(stages, base, dockerignore(readFileSync(join(ROOT, '.dockerignore'), 'utf8')));
      app = join(built.roots.at(-1)!, built.workdir);
      backend = await startBackend('old');
    });
    after(async () => {
      await backend?.close();
      if (base) rmSync(base, { recursive: true, force: true });
    });

    test('the final stage holds package.json, src/, the config schema, the production dependencies and the compile cache only', () => {
      assert.deepEqual(readdirSync(app).sort(), ['.node-compile-cache', 'config', 'node_modules', 'package.json', 'src']);
      assert.deepEqual(readdirSync(join(app, 'config')), ['switchyard.schema.json'], 'the schema src/config/ imports, not the examples');
      assert.deepEqual(readdirSync(join(app, 'src')).sort(), readdirSync(join(ROOT, 'src')).sort());
      for (const dep of Object.keys(pkg.dependencies)) assert.ok(existsSync(join(app, 'node_modules', dep, 'package.json')), `dependency ${dep}`);
      // Packages only devDependencies need (the lockfile marks them "dev") stay out.
      const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
      const devOnly = Object.entries(lock.packages).filter(([path, p]) => p.dev === true && path.split('node_modules/').length === 2);
      assert.ok(devOnly.length > 0);
      for (const [path] of devOnly) assert.ok(!existsSync(join(app, path)), `dev-only ${path} left out`);
      assert.ok(!existsSync(join(app, 'node_modules/.bin/tsc')), 'no TypeScript compiler');
      assert.deepEqual(readdirSync(built.roots.at(-1)!), [built.workdir.split('/')[1]], 'nothing outside WORKDIR');
    });

    test('CMD serves from the final stage alone, answers /healthz, writes nothing, and exits 0 on SIGTERM', async () => {
      // The example config, listening on loopback ports the OS picks, with a
      // short drain; the billing route goes to a real backend.
      const configDir = mkdtempSync(join(base, 'etc-switchyard-'));
      const example = parse(readFileSync(join(ROOT, 'config/example.yaml'), 'utf8')) as {
        entrypoint: { address: string }; admin: { address: string }; shutdown: { drainDelay: string; timeout: string };
        routes: { name: string; backends: { url: string }[] }[];
      };
      example.entrypoint.address = '127.0.0.1:0';
      example.admin.address = '127.0.0.1:0';
      example.shutdown = { drainDelay: '1s', timeout: '2s' };
      for (const b of example.routes.find((r) => r.name === 'billing')!.backends) b.url = backend.url;
      writeFileSync(join(configDir, 'switchyard.yaml'), stringify(example));

      // The image's CMD: `node` is this Node 24, the config directory ours.
      const [node, ...args] = built.cmd;
      assert.equal(node, 'node');
      const configAt = args.indexOf('--config') + 1;
      args[configAt] = configDir;
      const before = snapshot(built.roots.at(-1)!);
      const child = spawn(process.execPath, args, {
        cwd: app,
        env: { PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, ...built.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
      try {
        const started = await new Promise<Record<string, unknown>>((resolve, reject) => {
          createInterface({ input: child.stdout }).on('line', (line) => {
            try {
              const entry = JSON.parse(line) as Record<string, unknown>;
              if (entry['msg'] === 'switchyard started') resolve(entry);
            } catch { /* not a log line */ }
          });
          void exited.then((code) => reject(new Error(`exited with ${code}: ${stderr}`)));
          setTimeout(() => reject(new Error(`not started within 15 s: ${stderr}`)), 15_000).unref();
        });
        const port = Number(String(started['entrypoint']).split(':').pop());
        const admin = `http://127.0.0.1:${String(started['admin']).split(':').pop()}`;
        assert.equal((await fetch(`${admin}/healthz`)).status, 200);
        assert.equal((await fetch(`${admin}/readyz`)).status, 200);
        const proxied = await new Promise<{ status: number; backend: string | undefined }>((resolve, reject) => {
          http.get({ host: '127.0.0.1', port, path: '/', headers: { host: 'billing.migration.example.com' } }, (res) => {
            res.resume();
            res.on('end', () => resolve({ status: res.statusCode!, backend: res.headers['x-backend'] as string | undefined }));
          }).on('error', reject);
        });
        assert.deepEqual(proxied, { status: 200, backend: 'old' }, 'proxies with the production dependencies alone');

        child.kill('SIGTERM');
        // Within the drain delay: /readyz fails, traffic is still served.
        let ready = 200;
        for (const deadline = Date.now() + 800; ready === 200 && Date.now() < deadline;) {
          ready = (await fetch(`${admin}/readyz`)).status;
          if (ready === 200) await new Promise((r) => setTimeout(r, 10));
        }
        assert.equal(ready, 503, '/readyz fails on SIGTERM');
        const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 10_000).unref())]);
        assert.equal(code, 0, `exit code after SIGTERM; stderr: ${stderr}`);
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
      assert.equal(stderr, '', 'nothing on stderr (no warnings from Node either)');
      // The compile cache included: a module the build did not compile would be added to it at exit.
      assert.ok([...before.keys()].filter((p) => p.startsWith(`${built.workdir.slice(1)}/.node-compile-cache/`)).length > 100, 'a filled compile cache');
      assert.deepEqual(snapshot(built.roots.at(-1)!), before, 'no file written: the root filesystem may be read-only');
    });
  });
});
