// The Helm chart, offline: `helm lint --strict` and `helm template` over every
// values file in charts/switchyard/ci/, each rendered object validated against
// the Kubernetes JSON schemas (PyPI kubernetes-validate bundles them; the
// ServiceMonitor is a CRD, so only its shape is checked), then what a schema
// cannot see: selectors, ports, probes, replicas vs HPA, grace period, a
// config (mounted files plus the ConfigMap read through the API) that
// `switchyard validate` accepts, and the API mode's minimal RBAC. Also the Grafana dashboard's
// queries against a real /metrics scrape.
//
// Needs helm (`go install helm.sh/helm/v3/cmd/helm@v3.22.0`) and
// `pip install kubernetes-validate==1.37.0`; .ci/run installs both.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { loadConfig } from '../src/config/load.ts';
import { CLI, ROOT, closedPort, run, runCli, startBackend, startRouter, type Backend, type Router } from './helpers.ts';

const CHART = join(ROOT, 'charts/switchyard');
const CI_DIR = join(CHART, 'ci');
const KUBE_VERSION = '1.31.0';
const RELEASE = 'sy';
const NAMESPACE = 'migration';
const HELM_PIN = 'helm.sh/helm/v3/cmd/helm@v3.22.0';

// Rendered objects are free-form JSON; each check names the fields it reads.
type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> }; spec?: any; data?: Record<string, string> };

/** helm from $(go env GOPATH)/bin, else from PATH; undefined when neither has it. */
function findHelm(): string | undefined {
  const dirs: string[] = [];
  try {
    dirs.push(join(execFileSync('go', ['env', 'GOPATH'], { encoding: 'utf8' }).trim(), 'bin'));
  } catch { /* no go: PATH only */ }
  dirs.push(...(process.env['PATH'] ?? '').split(delimiter).filter((d) => d !== ''));
  return dirs.map((d) => join(d, 'helm')).find((p) => existsSync(p));
}

let helmPath: string | undefined;
function helm(): string {
  helmPath ??= findHelm();
  if (helmPath === undefined) {
    throw new Error(`helm not found in $(go env GOPATH)/bin nor on PATH: install it with \`go install ${HELM_PIN}\` (bash .ci/run does)`);
  }
  return helmPath;
}

async function requireKubernetesValidate(): Promise<void> {
  const r = await run('python3', ['-c', 'import kubernetes_validate.version as v; print(v.__version__)']).catch((err: unknown) => ({ code: -1, stdout: '', stderr: String(err) }));
  if (r.code !== 0) {
    throw new Error(`python3 -m kubernetes_validate is not available: install it with \`pip install kubernetes-validate==1.37.0\` (bash .ci/run does)\n${r.stderr}`);
  }
}

async function template(valuesFiles: string[], extraArgs: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const args = ['template', RELEASE, CHART, '--namespace', NAMESPACE, '--kube-version', KUBE_VERSION];
  for (const f of valuesFiles) args.push('--values', f);
  return run(helm(), [...args, ...extraArgs]);
}

async function render(valuesFile: string): Promise<Obj[]> {
  const r = await template([valuesFile]);
  assert.equal(r.code, 0, `helm template -f ${valuesFile} failed:\n${r.stderr}`);
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj | null).filter((o): o is Obj => o !== null);
}

/** Writes values to a temp file and renders with them on top of `base`; resolves with helm's result. */
async function templateWith(values: unknown, base: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-chart-'));
  const file = join(dir, 'values.yaml');
  writeFileSync(file, stringify(values));
  try {
    return await template([...base, file]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function one(objs: Obj[], kind: string, name?: string): Obj {
  const found = objs.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  assert.equal(found.length, 1, `expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0]!;
}

/** Every key of `selector` is in `labels` with the same value (a matchLabels selector selects them). */
function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  assert.ok(selector && Object.keys(selector).length > 0, 'empty selector');
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/** The port number a Service targetPort or probe port names, resolved against the container's ports. */
function containerPort(container: { ports: { name: string; containerPort: number }[] }, port: string | number): number {
  if (typeof port === 'number') return port;
  const p = container.ports.find((cp) => cp.name === port);
  assert.ok(p, `no container port named ${port}`);
  return p.containerPort;
}

/** The Dockerfile's exec-form CMD. */
function imageCmd(): string[] {
  const cmd = /^CMD\s+(\[.*\])\s*$/m.exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'))?.[1];
  assert.ok(cmd, 'Dockerfile has no exec-form CMD');
  return JSON.parse(cmd) as string[];
}

/** The image's `--config` directory, from the Dockerfile's CMD (the chart mounts the ConfigMap there). */
function imageConfigDir(): string {
  const args = imageCmd();
  const i = args.indexOf('--config');
  assert.ok(i >= 0 && args[i + 1], 'Dockerfile CMD has no --config DIR');
  return args[i + 1]!;
}

// What each CI values file must render. A new file in ci/ is still linted,
// validated and checked for every invariant below; list it here to pin its kinds.
const EXPECTED_KINDS: Record<string, string[]> = {
  'defaults-values.yaml': ['ConfigMap', 'ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Role', 'RoleBinding', 'Service', 'Service', 'ServiceAccount'],
  'hpa-off-values.yaml': ['ConfigMap', 'ConfigMap', 'Deployment', 'PodDisruptionBudget', 'Role', 'RoleBinding', 'Service', 'Service', 'ServiceAccount'],
  'existing-configmap-values.yaml': ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Role', 'RoleBinding', 'Service', 'Service', 'ServiceAccount'],
  'servicemonitor-values.yaml': ['ConfigMap', 'ConfigMap', 'ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'NetworkPolicy', 'PodDisruptionBudget', 'Role', 'RoleBinding', 'Service', 'Service', 'ServiceAccount', 'ServiceMonitor'],
  'volume-values.yaml': ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Service', 'Service', 'ServiceAccount'],
  'volume-existing-configmap-values.yaml': ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Service', 'Service', 'ServiceAccount'],
};

/** The `kubernetes://NAMESPACE/NAME` config source the container's command names, if any (config.source api). */
function apiSource(container: { command?: string[] }): { namespace: string; name: string } | undefined {
  const cmd = container.command ?? [];
  const sources = cmd.flatMap((a, i) => (cmd[i - 1] === '--config' ? [a] : [])).filter((a) => a.startsWith('kubernetes://'));
  assert.ok(sources.length <= 1, 'one API source');
  const m = sources[0] === undefined ? undefined : /^kubernetes:\/\/([^/]+)\/([^/]+)$/.exec(sources[0]);
  if (sources[0] !== undefined) assert.ok(m, `malformed source ${sources[0]}`);
  return m ? { namespace: m[1]!, name: m[2]! } : undefined;
}

// Stands in for the user's ConfigMap when values.config.existingConfigMap is set.
const EXISTING_CONFIGMAP_FILES: Record<string, string> = {
  'billing.yaml': stringify({
    routes: [{
      name: 'billing', hosts: ['billing.migration.example.com'],
      backends: [{ name: 'old', url: 'http://billing.default.svc:80', weight: 90 }, { name: 'new', url: 'http://billing.eks.internal', weight: 10 }],
    }],
  }),
};

const valuesFiles = readdirSync(CI_DIR).filter((f) => /\.ya?ml$/.test(f)).sort();

describe('Helm chart', { timeout: 120_000 }, () => {
  before(async () => {
    helm();
    await requireKubernetesValidate();
  });

  test('ci/ has the values files the issue asks for', () => {
    for (const f of Object.keys(EXPECTED_KINDS)) assert.ok(valuesFiles.includes(f), `missing ci/${f}`);
  });

  test('values.schema.json checks values.routes with the config schema of a route', () => {
    const values = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8')) as { properties: { routes: { items: unknown } } };
    const config = JSON.parse(readFileSync(join(ROOT, 'config/switchyard.schema.json'), 'utf8')) as { properties: { routes: { items: unknown } } };
    assert.deepEqual(values.properties.routes.items, config.properties.routes.items,
      'charts/switchyard/values.schema.json is out of date: copy config/switchyard.schema.json\'s properties.routes.items into its properties.routes.items, e.g.\n'
      + '  npx node -e \'const fs=require("fs"),r=(p)=>JSON.parse(fs.readFileSync(p)),v=r("charts/switchyard/values.schema.json");'
      + 'v.properties.routes.items=r("config/switchyard.schema.json").properties.routes.items;fs.writeFileSync("charts/switchyard/values.schema.json",JSON.stringify(v,null,2)+"\\n")\'');
  });

  for (const file of valuesFiles) {
    describe(`values ci/${file}`, () => {
      const valuesPath = join(CI_DIR, file);
      let objs: Obj[] = [];
      const values = (parse(readFileSync(valuesPath, 'utf8')) ?? {}) as Record<string, any>;
      before(async () => { objs = await render(valuesPath); });

      test('helm lint --strict passes', async () => {
        const r = await run(helm(), ['lint', '--strict', '--kube-version', KUBE_VERSION, '--values', valuesPath, CHART]);
        assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
        assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
        assert.doesNotMatch(r.stdout, /\[(WARNING|ERROR)\]/);
      });

      test('renders the expected kinds, all in the release namespace', () => {
        const expected = EXPECTED_KINDS[file];
        if (expected !== undefined) assert.deepEqual(objs.map((o) => o.kind).sort(), expected);
        for (const o of objs) {
          assert.equal(o.metadata.namespace, NAMESPACE, `${o.kind}/${o.metadata.name}`);
          assert.equal(o.metadata.labels?.['app.kubernetes.io/instance'], RELEASE, `${o.kind}/${o.metadata.name} labels`);
        }
      });

      test(`every object but the ServiceMonitor CRD is valid for Kubernetes ${KUBE_VERSION} (strict JSON schemas)`, async () => {
        const dir = mkdtempSync(join(tmpdir(), 'switchyard-kv-'));
        const builtin = objs.filter((o) => o.kind !== 'ServiceMonitor');
        const path = join(dir, 'rendered.yaml');
        writeFileSync(path, builtin.map((o) => stringify(o)).join('---\n'));
        const r = await run('python3', ['-m', 'kubernetes_validate', '--strict', '-k', KUBE_VERSION, path]);
        rmSync(dir, { recursive: true, force: true });
        assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
        const passed = r.stdout.split('\n').filter((l) => l.startsWith('INFO') && l.includes(' passed for resource '));
        assert.equal(passed.length, builtin.length, `every object validated against a schema (none skipped):\n${r.stdout}`);
        assert.doesNotMatch(r.stdout, /^(WARN|ERROR)/m);
      });

      test('selectors match the pod labels; the HPA targets the Deployment', () => {
        const dep = one(objs, 'Deployment');
        const podLabels = dep.spec.template.metadata.labels as Record<string, string>;
        assert.ok(selects(dep.spec.selector.matchLabels, podLabels), 'Deployment selector');
        for (const svc of objs.filter((o) => o.kind === 'Service')) assert.ok(selects(svc.spec.selector, podLabels), `Service ${svc.metadata.name}`);
        for (const pdb of objs.filter((o) => o.kind === 'PodDisruptionBudget')) {
          assert.equal(pdb.apiVersion, 'policy/v1');
          assert.ok(selects(pdb.spec.selector.matchLabels, podLabels), 'PDB selector');
        }
        for (const np of objs.filter((o) => o.kind === 'NetworkPolicy')) assert.ok(selects(np.spec.podSelector.matchLabels, podLabels), 'NetworkPolicy podSelector');
        const spread = dep.spec.template.spec.topologySpreadConstraints as { topologyKey: string; labelSelector: { matchLabels: Record<string, string> } }[];
        assert.ok(spread.some((c) => c.topologyKey === 'kubernetes.io/hostname'), 'spread across nodes');
        for (const c of spread) assert.ok(selects(c.labelSelector.matchLabels, podLabels), `spread constraint on ${c.topologyKey}`);
        for (const hpa of objs.filter((o) => o.kind === 'HorizontalPodAutoscaler')) {
          assert.equal(hpa.apiVersion, 'autoscaling/v2');
          assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: dep.metadata.name });
        }
      });

      test('the ConfigMap holds a config `switchyard validate` accepts; Service ports, container ports and probes match it', async () => {
        const dep = one(objs, 'Deployment');
        const pod = dep.spec.template.spec;
        const container = pod.containers[0];
        // The config volume: a directory at the image's --config path, never subPath.
        const mounts = (container.volumeMounts as { name: string; mountPath: string; subPath?: string }[]).filter((m) => m.mountPath === imageConfigDir());
        assert.equal(mounts.length, 1, `one volume mounted at ${imageConfigDir()}`);
        for (const m of container.volumeMounts as { subPath?: string; subPathExpr?: string }[]) assert.equal(m.subPath ?? m.subPathExpr, undefined, 'no subPath mounts');
        const volume = (pod.volumes as { name: string; configMap?: { name: string }; projected?: { sources: { configMap?: { name: string } }[] } }[]).find((v) => v.name === mounts[0]!.name);
        assert.ok(volume, 'the config volume exists');
        const cmNames = volume.configMap ? [volume.configMap.name] : volume.projected!.sources.map((s) => s.configMap?.name);
        assert.ok(cmNames.every((n) => n !== undefined), 'the config volume projects ConfigMaps only');
        const existing = values['config']?.['existingConfigMap'] as string | undefined;
        // Gather the files the pod will see: the mounted ones, and the keys of the ConfigMap it reads through the API.
        const api = apiSource(container);
        assert.equal(api !== undefined, values['config']?.['source'] !== 'volume', 'the API source exactly in api mode (the default)');
        if (api) {
          assert.equal(api.namespace, NAMESPACE);
          assert.ok(!cmNames.includes(api.name), 'the routes ConfigMap read through the API is not also mounted');
          cmNames.push(api.name);
        }
        const dir = mkdtempSync(join(tmpdir(), 'switchyard-chart-config-'));
        for (const name of cmNames) {
          const files = name === existing ? EXISTING_CONFIGMAP_FILES : one(objs, 'ConfigMap', name).data!;
          for (const [key, text] of Object.entries(files)) {
            assert.ok(!existsSync(join(dir, key)), `key ${key} in two ConfigMaps`);
            writeFileSync(join(dir, key), text);
          }
        }
        if (existing) {
          assert.ok(cmNames.includes(existing), 'the existing ConfigMap is mounted or read through the API');
          assert.deepEqual(Object.keys(one(objs, 'ConfigMap', cmNames[0]).data!), ['listeners.yaml'], 'the chart renders no routes then');
        }
        const v = await runCli(['validate', dir]);
        assert.equal(v.code, 0, `switchyard validate rejected the chart's config:\n${v.stderr}`);
        const { config } = await loadConfig(dir);
        rmSync(dir, { recursive: true, force: true });
        const routes = existing ? 1 : ((values['routes'] as unknown[] | undefined)?.length ?? 0);
        assert.equal(config.routes.length, routes, 'the routes of the values (or the existing ConfigMap)');

        // Ports: container, Services, probes, NetworkPolicy.
        assert.equal(containerPort(container, 'http'), config.entrypoint.port);
        assert.equal(containerPort(container, 'admin'), config.admin.port);
        const traffic = objs.find((o) => o.kind === 'Service' && o.metadata.labels?.['app.kubernetes.io/component'] === 'entrypoint')!;
        const admin = objs.find((o) => o.kind === 'Service' && o.metadata.labels?.['app.kubernetes.io/component'] === 'admin')!;
        assert.ok(traffic && admin, 'a traffic and an admin Service');
        assert.equal(traffic.spec.ports.length, 1, 'the traffic Service exposes the entrypoint only');
        assert.equal(containerPort(container, traffic.spec.ports[0].targetPort), config.entrypoint.port);
        assert.equal(traffic.spec.ports[0].appProtocol, 'kubernetes.io/h2c');
        assert.equal(admin.spec.type, 'ClusterIP');
        assert.equal(admin.spec.ports.length, 1);
        assert.equal(containerPort(container, admin.spec.ports[0].targetPort), config.admin.port);
        assert.deepEqual(container.livenessProbe.httpGet.path, '/healthz');
        assert.deepEqual(container.readinessProbe.httpGet.path, '/readyz');
        assert.equal(containerPort(container, container.livenessProbe.httpGet.port), config.admin.port, 'liveness on the admin port');
        assert.equal(containerPort(container, container.readinessProbe.httpGet.port), config.admin.port, 'readiness on the admin port');
        for (const np of objs.filter((o) => o.kind === 'NetworkPolicy')) {
          const rules = np.spec.ingress as { ports: { port: number }[]; from?: { ipBlock?: unknown }[] }[];
          const adminRules = rules.filter((r) => r.ports.some((p) => p.port === config.admin.port));
          assert.ok(adminRules.length > 0 && adminRules.every((r) => r.from && r.from.length > 0 && r.from.every((p) => p.ipBlock === undefined)),
            'the admin port only from peers inside the cluster');
          assert.ok(rules.some((r) => r.ports.some((p) => p.port === config.entrypoint.port)), 'the entrypoint is allowed');
        }

        // Shutdown: the grace period outlasts the drain.
        const grace = pod.terminationGracePeriodSeconds as number;
        assert.ok(grace * 1000 > config.shutdown.drainDelayMs + config.shutdown.timeoutMs,
          `terminationGracePeriodSeconds ${grace} > drainDelay ${config.shutdown.drainDelayMs} ms + timeout ${config.shutdown.timeoutMs} ms`);
      });

      test('Deployment: replicas only without HPA, rolling update without unavailability, requests, probes, hardened, no config checksum', () => {
        const dep = one(objs, 'Deployment');
        const hpa = objs.find((o) => o.kind === 'HorizontalPodAutoscaler');
        const autoscaling = values['autoscaling']?.['enabled'] !== false;
        assert.equal(hpa !== undefined, autoscaling, 'an HPA exactly when autoscaling is on');
        if (hpa) {
          assert.equal(dep.spec.replicas, undefined, 'no replicas with the HPA on');
          assert.ok(hpa.spec.minReplicas >= 1 && hpa.spec.minReplicas <= hpa.spec.maxReplicas, 'min <= max');
          const cpu = hpa.spec.metrics[0];
          assert.deepEqual([cpu.type, cpu.resource.name, cpu.resource.target.type], ['Resource', 'cpu', 'Utilization']);
          const { scaleUp, scaleDown } = hpa.spec.behavior;
          assert.ok(scaleDown.stabilizationWindowSeconds > scaleUp.stabilizationWindowSeconds, 'scale up fast, scale down after a longer window');
          const extra = (values['autoscaling']?.['metrics'] as unknown[] | undefined) ?? [];
          assert.deepEqual(hpa.spec.metrics.slice(1), extra, 'extra metrics after the CPU one');
        } else {
          assert.equal(dep.spec.replicas, values['replicaCount']);
        }
        assert.equal(dep.spec.strategy.type, 'RollingUpdate');
        assert.equal(dep.spec.strategy.rollingUpdate.maxUnavailable, 0);
        const pod = dep.spec.template.spec;
        const c = pod.containers[0];
        assert.equal(pod.containers.length, 1);
        assert.ok(c.resources.requests.cpu && c.resources.requests.memory, 'CPU and memory requests (the HPA needs the CPU one)');
        assert.equal(c.args, undefined);
        if (values['config']?.['source'] === 'volume') assert.equal(c.command, undefined, 'the image CMD runs node directly');
        else {
          // The image's CMD plus the API source: still node itself, no npm or shell in between.
          assert.deepEqual(c.command.slice(0, 5), imageCmd(), 'the image\'s CMD, then the API source');
          assert.equal(c.command.length, 7);
        }
        assert.equal(pod.securityContext.runAsNonRoot ?? c.securityContext.runAsNonRoot, true);
        assert.notEqual(pod.securityContext.runAsUser ?? 0, 0);
        assert.equal(c.securityContext.readOnlyRootFilesystem, true);
        assert.equal(c.securityContext.allowPrivilegeEscalation, false);
        assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
        const annotations = Object.keys(dep.spec.template.metadata.annotations ?? {});
        assert.ok(!annotations.some((a) => /checksum/i.test(a)), 'no checksum annotation: the config hot-reloads, pods must not restart');
      });

      test('RBAC: in api mode a Role for the routes ConfigMap only (resourceNames) and events, bound to the pods\' ServiceAccount', () => {
        const dep = one(objs, 'Deployment');
        const pod = dep.spec.template.spec;
        const c = pod.containers[0];
        const api = apiSource(c);
        const roles = objs.filter((o) => o.kind === 'Role');
        const bindings = objs.filter((o) => o.kind === 'RoleBinding');
        assert.equal(objs.some((o) => o.kind === 'ClusterRole' || o.kind === 'ClusterRoleBinding'), false, 'no cluster-wide rights');
        if (api === undefined) {
          assert.deepEqual([roles.length, bindings.length], [0, 0], 'volume mode needs no API access');
          assert.equal(pod.automountServiceAccountToken, false);
          return;
        }
        const role = one(objs, 'Role') as Obj & { rules: { apiGroups: string[]; resources: string[]; resourceNames?: string[]; verbs: string[] }[] };
        assert.deepEqual(role.rules, [
          { apiGroups: [''], resources: ['configmaps'], resourceNames: [api.name], verbs: ['get', 'list', 'watch'] },
          { apiGroups: [''], resources: ['events'], verbs: ['create'] },
        ]);
        const binding = one(objs, 'RoleBinding') as Obj & { roleRef: { kind: string; name: string }; subjects: { kind: string; name: string; namespace: string }[] };
        assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: role.metadata.name });
        assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: pod.serviceAccountName, namespace: NAMESPACE }]);
        if (values['serviceAccount']?.['create'] !== false) one(objs, 'ServiceAccount', pod.serviceAccountName);
        assert.equal(pod.automountServiceAccountToken, true, 'the pods get the token they read the ConfigMap with');
        const podName = (c.env as { name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[]).find((e) => e.name === 'POD_NAME');
        assert.equal(podName?.valueFrom?.fieldRef?.fieldPath, 'metadata.name', 'POD_NAME names the replica in its Events');
      });

      test('ServiceMonitor and Grafana dashboard, when on, have the expected shape', () => {
        const sm = objs.find((o) => o.kind === 'ServiceMonitor');
        assert.equal(sm !== undefined, values['metrics']?.['serviceMonitor']?.['enabled'] === true);
        if (sm) {
          assert.equal(sm.apiVersion, 'monitoring.coreos.com/v1');
          const admin = objs.find((o) => o.kind === 'Service' && selects(sm.spec.selector.matchLabels, o.metadata.labels));
          assert.ok(admin, 'selects a Service');
          assert.equal(objs.filter((o) => o.kind === 'Service' && selects(sm.spec.selector.matchLabels, o.metadata.labels)).length, 1, 'selects the admin Service only');
          assert.deepEqual(sm.spec.namespaceSelector, { matchNames: [NAMESPACE] });
          assert.equal(sm.spec.endpoints.length, 1);
          const ep = sm.spec.endpoints[0];
          assert.equal(ep.port, admin.spec.ports[0].name);
          assert.equal(admin.metadata.labels?.['app.kubernetes.io/component'], 'admin');
          assert.equal(ep.path, '/metrics');
          for (const [k, v] of Object.entries((values['metrics']['serviceMonitor']['labels'] ?? {}) as Record<string, string>)) assert.equal(sm.metadata.labels?.[k], v);
        }
        const dash = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.labels?.['grafana_dashboard'] === '1');
        assert.equal(dash !== undefined, values['grafanaDashboard']?.['enabled'] === true);
        if (dash) {
          const file = JSON.parse(readFileSync(join(CHART, 'dashboards/switchyard.json'), 'utf8')) as unknown;
          assert.deepEqual(JSON.parse(dash.data!['switchyard.json']!), file);
        }
      });
    });
  }

  describe('refuses bad values', () => {
    // One valid route under every case, so each fails for its own reason only.
    const route = { name: 'a', hosts: ['a.example.com'], backends: [{ name: 'old', url: 'http://a', weight: 1 }] };
    const cases: [string, Record<string, unknown>, RegExp][] = [
      ['HPA min > max', { autoscaling: { minReplicas: 5, maxReplicas: 2 } }, /minReplicas \(5\) must not exceed autoscaling.maxReplicas \(2\)/],
      ['grace period not above drain + timeout', { terminationGracePeriodSeconds: 35 }, /must be greater than shutdown.drainDelaySeconds \+ shutdown.timeoutSeconds \(35\)/],
      ['the same port twice', { admin: { port: 8080 } }, /entrypoint.port and admin.port must differ/],
      ['a route with an unknown key (values schema)', { routes: [{ name: 'a', hosts: ['a.example.com'], backend: [] }] }, /values don't meet the specifications of the schema|additional properties|additionalProperties/i],
      ['a negative weight (values schema)', { routes: [{ name: 'a', hosts: ['a.example.com'], backends: [{ name: 'old', url: 'http://a', weight: -1 }] }] }, /minimum|must be >= 0/i],
      ['both PDB fields', { podDisruptionBudget: { minAvailable: 1 } }, /exactly one of maxUnavailable and minAvailable/],
      ['HPA without a CPU request', { resources: { requests: { cpu: null } } }, /needs resources.requests.cpu/],
      ['no routes: the upgrade that forgot -f my-routes.yaml', { routes: [] }, /values.routes is empty: every request would get 404/],
      ['a backend URL without http:// (values schema)', { routes: [{ ...route, backends: [{ name: 'old', url: 'a.default.svc:80', weight: 1 }] }] }, /must be http:\/\/host\[:port\]|pattern/],
      ['a host with a port (values schema)', { routes: [{ ...route, hosts: ['a.example.com:8080'] }] }, /must not include a port|pattern/],
      ['a route name with capitals (values schema)', { routes: [{ ...route, name: 'Billing' }] }, /lowercase|pattern/],
      ['removalGuard over 100% (values schema)', { removalGuard: { maxRemovedHostsPercent: 150 } }, /maximum|must be <= 100/],
    ];
    for (const [name, values, message] of cases) {
      test(name, async () => {
        const r = await templateWith({ routes: [route], ...values });
        assert.notEqual(r.code, 0, `helm template accepted ${JSON.stringify(values)}`);
        assert.match(r.stderr, message);
      });
    }

    test('rbac.allowConfigMapWrites adds patch and update on that one ConfigMap; rbac.create false renders no Role', async () => {
      const writes = await templateWith({ routes: [route], rbac: { allowConfigMapWrites: true } });
      assert.equal(writes.code, 0, writes.stderr);
      const role = parseAllDocuments(writes.stdout).map((d) => d.toJS() as Obj & { rules: { resourceNames?: string[]; verbs: string[] }[] }).find((o) => o?.kind === 'Role')!;
      assert.deepEqual(role.rules[0], { apiGroups: [''], resources: ['configmaps'], resourceNames: [`${RELEASE}-switchyard-routes`], verbs: ['get', 'list', 'watch', 'patch', 'update'] });
      const none = await templateWith({ routes: [route], rbac: { create: false } });
      assert.equal(none.code, 0, none.stderr);
      assert.doesNotMatch(none.stdout, /kind: Role/);
      const bad = await templateWith({ routes: [route], config: { source: 'files' } });
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /source/);
    });

    test('the Kubernetes schema validation is not vacuous: an unknown Deployment field fails it', async () => {
      const objs = await render(join(CI_DIR, 'defaults-values.yaml'));
      const dep = one(objs, 'Deployment');
      dep.spec.template.spec.containers[0].readinessProbe.httpGet.pth = '/readyz';
      const dir = mkdtempSync(join(tmpdir(), 'switchyard-kv-'));
      writeFileSync(join(dir, 'bad.yaml'), stringify(dep));
      const r = await run('python3', ['-m', 'kubernetes_validate', '--strict', '-k', KUBE_VERSION, join(dir, 'bad.yaml')]);
      rmSync(dir, { recursive: true, force: true });
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stdout, /'pth' was unexpected/);
    });
  });
});

// ---------------------------------------------------------------------------
// The pre-flight README shows next to `helm upgrade`: the rendered chart piped
// into `switchyard validate -`, which checks its ConfigMap as a pod would.

describe('pre-flight: helm template | switchyard validate -', { timeout: 60_000 }, () => {
  /** Writes `values`, runs the README's pipeline through bash (pipefail), returns its result. */
  async function preflight(values: unknown): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-preflight-'));
    const file = join(dir, 'my-routes.yaml');
    writeFileSync(file, stringify(values));
    const q = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
    const script = `${q(helm())} template ${RELEASE} ${q(CHART)} -n ${NAMESPACE} --kube-version ${KUBE_VERSION} -f ${q(file)} | ${q(process.execPath)} ${q(CLI)} validate -`;
    try {
      return await run('bash', ['-o', 'pipefail', '-c', script]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const billing = { name: 'billing', hosts: ['billing.migration.example.com'], backends: [{ name: 'old', url: 'http://billing.default.svc:80', weight: 90 }, { name: 'new', url: 'http://billing.eks.internal', weight: 10 }] };

  test('a good routes file passes', async () => {
    const r = await preflight({ routes: [billing] });
    assert.equal(r.code, 0, r.stderr);
  });

  test('a host routed twice renders (JSON Schema cannot express it) but the pre-flight refuses it, naming host and both places', async () => {
    const values = { routes: [billing, { ...billing, name: 'billing-v2' }] };
    assert.equal((await templateWith(values)).code, 0, 'helm template accepts the duplicate host');
    const r = await preflight(values);
    assert.equal(r.code, 1, `validate - accepted a duplicate host:\n${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /routes\[1\]\.hosts\[0\]: host "billing\.migration\.example\.com" with pathPrefix "\/" is already routed by route "billing"/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });

  test('a reserved route name and a backend URL with a port out of range are caught too', async () => {
    const r = await preflight({ routes: [{ ...billing, name: 'unmatched', backends: [{ name: 'old', url: 'http://billing.default.svc:70000', weight: 1 }] }] });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /route name "unmatched" is reserved/);
    assert.match(r.stderr, /routes\[0\]\.backends\[0\]\.url: "http:\/\/billing\.default\.svc:70000"/);
  });

  test('allowRouteRemoval=true renders and validates with no routes', async () => {
    const r = await preflight({ routes: [], allowRouteRemoval: true });
    assert.equal(r.code, 0, r.stderr);
  });
});

// ---------------------------------------------------------------------------
// The dashboard's queries, against what the router really exports.

function parseScrape(text: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s/.exec(line);
    assert.ok(m, `unparsable scrape line: ${line}`);
    const labels = out.get(m[1]!) ?? new Set<string>();
    for (const l of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) labels.add(l[1]!);
    out.set(m[1]!, labels);
  }
  return out;
}

/** Every PromQL expression of the dashboard: panel targets and template-variable queries. */
interface Dashboard {
  uid: string;
  panels: { type: string; title: string; repeat?: string; targets?: { expr: string }[] }[];
  templating: { list: { name: string; type: string; query?: unknown }[] };
}

function dashboardQueries(dash: Dashboard): string[] {
  const exprs = dash.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
  for (const v of dash.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query as { query: string }).query;
    exprs.push(q);
  }
  return exprs;
}

// Labels Prometheus itself attaches when it scrapes a pod through the ServiceMonitor.
const TARGET_LABELS = new Set(['namespace', 'pod', 'job', 'instance', 'service', 'container', 'endpoint']);

describe('Grafana dashboard', { timeout: 30_000 }, () => {
  let backend: Backend;
  let router: Router;
  let scraped: Map<string, Set<string>>;
  before(async () => {
    backend = await startBackend('old');
    // `new` refuses connections: one request to it makes the upstream error series exist too.
    router = await startRouter({
      routes: [{
        name: 'billing', hosts: ['billing.example.com'], backends: [{ name: 'old', url: backend.url, weight: 1 }, { name: 'new', url: `http://127.0.0.1:${await closedPort()}`, weight: 0 }],
        // A pending ramp and a mirror: their series exist too.
        mirror: { to: 'new' },
        ramp: { from: 'old', to: 'new', steps: [1, 100], interval: '1h' },
      }],
    });
    const get = (headers: Record<string, string>): Promise<number> => new Promise<number>((resolve, reject) => {
      http.get(`${router.url}/`, { headers: { host: 'billing.example.com', ...headers } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode!)); }).on('error', reject);
    });
    assert.equal(await get({}), 200);
    assert.equal(await get({ 'x-switchyard-backend': 'new' }), 502);
    // The mirror's copy leaves after the answer: wait for its count.
    let text = '';
    for (let i = 0; i < 100 && !text.includes('switchyard_mirror_requests_total{'); i++) {
      text = await (await fetch(`${router.adminUrl}/metrics`)).text();
      if (!text.includes('switchyard_mirror_requests_total{')) await new Promise((r) => setTimeout(r, 50));
    }
    scraped = parseScrape(text);
  });
  after(async () => {
    await router?.close();
    await backend?.close();
  });

  const dash = JSON.parse(readFileSync(join(CHART, 'dashboards/switchyard.json'), 'utf8')) as Dashboard;
  const queries = dashboardQueries(dash);

  test('has per-route panels repeated over the route variable, and the overview panels', () => {
    assert.ok(dash.templating.list.some((v) => v.name === 'route'));
    assert.ok(dash.panels.some((p) => p.type === 'row' && p.repeat === 'route'));
    const titles = dash.panels.map((p) => p.title).join('\n');
    for (const t of [/Traffic share/, /Request rate by backend/, /Error rate by backend/, /p99 latency by backend/, /Config reloads/, /Config versions/]) assert.match(titles, t);
    assert.ok(queries.length >= 10);
  });

  test('every metric its queries name exists in a real /metrics scrape, with the labels the queries use', () => {
    for (const q of queries) {
      // Metric names: whatever precedes a `{` selector, the first argument of
      // label_values(), and any switchyard_* token at all.
      const names = [...new Set([
        ...[...q.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{/g)].map((m) => m[1]!),
        ...[...q.matchAll(/label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)/g)].map((m) => m[1]!),
        ...[...q.matchAll(/\bswitchyard_[a-zA-Z0-9_:]*/g)].map((m) => m[0]),
      ])];
      assert.ok(names.length > 0, `a query with no selector: ${q}`);
      const labelsOfQuery = new Set<string>(TARGET_LABELS);
      for (const name of names) {
        assert.match(name, /^switchyard_/, `only switchyard's own metrics: ${q}`);
        const labels = scraped.get(name);
        assert.ok(labels, `metric ${name} is not in the scrape (query: ${q})`);
        for (const l of labels) labelsOfQuery.add(l);
      }
      for (const m of q.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}/g)) {
        const labels = scraped.get(m[1]!)!;
        for (const matcher of m[2]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)/g)) {
          assert.ok(TARGET_LABELS.has(matcher[1]!) || labels.has(matcher[1]!), `${m[1]} has no label ${matcher[1]} (query: ${q})`);
        }
      }
      for (const by of q.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)) {
        for (const label of by[1]!.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
          assert.ok(labelsOfQuery.has(label), `label ${label} (in "${by[0]}") is on none of the query's metrics: ${q}`);
        }
      }
      const labelValues = /label_values\([^,]+,\s*([a-zA-Z_][a-zA-Z0-9_]*)\)/.exec(q);
      if (labelValues) assert.ok(labelsOfQuery.has(labelValues[1]!), `label_values of a missing label: ${q}`);
    }
  });
});
