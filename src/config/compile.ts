// Building the effective config (YAML shape, defaults written out) and the
// runtime config from checked files. Only reached when every check passed,
// so the parsers cannot throw here.
import { createHash } from 'node:crypto';
import type { Sections, RouteRef } from './checks.ts';
import { DEFAULTS } from './defaults.ts';
import type { Config, EffectiveConfig, EffectiveHealthCheck, EffectiveRamp, EffectiveRoute, HealthCheckConfig, LoadedConfig, RampConfig, RouteConfig } from './model.ts';
import { normalizeBackendUrl, normalizeCidr, parseAddress, parseDuration, parsePercent, parseTimestamp } from './parse.ts';
import type { RawHealthCheck, RawRamp, RawRoute } from './schema.ts';

export function build(sections: Sections, routes: readonly RouteRef[], files: readonly string[]): LoadedConfig {
  const effectiveRoutes = routes.map((r) => effectiveRoute(r.raw));
  // The effective objects are built here with a fixed key order, so their
  // JSON does not depend on the key order in the YAML.
  const routeJson = effectiveRoutes.map((r) => JSON.stringify(r));
  const entrypoint = { ...DEFAULTS.entrypoint, ...sections.entrypoint?.data.entrypoint };
  const effective: EffectiveConfig = {
    version: 1,
    entrypoint: {
      ...entrypoint,
      trustedProxies: entrypoint.trustedProxies.map(normalizeCidr),
      requestIdHeader: entrypoint.requestIdHeader.toLowerCase(),
    },
    admin: { ...DEFAULTS.admin, ...sections.admin?.data.admin },
    shutdown: { ...DEFAULTS.shutdown, ...sections.shutdown?.data.shutdown },
    allowRouteRemoval: sections.allowRouteRemoval?.data.allowRouteRemoval ?? DEFAULTS.allowRouteRemoval,
    removalGuard: { ...DEFAULTS.removalGuard, ...sections.removalGuard?.data.removalGuard },
    routes: effectiveRoutes,
  };
  const config: Config = {
    entrypoint: {
      ...parseAddress(effective.entrypoint.address),
      maxConnectionAgeMs: parseDuration(effective.entrypoint.maxConnectionAge),
      maxConnectionAgeGraceMs: parseDuration(effective.entrypoint.maxConnectionAgeGrace),
      maxConnections: effective.entrypoint.maxConnections,
      maxHeaderBytes: effective.entrypoint.maxHeaderBytes,
      maxUrlLength: effective.entrypoint.maxUrlLength,
      headersTimeoutMs: parseDuration(effective.entrypoint.headersTimeout),
      idleTimeoutMs: parseDuration(effective.entrypoint.idleTimeout),
      trustedProxies: effective.entrypoint.trustedProxies,
      requestIdHeader: effective.entrypoint.requestIdHeader,
    },
    admin: parseAddress(effective.admin.address),
    shutdown: {
      drainDelayMs: parseDuration(effective.shutdown.drainDelay),
      timeoutMs: parseDuration(effective.shutdown.timeout),
    },
    removal: { allowRouteRemoval: effective.allowRouteRemoval, maxRemovedHostsPercent: effective.removalGuard.maxRemovedHostsPercent },
    routes: effectiveRoutes.map((route, i) => runtimeRoute(route, routes[i]!.src.file, hash(routeJson[i]!, 16))),
  };
  return { config, effective, version: configVersion(effective, routeJson), files: [...files] };
}

// Every per-route field is written out here, so that a change to any of them
// changes the route's JSON and with it its fingerprint.
function effectiveRoute(raw: RawRoute): EffectiveRoute {
  return {
    name: raw.name,
    hosts: raw.hosts.map((h) => h.toLowerCase()),
    pathPrefix: raw.pathPrefix ?? DEFAULTS.pathPrefix,
    protocol: raw.protocol ?? DEFAULTS.protocol,
    timeouts: { ...DEFAULTS.timeouts, ...raw.timeouts },
    retries: { ...DEFAULTS.retries, ...raw.retries },
    ...(raw.healthCheck === undefined ? {} : { healthCheck: effectiveHealthCheck(raw.healthCheck) }),
    outlierDetection: { ...DEFAULTS.outlierDetection, ...raw.outlierDetection },
    allUnhealthy: raw.allUnhealthy ?? DEFAULTS.allUnhealthy,
    ...(raw.sticky === undefined ? {} : { sticky: effectiveSticky(raw.sticky) }),
    maxBodyBytes: raw.maxBodyBytes ?? DEFAULTS.maxBodyBytes,
    ...(raw.mirror === undefined ? {} : { mirror: { to: raw.mirror.to, ...DEFAULTS.mirror, ...withoutTo(raw.mirror) } }),
    ...(raw.ramp === undefined ? {} : { ramp: effectiveRamp(raw.ramp) }),
    backends: raw.backends.map(({ name, url, weight, hostHeader }) => {
      const backend = { name, url: normalizeBackendUrl(url), weight };
      return hostHeader === undefined ? backend : { ...backend, hostHeader };
    }),
  };
}

function withoutTo<T extends { to: string }>(m: T): Omit<T, 'to'> {
  const { to: _, ...rest } = m;
  return rest;
}

function effectiveRamp(raw: RawRamp): EffectiveRamp {
  return {
    from: raw.from,
    to: raw.to,
    steps: raw.steps as EffectiveRamp['steps'],
    interval: raw.interval,
    ...(raw.startedAt === undefined ? {} : { startedAt: raw.startedAt }),
    ...(raw.pausedAt === undefined ? {} : { pausedAt: raw.pausedAt }),
    ...(raw.pauseReason === undefined ? {} : { pauseReason: raw.pauseReason }),
    ...(raw.halted === undefined ? {} : { halted: { at: raw.halted.at, reason: raw.halted.reason } }),
    guard: { ...DEFAULTS.rampGuard, ...raw.guard },
    onBreach: raw.onBreach ?? DEFAULTS.onBreach,
  };
}

function runtimeRamp(r: EffectiveRamp): RampConfig {
  return {
    from: r.from,
    to: r.to,
    steps: r.steps,
    intervalMs: parseDuration(r.interval),
    startedAt: r.startedAt === undefined ? null : parseTimestamp(r.startedAt),
    pausedAt: r.pausedAt === undefined ? null : parseTimestamp(r.pausedAt),
    pauseReason: r.pauseReason ?? null,
    halted: r.halted === undefined ? null : { at: parseTimestamp(r.halted.at), reason: r.halted.reason },
    guard: {
      minRequests: r.guard.minRequests,
      maxErrorRateIncrease: parsePercent(r.guard.maxErrorRateIncrease),
      maxLatencyIncrease: parsePercent(r.guard.maxLatencyIncrease),
    },
    onBreach: r.onBreach,
  };
}

function effectiveHealthCheck(raw: RawHealthCheck): EffectiveHealthCheck {
  const { interval, timeout, healthyThreshold, unhealthyThreshold } = { ...DEFAULTS.healthCheck, ...raw };
  const probe = raw.http !== undefined
    ? { http: { ...DEFAULTS.httpCheck, ...raw.http } }
    : { grpc: { ...DEFAULTS.grpcCheck, ...raw.grpc } };
  return { ...probe, interval, timeout, healthyThreshold, unhealthyThreshold };
}

function effectiveSticky(raw: { header?: string; cookie?: string }): NonNullable<EffectiveRoute['sticky']> {
  return raw.header !== undefined ? { header: raw.header.toLowerCase() } : { cookie: raw.cookie! };
}

function runtimeRoute(route: EffectiveRoute, file: string, fingerprint: string): RouteConfig {
  const { timeouts, retries, healthCheck, outlierDetection: outlier, sticky } = route;
  return {
    name: route.name,
    hosts: route.hosts,
    pathPrefix: route.pathPrefix,
    protocol: route.protocol,
    backends: route.backends,
    timeouts: {
      connectMs: parseDuration(timeouts.connect),
      responseMs: parseDuration(timeouts.response),
      idleMs: parseDuration(timeouts.idle),
      overallMs: parseDuration(timeouts.overall),
      overallIncludesStreams: timeouts.overallIncludesStreams,
    },
    healthCheck: healthCheck === undefined ? null : runtimeHealthCheck(healthCheck),
    outlier: {
      consecutiveFailures: outlier.consecutiveFailures,
      ejectionMs: parseDuration(outlier.ejectionTime),
      maxEjectionMs: parseDuration(outlier.maxEjectionTime),
    },
    allUnhealthy: route.allUnhealthy,
    retry: { attempts: retries.attempts, budgetPercent: retries.budget, minPerSecond: retries.minRetriesPerSecond },
    sticky: sticky === undefined ? null : 'header' in sticky ? { header: sticky.header, cookie: null } : { header: null, cookie: sticky.cookie },
    maxBodyBytes: route.maxBodyBytes,
    ramp: route.ramp === undefined ? null : runtimeRamp(route.ramp),
    mirror: route.mirror ?? null,
    file,
    fingerprint,
  };
}

function runtimeHealthCheck(hc: EffectiveHealthCheck): HealthCheckConfig {
  const timing = {
    intervalMs: parseDuration(hc.interval),
    timeoutMs: parseDuration(hc.timeout),
    healthyThreshold: hc.healthyThreshold,
    unhealthyThreshold: hc.unhealthyThreshold,
  };
  return 'http' in hc
    ? { kind: 'http', path: hc.http.path, expectStatus: [hc.http.expectStatus[0], hc.http.expectStatus[1]], grpcService: '', ...timing }
    : { kind: 'grpc', path: '', expectStatus: [200, 299], grpcService: hc.grpc.service, ...timing };
}

/** First 12 hex digits of sha256 over the effective config (sections, then each route's JSON). */
function configVersion(effective: EffectiveConfig, routeJson: readonly string[]): string {
  const h = createHash('sha256').update(JSON.stringify({ ...effective, routes: undefined }));
  for (const json of routeJson) h.update(json);
  return h.digest('hex').slice(0, 12);
}

function hash(text: string, hexDigits: number): string {
  return createHash('sha256').update(text).digest('hex').slice(0, hexDigits);
}
