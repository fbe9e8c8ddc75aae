// Parsers of single config values: durations, listen addresses, CIDRs,
// backend URLs. Light on purpose (node:net only): the request path and the
// entrypoint use them without loading the YAML parsers or the schema.
import { BlockList, isIP } from 'node:net';

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;

/** "250ms", "5s", "1.5s", "2m", "1h" → milliseconds (rounded to whole ms). Throws on anything else. */
export function parseDuration(s: string): number {
  const m = DURATION.exec(s);
  if (!m) throw new Error(`"${s}" is not a duration such as 250ms, 5s, 2m or 1h`);
  return Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
}

const PERCENT = /^(\d+(?:\.\d+)?)%$/;

/** "0.5%" → 0.005. Throws on anything else. */
export function parsePercent(s: string): number {
  const m = PERCENT.exec(s);
  if (!m) throw new Error(`"${s}" is not a percentage such as 0.5% or 20%`);
  return Number(m[1]) / 100;
}

const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/i;

/** An RFC 3339 date-time ("2026-12-01T10:00:00Z", "...+01:00") → epoch milliseconds. Throws on anything else. */
export function parseTimestamp(s: string): number {
  const ms = TIMESTAMP.test(s) ? Date.parse(s) : NaN;
  if (!Number.isFinite(ms)) throw new Error(`"${s}" is not an RFC 3339 time such as 2026-12-01T10:00:00Z`);
  return ms;
}

// Labels of a DNS name (IPv4 literals pass too). Underscores occur in real host names.
export const HOST_LABEL = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/i;

// Only the origin is configurable: the client's path is sent as-is, and a
// path, query or credentials here would be silently dropped.
const BACKEND_URL = /^http:\/\/[^/?#@\s]+\/?$/;

/** "http://Host" → "http://host:80"; throws unless the URL is http://host[:port][/]. */
export function normalizeBackendUrl(url: string): string {
  if (url.startsWith('https://')) throw new Error(`"${url}": https backends are not supported, use http://`);
  if (!BACKEND_URL.test(url)) throw new Error(`"${url}" must be http://host[:port] with no path, query or credentials`);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`"${url}" is not a valid URL`);
  }
  if (parsed.port === '0') throw new Error(`"${url}": port must be 1-65535`);
  return `http://${parsed.hostname}:${parsed.port || '80'}`;
}

export interface Cidr {
  readonly address: string;          // lowercased, as isIP() accepts it
  readonly prefix: number;           // 0-32 (IPv4) or 0-128 (IPv6)
  readonly family: 'ipv4' | 'ipv6';
}

/**
 * "10.0.0.0/8", "fd00::/8" or a plain address ("::1" means "::1/128") → the
 * arguments of node:net `BlockList.addSubnet(address, prefix, family)`.
 * Throws on anything else (host names, zone indexes, bad prefix lengths).
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  const address = (slash < 0 ? text : text.slice(0, slash)).toLowerCase();
  const version = isIP(address);
  // BlockList silently drops a zone index (fe80::1%eth0), so it would not mean what it says.
  if (version === 0 || address.includes('%')) {
    throw new Error(`"${text}" is not an IPv4/IPv6 address or CIDR such as 10.0.0.0/8 or fd00::/8`);
  }
  const bits = version === 4 ? 32 : 128;
  const digits = slash < 0 ? String(bits) : text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(digits) || Number(digits) > bits) throw new Error(`"${text}": the prefix length must be 0-${bits}`);
  const cidr: Cidr = { address, prefix: Number(digits), family: version === 4 ? 'ipv4' : 'ipv6' };
  try {
    new BlockList().addSubnet(cidr.address, cidr.prefix, cidr.family);
  } catch (err) {
    throw new Error(`"${text}": ${(err as Error).message}`);
  }
  return cidr;
}

/** "10.1.2.3" → "10.1.2.3/32", "FD00::/8" → "fd00::/8". */
export function normalizeCidr(text: string): string {
  const { address, prefix } = parseCidr(text);
  return `${address}/${prefix}`;
}

const ADDRESS = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/;

/** "host:port", "[::1]:port" or ":port" (all IPv4 interfaces) → where to listen. */
export function parseAddress(address: string): { host: string; port: number } {
  const m = ADDRESS.exec(address);
  if (!m) throw new Error(`"${address}" is not host:port, [ipv6]:port or :port`);
  const [, ipv6, name, digits] = m;
  const port = Number(digits);
  // Port 0 asks the OS for a free port (tests, side-by-side runs).
  if (port > 65535) throw new Error(`"${address}": port must be 0-65535`);
  if (ipv6 !== undefined) {
    if (isIP(ipv6) !== 6) throw new Error(`"${address}": "${ipv6}" is not an IPv6 address`);
    return { host: ipv6, port };
  }
  if (!name) return { host: '0.0.0.0', port };
  if (!name.split('.').every((label) => HOST_LABEL.test(label))) throw new Error(`"${address}": "${name}" is not a host name or IPv4 address`);
  return { host: name, port };
}
