// Kubernetes Events from this replica about an object (the ConfigMap it runs),
// where `kubectl describe` and `kubectl get events` users look.
//
// Rate-limited with a token bucket, like client-go's event spam filter, so a
// burst of config changes cannot flood the API server from every replica: an
// event that finds the bucket empty is held, a newer one replaces it, and the
// held one is sent as soon as a token is back. So the latest state is always
// reported, only intermediate ones may be skipped. An event identical to the
// last one sent (same object, reason and message) is not sent again.
import type { KubeClient, KubeEvent, ObjectReference } from './client.ts';

export interface EventRecorderOptions {
  /** `source.component` / `reportingComponent`, e.g. `switchyard`. */
  readonly component: string;
  /** The replica: `source.host` / `reportingInstance`, e.g. the pod name. */
  readonly instance: string;
  /** Events that may be sent at once (default 10). */
  readonly burst?: number;
  /** One more token every refillMs (default 6 s: 10 a minute sustained). */
  readonly refillMs?: number;
  /** Called when the API refuses or cannot take an event; events are never retried. */
  readonly onError?: (err: Error, event: KubeEvent) => void;
}

export interface PendingEvent {
  readonly target: ObjectReference;
  readonly type: 'Normal' | 'Warning';
  readonly reason: string;
  readonly message: string;
}

/** The API's limit on an event message is 1 KiB of text; longer ones are cut. */
const MAX_MESSAGE = 1024;

export class EventRecorder {
  readonly #client: KubeClient;
  readonly #opts: Required<Omit<EventRecorderOptions, 'onError'>> & Pick<EventRecorderOptions, 'onError'>;
  #tokens: number;
  #refilledAt = Date.now();
  #held: PendingEvent | undefined;
  #timer: NodeJS.Timeout | undefined;
  #lastSent = '';
  readonly #inflight = new Set<Promise<void>>();
  /** Events sent, and events skipped by the rate limit (held ones that a newer one replaced). */
  readonly stats = { sent: 0, dropped: 0 };

  constructor(client: KubeClient, opts: EventRecorderOptions) {
    this.#client = client;
    this.#opts = { burst: 10, refillMs: 6000, ...opts };
    this.#tokens = this.#opts.burst;
  }

  /** Records an event; returns at once, never throws. */
  record(event: PendingEvent): void {
    if (this.#held !== undefined) this.stats.dropped++;
    this.#held = event;
    this.#drain();
  }

  /** Waits until the held event (if any) and every request under way are done. */
  async flush(): Promise<void> {
    while (this.#held !== undefined || this.#inflight.size > 0) {
      if (this.#inflight.size > 0) await Promise.all(this.#inflight);
      else await new Promise((r) => setTimeout(r, 50));
    }
  }

  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#held = undefined;
  }

  #drain(): void {
    const now = Date.now();
    const refill = Math.floor((now - this.#refilledAt) / this.#opts.refillMs);
    if (refill > 0) {
      this.#tokens = Math.min(this.#opts.burst, this.#tokens + refill);
      this.#refilledAt += refill * this.#opts.refillMs;
    }
    if (this.#tokens === this.#opts.burst) this.#refilledAt = now;
    const ev = this.#held;
    if (ev === undefined) return;
    const key = `${ev.target.uid ?? ev.target.name}\0${ev.reason}\0${ev.message}`;
    if (key === this.#lastSent) {
      this.#held = undefined;
      return;
    }
    if (this.#tokens < 1) {
      if (this.#timer === undefined) {
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.#drain();
        }, this.#refilledAt + this.#opts.refillMs - now);
        this.#timer.unref();
      }
      return;
    }
    this.#tokens--;
    this.#held = undefined;
    this.#lastSent = key;
    this.#send(ev);
  }

  #send(ev: PendingEvent): void {
    const now = new Date().toISOString();
    const { component, instance } = this.#opts;
    const event: KubeEvent = {
      // client-go's naming: the object's name and a unique hexadecimal suffix.
      metadata: { name: `${ev.target.name}.${(Date.now() * 1000 + Math.floor(Math.random() * 1000)).toString(16)}`, namespace: ev.target.namespace },
      involvedObject: ev.target,
      type: ev.type,
      reason: ev.reason,
      message: ev.message.length > MAX_MESSAGE ? `${ev.message.slice(0, MAX_MESSAGE - 3)}...` : ev.message,
      source: { component, host: instance },
      reportingComponent: component,
      reportingInstance: instance,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    const p = this.#client.createEvent(ev.target.namespace, event).then(
      () => { this.stats.sent++; },
      (err: unknown) => { this.#opts.onError?.(err as Error, event); },
    ).finally(() => this.#inflight.delete(p));
    this.#inflight.add(p);
  }
}
