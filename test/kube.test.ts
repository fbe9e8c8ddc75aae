// src/kube against a real kube-apiserver + etcd (test/kube-apiserver.ts):
// credentials, ConfigMap reads and writes with optimistic concurrency, the
// watch loop (server-side timeouts, 410 Gone, an API server restart), RBAC
// with resourceNames, rate-limited Events and the pod proxy.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeClient, KubeError, type ConfigMap } from '../src/kube/client.ts';
import { KubeCredentialsError, loadCredentials } from '../src/kube/credentials.ts';
import { EventRecorder } from '../src/kube/events.ts';
import { ConfigMapWatch, type WatchState } from '../src/kube/watch.ts';
import {
  ADMIN_TOKEN, READER_TOKEN, READER_USER, compactEtcd, createNamespace, grantConfigMaps, startApiServer, until, type ApiServer,
} from './kube-apiserver.ts';

let api: ApiServer;
before(async () => { api = await startApiServer(); });
after(async () => { await api?.stop(); });

async function status(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (err) {
    if (err instanceof KubeError) return err.status;
    throw err;
  }
}

function kubeconfig(dir: string, body: string): string {
  const file = join(dir, `kc-${Math.random().toString(16).slice(2)}`);
  writeFileSync(file, body);
  return file;
}

describe('credentials', () => {
  test('kubeconfig with a token, a CA file given relative to the kubeconfig, and a KUBECONFIG list', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kc-'));
    copyFileSync(api.caFile, join(dir, 'ca.crt'));
    // The CA is verified here (no insecure-skip-tls-verify); the file name is relative.
    const clusters = kubeconfig(dir, `apiVersion: v1
kind: Config
current-context: admin
clusters:
- name: local
  cluster: {server: "${api.server}", certificate-authority: ca.crt}
contexts:
- name: admin
  context: {cluster: local, user: admin, namespace: ns-from-context}
`);
    const users = kubeconfig(dir, `apiVersion: v1
kind: Config
users:
- name: admin
  user: {token: ${ADMIN_TOKEN}}
`);
    const creds = await loadCredentials({ env: { KUBECONFIG: `${join(dir, 'missing')}:${clusters}:${users}` } });
    assert.equal(creds.namespace, 'ns-from-context');
    assert.equal(creds.insecureSkipTLSVerify, false);
    assert.match(creds.ca ?? '', /BEGIN CERTIFICATE/);
    const client = new KubeClient(creds);
    try {
      const nss = await client.request<{ items: unknown[] }>('GET', '/api/v1/namespaces');
      assert.ok(Array.isArray(nss.items));
    } finally {
      await client.close();
    }
  });

  test('certificate-authority-data is decoded; a server certificate it does not sign is refused', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kc-'));
    const caData = readFileSync(api.caFile).toString('base64');
    const good = await loadCredentials({ kubeconfig: kubeconfig(dir, `current-context: c
clusters: [{name: k, cluster: {server: "${api.server}", certificate-authority-data: ${caData}}}]
users: [{name: u, user: {token: ${ADMIN_TOKEN}}}]
contexts: [{name: c, context: {cluster: k, user: u}}]
`) });
    const client = new KubeClient(good);
    try {
      assert.equal((await client.send('GET', '/readyz')).text, 'ok');
    } finally {
      await client.close();
    }
    // The same server without its CA: the system CAs do not know it.
    const bad = new KubeClient(await loadCredentials({ kubeconfig: kubeconfig(dir, `current-context: c
clusters: [{name: k, cluster: {server: "${api.server}"}}]
users: [{name: u, user: {token: ${ADMIN_TOKEN}}}]
contexts: [{name: c, context: {cluster: k, user: u}}]
`) }));
    try {
      await assert.rejects(bad.send('GET', '/readyz'), /certificate/i);
    } finally {
      await bad.close();
    }
  });

  test('in cluster: the service-account token, CA and namespace files and KUBERNETES_SERVICE_HOST/PORT', async () => {
    const sa = mkdtempSync(join(tmpdir(), 'sa-'));
    writeFileSync(join(sa, 'token'), `${READER_TOKEN}\n`);
    copyFileSync(api.caFile, join(sa, 'ca.crt'));
    writeFileSync(join(sa, 'namespace'), 'routing');
    const creds = await loadCredentials({
      env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port), HOME: sa },
      serviceAccountDir: sa,
    });
    assert.equal(creds.origin, 'in-cluster');
    assert.equal(creds.namespace, 'routing');
    assert.equal(creds.server, api.server);
    const client = new KubeClient(creds);
    try {
      // Authenticated as the reader (no rights yet): 403, not 401.
      const r = await client.send('GET', '/api/v1/namespaces/default/configmaps');
      assert.equal(r.status, 403);
      assert.match(r.text, /cm-reader/);
      // A rotated token is picked up (re-read at most once a minute: a new loader sees it at once).
      writeFileSync(join(sa, 'token'), 'not-a-token');
      const stale = new KubeClient(await loadCredentials({
        env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port) }, serviceAccountDir: sa,
      }));
      try {
        assert.equal((await stale.send('GET', '/api/v1/namespaces/default/configmaps')).status, 401);
      } finally {
        await stale.close();
      }
    } finally {
      await client.close();
    }
  });

  test('KUBECONFIG wins over in-cluster; exec plugins and missing files are clear errors', async () => {
    const sa = mkdtempSync(join(tmpdir(), 'sa-'));
    writeFileSync(join(sa, 'token'), 'x');
    const creds = await loadCredentials({
      env: { KUBECONFIG: api.readerKubeconfig, KUBERNETES_SERVICE_HOST: '10.0.0.1' }, serviceAccountDir: sa,
    });
    assert.match(creds.origin, /reader\.kubeconfig/);
    assert.equal(await creds.authorization(), `Bearer ${READER_TOKEN}`);
    const exec = kubeconfig(sa, `current-context: c
clusters: [{name: k, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {exec: {command: gcloud}}}]
contexts: [{name: c, context: {cluster: k, user: u}}]
`);
    await assert.rejects(loadCredentials({ kubeconfig: exec }), (e: Error) => e instanceof KubeCredentialsError && /exec\/auth-provider/.test(e.message));
    await assert.rejects(loadCredentials({ kubeconfig: join(sa, 'nope') }), /cannot read kubeconfig/);
    await assert.rejects(loadCredentials({ env: { HOME: sa } }), /no Kubernetes credentials/);
  });
});

describe('ConfigMaps', () => {
  test('get, merge patch and replace with a resourceVersion precondition: a stale write gets 409', async () => {
    const ns = await createNamespace(api.admin);
    const created = await api.admin.createConfigMap(ns, { metadata: { name: 'routes' }, data: { 'a.yaml': 'a: 1\n' } });
    const rv0 = created.metadata.resourceVersion!;
    const patched = await api.admin.patchConfigMapData(ns, 'routes', { 'b.yaml': 'b: 2\n' }, rv0);
    assert.deepEqual(patched.data, { 'a.yaml': 'a: 1\n', 'b.yaml': 'b: 2\n' });
    // rv0 is stale now: both write forms refuse it.
    const e1 = await api.admin.patchConfigMapData(ns, 'routes', { 'a.yaml': 'lost' }, rv0).catch((e: unknown) => e);
    assert.ok(e1 instanceof KubeError && e1.status === 409 && e1.reason === 'Conflict', String(e1));
    const e2 = await api.admin.replaceConfigMap(ns, { ...created, data: { 'a.yaml': 'lost' } }).catch((e: unknown) => e);
    assert.ok(e2 instanceof KubeError && e2.status === 409, String(e2));
    // Removing a key with null; the current resourceVersion passes.
    const cur = await api.admin.getConfigMap(ns, 'routes');
    const replaced = await api.admin.replaceConfigMap(ns, { ...cur, data: { 'c.yaml': 'c: 3\n' } });
    assert.deepEqual(replaced.data, { 'c.yaml': 'c: 3\n' });
    const removed = await api.admin.patchConfigMapData(ns, 'routes', { 'c.yaml': null });
    assert.equal(removed.data, undefined);
    assert.equal(await status(api.admin.getConfigMap(ns, 'nope')), 404);
  });

  test('RBAC: a Role with resourceNames lets the reader get/list/watch that ConfigMap only', async () => {
    const ns = await createNamespace(api.admin);
    await api.admin.createConfigMap(ns, { metadata: { name: 'routes' }, data: { 'r.yaml': 'x' } });
    await api.admin.createConfigMap(ns, { metadata: { name: 'secrets-ish' }, data: { k: 'v' } });
    await grantConfigMaps(api.admin, ns, READER_USER, ['routes'], ['get', 'list', 'watch']);
    const reader = new KubeClient(await loadCredentials({ kubeconfig: api.readerKubeconfig }));
    try {
      await until(async () => (await status(reader.getConfigMap(ns, 'routes'))) === 200, 10_000, 'the RoleBinding to apply');
      assert.equal((await reader.listConfigMap(ns, 'routes')).items[0]?.data?.['r.yaml'], 'x');
      assert.equal(await status(reader.getConfigMap(ns, 'secrets-ish')), 403);
      assert.equal(await status(reader.listConfigMap(ns, 'secrets-ish')), 403);
      assert.equal((await reader.send('GET', `/api/v1/namespaces/${ns}/configmaps`)).status, 403, 'a list without the field selector');
      assert.equal(await status(reader.patchConfigMapData(ns, 'routes', { 'r.yaml': 'y' })), 403, 'no patch granted');
      const seen: (ConfigMap | null)[] = [];
      const w = new ConfigMapWatch(reader, ns, 'routes', { onObject: (cm) => seen.push(cm) });
      w.start();
      await until(() => seen.length === 1);
      await api.admin.patchConfigMapData(ns, 'routes', { 'r.yaml': 'z' });
      await until(() => seen.length === 2, 10_000, 'the watched change');
      assert.equal(seen[1]?.data?.['r.yaml'], 'z');
      assert.equal(w.stats.failures, 0);
      await w.close();
    } finally {
      await reader.close();
    }
  });
});

describe('ConfigMapWatch', () => {
  test('lists, then follows patches, deletion and re-creation across server-side watch timeouts', async () => {
    const ns = await createNamespace(api.admin);
    await api.admin.createConfigMap(ns, { metadata: { name: 'routes' }, data: { v: '0' } });
    const seen: (string | null)[] = [];
    const states: boolean[] = [];
    // 1 s server-side timeouts: the watch is re-opened several times during the test.
    const w = new ConfigMapWatch(api.admin, ns, 'routes', {
      onObject: (cm) => seen.push(cm === null ? null : cm.data?.['v'] ?? ''),
      onState: (s) => states.push(s.up),
    }, { watchTimeoutSeconds: [1, 1] });
    w.start();
    await until(() => seen.length === 1);
    for (let i = 1; i <= 5; i++) {
      await api.admin.patchConfigMapData(ns, 'routes', { v: String(i) });
      await until(() => seen.at(-1) === String(i), 10_000, `v=${i}`);
      await new Promise((r) => setTimeout(r, 400));
    }
    // Large and multi-byte: split over many chunks, characters cut between them.
    const big = `# ${'é漢🚦'.repeat(40_000)}\n`;
    await api.admin.patchConfigMapData(ns, 'routes', { v: big });
    await until(() => seen.length === 7, 10_000, 'the big value');
    assert.equal(seen[6], big, 'delivered intact');
    await api.admin.patchConfigMapData(ns, 'routes', { v: '5' });
    await until(() => seen.at(-1) === '5', 10_000, 'v=5 again');
    await api.admin.request('DELETE', `/api/v1/namespaces/${ns}/configmaps/routes`);
    await until(() => seen.at(-1) === null, 10_000, 'the deletion');
    await api.admin.createConfigMap(ns, { metadata: { name: 'routes' }, data: { v: 'again' } });
    await until(() => seen.at(-1) === 'again', 10_000, 'the re-creation');
    assert.deepEqual(seen.filter((v) => v !== big), ['0', '1', '2', '3', '4', '5', '5', null, 'again'], 'every version once, in order');
    assert.ok(w.stats.watches >= 2, `the watch was re-opened after the server ended it (${w.stats.watches} watches)`);
    assert.equal(w.stats.lists, 1, 'resumed from the resourceVersion, never relisted');
    assert.deepEqual(states, [true], 'never went down');
    await w.close();
  });

  test('a quiet watch is not torn down after 30 s (kubernetes-client/javascript#3020): one request, no failure, and it still delivers', { timeout: 60_000 }, async () => {
    const ns = await createNamespace(api.admin);
    await api.admin.createConfigMap(ns, { metadata: { name: 'quiet' }, data: { v: '0' } });
    const seen: string[] = [];
    const w = new ConfigMapWatch(api.admin, ns, 'quiet', { onObject: (cm) => seen.push(cm?.data?.['v'] ?? 'null') });
    w.start();
    await until(() => seen.length === 1);
    await new Promise((r) => setTimeout(r, 35_000));
    assert.deepEqual({ watches: w.stats.watches, failures: w.stats.failures, lists: w.stats.lists }, { watches: 1, failures: 0, lists: 1 });
    await api.admin.patchConfigMapData(ns, 'quiet', { v: '1' });
    await until(() => seen.at(-1) === '1', 10_000, 'the change after 35 quiet seconds');
    assert.equal(w.stats.watches, 1, 'delivered on the same watch');
    await w.close();
  });

  test('a watch on a ConfigMap that does not exist yet reports null, then the object', async () => {
    const ns = await createNamespace(api.admin);
    const seen: (ConfigMap | null)[] = [];
    const w = new ConfigMapWatch(api.admin, ns, 'later', { onObject: (cm) => seen.push(cm) });
    w.start();
    await until(() => seen.length === 1);
    assert.equal(seen[0], null);
    await api.admin.createConfigMap(ns, { metadata: { name: 'later' }, data: { k: 'v' } });
    await until(() => seen.length === 2);
    assert.equal(seen[1]?.data?.['k'], 'v');
    await w.close();
  });

  test('API server restart: the watch goes down, backs off, resumes and loses no change; 410 Gone relists', async () => {
    const ns = await createNamespace(api.admin);
    await api.admin.createConfigMap(ns, { metadata: { name: 'routes' }, data: { v: '0' } });
    const seen: string[] = [];
    const states: WatchState[] = [];
    const w = new ConfigMapWatch(api.admin, ns, 'routes', {
      onObject: (cm) => seen.push(cm?.data?.['v'] ?? 'null'),
      onState: (s) => states.push(s),
    }, { backoffBaseMs: 100, backoffMaxMs: 1000 });
    w.start();
    await until(() => seen.length === 1 && w.state?.up === true);
    await api.admin.patchConfigMapData(ns, 'routes', { v: '1' });
    await until(() => seen.at(-1) === '1');

    await api.stopApiServer();
    await until(() => w.state?.up === false, 10_000, 'the watch to notice');
    const down = w.state as Extract<WatchState, { up: false }>;
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(w.stats.failures >= 2, `retried while the server was down (${w.stats.failures} failures)`);
    assert.equal((w.state as Extract<WatchState, { up: false }>).since, down.since, 'the outage start is kept across retries');

    // Compact etcd's history past the watch's resourceVersion: resuming from it must now be refused (410) and relisted.
    await compactEtcd(api.etcdUrl);
    await api.startApiServer();
    // Changes made the moment the server is back, while the watch may still be backing off.
    await api.admin.patchConfigMapData(ns, 'routes', { v: '2' });
    await api.admin.patchConfigMapData(ns, 'routes', { v: '3' });
    await until(() => seen.at(-1) === '3', 20_000, 'the change made after the restart');
    assert.equal(w.state?.up, true);
    // Up, down for the outage, up again (a server still warming its watch cache may answer 429 once more in between).
    assert.deepEqual(states.slice(0, 2).map((s) => s.up), [true, false]);
    assert.equal(states.at(-1)!.up, true);
    assert.ok(states.every((s, i) => i === 0 || s.up !== states[i - 1]!.up), 'reported on changes only');
    assert.ok(w.stats.gone >= 1 && w.stats.lists >= 2, `a 410 Gone made it relist (${JSON.stringify(w.stats)})`);
    assert.deepEqual(seen.slice(0, 2), ['0', '1']);
    await api.admin.patchConfigMapData(ns, 'routes', { v: '4' });
    await until(() => seen.at(-1) === '4', 10_000, 'a change after the relist');
    await w.close();
  });
});

describe('events', () => {
  test('EventRecorder: events on a ConfigMap, rate-limited, the latest held one sent when a token is back', async () => {
    const ns = await createNamespace(api.admin);
    const cm = await api.admin.createConfigMap(ns, { metadata: { name: 'routes' }, data: {} });
    await grantConfigMaps(api.admin, ns, READER_USER, ['routes'], ['get']);
    const reader = new KubeClient(await loadCredentials({ kubeconfig: api.readerKubeconfig }));
    const errors: Error[] = [];
    const rec = new EventRecorder(reader, { component: 'switchyard', instance: 'pod-a', burst: 2, refillMs: 500, onError: (e) => errors.push(e) });
    const target = { apiVersion: 'v1', kind: 'ConfigMap', namespace: ns, name: 'routes', uid: cm.metadata.uid! };
    try {
      await until(async () => (await status(reader.getConfigMap(ns, 'routes'))) === 200, 10_000, 'the RoleBinding to apply');
      for (let i = 1; i <= 5; i++) rec.record({ target, type: 'Normal', reason: 'ConfigApplied', message: `version v${i}` });
      await rec.flush();
      rec.record({ target, type: 'Normal', reason: 'ConfigApplied', message: 'version v5' });
      await rec.flush();
      assert.deepEqual(errors, []);
      const events = (await api.admin.listEvents(ns, 'involvedObject.name=routes')).items;
      const messages = events.map((e) => e.message).sort();
      // Burst of 2 (v1, v2), v3 and v4 replaced while held, v5 sent after the refill, the same again not at all.
      assert.deepEqual(messages, ['version v1', 'version v2', 'version v5']);
      assert.deepEqual(rec.stats, { sent: 3, dropped: 2 });
      const e = events[0]!;
      assert.equal(e.involvedObject.uid, cm.metadata.uid);
      assert.equal(e.source?.host, 'pod-a');
      assert.equal(e.reportingComponent, 'switchyard');
      // A Warning with a long message is cut to the API's limit, not refused.
      rec.record({ target, type: 'Warning', reason: 'ConfigRejected', message: 'x'.repeat(5000) });
      await rec.flush();
      const warn = (await api.admin.listEvents(ns, 'reason=ConfigRejected')).items;
      assert.equal(warn.length, 1);
      assert.equal(warn[0]!.type, 'Warning');
      assert.ok(warn[0]!.message.length <= 1024);
    } finally {
      rec.close();
      await reader.close();
    }
  });
});

describe('pods', () => {
  // The API server proxies only to global unicast pod IPs, never loopback:
  // use this host's own non-loopback address (traffic stays on the host).
  const hostIp = Object.values(networkInterfaces()).flat().find((a) => a !== undefined && !a.internal && a.family === 'IPv4')?.address;

  test('listPods by label and GET through the pod proxy', { skip: hostIp === undefined ? 'no non-loopback address on this host' : false }, async () => {
    const ns = await createNamespace(api.admin);
    const srv = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ path: req.url, version: 'abc' }));
    });
    await new Promise<void>((r) => srv.listen(0, hostIp, r));
    const port = (srv.address() as { port: number }).port;
    try {
      // No controller makes the namespace's default ServiceAccount here; pod admission wants it.
      await api.admin.request('POST', `/api/v1/namespaces/${ns}/serviceaccounts`, { body: { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default' } } });
      for (const [name, app] of [['router-a', 'switchyard'], ['router-b', 'switchyard'], ['other', 'x']] as const) {
        await api.admin.request('POST', `/api/v1/namespaces/${ns}/pods`, {
          body: { apiVersion: 'v1', kind: 'Pod', metadata: { name, labels: { app } }, spec: { containers: [{ name: 'c', image: 'switchyard' }] } },
        });
        // Nothing schedules pods here: set the status a kubelet would.
        await api.admin.request('PATCH', `/api/v1/namespaces/${ns}/pods/${name}/status`, {
          contentType: 'application/merge-patch+json',
          body: { status: { phase: 'Running', podIP: hostIp, podIPs: [{ ip: hostIp }], conditions: [{ type: 'Ready', status: 'True' }] } },
        });
      }
      const pods = (await api.admin.listPods(ns, 'app=switchyard')).items;
      assert.deepEqual(pods.map((p) => p.metadata.name).sort(), ['router-a', 'router-b']);
      assert.equal(pods[0]!.status?.podIP, hostIp);
      const r = await api.admin.podProxyGet(ns, 'router-a', port, '/api/config');
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(JSON.parse(r.text), { path: '/api/config', version: 'abc' });
      // The reader has no pods/proxy right.
      const reader = new KubeClient(await loadCredentials({ kubeconfig: api.readerKubeconfig }));
      try {
        assert.equal((await reader.podProxyGet(ns, 'router-a', port, '/api/config')).status, 403);
      } finally {
        await reader.close();
      }
    } finally {
      srv.close();
    }
  });
});

