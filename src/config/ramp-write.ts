// The router writes a guard's verdict back into the config (docs/ramps.md):
// `halted` or `pausedAt`/`pauseReason` in the route's `ramp` block, in the
// file (or ConfigMap key) that defines the route, comments kept, the whole
// result validated as `serve` would. Loaded only when a guard breaches: the
// YAML editor and the validator stay off the request path.
import { isMap, isSeq, parseDocument } from 'yaml';
import { loadConfigSources } from './load.ts';
import type { ConfigSource } from './model.ts';

/**
 * The one file to rewrite so that ROUTE's `ramp` block has `fields` set, or
 * null when there is nothing to do (no such route or ramp, or `unlessSet` is
 * already there: another replica wrote its verdict first). Throws ConfigError
 * if the result would not load.
 */
export function rampWrite(files: readonly ConfigSource[], route: string, fields: Readonly<Record<string, unknown>>, unlessSet: string): ConfigSource | null {
  for (const [i, f] of files.entries()) {
    const doc = parseDocument(f.text);
    const routes = doc.get('routes');
    if (!isSeq(routes)) continue;
    const index = routes.items.findIndex((r) => isMap(r) && r.get('name') === route);
    if (index < 0) continue;
    const ramp = doc.getIn(['routes', index, 'ramp']);
    if (!isMap(ramp) || ramp.has(unlessSet)) return null;
    for (const [k, v] of Object.entries(fields)) doc.setIn(['routes', index, 'ramp', k], v);
    const next = { file: f.file, text: doc.toString({ lineWidth: 0 }) };
    loadConfigSources(files.map((g, j) => (j === i ? next : g)));
    return next;
  }
  return null;
}
