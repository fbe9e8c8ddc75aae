// Runs config parsing and validation off the main thread, so a reload of a
// large config (thousands of routes) never stalls requests in flight.
import { parentPort } from 'node:worker_threads';
import { ConfigError, loadConfigSources, type ConfigIssue, type ConfigSource } from './load.ts';

/** `known`: fingerprints of the routes the main thread already has; those are not sent back. */
export type WorkerRequest = { readonly id: number; readonly sources: readonly ConfigSource[]; readonly known: readonly string[] };
// The config travels as JSON text: a string crosses threads as one copy,
// where a structured clone of ~20,000 objects would be rebuilt object by
// object on the main thread, stalling it. Of the routes, only those the main
// thread does not have yet are sent, plus every route's fingerprint in order.
export type WorkerReply =
  | {
    readonly id: number; readonly config: string; readonly fingerprints: readonly string[];
    readonly effective: string; readonly version: string; readonly files: readonly string[];
  }
  | { readonly id: number; readonly issues: readonly ConfigIssue[] };

parentPort!.on('message', ({ id, sources, known }: WorkerRequest) => {
  let reply: WorkerReply;
  try {
    const { config, effective, version, files } = loadConfigSources(sources);
    const have = new Set(known);
    const fresh = { ...config, routes: config.routes.filter((r) => !have.has(r.fingerprint)) };
    reply = {
      id, config: JSON.stringify(fresh), fingerprints: config.routes.map((r) => r.fingerprint),
      effective: JSON.stringify(effective), version, files,
    };
  } catch (err) {
    const issues: ConfigIssue[] = err instanceof ConfigError
      ? [...err.issues]
      : [{ file: sources[0]?.file ?? '', line: 0, column: 0, path: '', message: `config check failed: ${(err as Error).message}` }];
    reply = { id, issues };
  }
  parentPort!.postMessage(reply);
});
