// Parsing one file (js-yaml, fast) and checking it against
// config/switchyard.schema.json (ajv). What the schema rejected is remembered
// by JSON pointer, so the semantic checks can still run on the good parts.
import { Ajv } from 'ajv';
import type { AnySchemaObject, ErrorObject } from 'ajv';
import { CORE_SCHEMA, load as loadYaml } from 'js-yaml';
import schema from '../../config/switchyard.schema.json' with { type: 'json' };
import type { ConfigIssue, ConfigSource, EffectiveConfig, HealthCheckConfig, MirrorConfig, RampConfig, RouteConfig } from './model.ts';
import { escapePointer, fieldPath, issueAt, issueAtOffset, LazyLocated, splitPointer, type Located } from './positions.ts';

// A file's data as far as the schema accepted it: the config types with
// every field optional that defaults.ts fills in.
type DeepPartial<T> = T extends readonly unknown[] ? T : T extends object ? { readonly [K in keyof T]?: DeepPartial<T[K]> } : T;
type Probes = Extract<HealthCheckConfig, { http: unknown }>['http'] | Extract<HealthCheckConfig, { grpc: unknown }>['grpc'];
export type RawHealthCheck = DeepPartial<Omit<HealthCheckConfig, 'http' | 'grpc'>> & {
  // null: written as a bare `http:` / `grpc:`, all defaults; both written is an issue (checks.ts)
  readonly http?: DeepPartial<Extract<Probes, { path: string }>> | null;
  readonly grpc?: DeepPartial<Extract<Probes, { service: string }>> | null;
};
export type RawRamp = DeepPartial<RampConfig> & Pick<RampConfig, 'from' | 'to' | 'steps' | 'interval' | 'halted'>;
export type RawRoute = DeepPartial<Omit<RouteConfig, 'healthCheck' | 'sticky' | 'mirror' | 'ramp'>> & Pick<RouteConfig, 'name' | 'hosts' | 'backends'> & {
  readonly healthCheck?: RawHealthCheck;
  // Both written is an issue (checks.ts).
  readonly sticky?: { readonly header?: string; readonly cookie?: string };
  readonly mirror?: DeepPartial<MirrorConfig> & Pick<MirrorConfig, 'to'>;
  readonly ramp?: RawRamp;
};
export type RawFile = DeepPartial<Omit<EffectiveConfig, 'routes'>> & { readonly routes?: readonly RawRoute[] };

export interface Source extends Located {
  /** Typed as the schema promises; read only values that are `usable`. */
  readonly data: RawFile;
  /** JSON pointers of the values the schema rejected. */
  readonly rejected: readonly string[];
}

// js-yaml's default schema turns unquoted timestamps (a ramp's `startedAt:
// 2026-12-01T10:00:00Z`) into Date objects; the core schema keeps them
// strings, as YAML 1.2 and the `yaml` package the CLI edits with do.
const YAML_SCHEMA = CORE_SCHEMA;

const ajv = new Ajv({ allErrors: true, verbose: true });
// Non-standard, but VS Code and yaml-language-server show it instead of the
// raw regex; our messages use it too.
ajv.addKeyword('patternErrorMessage');
const validateFile = ajv.compile(schema);

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
export function parseSource({ file, text }: ConfigSource, issues: ConfigIssue[]): Source | undefined {
  const located = new LazyLocated(file, text);
  let data: unknown;
  try {
    // A file holding only comments is an empty config, not an error.
    data = loadYaml(text, { filename: file, schema: YAML_SCHEMA }) ?? {};
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
    // `interval: 5` or `maxLatencyIncrease: 20`: say what form is wanted, not just "must be string".
    case 'type':
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
export function usable(src: Source, pointer: string): boolean {
  return !src.rejected.some((r) => r === pointer || pointer.startsWith(`${r}/`));
}
