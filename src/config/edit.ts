// Editing a user's config YAML: the migration commands change a few values of
// one route and must leave everything else — comments, blank lines, quoting,
// flow or block style — exactly as the user wrote it. The `yaml` package's
// Document API keeps comments but re-renders the whole file on output
// (spacing, flow padding, line folding), so the change is computed on the
// Document and then spliced into the original text at the node's range; the
// splice is checked by parsing it back, and only if it does not give the same
// data (an unusual layout) is the re-rendered Document used instead.
import { isDeepStrictEqual } from 'node:util';
import { isAlias, isMap, isScalar, isSeq, parseDocument, stringify, visit } from 'yaml';
import type { Document, Node, Pair, YAMLMap } from 'yaml';

type PathSegment = string | number;

/** A change that cannot be made (no such route, a backend the route lacks, a value shared through an alias, ...); nothing was written. */
export class ChangeError extends Error {
  override readonly name = 'ChangeError';
}

/** One change to a document: a value set (created when its map exists but the key does not), or a key removed. */
export type EditOp =
  | { readonly op: 'set'; readonly path: readonly PathSegment[]; readonly value: unknown }
  | { readonly op: 'delete'; readonly path: readonly PathSegment[] };

/** A route as written in its file (plain data, no defaults filled in). */
export interface RouteData {
  readonly name: string;
  readonly backends?: readonly { readonly name: string; readonly weight: number; readonly [k: string]: unknown }[];
  readonly ramp?: Readonly<Record<string, unknown>>;
  readonly mirror?: Readonly<Record<string, unknown>>;
  readonly [k: string]: unknown;
}

interface RouteLocation {
  /** Index of the source (file) that defines the route. */
  readonly source: number;
  /** Index of the route in that file's `routes` list. */
  readonly index: number;
  readonly data: RouteData;
}

/** Where ROUTE is defined among `texts` (the first definition; a second one is a config error the validator reports). */
export function findRoute(texts: readonly string[], route: string): RouteLocation | undefined {
  for (const [source, text] of texts.entries()) {
    const doc = parseDocument(text);
    const routes = doc.get('routes');
    if (!isSeq(routes)) continue;
    for (const [index, item] of routes.items.entries()) {
      // toJS on the document: aliases resolve to what they stand for.
      if (isMap(item) && item.get('name') === route) return { source, index, data: (doc.toJS() as { routes: RouteData[] }).routes[index]! };
    }
  }
  return undefined;
}

/** Names of every route in `texts`, in file order (for "no such route" messages and `routes`). */
export function routeNames(texts: readonly string[]): string[] {
  return texts.flatMap((text) => {
    const routes = parseDocument(text).get('routes');
    return isSeq(routes) ? routes.items.flatMap((r) => (isMap(r) && typeof r.get('name') === 'string' ? [r.get('name') as string] : [])) : [];
  });
}

interface Edited {
  readonly text: string;
  /** False when the splice could not be used and the file was re-rendered (comments kept, spacing normalised). */
  readonly layoutKept: boolean;
}

/** Applies `ops` (paths from the document root) to `text`, changing only the bytes of the values concerned. */
export function applyEdits(text: string, ops: readonly EditOp[]): Edited {
  const whole = parseDocument(text);
  for (const op of ops) refuseAliases(whole, op.path);
  for (const op of ops) applyToDocument(whole, op);
  const expected = whole.toJS() as unknown;

  let spliced: string | undefined = text;
  for (const op of ops) {
    spliced = splice(spliced, op);
    if (spliced === undefined) break;
  }
  if (spliced !== undefined) {
    const check = parseDocument(spliced);
    if (check.errors.length === 0 && isDeepStrictEqual(check.toJS(), expected)) return { text: spliced, layoutKept: true };
  }
  return { text: whole.toString({ lineWidth: 0 }), layoutKept: false };
}

/**
 * A value under an anchor that aliases use, or reached through such an alias,
 * is shared: changing it for one route would silently change it for all.
 */
function refuseAliases(doc: Document, path: readonly PathSegment[]): void {
  const aliased = new Set<string>();
  visit(doc, { Alias: (_, alias) => { aliased.add(alias.source); } });
  if (aliased.size === 0) return;
  for (let i = 1; i <= path.length; i++) {
    const node = doc.getIn(path.slice(0, i), true) as Node | undefined;
    const at = path.slice(0, i).map((p, j) => (typeof p === 'number' ? `[${p}]` : j === 0 ? p : `.${p}`)).join('');
    if (isAlias(node)) throw new ChangeError(`${at} is the alias *${node.source}, shared with every other use of &${node.source}: write it out in this route to change it here alone`);
    const anchor = (node as { anchor?: string } | undefined)?.anchor;
    if (anchor !== undefined && aliased.has(anchor)) throw new ChangeError(`${at} is the anchor &${anchor}, shared with its aliases (*${anchor}): write it out in each route to change it here alone`);
  }
}

function applyToDocument(doc: Document, op: EditOp): void {
  if (op.op === 'set') doc.setIn(op.path, doc.createNode(op.value, { flow: true }));
  else doc.deleteIn(op.path);
}

/** `op` applied to `text` by replacing, inserting or removing lines at the node's range; undefined when the layout is not one handled here. */
function splice(text: string, op: EditOp): string | undefined {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) return undefined;
  const parent = doc.getIn(op.path.slice(0, -1), true);
  const key = op.path.at(-1);
  if (!isMap(parent) || key === undefined) return undefined;
  const pair = parent.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === key);
  if (op.op === 'set') {
    const rendered = inline(op.value);
    if (rendered === undefined) return undefined;
    return pair ? replaceValue(text, pair, rendered) : insertPair(text, parent, String(key), rendered);
  }
  return pair ? removePair(text, parent, pair) : text;
}

/** A value as one line of YAML (scalar, or a flow collection), or undefined if it needs more. */
function inline(value: unknown): string | undefined {
  const out = stringify(value, { collectionStyle: 'flow', lineWidth: 0 }).trimEnd();
  return out.includes('\n') ? undefined : out;
}

function replaceValue(text: string, pair: Pair, rendered: string): string | undefined {
  const value = pair.value as Node | null;
  // A block collection spans lines; replacing it with one line is left to the re-render.
  if (!value?.range || !(isScalar(value) || (value as { flow?: boolean }).flow === true)) return undefined;
  const [start, end] = value.range;
  return text.slice(0, start) + rendered + text.slice(end);
}

function insertPair(text: string, map: YAMLMap, key: string, rendered: string): string | undefined {
  if (map.flow) return insertFlowPair(text, map, key, rendered);
  const first = map.items[0];
  const last = map.items.at(-1);
  if (!first || !last || !isScalar(first.key) || !first.key.range) return undefined;
  const keyStart = first.key.range[0];
  const indent = keyStart - (text.lastIndexOf('\n', keyStart - 1) + 1);
  const lastEnd = (last.value as Node | null)?.range?.[1] ?? (last.key as Node).range?.[1];
  if (lastEnd === undefined) return undefined;
  const line = `${' '.repeat(indent)}${stringify(key).trimEnd()}: ${rendered}`;
  // After the last pair's line (its trailing comment stays with it).
  const at = text[lastEnd - 1] === '\n' ? lastEnd - 1 : text.indexOf('\n', lastEnd);
  if (at === -1) return `${text}\n${line}\n`;
  return `${text.slice(0, at + 1)}${line}\n${text.slice(at + 1)}`;
}

/** `{ a: 1 }` → `{ a: 1, key: value }`: before the closing brace, after the last item's spacing. */
function insertFlowPair(text: string, map: YAMLMap, key: string, rendered: string): string | undefined {
  const end = map.range?.[1];
  if (end === undefined || text[end - 1] !== '}') return undefined;
  let at = end - 1;
  while (at > 0 && (text[at - 1] === ' ' || text[at - 1] === '\t')) at--;
  const pair = `${stringify(key).trimEnd()}: ${rendered}`;
  return `${text.slice(0, at)}${map.items.length > 0 ? ', ' : ''}${pair}${text.slice(at)}`;
}

/** Where a pair's text ends: after its value (or its key, for a key with no value). */
function pairEnd(pair: Pair): number | undefined {
  return (pair.value as Node | null)?.range?.[1] ?? (pair.key as Node).range?.[1];
}

function removePair(text: string, map: YAMLMap, pair: Pair): string | undefined {
  const keyStart = (pair.key as Node).range?.[0];
  const valueEnd = pairEnd(pair);
  if (keyStart === undefined || valueEnd === undefined) return undefined;
  if (map.flow) {
    // `{ a: 1, key: v }` → `{ a: 1 }`: the pair with the comma before it (after it, for the first).
    const i = map.items.indexOf(pair);
    const prevEnd = i > 0 ? pairEnd(map.items[i - 1]!) : undefined;
    if (prevEnd !== undefined) return text.slice(0, prevEnd) + text.slice(valueEnd);
    const nextStart = (map.items[i + 1]?.key as Node | undefined)?.range?.[0];
    return text.slice(0, keyStart) + text.slice(nextStart ?? valueEnd);
  }
  if (map.items.length < 2) return undefined;
  const lineStart = text.lastIndexOf('\n', keyStart - 1) + 1;
  // `- key: v` (the first key of a list item) cannot be cut out as a line.
  if (text.slice(lineStart, keyStart).trim() !== '') return undefined;
  const nl = text[valueEnd - 1] === '\n' ? valueEnd - 1 : text.indexOf('\n', valueEnd);
  return text.slice(0, lineStart) + (nl === -1 ? '' : text.slice(nl + 1));
}
