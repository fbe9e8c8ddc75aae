// The operator's first hour (issue 13), driven as a new user would: the
// quick start, the removal guard, reload logs, the docs. Processes, real
// files, real CLI output.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './helpers.ts';

// --- docs -------------------------------------------------------------------

interface SchemaNode {
  type?: string | string[];
  const?: unknown;
  enum?: unknown[];
  default?: unknown;
  pattern?: string;
  properties?: Record<string, SchemaNode>;
  items?: SchemaNode;
}

/** Every property of the config schema as a doc path ("routes[].backends[].weight") → its node. */
function schemaFields(node: SchemaNode, prefix = '', out = new Map<string, SchemaNode>()): Map<string, SchemaNode> {
  for (const [key, child] of Object.entries(node.properties ?? {})) {
    const path = prefix === '' ? key : `${prefix}.${key}`;
    out.set(path, child);
    if (child.properties) schemaFields(child, path, out);
    if (child.items?.properties) schemaFields(child.items, `${path}[]`, out);
  }
  return out;
}

/** The Type column the reference must show for a schema node. */
function docType(node: SchemaNode): string {
  if (node.const !== undefined) return `\`${JSON.stringify(node.const)}\``;
  if (node.enum) return node.enum.map((v) => JSON.stringify(v)).join(' \\| ');
  if (Array.isArray(node.type)) return node.type.join(' \\| ');
  if (node.type === 'string' && node.pattern?.includes('ms|s|m|h')) return 'duration';
  if (node.type === 'array') return `list of ${node.items?.type === 'object' ? 'objects' : `${String(node.items?.type)}s`}`;
  return String(node.type);
}

/** The reference's field rows: `| \`path\` | type | default | meaning |`. */
function docRows(markdown: string): Map<string, { type: string; def: string }> {
  const rows = new Map<string, { type: string; def: string }>();
  for (const line of markdown.split('\n')) {
    const m = /^\| `([^`]+)` \| (.+?) \| (.+?) \| /.exec(line);
    if (!m) continue;
    assert.ok(!rows.has(m[1]!), `docs/configuration.md documents ${m[1]} twice`);
    rows.set(m[1]!, { type: m[2]!, def: m[3]! });
  }
  return rows;
}

describe('docs', () => {
  const schema = JSON.parse(readFileSync(join(ROOT, 'config/switchyard.schema.json'), 'utf8')) as SchemaNode;
  const reference = readFileSync(join(ROOT, 'docs/configuration.md'), 'utf8');

  test('docs/configuration.md documents every schema field with its type and default, and nothing else', () => {
    const fields = schemaFields(schema);
    const rows = docRows(reference);
    const missing = [...fields.keys()].filter((f) => !rows.has(f));
    assert.deepEqual(missing, [], `add a row for each of these to docs/configuration.md (| \`field\` | type | default | meaning |): ${missing.join(', ')}`);
    const extra = [...rows.keys()].filter((f) => !fields.has(f));
    assert.deepEqual(extra, [], `docs/configuration.md documents fields the schema does not have: ${extra.join(', ')}`);
    for (const [path, node] of fields) {
      const row = rows.get(path)!;
      assert.equal(row.type, docType(node), `type of ${path} in docs/configuration.md`);
      if (node.default === undefined) {
        assert.equal(row.def, '—', `${path} has no default in the schema`);
      } else {
        assert.match(row.def, /^`.*`$/, `default of ${path} in docs/configuration.md`);
        assert.deepEqual(JSON.parse(row.def.slice(1, -1)), node.default, `default of ${path} in docs/configuration.md`);
      }
    }
  });

  test('the docs index links every page of docs/, and every relative link in README and docs/ resolves inside the repo', () => {
    const pages = readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md') && f !== 'README.md');
    const index = readFileSync(join(ROOT, 'docs/README.md'), 'utf8');
    for (const page of ['configuration.md', 'routing.md', 'metrics.md', 'operations.md', 'contract.md']) {
      assert.ok(pages.includes(page), `docs/${page} exists`);
    }
    for (const page of pages) assert.ok(index.includes(`](${page})`), `docs/README.md links ${page}`);
    const files = ['README.md', ...readdirSync(join(ROOT, 'docs')).map((f) => `docs/${f}`)];
    for (const file of files) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target!) || target!.startsWith('#')) continue;
        const path = join(ROOT, file, '..', target!.split('#')[0]!);
        assert.ok(path.startsWith(ROOT), `${file} links ${target}, outside the repository`);
        assert.ok(existsSync(path), `${file} links ${target}, which does not exist`);
      }
    }
  });
});
