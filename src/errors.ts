// Every failure the proxy answers for itself is one of these classes. Each has
// a stable code, and this file is the one place that maps them to an HTTP
// status and a gRPC status (DESIGN.md, "Routing rules").

export type UpstreamErrorKind = 'connect' | 'timeout' | 'reset' | 'protocol';

export class ProxyError extends Error {
  readonly code: string = 'SY_PROXY';
  readonly httpStatus: number = 502;
  readonly grpcStatus: number = 14;
  /** The client's connection is closed after this answer (HTTP/1.1): what follows on it cannot be trusted. */
  readonly closesConnection: boolean = false;

  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A request head two parsers could read differently (RFC 9112): 400 and the connection closed, gRPC 3. */
export class BadRequestError extends ProxyError {
  override readonly code = 'SY_BAD_REQUEST';
  override readonly httpStatus = 400;
  override readonly grpcStatus = 3;
  override readonly closesConnection = true;
}

/** An HTTP/1.1 Expect other than 100-continue (RFC 9110 §10.1.1): 417, never forwarded, as node:http answered. */
export class ExpectationFailedError extends ProxyError {
  override readonly code = 'SY_EXPECTATION_FAILED';
  override readonly httpStatus = 417;
  override readonly grpcStatus = 3;
  constructor() { super('the only expectation supported is 100-continue'); }
}

/** No route for the host/path: 404, gRPC 12 UNIMPLEMENTED. */
export class NoRouteError extends ProxyError {
  override readonly code = 'SY_NO_ROUTE';
  override readonly httpStatus = 404;
  override readonly grpcStatus = 12;
  constructor() { super('no route for this host and path'); }
}

/** Override header names a backend the route does not have: 400, gRPC 3 INVALID_ARGUMENT. */
export class UnknownBackendError extends ProxyError {
  override readonly code = 'SY_UNKNOWN_BACKEND';
  override readonly httpStatus = 400;
  override readonly grpcStatus = 3;
  constructor() { super('x-switchyard-backend names no backend of this route'); }
}

/** The request body is over the route's maxBodyBytes: 413, gRPC 8 RESOURCE_EXHAUSTED. */
export class PayloadTooLargeError extends ProxyError {
  override readonly code = 'SY_PAYLOAD_TOO_LARGE';
  override readonly httpStatus = 413;
  override readonly grpcStatus = 8;
  constructor() { super('request body over the route\'s maxBodyBytes'); }
}

/** The request target is over entrypoint.maxUrlLength: 414, gRPC 3. */
export class UriTooLongError extends ProxyError {
  override readonly code = 'SY_URI_TOO_LONG';
  override readonly httpStatus = 414;
  override readonly grpcStatus = 3;
  constructor() { super('request target over entrypoint.maxUrlLength'); }
}

/** An HTTP/2 request's header list is over entrypoint.maxHeaderBytes: 431, gRPC 8 RESOURCE_EXHAUSTED. */
export class HeadersTooLargeError extends ProxyError {
  override readonly code = 'SY_HEADERS_TOO_LARGE';
  override readonly httpStatus = 431;
  override readonly grpcStatus = 8;
  constructor() { super('request headers over entrypoint.maxHeaderBytes'); }
}

/** Every weight is 0 (or every backend is down, with allUnhealthy: fail) and no override: 503, gRPC 14 UNAVAILABLE. */
export class NoBackendError extends ProxyError {
  override readonly code = 'SY_NO_BACKEND';
  override readonly httpStatus = 503;
  override readonly grpcStatus = 14;
  constructor() { super('no healthy backend with a weight above 0'); }
}

/** The upstream failed; `kind` is the metrics label and decides the status. */
export class UpstreamError extends ProxyError {
  override readonly code: string;
  override readonly httpStatus: number;
  override readonly grpcStatus: number;
  readonly kind: UpstreamErrorKind;
  /** True when nothing of the request reached the backend, so any method may be retried. */
  readonly nothingSent: boolean;
  constructor(kind: UpstreamErrorKind, nothingSent: boolean, cause: unknown, grpcStatus?: number) {
    // The message is what clients see (body, grpc-message): a short reason only.
    // The cause names addresses and errno text, so it goes to the log only.
    super(`upstream ${kind} error`, { cause });
    this.kind = kind;
    this.nothingSent = nothingSent;
    this.code = `SY_UPSTREAM_${kind.toUpperCase()}`;
    this.httpStatus = kind === 'timeout' ? 504 : 502;
    this.grpcStatus = grpcStatus ?? (kind === 'timeout' ? 4 : 14);
  }
}

const REFUSED_STREAM = 0x7;

/**
 * The upstream reset its HTTP/2 stream with `code` (RST_STREAM; the session
 * itself is alive). The gRPC status is the one gRPC's PROTOCOL-HTTP2.md gives
 * that code: REFUSED_STREAM 14 UNAVAILABLE, CANCEL 1 CANCELLED,
 * ENHANCE_YOUR_CALM 8 RESOURCE_EXHAUSTED, INADEQUATE_SECURITY 7
 * PERMISSION_DENIED, any other 13 INTERNAL.
 */
export function streamResetError(code: number): UpstreamError {
  const grpc = code === REFUSED_STREAM ? 14 : code === 0x8 ? 1 : code === 0xb ? 8 : code === 0xc ? 7 : 13;
  // REFUSED_STREAM: the peer did no work on it (RFC 9113 §8.7), so it is as if nothing was sent.
  return new UpstreamError('reset', code === REFUSED_STREAM, new Error(`upstream stream reset with code ${code}`), grpc);
}

// Connect-phase errors: the request never left the proxy.
const CONNECT_CODES = new Set([
  'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL',
]);
const TIMEOUT_CODES = new Set([
  'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT',
  'SY_RESPONSE_TIMEOUT',
]);
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

/** Classifies an error from an upstream socket or pool into an UpstreamError. */
export function upstreamError(err: unknown): UpstreamError {
  if (err instanceof UpstreamError) return err;
  const code = (err as { code?: string })?.code ?? '';
  if (CONNECT_CODES.has(code)) return new UpstreamError('connect', true, err);
  // No connection (HTTP/1.1: none came free in the pool in time): nothing was sent.
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'SY_QUEUE_TIMEOUT') return new UpstreamError('timeout', true, err);
  if (TIMEOUT_CODES.has(code)) return new UpstreamError('timeout', false, err);
  if (RESET_CODES.has(code)) return new UpstreamError('reset', false, err);
  return new UpstreamError('protocol', false, err);
}
