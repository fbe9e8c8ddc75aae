// Every default a config may leave out, in the YAML's own shape.

// The schema's "default" annotations say the same, for editors.
export const DEFAULTS = {
  entrypoint: {
    address: '0.0.0.0:8080',
    maxConnectionAge: '5m',
    maxConnectionAgeGrace: '30s',
    maxConnections: 10_000,
    maxHeaderBytes: 16_384,
    maxUrlLength: 8_192,
    headersTimeout: '10s',
    // Longer than the idle timeout of common load balancers in front (AWS ALB:
    // 60 s), so the balancer, not the proxy, closes idle connections and never races us.
    idleTimeout: '65s',
    trustedProxies: [] as readonly string[],
    requestIdHeader: 'x-request-id',
  },
  admin: { address: '0.0.0.0:9901' },
  shutdown: { drainDelay: '5s', timeout: '30s' },
  allowRouteRemoval: false,
  removalGuard: { maxRemovedHostsPercent: 50 },
  pathPrefix: '/',
  protocol: 'http',
  timeouts: { connect: '5s', response: '30s', idle: '60s', overall: '0s', overallIncludesStreams: false },
  retries: { attempts: 2, budget: 20, minRetriesPerSecond: 10 },
  healthCheck: { interval: '5s', timeout: '1s', healthyThreshold: 2, unhealthyThreshold: 3 },
  httpCheck: { path: '/healthz', expectStatus: [200, 399] as readonly [number, number] },
  grpcCheck: { service: '' },
  outlierDetection: { consecutiveFailures: 5, ejectionTime: '30s', maxEjectionTime: '5m' },
  allUnhealthy: 'serve',
  maxBodyBytes: 0,
  rampGuard: { minRequests: 200, maxErrorRateIncrease: '0.5%', maxLatencyIncrease: '20%' },
  onBreach: 'rollback',
  mirror: { percent: 100, maxBodyBytes: 65_536, maxInFlight: 64 },
} as const;
