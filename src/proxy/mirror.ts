// Mirroring (a dark launch): a copy of a route's requests goes to one backend
// and its answers are discarded. The copy leaves only after the client's
// exchange is over, with the body the request path kept anyway (for retries),
// so a mirror can neither delay nor fail the real request; concurrency is
// bounded and what is not mirrored is counted, never queued.
import type { MirrorConfig } from '../config/model.ts';
import type { Exchange } from '../ingress/exchange.ts';
import type { OutcomeRecorder } from '../observe/metrics.ts';
import type { Backend, RouteMirror } from '../routing/route.ts';

/** Counts mirrored requests by answer code (or skipped_body, skipped_busy, error). */
export type MirrorCounter = (code: string) => void;

export class Mirror implements RouteMirror {
  readonly to: Backend;
  readonly #percent: number;
  readonly #maxBodyBytes: number;
  readonly #maxInFlight: number;
  readonly #count: MirrorCounter;
  /** Configured on the route (`mirror:`), as opposed to on only during a ramp's mirror step. */
  readonly #configured: boolean;
  step = false;
  #inFlight = 0;
  // Percent as an exact share: a request is copied when the running sum crosses 100.
  #acc = 0;
  /** The guard's `to` side during a ramp's mirror step: the copies' answers are judged. */
  recorder: OutcomeRecorder | null = null;

  constructor(to: Backend, cfg: MirrorConfig | null, count: MirrorCounter) {
    this.to = to;
    this.#configured = cfg !== null;
    this.#percent = cfg?.percent ?? 100;
    this.#maxBodyBytes = cfg?.maxBodyBytes ?? 65_536;
    this.#maxInFlight = cfg?.maxInFlight ?? 64;
    this.#count = count;
  }

  get active(): boolean {
    return this.#configured || this.step;
  }

  /** Called for each routed request: takes a copy when this request's share comes up. */
  offer(ex: Exchange): void {
    if (!this.active || ex.upgrade !== undefined) return;
    this.#acc += this.#percent;
    if (this.#acc < 100) return;
    this.#acc -= 100;
    if (ex.contentLength > this.#maxBodyBytes) {
      this.#count('skipped_body');
      return;
    }
    ex.whenDone(() => this.#send(ex));
  }

  #send(ex: Exchange): void {
    if (ex.clientGone) return;
    const body = ex.keptBody();
    if (body === null || body.length > this.#maxBodyBytes) {
      this.#count('skipped_body');
      return;
    }
    if (this.#inFlight >= this.#maxInFlight) {
      this.#count('skipped_busy');
      return;
    }
    this.#inFlight++;
    const start = performance.now();
    const done = (code: number | null): void => {
      this.#inFlight--;
      this.#count(code === null ? 'error' : String(code));
      // A failed copy counts as an error on the mirrored side: 502 (gRPC 14).
      this.recorder?.outcome(code ?? (ex.grpc ? 14 : 502), ex.grpc, performance.now() - start);
    };
    this.to.upstream.copy(ex, this.to.config.hostHeader, body, this.to.metrics, done);
  }
}
