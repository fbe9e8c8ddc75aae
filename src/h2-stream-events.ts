// node:http2 stream events delivered to one handler object per stream
// (upstream/h2-call.ts: a stream to a backend; client streams are on the
// frame layer now, src/ingress/h2-conn.ts). Per-stream allocations are what GC time is made of under
// gRPC, so there is no closure per stream: the listeners are these shared
// functions, and each finds its handler through one property of the stream.
import type { Http2Stream, IncomingHttpHeaders } from 'node:http2';

/** What a stream's events go to; a handler has the methods for the events it listens to. */
export interface StreamHandler {
  streamResponse?(headers: IncomingHttpHeaders, flags: number): void;
  streamTrailers?(trailers: IncomingHttpHeaders): void;
  streamData?(chunk: Buffer): void;
  streamEnded?(): void;
  streamClosed?(): void;
  wantTrailers?(): void;
}

// Events, for listen().
export const RESPONSE = 1;
export const TRAILERS = 2;
export const DATA = 4;
export const END = 8;
export const CLOSE = 16;
export const WANT_TRAILERS = 32;

const HANDLER = Symbol('switchyard.h2handler');
type Tagged = Http2Stream & { [HANDLER]: StreamHandler };

function onResponse(this: Tagged, headers: IncomingHttpHeaders, flags: number): void {
  this[HANDLER].streamResponse!(headers, flags);
}
function onTrailers(this: Tagged, trailers: IncomingHttpHeaders): void {
  this[HANDLER].streamTrailers!(trailers);
}
function onData(this: Tagged, chunk: Buffer): void {
  this[HANDLER].streamData!(chunk);
}
function onEnd(this: Tagged): void {
  this[HANDLER].streamEnded!();
}
function onClose(this: Tagged): void {
  this[HANDLER].streamClosed!();
}
function onWantTrailers(this: Tagged): void {
  this[HANDLER].wantTrailers!();
}

/**
 * Sends `events` (RESPONSE | TRAILERS | ...) of `stream` to `handler`, which
 * must have their methods. Called again for more events later (the same
 * handler): a listener is added per call, so never twice for one event.
 */
export function listen(stream: Http2Stream, handler: StreamHandler, events: number): void {
  (stream as Tagged)[HANDLER] = handler;
  if (events & RESPONSE) stream.on('response', onResponse);
  if (events & TRAILERS) stream.on('trailers', onTrailers);
  if (events & DATA) stream.on('data', onData);
  if (events & END) stream.on('end', onEnd);
  if (events & CLOSE) stream.on('close', onClose);
  if (events & WANT_TRAILERS) stream.on('wantTrailers', onWantTrailers);
}
