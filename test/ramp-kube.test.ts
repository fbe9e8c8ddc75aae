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
import { startBackend, type Backend } from './helpers.ts';
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
});
