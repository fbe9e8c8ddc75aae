// Which backend takes a request: the override header, else the sticky key,
// else the route's weighted pick.
import type { Exchange } from '../ingress/exchange.ts';
import type { Backend, Route } from '../routing/route.ts';

/** The backend for this request, undefined when none can take it, 'unknown' for a bad override. */
export function choose(ex: Exchange, route: Route): Backend | undefined | 'unknown' {
  if (ex.override !== undefined) return route.byName(ex.override) ?? 'unknown';
  const sticky = route.config.sticky;
  if (sticky !== undefined) {
    const key = 'header' in sticky ? ex.header(sticky.header) : ex.cookie(sticky.cookie);
    if (key !== undefined) return route.stickyPick(key);
  }
  return route.pick();
}
