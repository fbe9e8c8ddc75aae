// The admin port: metrics, health, readiness and the config in force. Never
// the traffic port, so a scrape or probe cannot be confused with a route.
// Six GET routes on node:http: fastify cost ~5 MB of the router's idle RSS
// for them (the node:http server the entrypoint loads anyway).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from '../node-http.ts';
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

type Reply = { readonly status?: number; readonly type?: string; readonly headers?: Record<string, string>; readonly body: unknown };

const JSON_TYPE = 'application/json; charset=utf-8';

export async function startAdmin(host: string, port: number, metrics: Metrics, state: AdminState, log: Logger): Promise<{ close(): Promise<void>; address: AddressInfo }> {
  const routes: Record<string, () => Reply | Promise<Reply>> = {
    '/metrics': async () => ({ type: metrics.registry.contentType, body: await metrics.registry.metrics() }),
    '/healthz': () => ({ body: { status: 'ok' } }),
    '/readyz': () => (state.ready() ? { body: { status: 'ready' } } : { status: 503, body: { status: 'not ready' } }),
    '/api/config': () => ({ body: state.configStatus() }),
    '/api/live': () => ({ headers: { 'cache-control': 'no-store' }, body: state.live() }),
    '/': () => ({ type: 'text/html; charset=utf-8', body: PAGE }),
  };
  const send = (res: ServerResponse, { status = 200, type = JSON_TYPE, headers, body }: Reply): void => {
    const data = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    res.writeHead(status, { ...headers, 'content-type': type, 'content-length': Buffer.byteLength(data) });
    res.end(data); // node:http sends no body for HEAD
  };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?', 1)[0]!;
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (route === undefined) return send(res, { status: 404, body: { error: 'not found' } });
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, { status: 405, headers: { allow: 'GET, HEAD' }, body: { error: 'method not allowed' } });
    try {
      send(res, await route());
    } catch (err) {
      log.error({ err }, 'admin request failed');
      if (!res.headersSent) send(res, { status: 500, body: { error: 'internal error' } });
      else res.destroy();
    }
  };
  // No request logging: a scrape every few seconds is not news.
  const server = createServer((req, res) => void handle(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    // close() ends idle keep-alive connections too (a scraper's), so shutdown does not wait for them.
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    address: server.address() as AddressInfo,
  };
}
