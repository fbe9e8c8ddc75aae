// Building the effective config (YAML shape, defaults written out) and the
// router-wide runtime settings from checked files. Only reached when every check passed,
// so the parsers cannot throw here.
import { createHash } from 'node:crypto';
import type { Sections, RouteRef } from './checks.ts';
import { DEFAULTS } from './defaults.ts';
import type { Config, EffectiveConfig, HealthCheckConfig, LoadedConfig, RampConfig, RouteConfig } from './model.ts';
import { normalizeBackendUrl, normalizeCidr, parseAddress, parseDuration } from './parse.ts';
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
    routes: effectiveRoutes,
  };
  const fingerprints = routeJson.map((json) => hash(json, 16));
  return { config, effective, fingerprints, version: configVersion(effective, routeJson), files: [...files] };
}

// Every per-route field is written out here, so that a change to any of them
// changes the route's JSON and with it its fingerprint.
function effectiveRoute(raw: RawRoute): RouteConfig {
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

function effectiveRamp(raw: RawRamp): RampConfig {
  return {
    from: raw.from,
    to: raw.to,
    steps: raw.steps,
    interval: raw.interval,
    ...(raw.startedAt === undefined ? {} : { startedAt: raw.startedAt }),
    ...(raw.pausedAt === undefined ? {} : { pausedAt: raw.pausedAt }),
    ...(raw.pauseReason === undefined ? {} : { pauseReason: raw.pauseReason }),
    ...(raw.halted === undefined ? {} : { halted: { at: raw.halted.at, reason: raw.halted.reason } }),
    guard: { ...DEFAULTS.rampGuard, ...raw.guard },
    onBreach: raw.onBreach ?? DEFAULTS.onBreach,
  };
}

function effectiveHealthCheck(raw: RawHealthCheck): HealthCheckConfig {
  const { interval, timeout, healthyThreshold, unhealthyThreshold } = { ...DEFAULTS.healthCheck, ...raw };
  const probe = raw.http !== undefined
    ? { http: { ...DEFAULTS.httpCheck, ...raw.http } }
    : { grpc: { ...DEFAULTS.grpcCheck, ...raw.grpc } };
  return { ...probe, interval, timeout, healthyThreshold, unhealthyThreshold };
}

function effectiveSticky(raw: { header?: string; cookie?: string }): NonNullable<RouteConfig['sticky']> {
  return raw.header !== undefined ? { header: raw.header.toLowerCase() } : { cookie: raw.cookie! };
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
