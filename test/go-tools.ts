// Test peers written in Go that .ci/run installs with `go install` (grpcurl,
// h2spec, the grpc-go interop client and server): where to find them.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';

let gopath: string | undefined;

/**
 * The binary `name`: $ENV, then $GOPATH/bin, `go env GOPATH`/bin, ~/go/bin,
 * then PATH. Undefined when it is nowhere.
 */
export function findGoTool(name: string, envVar: string): string | undefined {
  const candidates: string[] = [];
  const fromEnv = process.env[envVar];
  if (fromEnv !== undefined && fromEnv !== '') candidates.push(fromEnv);
  for (const gp of (process.env['GOPATH'] ?? '').split(delimiter)) if (gp !== '') candidates.push(join(gp, 'bin', name));
  if (gopath === undefined) {
    try {
      gopath = execFileSync('go', ['env', 'GOPATH'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      gopath = ''; // no go toolchain
    }
  }
  if (gopath !== '') candidates.push(join(gopath, 'bin', name));
  candidates.push(join(homedir(), 'go/bin', name));
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) if (dir !== '') candidates.push(join(dir, name));
  return candidates.find((p) => existsSync(p));
}

interface H2specResult {
  total: number;
  passed: number;
  skipped: number;
  failed: number;
  /** Failing cases as "SECTION #N", e.g. "3.5 #2". */
  failures: string[];
}

/** Reads h2spec's plain report: the summary line and the cases under "Failures:". */
export function parseH2spec(out: string): H2specResult {
  const summary = /(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed/.exec(out);
  assert.ok(summary !== null, `no h2spec summary in:\n${out.slice(-2000)}`);
  const failures: string[] = [];
  const at = out.indexOf('Failures:');
  if (at >= 0) {
    let section = '';
    for (const line of out.slice(at).split('\n')) {
      const s = /^\s*(\d+(?:\.\d+)*)\. /.exec(line);
      if (s !== null) section = s[1]!;
      const c = /^\s*× (\d+):/.exec(line);
      if (c !== null) failures.push(`${section} #${c[1]}`);
    }
  }
  const [, total, passed, skipped, failed] = summary.map(Number) as [number, number, number, number, number];
  return { total, passed, skipped, failed, failures };
}
