// The request body, handed upstream one attempt at a time.
import { Readable } from 'node:stream';

// Request bytes kept so that a retry can send them again. gRPC requests are
// mostly small; a larger body that was already read is not retried.
const RETRY_BUFFER_BYTES = 64 * 1024;

/**
 * A request body handed upstream one attempt at a time. The client is read
 * only when an upstream reads, so a request whose connection was refused is
 * retried with its body untouched; what was read is kept (up to
 * RETRY_BUFFER_BYTES) so a stream the upstream refused can be sent again. An
 * attempt's stream may be destroyed by its consumer (undici does, when done)
 * without touching the client's stream. Node has no stream that defers and
 * replays its source like this, hence this class.
 */
export class RequestBody {
  readonly #src: Readable;
  #retained: Buffer[] | null = [];
  #retainedBytes = 0;
  #bytes = 0;
  /** Over this many bytes the body is cut and `onLimit` called (0: no limit). */
  limit = 0;
  onLimit: (() => void) | undefined;
  #listening = false;
  #ended = false;
  #current: AttemptBody | undefined;

  constructor(src: Readable) {
    this.#src = src;
  }

  /** True while every byte read so far is kept, so another attempt can send the same body. */
  get replayable(): boolean {
    return this.#retained !== null;
  }

  /** The whole body, once it was read to the end and kept (at most RETRY_BUFFER_BYTES); null otherwise. */
  kept(): Buffer | null {
    return this.#ended && this.#retained !== null ? Buffer.concat(this.#retained) : null;
  }

  /** The body for a new attempt; the previous attempt's stream stops receiving. */
  attempt(): Readable {
    this.#current?.destroy();
    this.#current = new AttemptBody(this);
    return this.#current;
  }

  /** An attempt's stream wants data. */
  pull(body: AttemptBody, first: boolean): void {
    if (body !== this.#current) return;
    if (first) {
      for (const chunk of this.#retained ?? []) body.push(chunk);
      if (this.#ended) {
        body.push(null);
        return;
      }
    }
    if (!this.#listening) {
      this.#listening = true;
      // A body that ended empty before anyone read it (a bidi call half-closed
      // while its upstream session was connecting) has already emitted 'end':
      // node reads 0 bytes on EOF.
      if (this.#src.readableEnded) {
        this.#onEnd();
        return;
      }
      this.#src.on('data', this.#onData).on('end', this.#onEnd).on('error', this.#onError);
    }
    this.#src.resume();
  }

  /** An attempt's stream was destroyed. */
  detach(body: AttemptBody): void {
    if (body !== this.#current) return;
    this.#current = undefined;
    this.#src.pause();
  }

  readonly #onData = (chunk: Buffer): void => {
    this.#bytes += chunk.length;
    if (this.limit > 0 && this.#bytes > this.limit) {
      this.#src.pause();
      this.#src.off('data', this.#onData);
      this.onLimit?.();
      return;
    }
    if (this.#retained !== null) {
      this.#retainedBytes += chunk.length;
      if (this.#retainedBytes <= RETRY_BUFFER_BYTES) this.#retained.push(chunk);
      else this.#retained = null;
    }
    if (this.#current !== undefined && !this.#current.push(chunk)) this.#src.pause();
  };

  readonly #onEnd = (): void => {
    this.#ended = true;
    this.#current?.push(null);
  };

  readonly #onError = (err: Error): void => {
    this.#current?.destroy(err);
  };
}

function noop(): void {}

class AttemptBody extends Readable {
  readonly #body: RequestBody;
  #started = false;

  constructor(body: RequestBody) {
    super({ highWaterMark: 64 * 1024 });
    this.#body = body;
    // The client's stream failing is passed on to whoever reads this body; a
    // consumer already done with it (undici drops its listeners) must not
    // leave the error unhandled, which would end the process.
    this.on('error', noop);
  }

  override _read(): void {
    const first = !this.#started;
    this.#started = true;
    this.#body.pull(this, first);
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.#body.detach(this);
    cb(err);
  }
}
