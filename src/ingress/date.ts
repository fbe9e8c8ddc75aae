// The Date header of the answers the router gives itself (RFC 9110 §6.6.1:
// an origin with a clock sends it). Formatted at most once a second and only
// when asked: no timer runs while the router is idle.

let cached = '';
/** Date.now() from which `cached` is stale: the start of the next second. */
let staleAt = 0;

/** Now as an IMF-fixdate, e.g. "Mon, 30 Nov 2026 11:45:18 GMT". */
export function httpDate(): string {
  const now = Date.now();
  if (now >= staleAt) {
    cached = new Date(now).toUTCString();
    staleAt = now - (now % 1000) + 1000;
  }
  return cached;
}
