// Config: YAML files → validated, immutable runtime config.
//
// Pipeline: read the file (or every *.yaml/*.yml of a ConfigMap directory) →
// parse YAML, keeping the node tree for positions → validate each file against
// config/switchyard.schema.json → semantic checks across all files → build the
// effective config (YAML shape, defaults filled in) and the runtime config.
// Every problem found on the way becomes a ConfigIssue with file, line, column
// and field path, and all of them are thrown together as one ConfigError, so an
// operator can fix a config in one round instead of one error at a time.

import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { BlockList, isIP } from 'node:net';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { Ajv } from 'ajv';
import type { AnySchemaObject, ErrorObject } from 'ajv';
import { isAlias, isMap, isNode, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import { load as loadYaml } from 'js-yaml';
import type { Document } from 'yaml';
import schema from '../../config/switchyard.schema.json' with { type: 'json' };
import type { WorkerReply, WorkerRequest } from './worker.ts';

export type Protocol = 'http' | 'h2c';

export interface BackendConfig {
  readonly name: string;
  readonly url: string;            // http://host:port (no path)
  readonly weight: number;
  readonly hostHeader?: string;
}

/** Active health checking of a route's backends (YAML `healthCheck`). */
export interface HealthCheckConfig {
  readonly kind: 'http' | 'grpc';
  /** HTTP GET path (starts with "/"); '' for grpc. */
  readonly path: string;
  /** Inclusive status range that counts as healthy; [200, 299] (unused) for grpc. */
  readonly expectStatus: readonly [number, number];
  /** grpc.health.v1 service name ('' = the server as a whole); '' for http. */
  readonly grpcService: string;
  readonly intervalMs: number;          // > 0, default 5s
  readonly timeoutMs: number;           // > 0 and < intervalMs, default 1s
  readonly healthyThreshold: number;    // consecutive successes to turn healthy, 1..100, default 2
  readonly unhealthyThreshold: number;  // consecutive failures to turn unhealthy, 1..100, default 3
}

/** Passive outlier detection (YAML `outlierDetection`); always present, defaults filled in. */
export interface OutlierConfig {
  readonly consecutiveFailures: number; // >= 0, default 5; 0 disables ejection
  readonly ejectionMs: number;          // > 0, default 30s
  readonly maxEjectionMs: number;       // >= ejectionMs, default 5m
}

/** Retries (YAML `retries`); always present, defaults filled in. */
export interface RetryConfig {
  readonly attempts: number;      // total tries including the first, 1..5, default 2
  readonly budgetPercent: number; // 0..100: share of requests over a 10 s window that may be retries, default 20
  readonly minPerSecond: number;  // retries always allowed per second regardless of the budget, default 10
}

/** Session affinity key (YAML `sticky`): exactly one of a request header (lowercased) or a cookie. */
export type StickyConfig =
  | { readonly header: string; readonly cookie: null }
  | { readonly header: null; readonly cookie: string };

export interface RouteConfig {
  readonly name: string;
  readonly hosts: readonly string[];   // lowercased; "*.x.com" wildcards kept as written (lowercased)
  readonly pathPrefix: string;         // default "/"
  readonly protocol: Protocol;         // default "http"
  readonly backends: readonly BackendConfig[];
  readonly timeouts: {
    readonly connectMs: number;        // default 5s
    readonly responseMs: number;       // time to first response byte, default 30s
    readonly idleMs: number;           // no byte either way once the response started; default 60s, 0 = none
    readonly overallMs: number;        // whole exchange; default 0 = none
    readonly overallIncludesStreams: boolean; // default false: streaming gRPC, SSE and WebSocket are not cut by overallMs
  };
  readonly healthCheck: HealthCheckConfig | null; // null: no active checks
  readonly outlier: OutlierConfig;
  readonly allUnhealthy: 'serve' | 'fail';        // default 'serve': still send to the least-bad backend rather than 503
  readonly retry: RetryConfig;
  readonly sticky: StickyConfig | null;           // null: no affinity
  readonly maxBodyBytes: number;                  // request body limit (413), default 0 = unlimited
  readonly file: string;               // where the route was defined (for logs)
  /** Hash of this route's effective config: equal fingerprints, identical routes (a reload reuses them). */
  readonly fingerprint: string;
}

export interface Config {
  readonly entrypoint: {
    readonly host: string;
    readonly port: number;
    readonly maxConnectionAgeMs: number;
    readonly maxConnectionAgeGraceMs: number;
    readonly maxConnections: number;     // default 10000, 0 = unlimited
    readonly maxHeaderBytes: number;     // default 16384; over → 431
    readonly maxUrlLength: number;       // default 8192; over → 414
    readonly headersTimeoutMs: number;   // > 0, default 10s: time a client has to send the request headers
    /** CIDRs ("10.0.0.0/8", "fd00::/8"; plain addresses as /32 or /128) whose X-Forwarded-For is trusted; default []. See parseCidr. */
    readonly trustedProxies: readonly string[];
    readonly requestIdHeader: string;    // lowercased, default "x-request-id"
  };
  readonly admin: { readonly host: string; readonly port: number };
  readonly shutdown: { readonly drainDelayMs: number; readonly timeoutMs: number };
  readonly routes: readonly RouteConfig[];
}

export interface LoadedConfig {
  readonly config: Config;
  /** The effective config in the YAML's own shape (durations as strings), defaults filled in: what /api/config shows. */
  readonly effective: unknown;
  /** Short content hash of `effective`. */
  readonly version: string;
  readonly files: readonly string[];
}

export interface ConfigIssue {
  readonly file: string;
  readonly line: number;     // 1-based; 0 when unknown
  readonly column: number;   // 1-based; 0 when unknown
  readonly path: string;     // field path such as "routes[0].backends[1].weight"
  readonly message: string;
}

export class ConfigError extends Error {
  readonly code = 'SY_CONFIG_INVALID';
  readonly issues: readonly ConfigIssue[];
  constructor(issues: readonly ConfigIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

export function formatIssue(i: ConfigIssue): string {
  return `${i.file}:${i.line}:${i.column}: ${i.path || '(root)'}: ${i.message}`;
}

/** The concrete shape of `LoadedConfig.effective`: a valid config file itself, with every default written out. */
export interface EffectiveConfig {
  readonly version: 1;
  readonly entrypoint: {
    readonly address: string;
    readonly maxConnectionAge: string;
    readonly maxConnectionAgeGrace: string;
    readonly maxConnections: number;
    readonly maxHeaderBytes: number;
    readonly maxUrlLength: number;
    readonly headersTimeout: string;
    readonly trustedProxies: readonly string[];
    readonly requestIdHeader: string;
  };
  readonly admin: { readonly address: string };
  readonly shutdown: { readonly drainDelay: string; readonly timeout: string };
  readonly routes: readonly EffectiveRoute[];
}

export interface EffectiveRoute {
  readonly name: string;
  readonly hosts: readonly string[];
  readonly pathPrefix: string;
  readonly protocol: Protocol;
  readonly timeouts: {
    readonly connect: string;
    readonly response: string;
    readonly idle: string;
    readonly overall: string;
    readonly overallIncludesStreams: boolean;
  };
  readonly retries: { readonly attempts: number; readonly budget: number; readonly minRetriesPerSecond: number };
  /** Absent when the route has no active health check. */
  readonly healthCheck?: EffectiveHealthCheck;
  readonly outlierDetection: { readonly consecutiveFailures: number; readonly ejectionTime: string; readonly maxEjectionTime: string };
  readonly allUnhealthy: 'serve' | 'fail';
  /** Absent when the route has no session affinity. */
  readonly sticky?: { readonly header: string } | { readonly cookie: string };
  readonly maxBodyBytes: number;
  readonly backends: readonly BackendConfig[];
}

export type EffectiveHealthCheck = (
  | { readonly http: { readonly path: string; readonly expectStatus: readonly [number, number] } }
  | { readonly grpc: { readonly service: string } }
) & {
  readonly interval: string;
  readonly timeout: string;
  readonly healthyThreshold: number;
  readonly unhealthyThreshold: number;
};

/** One config file's name and contents. */
export interface ConfigSource {
  readonly file: string;
  readonly text: string;
}

export type CheckResult =
  | { readonly ok: true; readonly loaded: LoadedConfig }
  | { readonly ok: false; readonly issues: readonly ConfigIssue[] };

// The schema's "default" annotations say the same, for editors.
const DEFAULTS = {
  entrypoint: {
    address: '0.0.0.0:8080',
    maxConnectionAge: '5m',
    maxConnectionAgeGrace: '30s',
    maxConnections: 10_000,
    maxHeaderBytes: 16_384,
    maxUrlLength: 8_192,
    headersTimeout: '10s',
    trustedProxies: [] as readonly string[],
    requestIdHeader: 'x-request-id',
  },
  admin: { address: '0.0.0.0:9901' },
  shutdown: { drainDelay: '5s', timeout: '30s' },
  pathPrefix: '/',
  protocol: 'http',
  timeouts: { connect: '5s', response: '30s', idle: '60s', overall: '0s', overallIncludesStreams: false },
  retries: { attempts: 2, budget: 20, minRetriesPerSecond: 10 },
  healthCheck: { interval: '5s', timeout: '1s', healthyThreshold: 2, unhealthyThreshold: 3 },
  httpCheck: { path: '/healthz', expectStatus: [200, 399] as readonly [number, number] },
  grpcCheck: { service: '' },
  outlierDetection: { consecutiveFailures: 5, ejectionTime: '30s', maxEjectionTime: '5m' },
  allUnhealthy: 'serve',
  maxBodyBytes: 0,
} as const;

// Metric label values that switchyard itself uses; a config may not claim them.
const RESERVED_ROUTE = 'unmatched';
const RESERVED_BACKEND = 'none';

const SECTIONS = ['entrypoint', 'admin', 'shutdown'] as const;
type SectionName = (typeof SECTIONS)[number];

// ---------------------------------------------------------------------------
// Public entry points

/** Loads PATH: a YAML file, or a directory (a mounted ConfigMap) whose *.yaml/*.yml files are merged. Throws ConfigError. */
export async function loadConfig(path: string): Promise<LoadedConfig> {
  return loadConfigSources(await readConfigSources(path));
}

/** loadConfig, with a validation failure as a value: what `switchyard validate` needs. */
export async function checkConfig(path: string): Promise<CheckResult> {
  try {
    return { ok: true, loaded: await loadConfig(path) };
  } catch (err) {
    if (err instanceof ConfigError) return { ok: false, issues: err.issues };
    throw err;
  }
}

/** A digest of the raw files: equal digests mean nothing to reload. */
export function sourcesDigest(sources: readonly ConfigSource[]): string {
  const h = createHash('sha256');
  for (const s of sources) h.update(s.file).update('\0').update(s.text).update('\0');
  return h.digest('hex');
}

/** Validates and merges already-read sources, in the given order. Throws ConfigError. */
export function loadConfigSources(sources: readonly ConfigSource[]): LoadedConfig {
  const issues: ConfigIssue[] = [];
  const parsed = sources.flatMap((source) => parseSource(source, issues) ?? []);
  const sections = pickSections(parsed, issues);
  const routes = parsed.flatMap(routesOf);
  checkAddresses(sections, issues);
  checkEntrypoint(sections, issues);
  checkRoutes(routes, issues);
  if (issues.length > 0) throw new ConfigError(sortIssues(issues));
  return build(sections, routes, sources.map((s) => s.file));
}

/** The issues of one file's text on its own; empty when it is a valid config. */
export function validateConfigText(text: string, file: string): readonly ConfigIssue[] {
  try {
    loadConfigSources([{ file, text }]);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.issues;
    throw err;
  }
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;

/** "250ms", "5s", "1.5s", "2m", "1h" → milliseconds (rounded to whole ms). Throws on anything else. */
export function parseDuration(s: string): number {
  const m = DURATION.exec(s);
  if (!m) throw new Error(`"${s}" is not a duration such as 250ms, 5s, 2m or 1h`);
  return Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
}

// ---------------------------------------------------------------------------
// Reading

/** Reads PATH's config files (a file, or a directory's visible *.yaml/*.yml); an unreadable path is a ConfigError. */
export async function readConfigSources(path: string): Promise<ConfigSource[]> {
  try {
    const files = (await stat(path)).isDirectory() ? await configFilesIn(path) : [path];
    return await Promise.all(files.map(async (file) => ({ file, text: await readFile(file, 'utf8') })));
  } catch (err) {
    const { path: failed, message } = err as NodeJS.ErrnoException;
    throw new ConfigError([{ file: failed ?? path, line: 0, column: 0, path: '', message: `cannot read config: ${message}` }]);
  }
}

// A ConfigMap volume shows each key as a symlink into `..data`, which itself
// points at kubelet's current timestamped dir (`..2024_...`). Reading only the
// visible names, through their symlinks, reads each file once and always from
// the current generation.
async function configFilesIn(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((n) => !n.startsWith('.') && /\.ya?ml$/.test(n)).sort();
  const files: string[] = [];
  for (const name of names) {
    const file = join(dir, name);
    if ((await stat(file)).isFile()) files.push(file);
  }
  return files;
}

// ---------------------------------------------------------------------------
// Parsing and schema validation

// Shapes of a file's data as far as the schema accepted it.
interface RawBackend { name: string; url: string; weight: number; hostHeader?: string }
interface RawHealthCheck {
  // null: written as a bare `http:` / `grpc:`, all defaults
  http?: { path?: string; expectStatus?: [number, number] } | null;
  grpc?: { service?: string } | null;
  interval?: string;
  timeout?: string;
  healthyThreshold?: number;
  unhealthyThreshold?: number;
}
interface RawRoute {
  name: string;
  hosts: string[];
  pathPrefix?: string;
  protocol?: Protocol;
  timeouts?: { connect?: string; response?: string; idle?: string; overall?: string; overallIncludesStreams?: boolean };
  retries?: { attempts?: number; budget?: number; minRetriesPerSecond?: number };
  healthCheck?: RawHealthCheck;
  outlierDetection?: { consecutiveFailures?: number; ejectionTime?: string; maxEjectionTime?: string };
  allUnhealthy?: 'serve' | 'fail';
  sticky?: { header?: string; cookie?: string };
  maxBodyBytes?: number;
  backends: RawBackend[];
}
interface RawFile {
  version?: 1;
  entrypoint?: Partial<EffectiveConfig['entrypoint']>;
  admin?: Partial<EffectiveConfig['admin']>;
  shutdown?: Partial<EffectiveConfig['shutdown']>;
  routes?: RawRoute[];
}

/** A parsed file: its YAML tree locates issues. */
interface Located {
  readonly file: string;
  readonly doc: Document;
  readonly lines: LineCounter;
}

interface Source extends Located {
  /** Typed as the schema promises; read only values that are `usable`. */
  readonly data: RawFile;
  /** JSON pointers of the values the schema rejected. */
  readonly rejected: readonly string[];
}

const ajv = new Ajv({ allErrors: true, verbose: true });
// Non-standard, but VS Code and yaml-language-server show it instead of the
// raw regex; our messages use it too.
ajv.addKeyword('patternErrorMessage');
const validateFile = ajv.compile(schema);

/**
 * A file's YAML tree with positions, built only when an issue needs a line:
 * the `yaml` package keeps positions but parses a 5,000-route file ~10×
 * slower than js-yaml, which a valid config (the common case) never needs.
 */
class LazyLocated implements Located {
  readonly file: string;
  readonly #text: string;
  #tree: { doc: Document; lines: LineCounter } | undefined;

  constructor(file: string, text: string) {
    this.file = file;
    this.#text = text;
  }

  get doc(): Document { return this.#parse().doc; }
  get lines(): LineCounter { return this.#parse().lines; }

  #parse(): { doc: Document; lines: LineCounter } {
    if (this.#tree === undefined) {
      const lines = new LineCounter();
      this.#tree = { doc: parseDocument(this.#text, { lineCounter: lines, prettyErrors: false }), lines };
    }
    return this.#tree;
  }
}

class SourceFile extends LazyLocated implements Source {
  readonly data: RawFile;
  readonly rejected: readonly string[];

  constructor(located: { file: string; text: string }, data: RawFile, rejected: readonly string[]) {
    super(located.file, located.text);
    this.data = data;
    this.rejected = rejected;
  }
}

/** Parses and schema-checks one file; undefined when its YAML is broken (nothing in it can be trusted). */
function parseSource({ file, text }: ConfigSource, issues: ConfigIssue[]): Source | undefined {
  const located = new LazyLocated(file, text);
  let data: unknown;
  try {
    // A file holding only comments is an empty config, not an error.
    data = loadYaml(text, { filename: file }) ?? {};
  } catch (fast) {
    const { doc } = located;
    if (doc.errors.length > 0) {
      for (const err of doc.errors) issues.push(issueAtOffset(located, err.pos[0], '', err.message));
    } else {
      const mark = (fast as { mark?: { position?: number } }).mark;
      issues.push(issueAtOffset(located, mark?.position ?? 0, '', (fast as Error).message.split('\n')[0]!));
    }
    return undefined;
  }
  const rejected: string[] = [];
  if (!validateFile(data)) {
    for (const err of validateFile.errors ?? []) {
      const { pointer, issue } = schemaIssue(located, err);
      rejected.push(pointer);
      issues.push(issue);
    }
  }
  return new SourceFile({ file, text }, data as RawFile, rejected);
}

/** An ajv error as an issue, plus the pointer of the value it condemns. */
function schemaIssue(src: Located, err: ErrorObject): { pointer: string; issue: ConfigIssue } {
  switch (err.keyword) {
    case 'additionalProperties': {
      const key = String(err.params.additionalProperty);
      const pointer = `${err.instancePath}/${escapePointer(key)}`;
      return { pointer, issue: issueAt(src, pointer, unknownFieldMessage(key, err.parentSchema), 'key') };
    }
    case 'required': {
      // The field is absent, so the issue lands on the object that lacks it.
      const pointer = `${err.instancePath}/${escapePointer(String(err.params.missingProperty))}`;
      return { pointer, issue: issueAt(src, pointer, 'required field is missing') };
    }
    case 'uniqueItems': {
      // Blame the repeat rather than the whole list, so the other items still get checked.
      const pointer = `${err.instancePath}/${Number(err.params.j)}`;
      const original = fieldPath(splitPointer(`${err.instancePath}/${Number(err.params.i)}`));
      return { pointer, issue: issueAt(src, pointer, `is listed twice (same as ${original})`) };
    }
    default:
      return { pointer: err.instancePath, issue: issueAt(src, err.instancePath, schemaMessage(err)) };
  }
}

function schemaMessage(err: ErrorObject): string {
  switch (err.keyword) {
    case 'pattern':
      return (err.parentSchema?.['patternErrorMessage'] as string | undefined) ?? String(err.message);
    case 'const':
      return `must be ${JSON.stringify(err.params.allowedValue)}`;
    case 'enum':
      return `must be one of ${(err.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    default:
      return err.message ?? `fails schema keyword "${err.keyword}"`;
  }
}

// Unknown keys are mostly typos, so name the field that was probably meant.
function unknownFieldMessage(key: string, parentSchema: AnySchemaObject | undefined): string {
  const known = Object.keys((parentSchema?.['properties'] as object | undefined) ?? {});
  let guess: string | undefined;
  let best = 3; // more edits than this is a different word, not a typo
  for (const k of known) {
    const distance = editDistance(k.toLowerCase(), key.toLowerCase());
    if (distance < best) [guess, best] = [k, distance];
  }
  return `unknown field "${key}"${guess ? ` (did you mean "${guess}"?)` : ''}`;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length]!;
}

/**
 * True unless the schema rejected the value at `pointer` or one it is inside
 * of: then it has the type and form the code expects (or is an absent optional
 * field). Lets semantic checks run on the good parts of a partly bad file, so
 * one run reports every issue.
 */
function usable(src: Source, pointer: string): boolean {
  return !src.rejected.some((r) => r === pointer || pointer.startsWith(`${r}/`));
}

// ---------------------------------------------------------------------------
// Locating issues: JSON pointer → YAML node → line/column, and a field path

function issueAt(src: Located, pointer: string, message: string, at: 'value' | 'key' = 'value'): ConfigIssue {
  const segments = splitPointer(pointer);
  return issueAtOffset(src, nodeOffset(src.doc, segments, at), fieldPath(segments), message);
}

function issueAtOffset(src: Located, offset: number, path: string, message: string): ConfigIssue {
  const { line, col } = src.lines.linePos(offset);
  return { file: src.file, line, column: col, path, message };
}

/** `file:line:column` of an earlier definition, for messages about duplicates. */
function where(src: Located, pointer: string, at: 'value' | 'key' = 'value'): string {
  const { line, column, file } = issueAt(src, pointer, '', at);
  return `${file}:${line}:${column}`;
}

/** Start offset of the node at `segments` (with 'key': of its map key), or of its nearest existing ancestor. */
function nodeOffset(doc: Document, segments: readonly string[], at: 'value' | 'key'): number {
  let node: unknown = doc.contents;
  let offset = startOf(node) ?? 0;
  for (const [i, segment] of segments.entries()) {
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === segment);
      if (!pair) break;
      offset = startOf(pair.key) ?? offset;
      if (at === 'key' && i === segments.length - 1) break;
      node = pair.value;
    } else if (isSeq(node)) {
      node = node.items[Number(segment)];
    } else {
      break;
    }
    offset = startOf(node) ?? offset;
  }
  return offset;
}

function startOf(node: unknown): number | undefined {
  return isNode(node) ? node.range?.[0] : undefined;
}

function splitPointer(pointer: string): string[] {
  return pointer === '' ? [] : pointer.slice(1).split('/').map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'));
}

function escapePointer(segment: string): string {
  return segment.replaceAll('~', '~0').replaceAll('/', '~1');
}

/** ["routes", "0", "backends", "1", "weight"] → "routes[0].backends[1].weight" */
function fieldPath(segments: readonly string[]): string {
  return segments.map((s, i) => (/^\d+$/.test(s) ? `[${s}]` : i === 0 ? s : `.${s}`)).join('');
}

function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  return issues.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : a.line - b.line || a.column - b.column));
}

// ---------------------------------------------------------------------------
// Semantic checks: what a JSON Schema cannot say

type Sections = Partial<Record<SectionName, Source>>;

/** Which file owns each top-level section; a second file defining one is an issue. */
function pickSections(sources: readonly Source[], issues: ConfigIssue[]): Sections {
  const owners: Sections = {};
  for (const src of sources) {
    for (const name of SECTIONS) {
      if (src.data[name] === undefined) continue;
      const owner = owners[name];
      if (owner) {
        issues.push(issueAt(src, `/${name}`, `${name} is already defined at ${where(owner, `/${name}`, 'key')}; entrypoint, admin and shutdown may each appear in one file only`, 'key'));
      } else {
        owners[name] = src;
      }
    }
  }
  return owners;
}

function checkAddresses(sections: Sections, issues: ConfigIssue[]): void {
  for (const name of ['entrypoint', 'admin'] as const) {
    const src = sections[name];
    const address = src?.data[name]?.address;
    const pointer = `/${name}/address`;
    if (src && address !== undefined && usable(src, pointer)) {
      tryParse(src, pointer, issues, () => parseAddress(address));
    }
  }
}

function checkEntrypoint(sections: Sections, issues: ConfigIssue[]): void {
  const src = sections.entrypoint;
  const entrypoint = src?.data.entrypoint;
  if (!src || !entrypoint || !usable(src, '/entrypoint')) return;
  checkAtLeastOneMs(src, '/entrypoint/headersTimeout', entrypoint.headersTimeout, issues);
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

interface RouteRef {
  readonly src: Source;
  readonly pointer: string;
  readonly raw: RawRoute;
}

function routesOf(src: Source): RouteRef[] {
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

function checkRoutes(routes: readonly RouteRef[], issues: ConfigIssue[]): void {
  const byName = new Map<string, RouteRef>();
  const byHostPrefix = new Map<string, { route: RouteRef; pointer: string }>();
  for (const route of routes) {
    if (usableIn(route, '/name')) checkRouteName(route, byName, issues);
    if (usableIn(route, '/hosts')) checkHosts(route, byHostPrefix, issues);
    if (usableIn(route, '/backends')) checkBackends(route, issues);
    checkResilience(route, issues);
  }
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

// Labels of a DNS name (IPv4 literals pass too). Underscores occur in real host names.
const HOST_LABEL = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/i;

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

// Only the origin is configurable: the client's path is sent as-is, and a
// path, query or credentials here would be silently dropped.
const BACKEND_URL = /^http:\/\/[^/?#@\s]+\/?$/;

/** "http://Host" → "http://host:80"; throws unless the URL is http://host[:port][/]. */
function normalizeBackendUrl(url: string): string {
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
function normalizeCidr(text: string): string {
  const { address, prefix } = parseCidr(text);
  return `${address}/${prefix}`;
}

const ADDRESS = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/;

/** "host:port", "[::1]:port" or ":port" (all IPv4 interfaces) → where to listen. */
function parseAddress(address: string): { host: string; port: number } {
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

// ---------------------------------------------------------------------------
// Building: only reached when every check passed, so the parsers cannot throw

function build(sections: Sections, routes: readonly RouteRef[], files: readonly string[]): LoadedConfig {
  const effectiveRoutes = routes.map((r) => effectiveRoute(r.raw));
  // The effective objects are built here with a fixed key order, so their
  // JSON does not depend on the key order in the YAML.
  const routeJson = effectiveRoutes.map((r) => JSON.stringify(r));
  const entrypoint = { ...DEFAULTS.entrypoint, ...sections.entrypoint?.data.entrypoint };
  const effective: EffectiveConfig = {
    version: 1,
    entrypoint: {
      ...entrypoint,
      trustedProxies: entrypoint.trustedProxies.map(normalizeCidr),
      requestIdHeader: entrypoint.requestIdHeader.toLowerCase(),
    },
    admin: { ...DEFAULTS.admin, ...sections.admin?.data.admin },
    shutdown: { ...DEFAULTS.shutdown, ...sections.shutdown?.data.shutdown },
    routes: effectiveRoutes,
  };
  const config: Config = {
    entrypoint: {
      ...parseAddress(effective.entrypoint.address),
      maxConnectionAgeMs: parseDuration(effective.entrypoint.maxConnectionAge),
      maxConnectionAgeGraceMs: parseDuration(effective.entrypoint.maxConnectionAgeGrace),
      maxConnections: effective.entrypoint.maxConnections,
      maxHeaderBytes: effective.entrypoint.maxHeaderBytes,
      maxUrlLength: effective.entrypoint.maxUrlLength,
      headersTimeoutMs: parseDuration(effective.entrypoint.headersTimeout),
      trustedProxies: effective.entrypoint.trustedProxies,
      requestIdHeader: effective.entrypoint.requestIdHeader,
    },
    admin: parseAddress(effective.admin.address),
    shutdown: {
      drainDelayMs: parseDuration(effective.shutdown.drainDelay),
      timeoutMs: parseDuration(effective.shutdown.timeout),
    },
    routes: effectiveRoutes.map((route, i) => runtimeRoute(route, routes[i]!.src.file, hash(routeJson[i]!, 16))),
  };
  return { config, effective, version: configVersion(effective, routeJson), files: [...files] };
}

// Every per-route field is written out here, so that a change to any of them
// changes the route's JSON and with it its fingerprint.
function effectiveRoute(raw: RawRoute): EffectiveRoute {
  return {
    name: raw.name,
    hosts: raw.hosts.map((h) => h.toLowerCase()),
    pathPrefix: raw.pathPrefix ?? DEFAULTS.pathPrefix,
    protocol: raw.protocol ?? DEFAULTS.protocol,
    timeouts: { ...DEFAULTS.timeouts, ...raw.timeouts },
    retries: { ...DEFAULTS.retries, ...raw.retries },
    ...(raw.healthCheck === undefined ? {} : { healthCheck: effectiveHealthCheck(raw.healthCheck) }),
    outlierDetection: { ...DEFAULTS.outlierDetection, ...raw.outlierDetection },
    allUnhealthy: raw.allUnhealthy ?? DEFAULTS.allUnhealthy,
    ...(raw.sticky === undefined ? {} : { sticky: effectiveSticky(raw.sticky) }),
    maxBodyBytes: raw.maxBodyBytes ?? DEFAULTS.maxBodyBytes,
    backends: raw.backends.map(({ name, url, weight, hostHeader }) => {
      const backend = { name, url: normalizeBackendUrl(url), weight };
      return hostHeader === undefined ? backend : { ...backend, hostHeader };
    }),
  };
}

function effectiveHealthCheck(raw: RawHealthCheck): EffectiveHealthCheck {
  const { interval, timeout, healthyThreshold, unhealthyThreshold } = { ...DEFAULTS.healthCheck, ...raw };
  const probe = raw.http !== undefined
    ? { http: { ...DEFAULTS.httpCheck, ...raw.http } }
    : { grpc: { ...DEFAULTS.grpcCheck, ...raw.grpc } };
  return { ...probe, interval, timeout, healthyThreshold, unhealthyThreshold };
}

function effectiveSticky(raw: { header?: string; cookie?: string }): NonNullable<EffectiveRoute['sticky']> {
  return raw.header !== undefined ? { header: raw.header.toLowerCase() } : { cookie: raw.cookie! };
}

function runtimeRoute(route: EffectiveRoute, file: string, fingerprint: string): RouteConfig {
  const { timeouts, retries, healthCheck, outlierDetection: outlier, sticky } = route;
  return {
    name: route.name,
    hosts: route.hosts,
    pathPrefix: route.pathPrefix,
    protocol: route.protocol,
    backends: route.backends,
    timeouts: {
      connectMs: parseDuration(timeouts.connect),
      responseMs: parseDuration(timeouts.response),
      idleMs: parseDuration(timeouts.idle),
      overallMs: parseDuration(timeouts.overall),
      overallIncludesStreams: timeouts.overallIncludesStreams,
    },
    healthCheck: healthCheck === undefined ? null : runtimeHealthCheck(healthCheck),
    outlier: {
      consecutiveFailures: outlier.consecutiveFailures,
      ejectionMs: parseDuration(outlier.ejectionTime),
      maxEjectionMs: parseDuration(outlier.maxEjectionTime),
    },
    allUnhealthy: route.allUnhealthy,
    retry: { attempts: retries.attempts, budgetPercent: retries.budget, minPerSecond: retries.minRetriesPerSecond },
    sticky: sticky === undefined ? null : 'header' in sticky ? { header: sticky.header, cookie: null } : { header: null, cookie: sticky.cookie },
    maxBodyBytes: route.maxBodyBytes,
    file,
    fingerprint,
  };
}

function runtimeHealthCheck(hc: EffectiveHealthCheck): HealthCheckConfig {
  const timing = {
    intervalMs: parseDuration(hc.interval),
    timeoutMs: parseDuration(hc.timeout),
    healthyThreshold: hc.healthyThreshold,
    unhealthyThreshold: hc.unhealthyThreshold,
  };
  return 'http' in hc
    ? { kind: 'http', path: hc.http.path, expectStatus: [hc.http.expectStatus[0], hc.http.expectStatus[1]], grpcService: '', ...timing }
    : { kind: 'grpc', path: '', expectStatus: [200, 299], grpcService: hc.grpc.service, ...timing };
}

/** First 12 hex digits of sha256 over the effective config (sections, then each route's JSON). */
function configVersion(effective: EffectiveConfig, routeJson: readonly string[]): string {
  const h = createHash('sha256').update(JSON.stringify({ ...effective, routes: undefined }));
  for (const json of routeJson) h.update(json);
  return h.digest('hex').slice(0, 12);
}

function hash(text: string, hexDigits: number): string {
  return createHash('sha256').update(text).digest('hex').slice(0, hexDigits);
}

// ---------------------------------------------------------------------------
// Off-thread loading

/**
 * Parses and validates configs on one worker thread kept for the process's
 * life: a 5,000-route config takes ~100 ms to check, which on the main thread
 * would stall every request in flight. The main thread only receives the
 * finished config.
 */
export class ConfigLoader {
  #worker: Worker | undefined;
  #next = 0;
  readonly #pending = new Map<number, { resolve: (l: LoadedConfig) => void; reject: (e: Error) => void; known: ReadonlyMap<string, RouteConfig> }>();

  /** Validates `sources`; routes identical to one in `current` (same fingerprint) come back as that object. */
  load(sources: readonly ConfigSource[], current?: Config): Promise<LoadedConfig> {
    const id = this.#next++;
    const known = new Map<string, RouteConfig>();
    for (const r of current?.routes ?? []) known.set(r.fingerprint, r);
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, known });
      this.#start().postMessage({ id, sources, known: [...known.keys()] } satisfies WorkerRequest);
    });
  }

  #start(): Worker {
    if (this.#worker !== undefined) return this.#worker;
    const worker = new Worker(new URL('./worker.ts', import.meta.url));
    worker.unref();
    worker.on('message', (reply: WorkerReply) => {
      const p = this.#pending.get(reply.id);
      this.#pending.delete(reply.id);
      if ('issues' in reply) p?.reject(new ConfigError(reply.issues));
      else p?.resolve(fromWorker(reply, p.known));
    });
    worker.on('error', (err) => this.#failAll(err));
    worker.on('exit', (code) => {
      this.#worker = undefined;
      this.#failAll(new Error(`config worker exited with code ${code}`));
    });
    this.#worker = worker;
    return worker;
  }

  #failAll(err: Error): void {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }

  async close(): Promise<void> {
    const w = this.#worker;
    this.#worker = undefined;
    await w?.terminate();
  }
}

/** The worker's reply as a LoadedConfig; `effective` (for /api/config only) is parsed when first read. */
function fromWorker(reply: Extract<WorkerReply, { config: string }>, known: ReadonlyMap<string, RouteConfig>): LoadedConfig {
  let effective: unknown;
  const config = JSON.parse(reply.config) as Config;
  const fresh = new Map<string, RouteConfig>();
  for (const r of config.routes) fresh.set(r.fingerprint, r);
  return {
    config: { ...config, routes: reply.fingerprints.map((fp) => fresh.get(fp) ?? known.get(fp)!) },
    get effective() { return (effective ??= JSON.parse(reply.effective)); },
    version: reply.version,
    files: reply.files,
  };
}
