// The request path must not load what only validation needs: the YAML
// parsers, ajv and the schema (~180 ms of startup, and memory on the main
// thread). Each case imports one module in a fresh process and lists every
// module that import resolved.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import http2 from 'node:http2';
import * as frames from '../src/h2/frames.ts';
import { CLI, ROOT, writeConfig } from './helpers.ts';

const LIST_LOADS = `
import { registerHooks } from 'node:module';
const seen = [];
registerHooks({ resolve(spec, ctx, next) { const r = next(spec, ctx); seen.push(r.url); return r; } });
await import(process.argv[1]);
process.stdout.write(JSON.stringify([...new Set(seen)]));
`;

const HEAVY = /\/node_modules\/(?:ajv|yaml|js-yaml)\/|\/switchyard\.schema\.json$/;

// The Kubernetes API client and undici, needed only for kubernetes:// sources.
const KUBE = /\/node_modules\/undici\/|\/src\/kube\//;

function loadedBy(module: string, which: RegExp): string[] {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', LIST_LOADS, new URL(module, `file://${ROOT}`).href], { encoding: 'utf8' });
  return (JSON.parse(out) as string[]).filter((url) => which.test(url));
}

function heavyLoadedBy(module: string): string[] {
  return loadedBy(module, HEAVY);
}

// Preloaded into `switchyard serve`: records every module resolved, dynamic
// imports included, and prints the list as one stdout line on SIGUSR2 and at
// exit (its own handler, so it is there before the router's are), with node's
// own internal modules loaded so far as node-internal:NAME.
const RECORD_LOADS = `data:text/javascript,${encodeURIComponent(`
import { registerHooks } from 'node:module';
import { writeSync } from 'node:fs';
const seen = new Set();
registerHooks({ resolve(spec, ctx, next) { const r = next(spec, ctx); seen.add(r.url); return r; } });
const internal = () => process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => 'node-internal:' + m.slice(13));
const print = () => writeSync(1, 'LOADS ' + JSON.stringify([...seen, ...internal()]) + '\\n');
process.on('SIGUSR2', print);
process.on('exit', print);
`)}`;

/** Runs `serve --config source` until it has started or exited: the modules it had loaded, and whether it started. */
async function serveLoads(source: string): Promise<{ started: boolean; code: number | null; loads: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-loads-'));
  // No credentials anywhere: a kubernetes:// source fails at once.
  const env = { ...process.env, HOME: dir, KUBECONFIG: join(dir, 'none'), KUBERNETES_SERVICE_HOST: '' };
  const child = spawn(process.execPath, ['--import', RECORD_LOADS, CLI, 'serve', '--config', source], { stdio: ['ignore', 'pipe', 'ignore'], env });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let started = false;
  const loads = new Promise<string[]>((resolve) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('LOADS ')) resolve(JSON.parse(line.slice(6)) as string[]);
      else if (line.includes('"switchyard started"')) {
        started = true;
        child.kill('SIGUSR2');
      }
    });
  });
  const list = await loads;
  if (started) child.kill('SIGKILL');
  return { started, code: await exited, loads: list };
}

describe('module loading', () => {
  for (const module of ['src/server.ts', 'src/ingress/entrypoint.ts', 'src/config/loader.ts', 'src/cli/serve.ts']) {
    test(`${module} loads no YAML parser, ajv or schema`, () => {
      assert.deepEqual(heavyLoadedBy(module), []);
    });
  }

  for (const module of ['src/server.ts', 'src/config/sources.ts', 'src/cli/serve.ts', 'src/cli/args.ts']) {
    test(`${module} loads no Kubernetes client or undici`, () => {
      assert.deepEqual(loadedBy(module, KUBE), []);
    });
  }

  test('the check sees the Kubernetes client where it is used (src/config/kubernetes.ts)', () => {
    const kube = loadedBy('src/config/kubernetes.ts', KUBE);
    for (const name of ['/node_modules/undici/', '/src/kube/client.ts']) {
      assert.ok(kube.some((url) => url.includes(name)), name);
    }
  });

  test('serve with a file config runs without loading the Kubernetes client or undici', async () => {
    const { started, loads } = await serveLoads(writeConfig({ routes: [{ name: 'r', hosts: ['r.test'], backends: [{ name: 'b', url: 'http://127.0.0.1:9', weight: 1 }] }] }));
    assert.ok(started);
    assert.ok(loads.some((url) => url.endsWith('/src/server.ts')), 'the recorder saw the router load');
    assert.deepEqual(loads.filter((url) => KUBE.test(url)), []);
  });

  // An ESM import of node:http reads its WebSocket, CloseEvent and
  // MessageEvent getters, which load node's bundled undici (~13 MiB of RSS);
  // src/node-http.ts is how the router's modules get node:http instead.
  const BUNDLED_UNDICI = 'node-internal:internal/deps/undici/undici';

  test('serve with a file config does not load node\'s bundled undici', async () => {
    const { started, loads } = await serveLoads(writeConfig({ routes: [{ name: 'r', hosts: ['r.test'], backends: [{ name: 'b', url: 'http://127.0.0.1:9', weight: 1 }] }] }));
    assert.ok(started);
    assert.ok(loads.includes('node-internal:http'), 'the recorder saw node:http load');
    assert.ok(!loads.includes(BUNDLED_UNDICI));
  });

  // prom-client's index also loads its Pushgateway (node:https, tls, zlib);
  // src/observe/metrics.ts takes the files it uses one by one.
  test('serve with a file config loads prom-client\'s files, not its index', async () => {
    const { started, loads } = await serveLoads(writeConfig({ routes: [{ name: 'r', hosts: ['r.test'], backends: [{ name: 'b', url: 'http://127.0.0.1:9', weight: 1 }] }] }));
    assert.ok(started);
    assert.ok(loads.some((url) => url.endsWith('/prom-client/lib/registry.js')), 'the recorder saw prom-client load');
    assert.deepEqual(loads.filter((url) => /\/prom-client\/(index|lib\/pushgateway)\.js$/.test(url)), []);
  });

  // HTTP/2 is served and spoken to backends by src/h2/, so node:http2 (its
  // nghttp2 binding and JS core) is not loaded at all.
  test('serve with an h2c route does not load node:http2', async () => {
    const { started, loads } = await serveLoads(writeConfig({ routes: [{ name: 'r', hosts: ['r.test'], protocol: 'h2c', backends: [{ name: 'b', url: 'http://127.0.0.1:9', weight: 1 }] }] }));
    assert.ok(started);
    for (const name of ['/src/h2/frames.ts', '/src/h2/connection.ts', '/src/upstream/h2-pool.ts']) {
      assert.ok(loads.some((url) => url.endsWith(name)), `the recorder saw ${name} load`);
    }
    assert.deepEqual(loads.filter((url) => /^node-internal:(http2|internal\/http2\/)/.test(url) || url === 'node:http2'), []);
  });

  test('src/h2/frames.ts\'s numbers are node:http2\'s constants', () => {
    const c = http2.constants;
    const same: [number, number][] = [
      [frames.END_STREAM, c.NGHTTP2_FLAG_END_STREAM], [frames.ACK, c.NGHTTP2_FLAG_ACK], [frames.END_HEADERS, c.NGHTTP2_FLAG_END_HEADERS],
      [frames.PADDED, c.NGHTTP2_FLAG_PADDED], [frames.PRIORITY_FLAG, c.NGHTTP2_FLAG_PRIORITY],
      [frames.NO_ERROR, c.NGHTTP2_NO_ERROR], [frames.PROTOCOL_ERROR, c.NGHTTP2_PROTOCOL_ERROR], [frames.INTERNAL_ERROR, c.NGHTTP2_INTERNAL_ERROR],
      [frames.FLOW_CONTROL_ERROR, c.NGHTTP2_FLOW_CONTROL_ERROR], [frames.STREAM_CLOSED, c.NGHTTP2_STREAM_CLOSED],
      [frames.FRAME_SIZE_ERROR, c.NGHTTP2_FRAME_SIZE_ERROR], [frames.REFUSED_STREAM, c.NGHTTP2_REFUSED_STREAM], [frames.CANCEL, c.NGHTTP2_CANCEL],
      [frames.COMPRESSION_ERROR, c.NGHTTP2_COMPRESSION_ERROR], [frames.ENHANCE_YOUR_CALM, c.NGHTTP2_ENHANCE_YOUR_CALM],
      [frames.SETTINGS_HEADER_TABLE_SIZE, c.NGHTTP2_SETTINGS_HEADER_TABLE_SIZE], [frames.SETTINGS_ENABLE_PUSH, c.NGHTTP2_SETTINGS_ENABLE_PUSH],
      [frames.SETTINGS_MAX_CONCURRENT_STREAMS, c.NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS],
      [frames.SETTINGS_INITIAL_WINDOW_SIZE, c.NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE], [frames.SETTINGS_MAX_FRAME_SIZE, c.NGHTTP2_SETTINGS_MAX_FRAME_SIZE],
      [frames.SETTINGS_MAX_HEADER_LIST_SIZE, c.NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE],
      [frames.MAX_WINDOW, c.MAX_INITIAL_WINDOW_SIZE], [frames.DEFAULT_MAX_FRAME, c.MIN_MAX_FRAME_SIZE], [frames.MAX_MAX_FRAME, c.MAX_MAX_FRAME_SIZE],
      [frames.DEFAULT_WINDOW, c.DEFAULT_SETTINGS_INITIAL_WINDOW_SIZE],
    ];
    assert.deepEqual(same.map(([ours]) => ours), same.map(([, node]) => node));
  });

  test('the check sees node\'s bundled undici when an ESM import of node:http loads it', () => {
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', `import 'node:http'; process.stdout.write(String(process.moduleLoadList.includes('NativeModule internal/deps/undici/undici')));`], { encoding: 'utf8' });
    assert.equal(out, 'true');
  });

  test('serve with a kubernetes:// source loads them (and fails here: no credentials)', async () => {
    const { started, code, loads } = await serveLoads('kubernetes://default/switchyard');
    assert.equal(started, false);
    assert.equal(code, 1);
    for (const name of ['/node_modules/undici/', '/src/kube/client.ts']) {
      assert.ok(loads.some((url) => url.includes(name)), name);
    }
  });

  test('the check sees them where they are used (src/config/load.ts)', () => {
    const heavy = heavyLoadedBy('src/config/load.ts');
    for (const name of ['/ajv/', '/yaml/', '/js-yaml/', 'switchyard.schema.json']) {
      assert.ok(heavy.some((url) => url.includes(name)), name);
    }
  });
});
