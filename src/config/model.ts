// The config's data model: what a load produces (the runtime Config, the
// effective config in YAML shape) and what it reports (ConfigIssue,
// ConfigError). Types and plain values only, so any module may import it.

export type Protocol = 'http' | 'h2c';

export interface BackendConfig {
  readonly name: string;
  readonly url: string;            // http://host:port (no path)
  readonly weight: number;
  readonly hostHeader?: string;
}

/** Active health checking of a route's backends (YAML `healthCheck`). */
export interface HealthCheckConfig {
  readonly kind: 'http' | 'grpc';
  /** HTTP GET path (starts with "/"); '' for grpc. */
  readonly path: string;
  /** Inclusive status range that counts as healthy; [200, 299] (unused) for grpc. */
  readonly expectStatus: readonly [number, number];
  /** grpc.health.v1 service name ('' = the server as a whole); '' for http. */
  readonly grpcService: string;
  readonly intervalMs: number;          // > 0, default 5s
  readonly timeoutMs: number;           // > 0 and < intervalMs, default 1s
  readonly healthyThreshold: number;    // consecutive successes to turn healthy, 1..100, default 2
  readonly unhealthyThreshold: number;  // consecutive failures to turn unhealthy, 1..100, default 3
}

/** Passive outlier detection (YAML `outlierDetection`); always present, defaults filled in. */
export interface OutlierConfig {
  readonly consecutiveFailures: number; // >= 0, default 5; 0 disables ejection
  readonly ejectionMs: number;          // > 0, default 30s
  readonly maxEjectionMs: number;       // >= ejectionMs, default 5m
}

/** Retries (YAML `retries`); always present, defaults filled in. */
export interface RetryConfig {
  readonly attempts: number;      // total tries including the first, 1..5, default 2
  readonly budgetPercent: number; // 0..100: share of requests over a 10 s window that may be retries, default 20
  readonly minPerSecond: number;  // retries always allowed per second regardless of the budget, default 10
}

/** Session affinity key (YAML `sticky`): exactly one of a request header (lowercased) or a cookie. */
export type StickyConfig =
  | { readonly header: string; readonly cookie: null }
  | { readonly header: null; readonly cookie: string };

/** A ramp step: percent (integer 0..100) of the from+to traffic on `to`, or a mirror step (0 % on `to`, requests copied to it). */
export type RampStep = number | 'mirror';

export interface RampGuardConfig {
  readonly minRequests: number;          // per side, in the current step
  readonly maxErrorRateIncrease: number; // fraction: 0.005 is 0.5 percentage points
  readonly maxLatencyIncrease: number;   // fraction: 0.2 is +20 %
}

/** A route's `ramp` block (docs/ramps.md), timestamps as epoch milliseconds. */
export interface RampConfig {
  readonly from: string;
  readonly to: string;
  readonly steps: readonly RampStep[];
  readonly intervalMs: number;
  readonly startedAt: number | null;
  readonly pausedAt: number | null;
  readonly pauseReason: string | null;
  readonly halted: { readonly at: number; readonly reason: string } | null;
  readonly guard: RampGuardConfig;
  readonly onBreach: 'rollback' | 'pause';
}

/** A route's `mirror` block: copies of requests to a backend, answers discarded. */
export interface MirrorConfig {
  readonly to: string;
  readonly percent: number;       // 0..100, default 100
  readonly maxBodyBytes: number;  // default 65536
  readonly maxInFlight: number;   // default 64
}

export interface RouteConfig {
  readonly name: string;
  readonly hosts: readonly string[];   // lowercased; "*.x.com" wildcards kept as written (lowercased)
  readonly pathPrefix: string;         // default "/"
  readonly protocol: Protocol;         // default "http"
  readonly backends: readonly BackendConfig[];
  readonly timeouts: {
    readonly connectMs: number;        // default 5s
    readonly responseMs: number;       // time to first response byte, default 30s
    readonly idleMs: number;           // no byte either way once the response started; default 60s, 0 = none
    readonly overallMs: number;        // whole exchange; default 0 = none
    readonly overallIncludesStreams: boolean; // default false: streaming gRPC, SSE and WebSocket are not cut by overallMs
  };
  readonly healthCheck: HealthCheckConfig | null; // null: no active checks
  readonly outlier: OutlierConfig;
  readonly allUnhealthy: 'serve' | 'fail';        // default 'serve': still send to the least-bad backend rather than 503
  readonly retry: RetryConfig;
  readonly sticky: StickyConfig | null;           // null: no affinity
  readonly maxBodyBytes: number;                  // request body limit (413), default 0 = unlimited
  readonly ramp: RampConfig | null;               // null: no ramp
  readonly mirror: MirrorConfig | null;           // null: no mirroring (a ramp's mirror step mirrors anyway)
  readonly file: string;               // where the route was defined (for logs)
  /** Hash of this route's effective config: equal fingerprints, identical routes (a reload reuses them). */
  readonly fingerprint: string;
}

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
  readonly routes: readonly RouteConfig[];
}

export interface LoadedConfig {
  readonly config: Config;
  /** The effective config in the YAML's own shape (durations as strings), defaults filled in: what /api/config shows. */
  readonly effective: EffectiveConfig;
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
  readonly routes: readonly EffectiveRoute[];
}

export interface EffectiveRoute {
  readonly name: string;
  readonly hosts: readonly string[];
  readonly pathPrefix: string;
  readonly protocol: Protocol;
  readonly timeouts: {
    readonly connect: string;
    readonly response: string;
    readonly idle: string;
    readonly overall: string;
    readonly overallIncludesStreams: boolean;
  };
  readonly retries: { readonly attempts: number; readonly budget: number; readonly minRetriesPerSecond: number };
  /** Absent when the route has no active health check. */
  readonly healthCheck?: EffectiveHealthCheck;
  readonly outlierDetection: { readonly consecutiveFailures: number; readonly ejectionTime: string; readonly maxEjectionTime: string };
  readonly allUnhealthy: 'serve' | 'fail';
  /** Absent when the route has no session affinity. */
  readonly sticky?: { readonly header: string } | { readonly cookie: string };
  readonly maxBodyBytes: number;
  /** Absent when the route has no mirror / no ramp. */
  readonly mirror?: { readonly to: string; readonly percent: number; readonly maxBodyBytes: number; readonly maxInFlight: number };
  readonly ramp?: EffectiveRamp;
  readonly backends: readonly BackendConfig[];
}

export interface EffectiveRamp {
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

export type EffectiveHealthCheck = (
  | { readonly http: { readonly path: string; readonly expectStatus: readonly [number, number] } }
  | { readonly grpc: { readonly service: string } }
) & {
  readonly interval: string;
  readonly timeout: string;
  readonly healthyThreshold: number;
  readonly unhealthyThreshold: number;
};

/** One config file's name and contents. */
export interface ConfigSource {
  readonly file: string;
  readonly text: string;
}

export type CheckResult =
  | { readonly ok: true; readonly loaded: LoadedConfig }
  | { readonly ok: false; readonly issues: readonly ConfigIssue[] };
