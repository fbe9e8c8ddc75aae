// A guard's halt through a `kubernetes://` source, against a real
// kube-apiserver: the replica that judged patches the ConfigMap (comments
// kept), a replica that saw no failure follows within two seconds, and a
// restarted one starts halted.
import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { stringify } from 'yaml';
import { loadCredentials, type KubeCredentials } from '../src/kube/credentials.ts';
import { createLogger } from '../src/observe/log.ts';
import { Switchyard } from '../src/server.ts';
import { DEFAULT_WATCH } from '../src/config/watch.ts';
import { runCli, startBackend, type Backend } from './helpers.ts';
import { createNamespace, grantConfigMaps, READER_USER, startApiServer, until, type ApiServer } from './kube-apiserver.ts';

let api: ApiServer;
let reader: KubeCredentials;
let old: Backend;
let failing: Backend;
before(async () => {
  api = await startApiServer();
  reader = await loadCredentials({ kubeconfig: api.readerKubeconfig });
  old = await startBackend('old');
  failing = await startBackend('new', (req, res) => { req.resume(); res.writeHead(503); res.end(); });
});
after(async () => {
  await Promise.all([old?.close(), failing?.close()]);
  await api?.stop();
});

interface RouteState { backends: { weight: number }[]; ramp: { state: string; halted: { at: number; reason: string } | null } }

async function billing(sy: Switchyard): Promise<RouteState> {
  const body = await (await request(`http://127.0.0.1:${sy.addresses.admin.port}/api/config`)).body.json() as { routes: (RouteState & { name: string })[] };
  return body.routes.find((r) => r.name === 'billing')!;
}

describe('ramp halt through the Kubernetes API', () => {
  it('patches the ConfigMap; every replica and a restart agree', async () => {
    const namespace = await createNamespace(api.admin, 'ramp');
    const routes = `# billing moves to the new cluster\n${stringify({ routes: [{
      name: 'billing', hosts: ['billing.example.com'],
      backends: [{ name: 'old', url: old.url, weight: 100 }, { name: 'new', url: failing.url, weight: 0 }],
      ramp: { from: 'old', to: 'new', steps: [50, 100], interval: '10m', startedAt: new Date().toISOString(), guard: { minRequests: 20 } },
    }] })}`;
    await api.admin.createConfigMap(namespace, { metadata: { name: 'routes' }, data: { 'routes.yaml': routes } });
    // The chart's Role with rbac.allowConfigMapWrites: the router may patch its one ConfigMap.
    await grantConfigMaps(api.admin, namespace, READER_USER, ['routes'], ['get', 'list', 'watch', 'patch']);
    const listeners = join(mkdtempSync(join(tmpdir(), 'switchyard-listeners-')), 'listeners.yaml');
    writeFileSync(listeners, stringify({ entrypoint: { address: '127.0.0.1:0' }, admin: { address: '127.0.0.1:0' }, shutdown: { drainDelay: '0s', timeout: '2s' } }));
    const start = (instance: string) => Switchyard.start([listeners, `kubernetes://${namespace}/routes`], createLogger('silent'), DEFAULT_WATCH, {
      kubernetes: { credentials: reader, instance, watch: { backoffBaseMs: 100, backoffMaxMs: 1000 } },
    });
    const a = await start('replica-a');
    const b = await start('replica-b');
    try {
      assert.deepEqual((await billing(b)).backends.map((x) => x.weight), [50, 50]);
      // Only replica a sees traffic, so only a can judge.
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline && (await billing(a)).ramp.state !== 'halted') {
        for (let i = 0; i < 20; i++) await (await request(`http://127.0.0.1:${a.addresses.entrypoint.port}/`, { headers: { host: 'billing.example.com' } })).body.dump();
      }
      const verdict = (await billing(a)).ramp.halted;
      assert.ok(verdict, 'replica a halted');
      await until(async () => (await billing(b)).ramp.state === 'halted', 5_000, 'replica b halted');
      const followedAfter = Date.now() - verdict.at;
      assert.ok(followedAfter <= 2000, `replica b at 0 % ${followedAfter} ms after the verdict`);
      assert.deepEqual((await billing(b)).backends.map((x) => x.weight), [100, 0]);
      const cm = await api.admin.getConfigMap(namespace, 'routes');
      const text = cm.data!['routes.yaml']!;
      assert.match(text, /^# billing moves to the new cluster\n/);
      assert.match(text, /halted:\n\s+at: .*\n\s+reason: .*guard: /);
      await b.shutdown();
      const c = await start('replica-c');
      try {
        const s = await billing(c);
        assert.equal(s.ramp.state, 'halted');
        assert.deepEqual(s.backends.map((x) => x.weight), [100, 0]);
      } finally {
        await c.shutdown();
      }
      console.log(`# kubernetes source: a replica with no traffic of its own was at 0 % ${followedAfter} ms after the verdict`);
    } finally {
      await a.shutdown();
      await b.shutdown();
    }
  });

  it('switchyard ramp start, pause, abort patch the ConfigMap key in place; a replica follows each; a refused action writes nothing', async () => {
    const namespace = await createNamespace(api.admin, 'rampcli');
    const routes = `# billing moves to the new cluster
routes:
  - name: billing
    hosts: [billing.example.com]
    backends:
      - { name: old, url: "${old.url}", weight: 100 }
      - { name: new, url: "${old.url}", weight: 0 }   # healthy: the guard has nothing to say
    ramp:
      from: old
      to: new
      steps: [50, 100]   # percent on new
      interval: 10m
`;
    await api.admin.createConfigMap(namespace, { metadata: { name: 'routes' }, data: { 'routes.yaml': routes } });
    await grantConfigMaps(api.admin, namespace, READER_USER, ['routes'], ['get', 'list', 'watch']);
    const listeners = join(mkdtempSync(join(tmpdir(), 'switchyard-listeners-')), 'listeners.yaml');
    writeFileSync(listeners, stringify({ entrypoint: { address: '127.0.0.1:0' }, admin: { address: '127.0.0.1:0' }, shutdown: { drainDelay: '0s', timeout: '2s' } }));
    const source = `kubernetes://${namespace}/routes`;
    const sy = await Switchyard.start([listeners, source], createLogger('silent'), DEFAULT_WATCH, {
      kubernetes: { credentials: reader, instance: 'replica', watch: { backoffBaseMs: 100, backoffMaxMs: 1000 } },
    });
    // The operator's credentials (the CLI reads KUBECONFIG, as kubectl does).
    const saved = process.env['KUBECONFIG'];
    process.env['KUBECONFIG'] = api.adminKubeconfig;
    const ramp = (...args: string[]) => runCli(['ramp', ...args, 'billing', '--config', listeners, '--config', source]);
    const text = async (): Promise<string> => (await api.admin.getConfigMap(namespace, 'routes')).data!['routes.yaml']!;
    try {
      assert.equal((await billing(sy)).ramp.state, 'pending');
      let r = await ramp('start');
      assert.equal(r.code, 0, r.stderr);
      let now = await text();
      assert.match(now, /^# billing moves to the new cluster\n/);
      assert.ok(now.startsWith(routes), now);
      assert.match(now.slice(routes.length), /^ {6}startedAt: \S+\n$/);
      await until(async () => (await billing(sy)).ramp.state === 'ramping', 5_000, 'the replica ramping');
      assert.deepEqual((await billing(sy)).backends.map((x) => x.weight), [50, 50]);

      r = await ramp('pause');
      assert.equal(r.code, 0, r.stderr);
      assert.match(await text(), /\n {6}pausedAt: \S+\n/);
      await until(async () => (await billing(sy)).ramp.state === 'paused', 5_000, 'the replica paused');

      r = await ramp('abort');
      assert.equal(r.code, 0, r.stderr);
      now = await text();
      assert.match(now, /\n {6}halted: \{ at: \S+, reason: aborted \}\n$/);
      assert.ok(now.startsWith(routes), 'comments and layout kept');
      await until(async () => (await billing(sy)).ramp.state === 'halted', 5_000, 'the replica halted');
      assert.deepEqual((await billing(sy)).backends.map((x) => x.weight), [100, 0]);

      const before = (await api.admin.getConfigMap(namespace, 'routes')).metadata.resourceVersion;
      r = await ramp('resume');
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^switchyard ramp: cannot resume the ramp of route "billing": it is halted/);
      assert.equal((await api.admin.getConfigMap(namespace, 'routes')).metadata.resourceVersion, before, 'nothing written');
    } finally {
      if (saved === undefined) delete process.env['KUBECONFIG'];
      else process.env['KUBECONFIG'] = saved;
      await sy.shutdown();
    }
  });
});
