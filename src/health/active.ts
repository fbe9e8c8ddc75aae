// Active health checks: an HTTP GET, or the gRPC health protocol, every
// interval, with healthy/unhealthy thresholds.
import type { Agent } from 'node:http';
import { request } from '../node-http.ts';
import type { HealthCheckConfig } from '../config/model.ts';
import { parseDuration } from '../config/parse.ts';
import type { BackendHealth } from './backend.ts';

// grpc.health.v1.HealthCheckRequest { string service = 1; } and
// HealthCheckResponse { ServingStatus status = 1; } — one field each, so they
// are encoded here instead of loading a .proto at run time.
function encodeHealthRequest(service: string): Buffer {
  const s = Buffer.from(service);
  return s.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, s.length]), s]);
}

const SERVING = 1;
function decodeHealthStatus(b: Buffer): number {
  // Field 1, varint: tag 0x08 then the value (ServingStatus fits one byte).
  return b.length >= 2 && b[0] === 0x08 ? b[1]! : 0;
}

type Probe = () => Promise<boolean>;

function httpProbe(url: string, http: { path: string; expectStatus: readonly [number, number] }, timeoutMs: number, agent: Agent): Probe {
  const target = new URL(http.path, url);
  const [low, high] = http.expectStatus;
  return () => new Promise((resolve) => {
    const req = request(target, { agent, timeout: timeoutMs }, (res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      res.once('end', () => resolve(status >= low && status <= high));
      res.once('error', () => resolve(false));
    });
    // No answer in time (the socket's idle timeout covers connect and response): a failed probe.
    req.once('timeout', () => req.destroy(new Error('health probe timeout')));
    req.once('error', () => resolve(false));
    req.end();
  });
}

// @grpc/grpc-js is loaded only when a route has a gRPC health check: an idle
// router without one does not pay its memory.
type Grpc = typeof import('@grpc/grpc-js');
let grpcModule: Promise<Grpc> | undefined;

function grpcProbe(url: string, service: string, timeoutMs: number): { probe: Probe; close(): void } {
  let client: InstanceType<Grpc['Client']> | undefined;
  let closed = false;
  const ready = (grpcModule ??= import('@grpc/grpc-js')).then((grpc) => {
    if (!closed) client = new grpc.Client(new URL(url).host, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
    return grpc;
  });
  const probe: Probe = async () => {
    await ready;
    const c = client;
    if (c === undefined) return false;
    return new Promise((resolve) => {
      c.makeUnaryRequest('/grpc.health.v1.Health/Check', encodeHealthRequest, decodeHealthStatus, service,
        { deadline: Date.now() + timeoutMs }, (err: Error | null, status?: number) => resolve(err === null && status === SERVING));
    });
  };
  return { probe, close: () => { closed = true; client?.close(); } };
}

/** Probes one backend every interval and applies the thresholds. */
export class ActiveCheck {
  readonly #health: BackendHealth;
  readonly #cfg: HealthCheckConfig;
  readonly #intervalMs: number;
  readonly #probe: Probe;
  readonly #closeProbe: () => void;
  #timer: NodeJS.Timeout | undefined;
  #successes = 0;
  #failures = 0;
  #stopped = false;

  constructor(health: BackendHealth, cfg: HealthCheckConfig, agent: Agent) {
    this.#health = health;
    this.#cfg = cfg;
    this.#intervalMs = parseDuration(cfg.interval);
    const timeoutMs = parseDuration(cfg.timeout);
    if ('grpc' in cfg) {
      const g = grpcProbe(health.url, cfg.grpc.service, timeoutMs);
      this.#probe = g.probe;
      this.#closeProbe = g.close;
    } else {
      this.#probe = httpProbe(health.url, cfg.http, timeoutMs, agent);
      this.#closeProbe = () => {};
    }
  }

  start(): void {
    void this.#run();
  }

  async #run(): Promise<void> {
    let ok = false;
    try {
      ok = await this.#probe();
    } catch {
      ok = false;
    }
    if (this.#stopped) return;
    if (ok) {
      this.#failures = 0;
      if (++this.#successes >= this.#cfg.healthyThreshold) this.#health.setActive(true);
    } else {
      this.#successes = 0;
      if (++this.#failures >= this.#cfg.unhealthyThreshold) this.#health.setActive(false);
    }
    this.#timer = setTimeout(() => void this.#run(), this.#intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#closeProbe();
  }
}
