// The admin port: metrics, health, readiness and the config in force. Never
// the traffic port, so a scrape or probe cannot be confused with a route.
import Fastify from 'fastify';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Metrics } from './metrics.ts';

export interface ConfigStatus {
  readonly version: string;
  readonly loadedAt: string;
  readonly config: unknown;
  /** The config files the config in force was read from. */
  readonly files: readonly string[];
  /** The last reload that did not take effect since the config in force was loaded, or null. */
  readonly lastError: ReloadError | null;
  /** What runs: per route the weights in force, backend health (up, ejected, active checks) and the ramp's state with the guard's verdict. */
  readonly routes: readonly unknown[];
  /** Where the config comes from: files, or a ConfigMap with the resourceVersion in force and whether the API is reachable. */
  readonly sources: readonly unknown[];
}

export type ReloadError = {
  readonly at: string;
  readonly message: string;
  readonly issues: readonly unknown[];
} & (
  | { readonly kind: 'invalid' }
  /** Refused by the removal guard: what the config would have removed. */
  | { readonly kind: 'refused'; readonly removedRoutes: readonly string[]; readonly removedHosts: readonly string[] }
);

/** What the admin API reads from the router. */
export interface AdminState {
  ready(): boolean;
  configStatus(): ConfigStatus;
  /** The live page's data (api/live). */
  live(): unknown;
}

// The live old-vs-new page: one self-contained file (no external assets; clusters may have no internet).
const PAGE = readFileSync(new URL('./page.html', import.meta.url));

export async function startAdmin(host: string, port: number, metrics: Metrics, state: AdminState, log: Logger): Promise<{ close(): Promise<void>; address: AddressInfo }> {
  // No fastify request logging: a scrape every few seconds is not news.
  const app = Fastify({ logger: false });
  app.setErrorHandler((err, _req, reply) => {
    log.error({ err }, 'admin request failed');
    void reply.code(500).send({ error: 'internal error' });
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    if (state.ready()) return { status: 'ready' };
    reply.code(503);
    return { status: 'not ready' };
  });
  app.get('/api/config', async () => state.configStatus());
  app.get('/api/live', async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    return state.live();
  });
  app.get('/', async (_req, reply) => {
    reply.header('content-type', 'text/html; charset=utf-8');
    return PAGE;
  });
  await app.listen({ host, port });
  return { close: () => app.close(), address: app.server.address() as AddressInfo };
}
