// Semantic checks: what a JSON Schema cannot say (names unique across files,
// host + prefix routed once, durations in order, values the parsers reject).
import { isIP } from 'node:net';
import { DEFAULTS } from './defaults.ts';
import type { ConfigIssue } from './model.ts';
import { HOST_LABEL, normalizeBackendUrl, parseAddress, parseCidr, parseDuration, parsePercent, parseTimestamp } from './parse.ts';
import { escapePointer, issueAt, where } from './positions.ts';
import { usable, type RawHealthCheck, type RawRamp, type RawRoute, type Source } from './schema.ts';

// Metric label values that switchyard itself uses; a config may not claim them.
const RESERVED_ROUTE = 'unmatched';
const RESERVED_BACKEND = 'none';

// Settings of the whole router: in a directory, one file owns each.
const SECTIONS = ['entrypoint', 'admin', 'shutdown', 'allowRouteRemoval', 'removalGuard'] as const;
type SectionName = (typeof SECTIONS)[number];

export type Sections = Partial<Record<SectionName, Source>>;

/** Which file owns each top-level section; a second file defining one is an issue. */
export function pickSections(sources: readonly Source[], issues: ConfigIssue[]): Sections {
  const owners: Sections = {};
  for (const src of sources) {
    for (const name of SECTIONS) {
      if (src.data[name] === undefined) continue;
      const owner = owners[name];
      if (owner) {
        issues.push(issueAt(src, `/${name}`, `${name} is already defined at ${where(owner, `/${name}`, 'key')}; entrypoint, admin, shutdown, allowRouteRemoval and removalGuard may each appear in one file only`, 'key'));
      } else {
        owners[name] = src;
      }
    }
  }
  return owners;
}

export function checkAddresses(sections: Sections, issues: ConfigIssue[]): void {
  const listeners: Listener[] = [];
  for (const name of ['entrypoint', 'admin'] as const) {
    const src = sections[name];
    const written = src?.data[name]?.address;
    const pointer = `/${name}/address`;
    if (src && written !== undefined && !usable(src, pointer)) continue;
    const address = written ?? DEFAULTS[name].address;
    try {
      listeners.push({ name, address, ...parseAddress(address), src: written === undefined ? undefined : src });
    } catch (err) {
      issues.push(issueAt(src!, pointer, (err as Error).message));
    }
  }
  checkListenersApart(listeners, issues);
}

interface Listener {
  readonly name: 'entrypoint' | 'admin';
  readonly address: string;
  readonly host: string;
  readonly port: number;
  /** The file that sets the address; undefined when it is the default. */
  readonly src: Source | undefined;
}

/**
 * Two listeners that would collide at start-up (the second bind fails with
 * EADDRINUSE): one port, and hosts that may overlap. The issue goes on the
 * later listener that is written out.
 */
function checkListenersApart(listeners: readonly Listener[], issues: ConfigIssue[]): void {
  for (const [i, later] of listeners.entries()) {
    for (const earlier of listeners.slice(0, i)) {
      if (later.port === 0 || later.port !== earlier.port || !hostsOverlap(later.host, earlier.host)) continue;
      const [blamed, other] = later.src ? [later, earlier] : [earlier, later];
      if (!blamed.src) continue;
      const otherAt = other.src ? ` (${where(other.src, `/${other.name}/address`)})` : ' (the default)';
      const clash = blamed.address === other.address
        ? `is also the ${other.name}'s address${otherAt}`
        : `shares port ${blamed.port} with the ${other.name}'s address "${other.address}"${otherAt}`;
      issues.push(issueAt(blamed.src, `/${blamed.name}/address`, `"${blamed.address}" ${clash}; every listener needs its own port`));
    }
  }
}

/** Whether binding both hosts on one port could conflict: the same host, a wildcard covering the other, or a name that may resolve to it. */
function hostsOverlap(a: string, b: string): boolean {
  if (a.toLowerCase() === b.toLowerCase()) return true;
  const [fa, fb] = [isIP(a), isIP(b)];
  if (fa === 0 || fb === 0 || a === '::' || b === '::') return true;
  if (a === '0.0.0.0') return fb === 4;
  if (b === '0.0.0.0') return fa === 4;
  return false;
}

export function checkEntrypoint(sections: Sections, issues: ConfigIssue[]): void {
  const src = sections.entrypoint;
  const entrypoint = src?.data.entrypoint;
  if (!src || !entrypoint || !usable(src, '/entrypoint')) return;
  checkAtLeastOneMs(src, '/entrypoint/headersTimeout', entrypoint.headersTimeout, issues);
  checkAtLeastOneMs(src, '/entrypoint/idleTimeout', entrypoint.idleTimeout, issues);
  if (entrypoint.trustedProxies !== undefined && usable(src, '/entrypoint/trustedProxies')) {
    entrypoint.trustedProxies.forEach((cidr, i) => {
      const pointer = `/entrypoint/trustedProxies/${i}`;
      if (usable(src, pointer)) tryParse(src, pointer, issues, () => parseCidr(cidr));
    });
  }
}

/** A duration that must not be 0 (nor round to 0 ms); absent values take a default that is not. False after an issue. */
function checkAtLeastOneMs(src: Source, pointer: string, value: string | undefined, issues: ConfigIssue[]): boolean {
  if (value !== undefined && usable(src, pointer) && parseDuration(value) < 1) {
    issues.push(issueAt(src, pointer, 'must be at least 1ms'));
    return false;
  }
  return true;
}

/** Runs a parser the builder will use; its error becomes an issue at `pointer`. */
function tryParse(src: Source, pointer: string, issues: ConfigIssue[], parse: () => unknown): void {
  try {
    parse();
  } catch (err) {
    issues.push(issueAt(src, pointer, (err as Error).message));
  }
}

export interface RouteRef {
  readonly src: Source;
  readonly pointer: string;
  readonly raw: RawRoute;
}

export function routesOf(src: Source): RouteRef[] {
  if (!usable(src, '/routes') || src.data.routes === undefined) return [];
  return src.data.routes.flatMap((raw, i) => {
    const pointer = `/routes/${i}`;
    return usable(src, pointer) ? [{ src, pointer, raw }] : [];
  });
}

/** Whether the route's field at `suffix` (e.g. "/hosts/0") passed the schema. */
function usableIn(route: RouteRef, suffix: string): boolean {
  return usable(route.src, `${route.pointer}${suffix}`);
}

/** 'route "billing"', for messages; the name itself may be what is broken. */
function routeLabel(route: RouteRef): string {
  return usableIn(route, '/name') ? `route "${route.raw.name}"` : 'the route';
}

export function checkRoutes(routes: readonly RouteRef[], issues: ConfigIssue[]): void {
  const byName = new Map<string, RouteRef>();
  const byHostPrefix = new Map<string, { route: RouteRef; pointer: string }>();
  for (const route of routes) {
    if (usableIn(route, '/name')) checkRouteName(route, byName, issues);
    if (usableIn(route, '/hosts')) checkHosts(route, byHostPrefix, issues);
    if (usableIn(route, '/backends')) checkBackends(route, issues);
    checkResilience(route, issues);
    checkMigration(route, issues);
  }
}

/** Ramp and mirror: backends that exist, steps in order, times and percentages that parse. */
function checkMigration(route: RouteRef, issues: ConfigIssue[]): void {
  const { raw, src, pointer } = route;
  const names = usableIn(route, '/backends') ? new Set(raw.backends.map((b) => b.name)) : undefined;
  const checkBackend = (at: string, name: string) => {
    if (names !== undefined && usable(src, `${pointer}${at}`) && !names.has(name)) {
      issues.push(issueAt(src, `${pointer}${at}`, `"${name}" is not a backend of ${routeLabel(route)} (it has ${[...names].map((n) => `"${n}"`).join(', ')})`));
    }
  };
  if (raw.mirror !== undefined && usableIn(route, '/mirror')) checkBackend('/mirror/to', raw.mirror.to);
  if (raw.ramp === undefined || !usableIn(route, '/ramp')) return;
  const ramp: RawRamp = raw.ramp;
  checkBackend('/ramp/from', ramp.from);
  checkBackend('/ramp/to', ramp.to);
  if (ramp.from === ramp.to && usableIn(route, '/ramp/to')) {
    issues.push(issueAt(src, `${pointer}/ramp/to`, `must differ from "from" (both are "${ramp.to}")`));
  }
  if (usableIn(route, '/ramp/steps')) checkSteps(route, ramp.steps, issues);
  if (usableIn(route, '/ramp/interval') && parseDuration(ramp.interval) < 1000) {
    issues.push(issueAt(src, `${pointer}/ramp/interval`, 'must be at least 1s (the guard judges once a second)'));
  }
  for (const [at, value] of [['/ramp/startedAt', ramp.startedAt], ['/ramp/pausedAt', ramp.pausedAt], ['/ramp/halted/at', ramp.halted?.at]] as const) {
    if (value !== undefined && usableIn(route, at)) tryParse(src, `${pointer}${at}`, issues, () => parseTimestamp(value));
  }
  const rate = ramp.guard?.maxErrorRateIncrease;
  const at = `${pointer}/ramp/guard/maxErrorRateIncrease`;
  if (rate !== undefined && usable(src, at) && parsePercent(rate) > 1) issues.push(issueAt(src, at, 'must be at most 100%'));
}

function checkSteps(route: RouteRef, steps: readonly (number | string)[], issues: ConfigIssue[]): void {
  let last = -1;
  let numbers = false;
  steps.forEach((step, i) => {
    const at = `${route.pointer}/ramp/steps/${i}`;
    if (step === 'mirror') {
      if (numbers) issues.push(issueAt(route.src, at, '"mirror" steps must come before the percentages'));
      return;
    }
    if (typeof step !== 'number' || !Number.isInteger(step) || step < 0 || step > 100) {
      issues.push(issueAt(route.src, at, `${JSON.stringify(step)} is not a step: use a whole percent 0-100 or "mirror"`));
      return;
    }
    numbers = true;
    if (step < last) issues.push(issueAt(route.src, at, `${step}% comes after ${last}%: steps must not go down (a ramp moves one way; abort it to go back)`));
    last = Math.max(last, step);
  });
}

/** Health check, outlier detection and sticky: the rules between fields. */
function checkResilience(route: RouteRef, issues: ConfigIssue[]): void {
  const { raw } = route;
  if (raw.healthCheck !== undefined && usableIn(route, '/healthCheck')) {
    checkHealthCheck(route, raw.healthCheck, issues);
  }
  if (raw.outlierDetection !== undefined && usableIn(route, '/outlierDetection')) {
    const { ejectionTime, maxEjectionTime } = raw.outlierDetection;
    if (checkAtLeastOneMs(route.src, `${route.pointer}/outlierDetection/ejectionTime`, ejectionTime, issues)) {
      checkOrder(route, '/outlierDetection', { name: 'maxEjectionTime', value: maxEjectionTime, fallback: DEFAULTS.outlierDetection.maxEjectionTime },
        { name: 'ejectionTime', value: ejectionTime, fallback: DEFAULTS.outlierDetection.ejectionTime },
        (max, ejection) => max >= ejection, 'must be at least', issues);
    }
  }
  if (raw.sticky !== undefined && usableIn(route, '/sticky')) {
    checkExactlyOne(route, '/sticky', raw.sticky, ['header', 'cookie'], issues);
  }
}

function checkHealthCheck(route: RouteRef, hc: RawHealthCheck, issues: ConfigIssue[]): void {
  const at = `${route.pointer}/healthCheck`;
  checkExactlyOne(route, '/healthCheck', hc, ['http', 'grpc'], issues);
  const intervalOk = checkAtLeastOneMs(route.src, `${at}/interval`, hc.interval, issues);
  const timeoutOk = checkAtLeastOneMs(route.src, `${at}/timeout`, hc.timeout, issues);
  if (intervalOk && timeoutOk) {
    checkOrder(route, '/healthCheck', { name: 'timeout', value: hc.timeout, fallback: DEFAULTS.healthCheck.timeout },
      { name: 'interval', value: hc.interval, fallback: DEFAULTS.healthCheck.interval },
      (timeout, interval) => timeout < interval, 'must be shorter than', issues);
  }
  const range = hc.http?.expectStatus;
  if (range !== undefined && usable(route.src, `${at}/http/expectStatus`) && range[0] > range[1]) {
    issues.push(issueAt(route.src, `${at}/http/expectStatus`, `[${range[0]}, ${range[1]}] is not a range: the first status must not exceed the second`));
  }
}

interface DurationField {
  readonly name: string;
  readonly value: string | undefined;
  readonly fallback: string;
}

/**
 * Two durations of one block, where `subject` must stand in `relation` to
 * `other` (`ok(subject, other)`). The issue goes on `subject` when it is
 * written, else on `other` (then `subject` is its default).
 */
function checkOrder(route: RouteRef, block: string, subject: DurationField, other: DurationField, ok: (subject: number, other: number) => boolean, relation: string, issues: ConfigIssue[]): void {
  const subjectPointer = `${route.pointer}${block}/${subject.name}`;
  const otherPointer = `${route.pointer}${block}/${other.name}`;
  if (!usable(route.src, subjectPointer) || !usable(route.src, otherPointer)) return;
  const subjectText = subject.value ?? subject.fallback;
  const otherText = other.value ?? other.fallback;
  if (ok(parseDuration(subjectText), parseDuration(otherText))) return;
  const describe = (f: DurationField, text: string) => `${f.name} (${text}${f.value === undefined ? ', the default' : ''})`;
  const message = `${describe(subject, subjectText)} ${relation} ${describe(other, otherText)}`;
  issues.push(issueAt(route.src, subject.value !== undefined ? subjectPointer : otherPointer, message));
}

/** A block that takes exactly one of two keys: neither is blamed on the block, both on the later key. */
function checkExactlyOne(route: RouteRef, block: string, value: object, keys: readonly [string, string], issues: ConfigIssue[]): void {
  const present = Object.keys(value).filter((k) => keys.includes(k));
  const choice = `exactly one of "${keys[0]}" or "${keys[1]}"`;
  if (present.length === 0) {
    issues.push(issueAt(route.src, `${route.pointer}${block}`, `needs ${choice}`));
  } else if (present.length > 1) {
    const [first, second] = present as [string, string];
    const pointer = `${route.pointer}${block}/${escapePointer(second)}`;
    issues.push(issueAt(route.src, pointer, `"${second}" cannot be combined with "${first}" (at ${where(route.src, `${route.pointer}${block}/${first}`, 'key')}); set ${choice}`, 'key'));
  }
}

function checkRouteName(route: RouteRef, byName: Map<string, RouteRef>, issues: ConfigIssue[]): void {
  const { name } = route.raw;
  const pointer = `${route.pointer}/name`;
  if (name === RESERVED_ROUTE) {
    issues.push(issueAt(route.src, pointer, `route name "${name}" is reserved (the metrics label of requests no route matched)`));
  }
  const first = byName.get(name);
  if (first) {
    issues.push(issueAt(route.src, pointer, `duplicate route name "${name}"; first defined at ${where(first.src, `${first.pointer}/name`)}`));
  } else {
    byName.set(name, route);
  }
}

function checkHosts(route: RouteRef, byHostPrefix: Map<string, { route: RouteRef; pointer: string }>, issues: ConfigIssue[]): void {
  const prefixUsable = usableIn(route, '/pathPrefix');
  const prefix = route.raw.pathPrefix ?? DEFAULTS.pathPrefix;
  route.raw.hosts.forEach((host, i) => {
    const pointer = `${route.pointer}/hosts/${i}`;
    if (!usable(route.src, pointer)) return;
    const problem = hostProblem(host);
    if (problem) {
      issues.push(issueAt(route.src, pointer, `host "${host}" ${problem}`));
      return;
    }
    if (!prefixUsable) return;
    // Matching is case-insensitive, so "A.com" and "a.com" are the same host.
    const key = `${host.toLowerCase()} ${prefix}`;
    const first = byHostPrefix.get(key);
    if (!first) {
      byHostPrefix.set(key, { route, pointer });
    } else if (first.route === route) {
      issues.push(issueAt(route.src, pointer, `host "${host}" is listed twice in this route`));
    } else {
      issues.push(issueAt(route.src, pointer, `host "${host}" with pathPrefix "${prefix}" is already routed by ${routeLabel(first.route)} at ${where(first.route.src, first.pointer)}`));
    }
  });
}

/** What is wrong with a route host, or undefined: exact names and one leading "*." wildcard label. */
function hostProblem(host: string): string | undefined {
  if (/:\d*$/.test(host)) return "must not include a port (routing ignores the client's port)";
  const name = host.startsWith('*.') ? host.slice(2) : host;
  if (name.includes('*')) return 'may use "*" only as the whole first label, as in "*.example.com"';
  if (!name.split('.').every((label) => HOST_LABEL.test(label))) return 'is not a valid host name';
  return undefined;
}

function checkBackends(route: RouteRef, issues: ConfigIssue[]): void {
  const byName = new Map<string, string>();
  route.raw.backends.forEach((backend, i) => {
    const pointer = `${route.pointer}/backends/${i}`;
    if (usable(route.src, `${pointer}/name`)) checkBackendName(route, `${pointer}/name`, backend.name, byName, issues);
    if (usable(route.src, `${pointer}/url`)) tryParse(route.src, `${pointer}/url`, issues, () => normalizeBackendUrl(backend.url));
  });
}

function checkBackendName(route: RouteRef, pointer: string, name: string, byName: Map<string, string>, issues: ConfigIssue[]): void {
  if (name === RESERVED_BACKEND) {
    issues.push(issueAt(route.src, pointer, `backend name "${name}" is reserved (the metrics label of requests that reached no backend)`));
  }
  const first = byName.get(name);
  if (first !== undefined) {
    issues.push(issueAt(route.src, pointer, `duplicate backend name "${name}" in ${routeLabel(route)}; first defined at ${where(route.src, first)}`));
  } else {
    byName.set(name, pointer);
  }
}
