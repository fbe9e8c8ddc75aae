// The request body, from the client connection to one upstream attempt at a
// time. No Node streams: a chain of Readables cost every request with a body
// ~7 KB of short-lived objects (stream state, nextTick entries), a large share
// of the router's GC time; here a chunk goes from the connection's hand to the
// upstream's in one call.

// Request bytes kept so that a retry can send them again. gRPC requests are
// mostly small; a larger body that was already read is not retried.
const RETRY_BUFFER_BYTES = 64 * 1024;
/** Bytes received but not yet taken by an upstream, past which the client connection is asked to stop reading. */
const BACKLOG_BYTES = 64 * 1024;

/** The client connection's side of a body. */
export interface BodyFeed {
  /** An upstream wants bytes (first at its start: 100 Continue is due then): read on if reading was stopped. */
  bodyWanted(body: RequestBody): void;
  /** `n` more bytes went upstream for the first time (HTTP/2: the client's window goes back). */
  bodyTaken(body: RequestBody, n: number): void;
}

/** An upstream attempt reading the body. */
export interface BodyReader {
  /** A chunk (kept by the body for replays: never modified); false: no more until `resume(this)`. */
  bodyData(chunk: Buffer): boolean;
  /** The body ended (request trailers, if any, are readable from the exchange now). */
  bodyEnd(): void;
  /** The client's body broke off. */
  bodyError(err: Error): void;
}

/**
 * A request body handed upstream one attempt at a time. The client connection
 * pushes chunks in; one reader (the current attempt) takes them, pausing by
 * returning false. Bytes the client sent are given back to it (window, socket)
 * only as a reader takes them. What was taken is kept (up to
 * RETRY_BUFFER_BYTES) so that another attempt can read the same body from its
 * start; bytes not yet taken by anyone are always kept.
 */
export class RequestBody {
  readonly #feed: BodyFeed;
  /** Received chunks: while replayable all of them, else only those not taken yet. */
  readonly #chunks: Buffer[] = [];
  /** Index in #chunks of the next chunk for the current reader. */
  #next = 0;
  /** Bytes received (over `limit`: cut). */
  #received = 0;
  /** Bytes the current reader was given, and the most any reader was (what was taken). */
  #sent = 0;
  #taken = 0;
  #replayable = true;
  #reader: BodyReader | null = null;
  #paused = false;
  #flowing = false;
  /** push() said false: the connection waits for bodyWanted(). */
  #held = false;
  #ended = false;
  #endSent = false;
  #error: Error | null = null;
  /** Past `limit`: nothing more is taken in. */
  #cut = false;
  /** Over this many bytes the body is cut and `onLimit` called (0: no limit). */
  limit = 0;
  onLimit: (() => void) | undefined;

  constructor(feed: BodyFeed) {
    this.#feed = feed;
  }

  /** True while every byte taken so far is kept, so another attempt can send the same body. */
  get replayable(): boolean {
    return this.#replayable;
  }

  /** The whole body, once it was received to the end and kept (at most RETRY_BUFFER_BYTES); null otherwise. */
  kept(): Buffer | null {
    if (!this.#ended || !this.#replayable || this.#error !== null || this.#received > RETRY_BUFFER_BYTES) return null;
    return this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks);
  }

  // --- from the client connection -----------------------------------------------

  /** Bytes from the client; false: stop reading until the feed's bodyWanted(). */
  push(chunk: Buffer): boolean {
    if (this.#cut || this.#ended || this.#error !== null) return false;
    this.#received += chunk.length;
    if (this.limit > 0 && this.#received > this.limit) {
      this.#cut = true;
      this.onLimit?.();
      return false;
    }
    if (chunk.length === 0) return true;
    this.#chunks.push(chunk);
    this.#flow();
    if (this.#received - this.#taken < BACKLOG_BYTES) return true;
    this.#held = true;
    return false;
  }

  /** The body ended. */
  end(): void {
    if (this.#cut || this.#ended || this.#error !== null) return;
    this.#ended = true;
    this.#flow();
  }

  /** The client's body broke off: the reader is told. */
  fail(err: Error): void {
    if (this.#ended || this.#error !== null) return;
    this.#error = err;
    const reader = this.#reader;
    this.#reader = null;
    reader?.bodyError(err);
  }

  // --- from the upstream ----------------------------------------------------------

  /** `reader` reads the body from its start (an earlier reader gets nothing more). */
  read(reader: BodyReader): void {
    this.#reader = reader;
    this.#paused = false;
    this.#endSent = false;
    this.#sent = 0;
    if (this.#error !== null || (!this.#replayable && this.#taken > 0)) {
      // The proxy retries only replayable bodies; a reader never gets a body with a hole.
      this.#reader = null;
      reader.bodyError(this.#error ?? new Error('request body not replayable'));
      return;
    }
    this.#next = 0;
    this.#feed.bodyWanted(this);
    this.#flow();
  }

  /** After bodyData() said false. */
  resume(reader: BodyReader): void {
    if (reader !== this.#reader) return;
    this.#paused = false;
    this.#flow();
  }

  /** `reader` wants no more of the body. */
  stop(reader: BodyReader): void {
    if (reader === this.#reader) this.#reader = null;
  }

  #flow(): void {
    // A reader resuming from inside bodyData() continues this loop.
    if (this.#flowing) return;
    this.#flowing = true;
    const chunks = this.#chunks;
    let reader = this.#reader;
    while (reader !== null && !this.#paused && this.#next < chunks.length) {
      const chunk = chunks[this.#next]!;
      this.#sent += chunk.length;
      const fresh = this.#sent - this.#taken;
      if (fresh > 0) {
        this.#taken = this.#sent;
        if (this.#replayable && this.#taken > RETRY_BUFFER_BYTES) this.#replayable = false;
      }
      if (this.#replayable) this.#next++;
      else {
        // Not kept any more: what was taken goes.
        chunks.splice(0, this.#next + 1);
        this.#next = 0;
      }
      if (fresh > 0) this.#feed.bodyTaken(this, fresh);
      if (!reader.bodyData(chunk) && reader === this.#reader) this.#paused = true;
      reader = this.#reader;
    }
    this.#flowing = false;
    if (reader === null || this.#paused || this.#next < chunks.length) return;
    if (this.#held) {
      this.#held = false;
      this.#feed.bodyWanted(this);
    }
    if (this.#ended && !this.#endSent && reader === this.#reader) {
      this.#endSent = true;
      reader.bodyEnd();
    }
  }
}
