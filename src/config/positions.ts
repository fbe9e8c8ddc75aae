// Locating issues: JSON pointer → YAML node → line/column, and a field path.
// The YAML tree with positions is built only when an issue needs a line.
import { isAlias, isMap, isNode, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import type { Document } from 'yaml';
import type { ConfigIssue } from './model.ts';

/** A parsed file: its YAML tree locates issues. */
export interface Located {
  readonly file: string;
  readonly doc: Document;
  readonly lines: LineCounter;
}

/**
 * A file's YAML tree with positions, built only when an issue needs a line:
 * the `yaml` package keeps positions but parses a 5,000-route file ~10×
 * slower than js-yaml, which a valid config (the common case) never needs.
 */
export class LazyLocated implements Located {
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

export function issueAt(src: Located, pointer: string, message: string, at: 'value' | 'key' = 'value'): ConfigIssue {
  const segments = splitPointer(pointer);
  return issueAtOffset(src, nodeOffset(src.doc, segments, at), fieldPath(segments), message);
}

export function issueAtOffset(src: Located, offset: number, path: string, message: string): ConfigIssue {
  const { line, col } = src.lines.linePos(offset);
  return { file: src.file, line, column: col, path, message };
}

/** `file:line:column` of an earlier definition, for messages about duplicates. */
export function where(src: Located, pointer: string, at: 'value' | 'key' = 'value'): string {
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

export function splitPointer(pointer: string): string[] {
  return pointer === '' ? [] : pointer.slice(1).split('/').map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'));
}

export function escapePointer(segment: string): string {
  return segment.replaceAll('~', '~0').replaceAll('/', '~1');
}

/** ["routes", "0", "backends", "1", "weight"] → "routes[0].backends[1].weight" */
export function fieldPath(segments: readonly string[]): string {
  return segments.map((s, i) => (/^\d+$/.test(s) ? `[${s}]` : i === 0 ? s : `.${s}`)).join('');
}

export function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  return issues.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : a.line - b.line || a.column - b.column));
}
