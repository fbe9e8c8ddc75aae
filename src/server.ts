// The router as a whole: loads the config, builds route tables, runs the
// entrypoint and the admin port, reloads and shuts down. Data flows one way:
// config → immutable RouteTable → request path.
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { startAdmin, type AdminState, type ConfigStatus } from './observe/admin.ts';
import { diffConfigs } from './config/diff.ts';
import { ConfigRefused } from './config/guard.ts';
import { ConfigLoader } from './config/loader.ts';
import { parseDuration } from './config/parse.ts';
import { ConfigError, type ConfigSource, type LoadedConfig } from './config/model.ts';
import { sourcesDigest } from './config/read.ts';
import { ConfigSources, type ConfigSourcesOptions } from './config/sources.ts';
import { HealthRegistry, healthKey, type WantedHealth } from './health/registry.ts';
import { Entrypoint } from './ingress/entrypoint.ts';
import { LiveStats, type LiveRouteInput } from './observe/live.ts';
import { DURATION_BUCKETS, Metrics, type BackendMetrics } from './observe/metrics.ts';
import { Mirror } from './proxy/mirror.ts';
import { Ramps } from './ramp/ramps.ts';
import type { Verdict } from './ramp/guard.ts';
import type { RampChange } from './ramp/runner.ts';
import type { Route } from './routing/route.ts';
import { RouteTable } from './routing/table.ts';
import { Upstreams } from './upstream/registry.ts';
import type { Upstream } from './upstream/upstream.ts';
import { DEFAULT_WATCH, type WatchOptions } from './config/watch.ts';

export interface Addresses {
  readonly entrypoint: AddressInfo;
  readonly admin: AddressInfo;
}

/** A listener that could not bind: which one, where, and why, in one line (`serve` prints it as is). */
export class ListenError extends Error {
  override readonly name = 'ListenError';
  readonly listener: 'entrypoint' | 'admin';
  readonly address: string;
  readonly code: string | undefined;

  constructor(listener: 'entrypoint' | 'admin', address: string, cause: NodeJS.ErrnoException) {
    super(`cannot listen on the ${listener} address ${address}: ${LISTEN_REASONS[cause.code ?? ''] ?? cause.message}`, { cause });
    this.listener = listener;
    this.address = address;
    this.code = cause.code;
  }
}

const LISTEN_REASONS: Record<string, string> = {
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  EADDRNOTAVAIL: 'no such address on this host',
  ENOTFOUND: 'host name not found',
};

async function listenAs<T>(listener: 'entrypoint' | 'admin', at: { host: string; port: number }, listen: () => Promise<T>): Promise<T> {
  try {
    return await listen();
  } catch (err) {
    const address = at.host.includes(':') ? `[${at.host}]:${at.port}` : `${at.host}:${at.port}`;
    throw new ListenError(listener, address, err as NodeJS.ErrnoException);
  }
}

export class Switchyard implements AdminState {
  readonly metrics: Metrics;
  readonly #sources: ConfigSources;
  readonly #log: Logger;
  readonly #loader: ConfigLoader;
  readonly #upstreams: Upstreams;
  readonly #health: HealthRegistry;
  #loaded: LoadedConfig;
  /** Digest of the raw config files last read, valid or not: unchanged files are not parsed again. */
  #digest: string;
  #loadedAt = new Date();
  #lastError: ConfigStatus['lastError'] = null;
  #entrypoint: Entrypoint | undefined;
  #admin: { close(): Promise<void> } | undefined;
  #draining = false;
  #reloading: Promise<boolean> | undefined;
  readonly #ramps: Ramps;
  readonly #live = new LiveStats(DURATION_BUCKETS);
  #liveTimer: NodeJS.Timeout | undefined;
  #liveUntil = 0;

  private constructor(sources: ConfigSources, loader: ConfigLoader, loaded: LoadedConfig, digest: string, log: Logger) {
    this.#sources = sources;
    this.#loader = loader;
    this.#loaded = loaded;
    this.#digest = digest;
    this.#log = log;
    this.metrics = new Metrics(log.child({ component: 'upstream' }));
    this.#upstreams = new Upstreams({ sessions: this.metrics.upstreamSessions, streams: this.metrics.upstreamStreams });
    this.#health = new HealthRegistry(log.child({ component: 'health' }));
    // Health changes on its own; read it into the gauge at scrape time.
    this.metrics.backendUpSource = () => (this.#entrypoint?.table.routes ?? []).flatMap(
      (r) => r.backends.map((b) => ({ route: r.name, backend: b.name, up: b.health.up })));
    this.#ramps = new Ramps({
      weightsChanged: () => { if (this.#entrypoint !== undefined) this.#publishWeights(this.#entrypoint.table); },
      breached: (route, verdict, change) => this.#breached(route, verdict, change),
    });
    this.metrics.rampSource = () => this.#ramps.all();
    this.metrics.configSourceStatus = () => sources.status().flatMap((st) => (st.kind === 'kubernetes' ? [st] : []));
  }

  /**
   * Loads the config from its sources (paths and `kubernetes://NS/NAME`, merged
   * in order; throwing ConfigError if it is invalid or a source unreadable),
   * starts serving and follows the sources (`watch: false`: SIGHUP only).
   */
  static async start(
    config: string | readonly string[], log: Logger, watch: WatchOptions | false = DEFAULT_WATCH,
    opts: { readonly kubernetes?: ConfigSourcesOptions['kubernetes'] } = {},
  ): Promise<Switchyard> {
    // A source may change before the router exists: remember it and reload once it does.
    let sy: Switchyard | undefined;
    let missed: string | undefined;
    const onChange = (reason: string): void => {
      if (sy === undefined) missed = reason;
      else void sy.reload(reason);
    };
    const sources = await ConfigSources.open(typeof config === 'string' ? [config] : config, { log, watch, onChange, kubernetes: opts.kubernetes });
    const loader = new ConfigLoader();
    let loaded: LoadedConfig;
    let files: ConfigSource[];
    try {
      files = await sources.read();
      loaded = await loader.load(files);
    } catch (err) {
      if (err instanceof ConfigError) sources.rejected(err.issues, undefined);
      await sources.flushEvents();
      await Promise.all([loader.close(), sources.close()]);
      throw err;
    }
    sources.applied(loaded.version);
    sy = new Switchyard(sources, loader, loaded, sourcesDigest(files), log);
    try {
      await sy.#listen();
    } catch (err) {
      // One listener may be up already: release everything, so the caller can retry or exit.
      await sy.#stopFollowing();
      await sy.#release();
      throw err;
    }
    await sources.watch();
    if (missed !== undefined) void sy.reload(missed);
    sy.#logStarted();
    return sy;
  }

  get addresses(): Addresses {
    return { entrypoint: this.#entrypointAddress!, admin: this.#adminAddress! };
  }

  #entrypointAddress: AddressInfo | undefined;
  #adminAddress: AddressInfo | undefined;

  async #listen(): Promise<void> {
    const { config } = this.#loaded;
    const table = await this.#build(this.#loaded);
    this.metrics.configReloads.labels('success').inc();
    this.#entrypoint = new Entrypoint(config.entrypoint, table, this.metrics, this.#log.child({ component: 'entrypoint' }));
    const entrypoint = this.#entrypoint;
    this.#entrypointAddress = await listenAs('entrypoint', config.entrypoint, () => entrypoint.listen());
    const admin = await listenAs('admin', config.admin, () => startAdmin(config.admin.host, config.admin.port, this.metrics, this, this.#log.child({ component: 'admin' })));
    this.#admin = admin;
    this.#adminAddress = admin.address;
  }

  // Logged last, once the watch is on too: whoever waits for this line may edit the config at once.
  #logStarted(): void {
    const { config, version } = this.#loaded;
    this.#log.info({
      version,
      files: this.#loaded.files,
      entrypoint: `${this.#entrypointAddress!.address}:${this.#entrypointAddress!.port}`,
      admin: `${this.#adminAddress!.address}:${this.#adminAddress!.port}`,
      routes: config.routes.map((r) => ({
        name: r.name, hosts: r.hosts, pathPrefix: r.pathPrefix, protocol: r.protocol,
        backends: r.backends.map((b) => `${b.name}=${b.weight}`).join(' '),
      })),
    }, 'switchyard started');
  }

  /** A new table for a loaded config; unchanged routes and the upstream pools of unchanged backends are reused. */
  async #build(loaded: LoadedConfig): Promise<RouteTable> {
    const table = await RouteTable.build(loaded.config, {
      backend: (rc, bc) => ({
        upstream: this.#upstreams.get(rc.protocol, bc.url, parseDuration(rc.timeouts.connect)),
        metrics: this.metrics.backend(rc.name, bc.name, rc.protocol),
        health: this.#health.backend(healthKey(bc.url, rc), bc.url),
      }),
      none: (rc) => this.metrics.backend(rc.name, 'none', rc.protocol),
    }, this.#entrypoint?.table);
    const used = new Set<Upstream>();
    const bound = new Set<BackendMetrics>();
    for (const r of table.routes) {
      bound.add(r.none);
      for (const b of r.backends) {
        used.add(b.upstream);
        bound.add(b.metrics);
      }
    }
    this.#upstreams.retain(used);
    this.metrics.retain(bound);
    const health = new Map<string, WantedHealth>();
    for (const r of loaded.config.routes) {
      for (const b of r.backends) health.set(healthKey(b.url, r), { url: b.url, check: r.healthCheck ?? null });
    }
    this.#health.retain(health);
    table.routes.forEach((route, i) => {
      const rc = loaded.config.routes[i]!;
      const to = rc.mirror?.to ?? (rc.ramp?.steps.includes('mirror') ? rc.ramp.to : undefined);
      // A route kept from the last table keeps its mirror (same config).
      if (to === undefined || route.mirror !== null) return;
      route.mirror = new Mirror(route.backends.find((b) => b.name === to)!, rc.mirror ?? null, this.metrics.mirrorCounter(route.name, to));
    });
    // Breach counters exist from the start, so rate() and increase() see the first one.
    for (const rc of loaded.config.routes) if (rc.ramp !== undefined) this.metrics.rampBreaches.labels(rc.name).inc(0);
    // Ramps put their step's weights (and mirror steps) in force before the table serves.
    this.#ramps.sync(table.routes, loaded.config.routes);
    this.#publishWeights(table);
    this.metrics.configLoaded(loaded.version);
    return table;
  }

  /** switchyard_backend_weight: the weights in force (a ramp's step, not the configured ones). */
  #publishWeights(table: RouteTable): void {
    this.metrics.setWeights(table.routes.flatMap((r) => r.backends.map((b, i) => ({ route: r.name, backend: b.name, weight: r.weightOf(i) }))));
  }

  /** The guard acted (rolled back or paused this replica): count it, say why with both sides' figures, persist it. */
  #breached(route: string, verdict: Verdict, change: RampChange): void {
    this.metrics.rampBreaches.labels(route).inc();
    const action = 'halted' in change ? 'rolled back and halted' : 'paused';
    const log = this.#log.child({ component: 'ramp', route });
    log.warn({ kind: verdict.kind, new: verdict.to, old: verdict.from, errorZ: verdict.errorZ, latencyZ: verdict.latencyZ, tailZ: verdict.tailZ, p99Z: verdict.p99Z },
      `ramp guard breach on route ${route}: ${action}; ${verdict.reason}`);
    this.#persist(route, change).then(
      (file) => log.info({ file }, file === null ? 'ramp verdict already in the config source' : 'ramp verdict written to the config source'),
      (err: Error) => log.error({ err: err.message }, `cannot write the ramp verdict to the config source; it holds on this replica only`));
  }

  /**
   * Writes a breach's halt or pause into the route's ramp block where the
   * config lives, so every replica and every restart agrees. A conflicting
   * write (another replica, an operator) is re-read and retried; the file
   * written, or null when the verdict was already there.
   */
  async #persist(route: string, change: RampChange): Promise<string | null> {
    const iso = (ms: number) => new Date(ms).toISOString();
    const [fields, unless] = 'halted' in change
      ? [{ halted: { at: iso(change.halted.at), reason: change.halted.reason } }, 'halted']
      : [{ pausedAt: iso(change.pausedAt), pauseReason: change.pauseReason }, 'pausedAt'];
    const { rampWrite } = await import('./config/ramp-write.ts');
    for (let attempt = 1; ; attempt++) {
      const next = rampWrite(await this.#sources.read(), route, fields, unless);
      if (next === null) return null;
      try {
        await this.#sources.writeFile(next.file, next.text);
        return next.file;
      } catch (err) {
        if ((err as { status?: number }).status !== 409 || attempt === 3) throw err;
        await sleep(200); // the watch brings the newer ConfigMap meanwhile
      }
    }
  }

  /**
   * Reads the config again. A valid one replaces the route table in one
   * assignment (requests in flight keep the table they started with); an
   * invalid one is logged and counted, and the old one keeps serving.
   */
  reload(reason: string): Promise<boolean> {
    // Reloads run one at a time; a reload asked for during one runs after it.
    const run = async (): Promise<boolean> => this.#reload(reason);
    this.#reloading = (this.#reloading ?? Promise.resolve(true)).then(run, run);
    return this.#reloading;
  }

  async #reload(reason: string): Promise<boolean> {
    if (this.#draining) return false;
    let loaded: LoadedConfig;
    try {
      const sources = await this.#sources.read();
      const digest = sourcesDigest(sources);
      if (digest === this.#digest) {
        // Same files (e.g. only a ConfigMap's labels changed): the same verdict.
        if (this.#lastError === null) this.#sources.applied(this.#loaded.version);
        return this.#lastError === null;
      }
      try {
        loaded = await this.#loader.load(sources, this.#loaded.config);
      } catch (err) {
        // Only a verdict on these files is final; a load that failed for
        // another reason (the worker died) is tried again on the next event or SIGHUP.
        if (err instanceof ConfigError) this.#digest = digest;
        throw err;
      }
      this.#digest = digest;
    } catch (err) {
      this.metrics.configReloads.labels('failure').inc();
      const at = new Date().toISOString();
      const message = (err as Error).message;
      if (err instanceof ConfigRefused) {
        this.metrics.configReloadsRefused.inc();
        const { removedRoutes, removedHosts, issues } = err;
        this.#lastError = { kind: 'refused', at, message, issues, removedRoutes, removedHosts };
        this.#sources.rejected(issues, this.#loaded.version);
        this.#log.error({ reason, removedRoutes, removedHosts, message: err.issues[0]?.message }, 'config reload refused; the config in force stays');
        return false;
      }
      const issues = err instanceof ConfigError ? err.issues : [];
      this.#lastError = { kind: 'invalid', at, message, issues };
      this.#sources.rejected(issues.length > 0 ? issues : [{ file: '', line: 0, column: 0, path: '', message }], this.#loaded.version);
      this.#log.error({ reason, issues, err: issues.length === 0 ? err : undefined }, 'config reload failed; the previous config stays in force');
      return false;
    }
    const failedBefore = this.#lastError !== null;
    this.#lastError = null;
    if (loaded.version === this.#loaded.version) {
      this.#sources.applied(loaded.version);
      // After a bad edit, the files are back to what is serving: say so, or the last word in the log is the failure.
      if (failedBefore) this.#log.info({ reason, version: loaded.version }, 'config recovered: the files are back to the config in force');
      else this.#log.debug({ reason, version: loaded.version }, 'config unchanged');
      return true;
    }
    const before = this.#loaded;
    this.#entrypoint!.table = await this.#build(loaded);
    this.#loaded = loaded;
    this.#loadedAt = new Date();
    this.#sources.applied(loaded.version);
    this.metrics.configReloads.labels('success').inc();
    const restartOnly = (['entrypoint', 'admin', 'shutdown'] as const).filter(
      (k) => JSON.stringify(before.config[k]) !== JSON.stringify(loaded.config[k]));
    if (restartOnly.length > 0) this.#log.warn({ sections: restartOnly }, 'these config sections changed and apply at the next restart');
    const diff = diffConfigs(before.config, loaded.config);
    if (diff.hostsRemoved.length > 0) {
      this.#log.warn({ routes: diff.routesRemoved, hosts: diff.hostsRemoved, allowRouteRemoval: loaded.config.removal.allowRouteRemoval }, 'routes removed');
    }
    this.#log.info({
      reason, version: loaded.version, previous: before.version, routes: loaded.config.routes.length, ...diff,
      ...(failedBefore ? { recovered: true } : {}),
    }, 'config reloaded');
    return true;
  }

  // --- AdminState ----------------------------------------------------------

  ready(): boolean {
    return !this.#draining && this.#entrypoint !== undefined;
  }

  configStatus(): ConfigStatus {
    const checked = new Set(this.#loaded.config.routes.filter((r) => r.healthCheck !== undefined).map((r) => r.name));
    const routes = (this.#entrypoint?.table.routes ?? []).map((r) => ({
      name: r.name,
      backends: r.backends.map((b, i) => ({
        name: b.name, url: b.health.url, configuredWeight: b.weight, weight: r.weightOf(i),
        // up: in the split; ejected: by outlier detection; activeCheck: the health check's verdict.
        up: b.health.up,
        ejected: b.health.ejectedUntil !== 0,
        activeCheck: !checked.has(r.name) ? 'off' : b.health.activeUp ? 'passing' : 'failing',
      })),
      ramp: this.#ramps.status(r.name),
    }));
    return {
      version: this.#loaded.version,
      loadedAt: this.#loadedAt.toISOString(),
      config: this.#loaded.effective,
      files: this.#loaded.files,
      lastError: this.#lastError,
      routes,
      sources: this.#sources.status(),
    };
  }

  /**
   * The live page's data. The counters are sampled once a second only while
   * someone watches (for two minutes after the last poll), so an unwatched
   * router pays nothing; the window is the last minute or since the page opened.
   */
  live(): unknown {
    this.#liveUntil = Date.now() + 120_000;
    if (this.#liveTimer === undefined) {
      this.#live.sample(this.#liveInputs());
      this.#liveTimer = setInterval(() => {
        if (Date.now() > this.#liveUntil) {
          clearInterval(this.#liveTimer);
          this.#liveTimer = undefined;
          return;
        }
        this.#live.sample(this.#liveInputs());
      }, 1000);
      this.#liveTimer.unref();
    }
    return {
      now: Date.now(),
      version: this.#loaded.version,
      loadedAt: this.#loadedAt.toISOString(),
      lastError: this.#lastError === null ? null : { at: this.#lastError.at, message: this.#lastError.message },
      routes: this.#live.view(this.#liveInputs()),
    };
  }

  #liveInputs(): LiveRouteInput[] {
    const table = this.#entrypoint?.table;
    if (table === undefined) return [];
    const mirrors = new Map(this.#loaded.config.routes.map((r) => [r.name, r.mirror]));
    return table.routes.map((r: Route) => ({
      name: r.name,
      hosts: r.config.hosts,
      backends: r.backends.map((b, i) => ({ name: b.name, configuredWeight: b.weight, weight: r.weightOf(i), up: b.health.up, counters: b.metrics })),
      ramp: this.#ramps.status(r.name),
      mirror: mirrors.get(r.name) ?? null,
    }));
  }

  // --- shutdown ------------------------------------------------------------

  /**
   * SIGTERM: readiness fails at once; traffic is served for drainDelay while
   * endpoints propagate; then the listener closes, HTTP/1.1 connections get
   * `Connection: close`, HTTP/2 sessions GOAWAY; in-flight work gets up to
   * `timeout`. Resolves with the number of requests that had to be cut.
   */
  async shutdown(): Promise<number> {
    if (this.#draining) return 0;
    this.#draining = true;
    await this.#stopFollowing();
    const { drainDelayMs, timeoutMs } = this.#loaded.config.shutdown;
    const ep = this.#entrypoint!;
    this.#log.info({ drainDelayMs, timeoutMs, inflight: ep.inflight }, 'shutting down: readiness off, still serving');
    await sleep(drainDelayMs);
    this.#log.info({ inflight: ep.inflight }, 'draining: listener closed, waiting for in-flight requests');
    ep.drain();
    const cut = await ep.whenIdle(timeoutMs);
    if (cut > 0) this.#log.warn({ cut }, 'shutdown timeout: cutting requests still in flight');
    await this.#release();
    this.#log.info({ cut }, 'stopped');
    return cut;
  }

  /** No more config changes, ramp steps or live-page updates. */
  async #stopFollowing(): Promise<void> {
    this.#ramps.close();
    clearInterval(this.#liveTimer);
    await this.#sources.close();
  }

  /** Cuts connections and frees the listeners, pools, checks and the loader's thread. */
  async #release(): Promise<void> {
    this.#entrypoint?.destroy();
    await this.#upstreams.closeAll();
    await this.#health.close();
    await this.#admin?.close();
    await this.#loader.close();
  }
}
