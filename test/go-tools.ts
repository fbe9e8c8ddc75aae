// Test peers written in Go that .ci/run installs with `go install` (grpcurl,
// h2spec, the grpc-go interop client and server): where to find them.
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
