// Header hygiene: hop-by-hop headers, those a Connection header names, and the
// ones the proxy sets itself never cross it, in either direction.
import type { ResponseHeaders } from './exchange.ts';

// Hop-by-hop and HTTP/2 connection-specific request headers (RFC 9110 §7.6.1,
// RFC 9113 §8.2.2), plus ones the proxy consumes or sets itself.
export const DROP_REQUEST = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'http2-settings', 'host', 'expect', 'x-switchyard-backend',
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host',
]);
const DROP_RESPONSE = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'trailer', 'upgrade'];
// Tokens of a Connection header that name no other header to drop. Content-Length
// is framing: dropping it because a client named it would leave its body
// unframed upstream, read there as the start of the next request.
const PLAIN_CONNECTION_TOKENS = new Set(['close', 'keep-alive', 'upgrade', 'te', 'http2-settings', 'content-length']);

/** Names listed in a Connection header (beyond the usual tokens), to be dropped too. */
export function connectionNamed(value: string | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  let named: Set<string> | undefined;
  for (const t of value.split(',')) {
    const token = t.trim().toLowerCase();
    if (token !== '' && !PLAIN_CONNECTION_TOKENS.has(token)) (named ??= new Set()).add(token);
  }
  return named;
}

/** Removes hop-by-hop headers from an upstream response, in place. */
export function stripResponseHeaders(h: ResponseHeaders): ResponseHeaders {
  const connection = h['connection'];
  // The common values name no other header: skip the split.
  if (connection !== undefined && connection !== 'keep-alive' && connection !== 'close') {
    const named = connectionNamed(connection as string);
    if (named !== undefined) for (const n of named) delete h[n];
  }
  // `delete` turns an object into a slow dictionary: only when the header is there.
  for (const n of DROP_RESPONSE) if (h[n] !== undefined) delete h[n];
  return h;
}

export function appendForwardedFor(prev: string | undefined, ip: string): string {
  return prev === undefined || prev === '' ? ip : `${prev}, ${ip}`;
}
