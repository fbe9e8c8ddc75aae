// Processes of a benchmark run: every server and load generator is started
// here, pinned to a core, in its own process group, and recorded so that all
// of them are killed at the end — on success, on an error, on Ctrl-C and when
// the run overruns its time budget. Also: running a command to completion with
// a time limit, waiting for ports, and reading CPU time and RSS from /proc.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** Core 0: load generators and backends. Core 1: the proxy under test, alone. */
export const LOAD_CORE = 0;
export const PROXY_CORE = 1;

export interface Started {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Where its stdout and stderr go. */
  readonly logFile: string;
  readonly exited: Promise<number | null>;
}

const live = new Set<Started>();
/** Set once the run is being torn down: nothing new may start after that. */
let closing = false;

export interface StartOptions {
  readonly core: number;
  readonly env?: Record<string, string>;
  readonly cwd?: string;
}

/**
 * Starts a long-running process pinned to `core` (taskset execs the command,
 * so the pid is the server's own). `detached` puts it in a new process group
 * whose id is its pid, so its workers (nginx forks one) die with it.
 */
export function startProcess(name: string, cmd: string, args: string[], logFile: string, opts: StartOptions): Started {
  if (closing) throw new Error(`${name}: not started, the run is stopping`);
  const fd = openSync(logFile, 'a');
  const child = spawn('taskset', ['-c', String(opts.core), cmd, ...args], {
    stdio: ['ignore', fd, fd],
    detached: true,
    env: { ...process.env, ...opts.env },
    cwd: opts.cwd,
  });
  closeSync(fd);
  if (child.pid === undefined) throw new Error(`${name}: could not start ${cmd}`);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const started: Started = { name, pid: child.pid, child, logFile, exited };
  live.add(started);
  void exited.then(() => live.delete(started));
  return started;
}

/** SIGTERM to the whole group, SIGKILL after `graceMs`. */
export async function stopProcess(p: Started, graceMs = 3000): Promise<void> {
  if (!live.has(p)) return;
  signalGroup(p.pid, 'SIGTERM');
  const done = await Promise.race([p.exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (!done) signalGroup(p.pid, 'SIGKILL');
  await Promise.race([p.exited, sleep(1000)]);
  signalGroup(p.pid, 'SIGKILL'); // workers left behind by a master that exited
  live.delete(p);
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try { process.kill(-pid, signal); } catch { /* already gone */ }
}

/** Synchronous last resort (process 'exit' handlers cannot wait). */
export function killAllNow(): void {
  for (const p of live) signalGroup(p.pid, 'SIGKILL');
  live.clear();
}

/** Stops every process and refuses to start new ones. */
export async function stopAll(): Promise<void> {
  closing = true;
  await Promise.all([...live].map((p) => stopProcess(p)));
}

/**
 * Runs a bench script's main: every process it started is stopped on
 * SIGINT/SIGTERM, and on failure the error is printed (with its stack when
 * asked) and the exit code set.
 */
export function runScript(main: () => Promise<void>, opts: { stack?: boolean } = {}): void {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => { void stopAll().finally(() => process.exit(130)); });
  }
  main().catch(async (err: unknown) => {
    console.error(err instanceof Error ? (opts.stack === true ? err.stack : err.message) : String(err));
    await stopAll();
    process.exitCode = 1;
  });
}

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

/**
 * Runs a command to completion (a load generator), pinned to `core` when one
 * is given, killed after `timeoutMs` so that no run can hang the benchmark.
 */
export function runCommand(cmd: string, args: string[], opts: { core?: number; timeoutMs: number; env?: Record<string, string> }): Promise<RunResult> {
  const [file, argv] = opts.core === undefined ? [cmd, args] : ['taskset', ['-c', String(opts.core), cmd, ...args]];
  if (closing) return Promise.reject(new Error(`${cmd}: not started, the run is stopping`));
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, ...opts.env } });
    const started: Started = {
      name: cmd, pid: child.pid ?? 0, child, logFile: '',
      exited: new Promise((r) => child.once('exit', (code) => r(code))),
    };
    if (child.pid !== undefined) live.add(started);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    const timer = setTimeout(() => {
      timedOut = true;
      signalGroup(child.pid ?? 0, 'SIGKILL');
    }, opts.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      live.delete(started);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      live.delete(started);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

/** A loopback port that was free a moment ago (the OS picks it). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(0, '127.0.0.1', resolve);
  });
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Resolves once `port` accepts TCP connections; throws (with the log's tail) after `timeoutMs`. */
export async function waitForPort(port: number, owner: Started, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitCode: number | null | undefined;
  void owner.exited.then((code) => { exitCode = code; });
  for (;;) {
    if (exitCode !== undefined) throw new Error(`${owner.name} exited with ${exitCode} before listening on ${port}:\n${logTail(owner)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${owner.name} is not listening on ${port} after ${timeoutMs} ms:\n${logTail(owner)}`);
    await sleep(50);
  }
}

export function logTail(p: Started, lines = 20): string {
  try {
    return readFileSync(p.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Pins this process (all its threads) to `core`, so the harness never runs on the proxy's core. */
export function pinSelf(core: number): void {
  spawnSync('taskset', ['-a', '-p', '-c', String(core), String(process.pid)], { stdio: 'ignore' });
}

// --- /proc -----------------------------------------------------------------

/** `pid` and all its descendants (nginx: master and worker). */
export function processTree(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The command name may contain spaces and parentheses: fields start after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(entry), Number(fields[1]));
    } catch { /* exited meanwhile */ }
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) {
    for (const [child, ppid] of parent) if (ppid === tree[i]) tree.push(child);
  }
  return tree;
}

/** Resident memory of the process tree, bytes. */
export function treeRss(pid: number): number {
  let kb = 0;
  for (const p of processTree(pid)) {
    try {
      kb += Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
    } catch { /* exited meanwhile */ }
  }
  return kb * 1024;
}

const TICKS_PER_SECOND = 100; // USER_HZ; `getconf CLK_TCK` is 100 on Linux/x86 and arm64

/** CPU seconds (user + system) used so far by the process tree. */
export function treeCpuSeconds(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime
    } catch { /* exited meanwhile */ }
  }
  return ticks / TICKS_PER_SECOND;
}

/**
 * Seconds the process tree's threads spent runnable but waiting for a core
 * (/proc/PID/task/TID/schedstat, second field): time another process had the
 * proxy's core. Every request that arrives meanwhile waits with it, so a
 * latency tail measured while this is high is mostly other processes' work.
 */
export function treeWaitSeconds(pid: number): number {
  let ns = 0;
  for (const p of processTree(pid)) {
    try {
      for (const tid of readdirSync(`/proc/${p}/task`)) {
        try {
          ns += Number(readFileSync(`/proc/${p}/task/${tid}/schedstat`, 'utf8').split(' ')[1]);
        } catch { /* exited meanwhile */ }
      }
    } catch { /* exited meanwhile */ }
  }
  return ns / 1e9;
}

/** Busy and total jiffies of one core (/proc/stat), to tell how loaded it was over a run. */
export function coreTimes(core: number): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(`cpu${core} `));
  if (line === undefined) return { busy: 0, total: 0 };
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // without guest time, which is inside user
  return { busy: total - idle, total };
}

/**
 * Measures a stretch of time: how much CPU the proxy's tree used (as a share
 * of one core), how long its threads waited for a core, and how busy the load core was. A proxy well under 100% while
 * the load core is at 100% was not the bottleneck: its figure is a floor.
 */
export class CpuMeter {
  readonly #pid: number | undefined;
  #t0 = 0;
  #cpu0 = 0;
  #wait0 = 0;
  #load0 = { busy: 0, total: 0 };

  constructor(proxyPid: number | undefined) {
    this.#pid = proxyPid;
  }

  start(): void {
    this.#t0 = performance.now();
    this.#cpu0 = this.#pid === undefined ? 0 : treeCpuSeconds(this.#pid);
    this.#wait0 = this.#pid === undefined ? 0 : treeWaitSeconds(this.#pid);
    this.#load0 = coreTimes(LOAD_CORE);
  }

  stop(): { proxyCpu: number | undefined; proxyWait: number | undefined; loadCore: number } {
    const secs = (performance.now() - this.#t0) / 1000;
    const load = coreTimes(LOAD_CORE);
    const total = load.total - this.#load0.total;
    return {
      proxyCpu: this.#pid === undefined || secs <= 0 ? undefined : (treeCpuSeconds(this.#pid) - this.#cpu0) / secs,
      proxyWait: this.#pid === undefined || secs <= 0 ? undefined : (treeWaitSeconds(this.#pid) - this.#wait0) / secs,
      loadCore: total > 0 ? (load.busy - this.#load0.busy) / total : 0,
    };
  }
}
