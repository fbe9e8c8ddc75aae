// The V8 flags `serve` runs with (src/cli/node-flags.ts): in effect when the
// router is started the documented way (node src/cli/main.ts serve, as the
// image's CMD does), in the same process (the pid a container's runtime
// signals), with an operator's own choice winning; and doing what
// docs/operations.md says they do, checked against V8 in fresh processes.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { OPT_OUT_ENV, SERVE_ENV, SERVE_NODE_FLAGS, missingEnv, missingFlags } from '../src/cli/node-flags.ts';
import { run, spawnRouter, startBackend, waitForLog, writeConfig, type Backend, type RouterProcess } from './helpers.ts';

/** heap_size_limit of a fresh node started with `flags`: old generation plus the young one's three semi-spaces. */
async function heapLimitWith(flags: readonly string[]): Promise<number> {
  const r = await run(process.execPath, [...flags, '-p', 'require("node:v8").getHeapStatistics().heap_size_limit']);
  assert.equal(r.code, 0, r.stderr);
  return Number(r.stdout.trim());
}

/** Starts the router as a child with `env` added to this process's environment (undefined: removed from it). */
async function spawnWith(config: string, env: Record<string, string | undefined>): Promise<RouterProcess> {
  const saved = { ...process.env };
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return await spawnRouter(config);
  } finally {
    for (const k of Object.keys(env)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

/** The environment a running process has (Linux). */
function environOf(pid: number): Record<string, string> {
  const pairs = readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').filter((e) => e !== '');
  return Object.fromEntries(pairs.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
}

/** Ends a router whose environment was all a test wanted (a SIGTERM right after start may find its handler not yet installed). */
async function gone(router: RouterProcess): Promise<void> {
  router.child.kill('SIGKILL');
  await router.exited;
}

async function stop(router: RouterProcess): Promise<void> {
  router.child.kill('SIGTERM');
  assert.equal(await router.exited, 0);
}

describe('V8 flags of serve', () => {
  let backend: Backend;
  let config: string;
  after(async () => { await backend?.close(); });

  test('started the documented way, serve runs with every flag, in the process that was started', async () => {
    backend = await startBackend('a');
    config = writeConfig({ routes: [{ name: 'r', hosts: ['a.test'], backends: [{ name: 'a', url: backend.url, weight: 1 }] }] });
    const router = await spawnWith(config, { [OPT_OUT_ENV]: '', NODE_OPTIONS: '' });
    try {
      const entry = await waitForLog(router, 'node runtime');
      // Re-executed in place: the pid the parent (a container runtime) knows still answers SIGTERM.
      assert.equal(entry['pid'], router.child.pid);
      const execArgv = entry['execArgv'] as string[];
      for (const flag of SERVE_NODE_FLAGS) assert.ok(execArgv.includes(flag), `${flag} missing from ${JSON.stringify(execArgv)}`);
      // V8 took the young generation's size (the flag could be set and the heap not follow).
      assert.equal(entry['heapSizeLimit'], await heapLimitWith(SERVE_NODE_FLAGS));
      // And it serves.
      const status = await new Promise<number | undefined>((resolve, reject) => {
        http.get(`${router.url}/`, { headers: { host: 'a.test' } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); }).on('error', reject);
      });
      assert.equal(status, 200);
    } finally {
      await stop(router);
    }
  });

  test('an operator\'s own setting in NODE_OPTIONS wins over the same flag; any others are still added', async () => {
    const router = await spawnWith(config, { NODE_OPTIONS: '--max-semi-space-size=16' });
    try {
      const entry = await waitForLog(router, 'node runtime');
      const execArgv = entry['execArgv'] as string[];
      assert.ok(!execArgv.some((a) => a.startsWith('--max-semi-space-size')), JSON.stringify(execArgv));
      const others = SERVE_NODE_FLAGS.filter((f) => !f.startsWith('--max-semi-space-size'));
      for (const flag of others) assert.ok(execArgv.includes(flag), `${flag} missing from ${JSON.stringify(execArgv)}`);
      assert.equal(entry['heapSizeLimit'], await heapLimitWith(['--max-semi-space-size=16', ...others]));
    } finally {
      await stop(router);
    }
  });

  test(`${OPT_OUT_ENV}=off runs with V8's defaults`, async () => {
    const router = await spawnWith(config, { [OPT_OUT_ENV]: 'off', NODE_OPTIONS: '' });
    try {
      const entry = await waitForLog(router, 'node runtime');
      assert.deepEqual(entry['execArgv'], []);
      assert.equal(entry['heapSizeLimit'], await heapLimitWith([]));
    } finally {
      await stop(router);
    }
  });

  test('the semi-space flag sizes the young generation V8 reserves (fresh processes)', async () => {
    const semi = Number(/^--max-semi-space-size=(\d+)$/.exec(SERVE_NODE_FLAGS.find((f) => f.startsWith('--max-semi-space-size')) ?? '')?.[1]);
    assert.ok(semi > 0, 'SERVE_NODE_FLAGS sets --max-semi-space-size');
    // Same old generation either way, so the difference is the young one: three semi-spaces (two plus one for promotion).
    const fixedOld = '--max-old-space-size=256';
    const withFlag = await heapLimitWith([fixedOld, `--max-semi-space-size=${semi}`]);
    const doubled = await heapLimitWith([fixedOld, `--max-semi-space-size=${semi * 2}`]);
    assert.equal(doubled - withFlag, 3 * semi * 2 ** 20);
  });

  test('serve runs with SERVE_ENV (the malloc arena cap) unless the operator set it; opted out, with neither', async () => {
    const unset = Object.fromEntries(Object.keys(SERVE_ENV).map((k) => [k, undefined]));
    const router = await spawnWith(config, { ...unset, [OPT_OUT_ENV]: '', NODE_OPTIONS: '' });
    try {
      const entry = await waitForLog(router, 'node runtime');
      const env = environOf(Number(entry['pid']));
      for (const [k, v] of Object.entries(SERVE_ENV)) assert.equal(env[k], v, k);
    } finally {
      await gone(router);
    }
    const own = await spawnWith(config, { MALLOC_ARENA_MAX: '4', [OPT_OUT_ENV]: '', NODE_OPTIONS: '' });
    try {
      const entry = await waitForLog(own, 'node runtime');
      assert.equal(environOf(Number(entry['pid']))['MALLOC_ARENA_MAX'], '4');
      // Its flags still came: the relaunch happened for them.
      for (const flag of SERVE_NODE_FLAGS) assert.ok((entry['execArgv'] as string[]).includes(flag), flag);
    } finally {
      await gone(own);
    }
    const off = await spawnWith(config, { ...unset, [OPT_OUT_ENV]: 'off', NODE_OPTIONS: '' });
    try {
      const entry = await waitForLog(off, 'node runtime');
      assert.equal(environOf(Number(entry['pid']))['MALLOC_ARENA_MAX'], undefined);
    } finally {
      await gone(off);
    }
  });

  test('missingEnv: what the environment lacks, an empty value counting as set', () => {
    assert.deepEqual(missingEnv({}), { ...SERVE_ENV });
    assert.deepEqual(missingEnv({ MALLOC_ARENA_MAX: '' }), {});
    assert.deepEqual(missingEnv({ MALLOC_ARENA_MAX: '8' }), {});
  });

  test('missingFlags: any setting of a flag, on the command line or in NODE_OPTIONS, counts as the operator\'s', () => {
    assert.deepEqual(missingFlags([], undefined), [...SERVE_NODE_FLAGS]);
    assert.deepEqual(missingFlags([...SERVE_NODE_FLAGS], undefined), []);
    assert.deepEqual(missingFlags(['--no-single-threaded-gc', '--max_semi_space_size=2'], ''), []);
    assert.deepEqual(missingFlags([], '--max-old-space-size=200  --max-semi-space-size=1'), SERVE_NODE_FLAGS.filter((f) => !f.startsWith('--max-semi')));
  });
});
