// The config's data model: a route as configured (RouteConfig, defaults
// written out, the YAML's own shape), the whole effective config, the
// router-wide runtime settings (Config), and what a load reports
// (ConfigIssue, ConfigError). Types and plain values only, so any module may
// import it.

export type Protocol = 'http' | 'h2c';

export interface BackendConfig {
  readonly name: string;
  readonly url: string;            // http://host:port (no path)
  readonly weight: number;
  readonly hostHeader?: string;
}

/** Active health checking of a route's backends (YAML `healthCheck`): exactly one of http or grpc. */
export type HealthCheckConfig = (
  | { readonly http: { readonly path: string; readonly expectStatus: readonly [number, number] } }
  | { readonly grpc: { readonly service: string } }
) & {
  readonly interval: string;
  readonly timeout: string;              // shorter than interval
  readonly healthyThreshold: number;     // consecutive successes to turn healthy, 1..100
  readonly unhealthyThreshold: number;   // consecutive failures to turn unhealthy, 1..100
};

/** A ramp step: percent (integer 0..100) of the from+to traffic on `to`, or a mirror step (0 % on `to`, requests copied to it). */
export type RampStep = number | 'mirror';

/** A route's `ramp` block (docs/ramps.md); times are RFC 3339, guard limits percentages ("0.5%"). */
export interface RampConfig {
  readonly from: string;
  readonly to: string;
  readonly steps: readonly RampStep[];
  readonly interval: string;
  readonly startedAt?: string;
  readonly pausedAt?: string;
  readonly pauseReason?: string;
  readonly halted?: { readonly at: string; readonly reason: string };
  readonly guard: { readonly minRequests: number; readonly maxErrorRateIncrease: string; readonly maxLatencyIncrease: string };
  readonly onBreach: 'rollback' | 'pause';
}

/** A route's `mirror` block: copies of requests to a backend, answers discarded. */
export interface MirrorConfig {
  readonly to: string;
  readonly percent: number;       // 0..100
  readonly maxBodyBytes: number;
  readonly maxInFlight: number;
}

/**
 * A route as configured, every default written out (defaults.ts), in the
 * YAML's own shape: what /api/config shows and the config worker sends. The
 * runtime Route (routing/route.ts) keeps a reference to it and derives what it
 * needs in other units (milliseconds) once.
 */
export interface RouteConfig {
  readonly name: string;
  readonly hosts: readonly string[];   // lowercased; "*.x.com" wildcards kept as written (lowercased)
  readonly pathPrefix: string;
  readonly protocol: Protocol;
  readonly timeouts: {
    readonly connect: string;
    readonly response: string;         // time to first response byte
    readonly idle: string;             // no byte either way once the response started; 0s = none
    readonly overall: string;          // whole exchange; 0s = none
    readonly overallIncludesStreams: boolean; // false: streaming gRPC, SSE and WebSocket are not cut by overall
  };
  /** attempts: total tries including the first; budget: percent of requests over 10 s that may be retries; minRetriesPerSecond: allowed regardless. */
  readonly retries: { readonly attempts: number; readonly budget: number; readonly minRetriesPerSecond: number };
  /** Absent when the route has no active health check. */
  readonly healthCheck?: HealthCheckConfig;
  /** consecutiveFailures 0 disables ejection. */
  readonly outlierDetection: { readonly consecutiveFailures: number; readonly ejectionTime: string; readonly maxEjectionTime: string };
  readonly allUnhealthy: 'serve' | 'fail';  // serve: still send to the least-bad backend rather than 503
  /** Session affinity key, absent for none: a request header (lowercased) or a cookie. */
  readonly sticky?: { readonly header: string } | { readonly cookie: string };
  readonly maxBodyBytes: number;            // request body limit (413), 0 = unlimited
  /** Absent when the route has no mirror (a ramp's mirror step mirrors anyway) / no ramp. */
  readonly mirror?: MirrorConfig;
  readonly ramp?: RampConfig;
  readonly backends: readonly BackendConfig[];
}

/** The router-wide settings at run time (durations in ms, addresses split), plus the routes as configured. */
export interface Config {
  readonly entrypoint: {
    readonly host: string;
    readonly port: number;
    readonly maxConnectionAgeMs: number;
    readonly maxConnectionAgeGraceMs: number;
    readonly maxConnections: number;     // default 10000, 0 = unlimited
    readonly maxHeaderBytes: number;     // default 16384; over → 431
    readonly maxUrlLength: number;       // default 8192; over → 414
    readonly headersTimeoutMs: number;   // > 0, default 10s: time a client has to send the request headers
    readonly idleTimeoutMs: number;      // > 0, default 65s: a client connection with nothing in flight is closed after it
    /** CIDRs ("10.0.0.0/8", "fd00::/8"; plain addresses as /32 or /128) whose X-Forwarded-For is trusted; default []. See parseCidr. */
    readonly trustedProxies: readonly string[];
    readonly requestIdHeader: string;    // lowercased, default "x-request-id"
  };
  readonly admin: { readonly host: string; readonly port: number };
  readonly shutdown: { readonly drainDelayMs: number; readonly timeoutMs: number };
  /** The blast-radius guard's settings (see guard.ts). */
  readonly removal: { readonly allowRouteRemoval: boolean; readonly maxRemovedHostsPercent: number };
  /** The same objects as `LoadedConfig.effective.routes`. */
  readonly routes: readonly RouteConfig[];
}

export interface LoadedConfig {
  readonly config: Config;
  /** The effective config in the YAML's own shape (durations as strings), defaults filled in: what /api/config shows. */
  readonly effective: EffectiveConfig;
  /** Route i's fingerprint, a hash of its JSON: equal fingerprints, identical routes (a reload reuses them). */
  readonly fingerprints: readonly string[];
  /** Short content hash of `effective`. */
  readonly version: string;
  readonly files: readonly string[];
}

export interface ConfigIssue {
  readonly file: string;
  readonly line: number;     // 1-based; 0 when unknown
  readonly column: number;   // 1-based; 0 when unknown
  readonly path: string;     // field path such as "routes[0].backends[1].weight"
  readonly message: string;
}

export class ConfigError extends Error {
  readonly code = 'SY_CONFIG_INVALID';
  readonly issues: readonly ConfigIssue[];
  constructor(issues: readonly ConfigIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

export function formatIssue(i: ConfigIssue): string {
  return `${i.file}:${i.line}:${i.column}: ${i.path || '(root)'}: ${i.message}`;
}

/** The concrete shape of `LoadedConfig.effective`: a valid config file itself, with every default written out. */
export interface EffectiveConfig {
  readonly version: 1;
  readonly entrypoint: {
    readonly address: string;
    readonly maxConnectionAge: string;
    readonly maxConnectionAgeGrace: string;
    readonly maxConnections: number;
    readonly maxHeaderBytes: number;
    readonly maxUrlLength: number;
    readonly headersTimeout: string;
    readonly idleTimeout: string;
    readonly trustedProxies: readonly string[];
    readonly requestIdHeader: string;
  };
  readonly admin: { readonly address: string };
  readonly shutdown: { readonly drainDelay: string; readonly timeout: string };
  readonly allowRouteRemoval: boolean;
  readonly removalGuard: { readonly maxRemovedHostsPercent: number };
  readonly routes: readonly RouteConfig[];
}

/** One config file's name and contents. */
export interface ConfigSource {
  readonly file: string;
  readonly text: string;
}
