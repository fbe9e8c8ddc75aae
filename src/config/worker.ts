// Runs config parsing and validation off the main thread, so a reload of a
// large config (thousands of routes) never stalls requests in flight.
import { parentPort } from 'node:worker_threads';
import { loadConfigSources } from './load.ts';
import { ConfigError, type ConfigIssue } from './model.ts';
import type { WorkerReply, WorkerRequest } from './protocol.ts';

parentPort!.on('message', ({ id, sources, known }: WorkerRequest) => {
  let reply: WorkerReply;
  try {
    // The removal guard needs the config in force, which only the main thread has (loader.ts).
    const { config, effective, fingerprints, version, files } = loadConfigSources(sources, { guard: false });
    const have = new Set(known);
    const fresh = { ...config, routes: config.routes.filter((_, i) => !have.has(fingerprints[i]!)) };
    reply = {
      id, config: JSON.stringify(fresh), fingerprints,
      effective: JSON.stringify({ ...effective, routes: undefined }), version, files,
    };
  } catch (err) {
    const issues: ConfigIssue[] = err instanceof ConfigError
      ? [...err.issues]
      : [{ file: sources[0]?.file ?? '', line: 0, column: 0, path: '', message: `config check failed: ${(err as Error).message}` }];
    reply = { id, issues };
  }
  parentPort!.postMessage(reply);
});
