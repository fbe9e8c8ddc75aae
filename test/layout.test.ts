// The request path must not load what only validation needs: the YAML
// parsers, ajv and the schema (~180 ms of startup, and memory on the main
// thread). Each case imports one module in a fresh process and lists every
// module that import resolved.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { ROOT } from './helpers.ts';

const LIST_LOADS = `
import { registerHooks } from 'node:module';
const seen = [];
registerHooks({ resolve(spec, ctx, next) { const r = next(spec, ctx); seen.push(r.url); return r; } });
await import(process.argv[1]);
process.stdout.write(JSON.stringify([...new Set(seen)]));
`;

const HEAVY = /\/node_modules\/(?:ajv|yaml|js-yaml)\/|\/switchyard\.schema\.json$/;

function heavyLoadedBy(module: string): string[] {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', LIST_LOADS, new URL(module, `file://${ROOT}`).href], { encoding: 'utf8' });
  return (JSON.parse(out) as string[]).filter((url) => HEAVY.test(url));
}

describe('module loading', () => {
  for (const module of ['src/server.ts', 'src/ingress/entrypoint.ts', 'src/config/loader.ts', 'src/cli/serve.ts']) {
    test(`${module} loads no YAML parser, ajv or schema`, () => {
      assert.deepEqual(heavyLoadedBy(module), []);
    });
  }

  test('the check sees them where they are used (src/config/load.ts)', () => {
    const heavy = heavyLoadedBy('src/config/load.ts');
    for (const name of ['/ajv/', '/yaml/', '/js-yaml/', 'switchyard.schema.json']) {
      assert.ok(heavy.some((url) => url.includes(name)), name);
    }
  });
});
