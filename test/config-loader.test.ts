// The config worker thread: it ends once idle (its isolate is ~25 MB of RSS)
// and the next load starts another, with the same results.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigLoader } from '../src/config/loader.ts';
import { ConfigError } from '../src/config/model.ts';
import { readConfigSources } from '../src/config/read.ts';

const GOOD = `version: 1
routes:
  - name: web
    hosts: [web.example.com]
    backends: [{ name: old, url: "http://127.0.0.1:9", weight: 1 }]
`;

async function until(what: string, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('the worker ends when idle and a later load starts a new one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sy-loader-'));
  const file = join(dir, 'config.yaml');
  writeFileSync(file, GOOD);
  const loader = new ConfigLoader({ idleMs: 100 });
  try {
    const first = await loader.load(await readConfigSources(file));
    assert.equal(first.config.routes[0]!.name, 'web');
    assert.equal(loader.running, true);
    await until('the idle worker to end', () => !loader.running);

    // Same config again: a new worker, the same result, the known route object kept.
    const again = await loader.load(await readConfigSources(file), first.config);
    assert.equal(again.version, first.version);
    assert.equal(again.config.routes[0], first.config.routes[0]);
    await until('the idle worker to end', () => !loader.running);

    writeFileSync(file, GOOD.replace('weight: 1', 'weight: -1'));
    await assert.rejects(loader.load(await readConfigSources(file)), (err) => err instanceof ConfigError && /weight/.test(err.message));
  } finally {
    await loader.close();
  }
});

test('a load while the previous worker is ending is answered by a new one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sy-loader-'));
  const file = join(dir, 'config.yaml');
  writeFileSync(file, GOOD);
  const loader = new ConfigLoader({ idleMs: 1 });
  try {
    const sources = await readConfigSources(file);
    for (let i = 0; i < 5; i++) {
      const loaded = await loader.load(sources);
      assert.equal(loaded.config.routes.length, 1);
      await new Promise((r) => setTimeout(r, i * 5));
    }
  } finally {
    await loader.close();
  }
});
