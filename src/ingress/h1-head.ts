// The request-head rules of RFC 9112 about what a request is for: exactly one
// valid Host, the request target's own authority for absolute-form (§3.2.2).
// A head that breaks one is a 400 and its connection is closed: two parsers
// could read it differently, and the router must never be the one that
// guesses. (The parser, h1-parser.ts, already rejects the framing shapes: two
// Content-Lengths, Content-Length with Transfer-Encoding, anything but one
// plain chunked, bare CR/LF, obs-fold, bad chunks, unknown versions.)

/** What the router routes and forwards by, or why the head is refused. */
export type HeadVerdict =
  | { readonly ok: true; readonly authority: string; readonly path: string }
  | { readonly ok: false; readonly reason: string };

// uri-host [ ":" port ] (RFC 3986 §3.2.2): a reg-name or an IP literal; no
// userinfo, path, spaces or list commas.
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+;=%]+)(?::[0-9]{0,5})?$/;
// absolute-form: http(s)://authority followed by nothing, a path or a query.
const ABSOLUTE = /^https?:\/\/([^/?#]*)([/?][^#]*)?$/i;

/**
 * What to route an HTTP/1.x request by: `hosts` Host lines were sent, the
 * last being `host`; `url` is the request target as sent. Absolute-form
 * targets carry their own authority, which wins over Host; the upstream gets
 * the origin-form path.
 */
export function resolveTarget(url: string, host: string | undefined, hosts: number): HeadVerdict {
  if (hosts !== 1) return bad(hosts === 0 ? 'no Host header' : 'more than one Host header');
  if (!HOST.test(host!)) return bad('invalid Host header');
  if (url.charCodeAt(0) === 47 /* '/' */) return { ok: true, authority: host!, path: url };
  const abs = ABSOLUTE.exec(url);
  if (abs === null) return url === '*' ? { ok: true, authority: host!, path: url } : bad('invalid request target');
  const authority = abs[1]!;
  if (authority === '' || !HOST.test(authority)) return bad('invalid authority in the request target');
  const rest = abs[2] ?? '';
  return { ok: true, authority, path: rest.startsWith('/') ? rest : `/${rest}` };
}

/** A Host value (or an HTTP/2 :authority) the router routes by: uri-host [":" port], no userinfo or path. */
export function validHost(host: string): boolean {
  return HOST.test(host);
}

function bad(reason: string): HeadVerdict {
  return { ok: false, reason };
}
