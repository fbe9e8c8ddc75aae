// One cancellation signal per exchange. It fires once, when the exchange is
// over for the upstream side: the client went away, or the router answered on
// its own (an error, the overall deadline, a body limit). Every layer checks
// `aborted` before it starts work (a call waiting for a connection must not
// start after the client had its answer) and listens while it works.
//
// A flag and a listener slot rather than an AbortController: one of those per
// request costs an EventTarget, and an Event object per abort, on the hot path.
export class ExchangeSignal {
  #aborted = false;
  #listener: (() => void) | undefined;
  /** Listeners beyond the first (rare: one call runs at a time). */
  #more: (() => void)[] | undefined;

  get aborted(): boolean {
    return this.#aborted;
  }

  /** Calls `fn` once when the signal fires; at once if it already has. */
  listen(fn: () => void): void {
    if (this.#aborted) fn();
    else if (this.#listener === undefined) this.#listener = fn;
    else (this.#more ??= []).push(fn);
  }

  /** Stops listening: the work `fn` would cancel is over. */
  unlisten(fn: () => void): void {
    if (this.#listener === fn) this.#listener = undefined;
    else if (this.#more !== undefined) {
      const i = this.#more.indexOf(fn);
      if (i >= 0) this.#more.splice(i, 1);
    }
  }

  abort(): void {
    if (this.#aborted) return;
    this.#aborted = true;
    const first = this.#listener;
    const more = this.#more;
    this.#listener = undefined;
    this.#more = undefined;
    first?.();
    if (more !== undefined) for (const fn of more) fn();
  }
}
