// The command line as a user meets it: every command run as a process on real
// files, its exit code and its exact output asserted. Usage errors, listener
// bind failures, `validate -` on rendered manifests, and the migration
// commands (weights, routes, status, ramp) editing files in place.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyEdits, type EditOp } from '../src/config/edit.ts';
import { updateRoute } from '../src/config/update.ts';
import { DEFAULT_WATCH } from '../src/config/watch.ts';
import { loadCredentials } from '../src/kube/credentials.ts';
import { createLogger } from '../src/observe/log.ts';
import { Switchyard } from '../src/server.ts';
import { CLI, closedPort, run, runCli, startRouter, type Router } from './helpers.ts';
import { createNamespace, startApiServer, type ApiServer } from './kube-apiserver.ts';

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'switchyard-cli-'));
}

/** Exactly one line on stderr, no stack trace, nothing on stdout. */
function assertOneLine(r: { stdout: string; stderr: string }, pattern: RegExp): void {
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^[^\n]+\n$/, `expected one line on stderr, got: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at |TypeError|ERR_/);
  assert.match(r.stderr, pattern);
}

const CONFIG = `# Billing moves to the new cluster.
version: 1
entrypoint:
  address: 127.0.0.1:0   # any free port
admin:
  address: 127.0.0.1:0
shutdown: { drainDelay: 0s, timeout: 5s }

routes:
  # First canary step.
  - name: billing
    hosts: [billing.example.com, "*.billing.example.com"]
    backends:
      - name: old
        url: http://127.0.0.1:9001
        weight: 90       # the old cluster
      - { name: new, url: "http://127.0.0.1:9002", weight: 10 }   # flow style kept

  - name: ledger
    hosts: [ledger.example.com]
    protocol: h2c
    backends:
      - name: old
        url: http://127.0.0.1:9101
        weight: 100
      - name: new
        url: http://127.0.0.1:9102
        weight: 0
`;

function configFile(text = CONFIG): string {
  const file = join(tmp(), 'switchyard.yaml');
  writeFileSync(file, text);
  return file;
}

describe('YAML edits keep every other byte (block and flow style)', () => {
  const text = `r:   # top
  block:
    a: 1    # one
    b: 2
  flow: { a: 1, b: 2 }   # flow
`;
  const cases: [string, EditOp[], string][] = [
    ['set in block', [{ op: 'set', path: ['r', 'block', 'b'], value: 3 }], text.replace('b: 2', 'b: 3')],
    ['add to block', [{ op: 'set', path: ['r', 'block', 'c'], value: 'x y' }], text.replace('    b: 2\n', '    b: 2\n    c: x y\n')],
    ['remove from block', [{ op: 'delete', path: ['r', 'block', 'a'] }], text.replace('    a: 1    # one\n', '')],
    ['add to flow', [{ op: 'set', path: ['r', 'flow', 'c'], value: { at: 't', n: 1 } }], text.replace('{ a: 1, b: 2 }', '{ a: 1, b: 2, c: { at: t, n: 1 } }')],
    ['remove first of flow', [{ op: 'delete', path: ['r', 'flow', 'a'] }], text.replace('{ a: 1, b: 2 }', '{ b: 2 }')],
    ['remove last of flow', [{ op: 'delete', path: ['r', 'flow', 'b'] }], text.replace('{ a: 1, b: 2 }', '{ a: 1 }')],
  ];
  for (const [name, ops, expected] of cases) {
    test(name, () => assert.deepEqual(applyEdits(text, ops), { text: expected, layoutKept: true }));
  }
});

describe('usage errors: one line on stderr, exit 2', () => {
  const cases: [string[], RegExp][] = [
    [['serve', '--conifg', 'x.yaml'], /^switchyard serve: unknown option --conifg\b/],
    [['serve', '--config'], /^switchyard serve: --config needs a value/],
    [['serve'], /^switchyard serve: --config .*required/],
    [['validate'], /^switchyard validate: SOURCE is required/],
    [['validate', '--strict', 'x.yaml'], /^switchyard validate: unknown option --strict/],
    [['weights', 'billing', 'old=x', '--config', 'x.yaml'], /^switchyard weights: "old=x": the weight must be a whole number >= 0/],
    [['weights', 'billing', '--config', 'x.yaml'], /^switchyard weights: nothing to change/],
    [['weights', 'billing', '--shift', 'new=10', '--config', 'x.yaml'], /^switchyard weights: --shift "new=10": expected BACKEND=\+N or BACKEND=-N/],
    [['ramp', 'go', 'billing', '--config', 'x.yaml'], /^switchyard ramp: unknown action "go"/],
    [['status', '--wait', 'soon', '--config', 'x.yaml'], /^switchyard status: --wait: "soon" is not a duration/],
    [['status', '--admin', 'nope', '--config', 'x.yaml'], /^switchyard status: --admin "nope": expected a URL/],
    [['routes', 'extra', '--config', 'x.yaml'], /^switchyard routes: unexpected argument "extra"/],
    [['frobnicate'], /^switchyard: unknown command "frobnicate"/],
  ];
  for (const [args, pattern] of cases) {
    test(args.join(' '), async () => {
      const r = await runCli(args);
      assertOneLine(r, pattern);
      assert.equal(r.code, 2);
    });
  }

  test('--help on every subcommand prints its usage on stdout, exit 0, and reads no file', async () => {
    for (const cmd of ['serve', 'demo', 'validate', 'weights', 'status', 'routes', 'ramp']) {
      const r = await runCli([cmd, '--help']);
      assert.equal(r.code, 0, cmd);
      assert.equal(r.stderr, '', cmd);
      assert.match(r.stdout, new RegExp(`^usage: switchyard ${cmd} `), cmd);
    }
    const top = await runCli(['--help']);
    assert.equal(top.code, 0);
    assert.match(top.stdout, /\n  weights ROUTE BACKEND=W \.\.\. --config SOURCE\n/);
  });

  test('--version prints the package version', async () => {
    const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    for (const args of [['--version'], ['-v']]) {
      const r = await runCli(args);
      assert.deepEqual(r, { code: 0, stdout: `switchyard ${version}\n`, stderr: '' });
    }
  });
});

describe('listeners', () => {
  const ROUTE = 'routes:\n  - { name: web, hosts: [web.example.com], backends: [{ name: old, url: "http://127.0.0.1:9001", weight: 1 }] }\n';
  let busy: Server;
  let port: number;
  before(async () => {
    busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    port = (busy.address() as AddressInfo).port;
  });
  after(() => new Promise<void>((resolve) => busy.close(() => resolve())));

  for (const listener of ['entrypoint', 'admin'] as const) {
    test(`a busy ${listener} port: one line naming the ${listener} listener, exit 1`, async () => {
      const other = listener === 'entrypoint' ? 'admin' : 'entrypoint';
      const file = configFile(`${listener}: { address: "127.0.0.1:${port}" }\n${other}: { address: "127.0.0.1:0" }\n${ROUTE}`);
      const r = await runCli(['serve', '--config', file]);
      assert.equal(r.code, 1);
      assert.doesNotMatch(r.stderr, /\n\s+at /);
      assert.match(r.stderr, new RegExp(`^switchyard serve: cannot listen on the ${listener} address 127\\.0\\.0\\.1:${port}: address already in use\\n$`, 'm'));
    });
  }

  test('validate refuses entrypoint == admin and two listeners on one port', async () => {
    const same = configFile(`entrypoint: { address: "127.0.0.1:8080" }\nadmin: { address: "127.0.0.1:8080" }\n${ROUTE}`);
    let r = await runCli(['validate', same]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `${same}:2:19: admin.address: "127.0.0.1:8080" is also the entrypoint's address (${same}:1:24); every listener needs its own port\n`);
    const wildcard = configFile(`entrypoint: { address: "0.0.0.0:8080" }\nadmin: { address: "127.0.0.1:8080" }\n${ROUTE}`);
    r = await runCli(['validate', wildcard]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /admin\.address: "127\.0\.0\.1:8080" shares port 8080 with the entrypoint's address "0\.0\.0\.0:8080"/);
    const apart = configFile(`entrypoint: { address: "127.0.0.1:8080" }\nadmin: { address: "127.0.0.1:9901" }\n${ROUTE}`);
    r = await runCli(['validate', apart]);
    assert.equal(r.code, 0, r.stderr);
  });
});

// What `helm template` prints for the chart (trimmed to the objects that matter here).
function rendered(routes: string): string {
  const indent = (text: string) => text.split('\n').map((l) => (l === '' ? l : `    ${l}`)).join('\n');
  return `---
# Source: switchyard/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: sy-switchyard
---
# Source: switchyard/templates/configmap.yaml
# Mounted as a directory (never with subPath, which would freeze it)
apiVersion: v1
kind: ConfigMap
metadata:
  name: sy-switchyard
  namespace: migration
data:
  listeners.yaml: |
    # Rendered by the switchyard chart from its values.
    version: 1
    admin:
      address: 0.0.0.0:9901
    entrypoint:
      address: 0.0.0.0:8080
    shutdown:
      drainDelay: 5s
      timeout: 30s
  routes.yaml: |
${indent(routes)}
---
# Source: switchyard/templates/grafana-dashboard.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: sy-switchyard-dashboard
data:
  switchyard.json: |-
    { "title": "switchyard" }
---
# Source: switchyard/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sy-switchyard
spec:
  replicas: 2
`;
}

describe('validate -', () => {
  const good = `version: 1
routes:
- name: billing
  hosts: [billing.example.com]
  backends:
  - {name: old, url: "http://old.svc:80", weight: 90}
  - {name: new, url: "http://new.svc:80", weight: 10}
`;

  test('reads helm template output on stdin: the ConfigMap keys are the files', async () => {
    const r = await run(process.execPath, [CLI, 'validate', '-'], rendered(good));
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^-: valid \(version [0-9a-f]{12}, 1 routes, files: ConfigMap\/sy-switchyard\/listeners\.yaml, ConfigMap\/sy-switchyard\/routes\.yaml\)\n$/);
  });

  test('names the ConfigMap key, line and field of what a pod would reject', async () => {
    const bad = good.replace('"http://new.svc:80"', 'new.svc:80').replace('hosts: [billing.example.com]', 'hosts: [billing.example.com, billing.example.com]');
    const r = await run(process.execPath, [CLI, 'validate', '-'], rendered(bad));
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    const lines = r.stderr.split('\n');
    assert.equal(lines.length, 3, r.stderr);
    assert.equal(lines[0], 'ConfigMap/sy-switchyard/routes.yaml:4:32: routes[0].hosts[1]: is listed twice (same as routes[0].hosts[0])');
    assert.match(lines[1]!, /^ConfigMap\/sy-switchyard\/routes\.yaml:7:22: routes\[0\]\.backends\[1\]\.url: .*http:\/\/host\[:port\]/);
  });

  test('kubectl get configmaps -o yaml: a List of ConfigMaps', async () => {
    const list = `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: { name: routes, namespace: migration }
  data:
    routes.yaml: |
${good.split('\n').map((l) => (l === '' ? l : `      ${l}`)).join('\n')}
`;
    const r = await run(process.execPath, [CLI, 'validate', '-'], list);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /files: ConfigMap\/routes\/routes\.yaml\)\n$/);
  });

  test('a plain config on stdin, and --configmap picking one ConfigMap', async () => {
    let r = await run(process.execPath, [CLI, 'validate', '-'], good);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /files: -\)/);
    r = await run(process.execPath, [CLI, 'validate', '-', '--configmap', 'other'], rendered(good));
    assert.equal(r.code, 1);
    assert.equal(r.stderr, '-:0:0: (root): no ConfigMap "other" with *.yaml keys on stdin (ConfigMaps: sy-switchyard, sy-switchyard-dashboard)\n');
  });
});

describe('weights on files', () => {
  test('changes only the weights: every other byte, comments included, stays', async () => {
    const file = configFile();
    chmodSync(file, 0o640);
    const r = await runCli(['weights', 'billing', 'old=75', 'new=25', '--config', file]);
    assert.equal(r.stderr, '');
    assert.equal(r.stdout, `billing: old 90→75, new 10→25 (${file})\n`);
    assert.equal(r.code, 0);
    assert.equal(readFileSync(file, 'utf8'), CONFIG
      .replace('weight: 90       # the old cluster', 'weight: 75       # the old cluster')
      .replace('"http://127.0.0.1:9002", weight: 10 }', '"http://127.0.0.1:9002", weight: 25 }'));
    assert.equal(statSync(file).mode & 0o777, 0o640);
  });

  test('--shift moves percentage points between the two backends', async () => {
    const file = configFile();
    let r = await runCli(['weights', 'billing', '--shift', 'new=+15', '--config', file]);
    assert.equal(r.stdout, `billing: old 90→75, new 10→25 (${file})\n`);
    r = await runCli(['weights', 'ledger', '--shift', 'old=-120', '--config', file]);
    assert.equal(r.stdout, `ledger: old 100→0, new 0→100 (${file})\n`);
    r = await runCli(['weights', 'ledger', '--shift', 'old=-1', '--config', file]);
    assert.equal(r.stdout, 'ledger: old=0, new=100 already; nothing written\n');
  });

  test('refuses an edit the router would reject, before writing: the file is unchanged', async () => {
    const file = configFile();
    const before = statSync(file).mtimeMs;
    let r = await runCli(['weights', 'billing', 'old=2000000', '--config', file]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, `${file}:16:17: routes[0].backends[0].weight: must be <= 1000000\nswitchyard weights: nothing written: the resulting config would be invalid\n`);
    r = await runCli(['weights', 'billing', 'newer=5', '--config', file]);
    assertOneLine(r, /^switchyard weights: route "billing" has no backend "newer" \(backends: old, new\)$/m);
    assert.equal(r.code, 1);
    r = await runCli(['weights', 'payroll', 'new=5', '--config', file]);
    assertOneLine(r, /^switchyard weights: route "payroll" is not defined in .* \(routes: billing, ledger\)$/m);
    assert.equal(readFileSync(file, 'utf8'), CONFIG);
    assert.equal(statSync(file).mtimeMs, before);
  });

  test('refuses to change values shared through a YAML anchor and its aliases', async () => {
    const shared = `routes:
  - name: a
    hosts: [a.example.com]
    backends: &pair
      - { name: old, url: "http://127.0.0.1:9001", weight: 90 }
      - { name: new, url: "http://127.0.0.1:9002", weight: 10 }
  - name: b
    hosts: [b.example.com]
    backends: *pair
`;
    const file = configFile(shared);
    let r = await runCli(['weights', 'a', 'new=50', '--config', file]);
    assertOneLine(r, /^switchyard weights: routes\[0\]\.backends is the anchor &pair, shared with its aliases \(\*pair\)/);
    assert.equal(r.code, 1);
    r = await runCli(['weights', 'b', 'new=50', '--config', file]);
    assertOneLine(r, /^switchyard weights: routes\[1\]\.backends is the alias \*pair, shared with every other use of &pair/);
    assert.equal(readFileSync(file, 'utf8'), shared);
  });

  test('concurrent weights processes lose no update', async () => {
    const file = configFile();
    const n = 8;
    const results = await Promise.all(Array.from({ length: n }, () => runCli(['weights', 'ledger', '--shift', 'new=+1', '--config', file])));
    for (const r of results) assert.equal(r.code, 0, r.stderr);
    assert.match(readFileSync(file, 'utf8'), new RegExp(`url: http://127.0.0.1:9101\\n        weight: ${100 - n}\\n[^]*url: http://127.0.0.1:9102\\n        weight: ${n}\\n`));
  });

  test('a directory source: the file defining the route is edited, the whole directory validated', async () => {
    const dir = tmp();
    const listeners = 'entrypoint: { address: "127.0.0.1:0" }\nadmin: { address: "127.0.0.1:0" }\n';
    writeFileSync(join(dir, 'listeners.yaml'), listeners);
    mkdirSync(join(dir, 'teams'));
    writeFileSync(join(dir, 'a-billing.yaml'), CONFIG.slice(CONFIG.indexOf('routes:'), CONFIG.indexOf('  - name: ledger')));
    writeFileSync(join(dir, 'b-ledger.yaml'), `routes:\n${CONFIG.slice(CONFIG.indexOf('  - name: ledger'))}`);
    let r = await runCli(['weights', 'ledger', 'old=50', 'new=50', '--config', dir]);
    assert.equal(r.stdout, `ledger: old 100→50, new 0→50 (${join(dir, 'b-ledger.yaml')})\n`);
    assert.match(readFileSync(join(dir, 'b-ledger.yaml'), 'utf8'), /weight: 50\n[^]*weight: 50\n/);
    assert.equal(readFileSync(join(dir, 'listeners.yaml'), 'utf8'), listeners);
    r = await runCli(['routes', '--config', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ROUTE +HOSTS +PREFIX +PROTOCOL +BACKEND +WEIGHT +SHARE +URL\n/);
    assert.match(r.stdout, /\nledger +ledger\.example\.com +\/ +h2c +old +50 +50% +http:\/\/127\.0\.0\.1:9101\n +new +50 +50% +http:\/\/127\.0\.0\.1:9102\n/);
    assert.match(r.stdout, /\n2 routes, version [0-9a-f]{12}\n$/);
  });
});

describe('status', () => {
  let router: Router;
  before(async () => {
    router = await startRouter({
      routes: [{ name: 'billing', hosts: ['billing.example.com'], backends: [
        { name: 'old', url: 'http://127.0.0.1:9001', weight: 100 },
        { name: 'new', url: 'http://127.0.0.1:9002', weight: 0 },
      ] }],
    });
  });
  after(() => router.close());

  test('shows the fleet board and converges on a change made with weights', async () => {
    let r = await runCli(['status', '--config', router.path, '--admin', router.adminUrl]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /\nbilling +override-only +old=100 new=0 +same\n/);
    assert.match(r.stdout, /\nconverged: all 1 replicas run version [0-9a-f]{12}\n$/);

    r = await runCli(['weights', 'billing', '--shift', 'new=+10', '--config', router.path]);
    assert.equal(r.code, 0, r.stderr);
    r = await runCli(['status', 'billing', '--config', router.path, '--admin', router.adminUrl, '--wait', '20s', '--json']);
    assert.equal(r.code, 0, r.stdout);
    const s = JSON.parse(r.stdout) as { converged: boolean; routes: { name: string; stage: string; weights: string }[]; replicas: { weights: Record<string, string> }[] };
    assert.deepEqual(s.routes, [{ name: 'billing', stage: 'ramping 10%', weights: 'old=90 new=10' }]);
    assert.deepEqual(s.replicas[0]!.weights, { billing: 'old=90 new=10' });
    assert.equal(s.converged, true);
  });

  test('an unreachable replica: not converged, exit 1', async () => {
    const port = await closedPort();
    const r = await runCli(['status', '--config', router.path, '--admin', router.adminUrl, '--admin', `http://127.0.0.1:${port}`]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, new RegExp(`\\nhttp://127\\.0\\.0\\.1:${port} +- +unreachable: ECONNREFUSED\\n`));
    assert.match(r.stdout, /\nnot converged: 1 of 2 replicas run version /);
  });
});

describe('ramp', () => {
  const RAMPED = `routes:
  - name: billing
    hosts: [billing.example.com]
    backends:
      - { name: old, url: "http://127.0.0.1:9001", weight: 100 }
      - { name: new, url: "http://127.0.0.1:9002", weight: 0 }
    ramp:
      from: old
      to: new
      steps: [1, 5, 25, 50, 100]   # percent on new
      interval: 5m
`;
  const TIME = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ';

  test('start, pause, resume, abort write the ramp block in place; refused where they do not apply', async () => {
    const file = configFile(RAMPED);
    let r = await runCli(['ramp', 'pause', 'billing', '--config', file]);
    assertOneLine(r, /^switchyard ramp: cannot pause the ramp of route "billing": it has not started \(ramp start\)$/m);
    assert.equal(r.code, 1);

    r = await runCli(['ramp', 'start', 'billing', '--config', file]);
    assert.equal(r.code, 0, r.stderr);
    let text = readFileSync(file, 'utf8');
    const startedAt = new RegExp(`      interval: 5m\\n      startedAt: (${TIME})\\n$`).exec(text)?.[1];
    assert.ok(startedAt !== undefined, text);
    assert.equal(text, `${RAMPED}      startedAt: ${startedAt}\n`);
    r = await runCli(['weights', 'billing', 'old=100', '--config', file]);
    assert.equal(r.stdout, 'billing: old=100, new=0 already; nothing written\nnote: route "billing" has a started ramp: its step splits the old+new weight (docs/ramps.md)\n');

    r = await runCli(['ramp', 'pause', 'billing', '--config', file, '--reason', 'db migration']);
    assert.equal(r.code, 0, r.stderr);
    text = readFileSync(file, 'utf8');
    const pausedAt = new RegExp(`pausedAt: (${TIME})\\n      pauseReason: db migration\\n$`).exec(text)?.[1];
    assert.ok(pausedAt !== undefined, text);

    r = await runCli(['ramp', 'resume', 'billing', '--config', file]);
    assert.equal(r.code, 0, r.stderr);
    text = readFileSync(file, 'utf8');
    const resumedStart = new RegExp(`      interval: 5m\\n      startedAt: (${TIME})\\n$`).exec(text)?.[1];
    assert.ok(resumedStart !== undefined, text);
    // Moved on by the time spent paused (whole seconds): the step keeps the time it had left.
    assert.ok(Date.parse(resumedStart) >= Date.parse(startedAt), `${resumedStart} >= ${startedAt}`);

    r = await runCli(['ramp', 'abort', 'billing', '--config', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(readFileSync(file, 'utf8'), new RegExp(`startedAt: ${resumedStart}\\n      halted: \\{ at: ${TIME}, reason: aborted \\}\\n$`));
    r = await runCli(['status', '--config', file, '--admin', `http://127.0.0.1:${await closedPort()}`]);
    assert.match(r.stdout, /\nbilling +halted +old=100 new=0 +-\n/);
    r = await runCli(['ramp', 'resume', 'billing', '--config', file]);
    assertOneLine(r, /^switchyard ramp: cannot resume the ramp of route "billing": it is halted \(ramp start begins again from step 0\)$/m);
  });

  test('refuses a route without a ramp block, file unchanged', async () => {
    const file = configFile();
    const r = await runCli(['ramp', 'start', 'billing', '--config', file]);
    assertOneLine(r, /^switchyard ramp: route "billing" has no ramp block/);
    assert.equal(r.code, 1);
    assert.equal(readFileSync(file, 'utf8'), CONFIG);
  });
});

describe('against a real kube-apiserver (kubernetes://NAMESPACE/CONFIGMAP)', () => {
  let api: ApiServer;
  let namespace: string;
  let listeners: string;
  const ROUTES = CONFIG.slice(CONFIG.indexOf('routes:'));
  const env = (): Record<string, string> => ({ KUBECONFIG: api.adminKubeconfig });

  before(async () => {
    api = await startApiServer();
    namespace = await createNamespace(api.admin, 'cli');
    await api.admin.createConfigMap(namespace, { metadata: { name: 'routes' }, data: { 'routes.yaml': ROUTES, 'notes.txt': 'not config' } });
    listeners = configFile('# listeners stay in a file\nentrypoint: { address: "127.0.0.1:0" }\nadmin: { address: "127.0.0.1:0" }\n');
  });
  after(() => api?.stop());

  async function routesYaml(): Promise<{ text: string; rv: string }> {
    const cm = await api.admin.getConfigMap(namespace, 'routes');
    return { text: cm.data!['routes.yaml']!, rv: cm.metadata.resourceVersion! };
  }

  test('weights patches the key in place: comments kept, an invalid edit refused before writing', async () => {
    const source = `kubernetes://${namespace}/routes`;
    let r = await runCli(['weights', 'billing', 'old=75', 'new=25', '--config', listeners, '--config', source], env());
    assert.equal(r.stderr, '');
    assert.equal(r.stdout, `billing: old 90→75, new 10→25 (${source}/routes.yaml)\n`);
    const edited = await routesYaml();
    assert.equal(edited.text, ROUTES
      .replace('weight: 90       # the old cluster', 'weight: 75       # the old cluster')
      .replace('"http://127.0.0.1:9002", weight: 10 }', '"http://127.0.0.1:9002", weight: 25 }'));

    r = await runCli(['weights', 'billing', 'new=2000000', '--config', listeners, '--config', source], env());
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^${source}/routes.yaml:\\d+:\\d+: routes\\[0\\]\\.backends\\[1\\]\\.weight: must be <= 1000000\\n`));
    assert.deepEqual(await routesYaml(), edited);

    r = await runCli(['routes', '--config', listeners, '--config', source], env());
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\nbilling .* old +75 +75% /);
    r = await runCli(['validate', listeners, source], env());
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`files: ${listeners}, ${source}/routes.yaml\\)`));
  });

  test('concurrent writers all land: a 409 Conflict is read again and the change made again', async () => {
    const source = `kubernetes://${namespace}/routes`;
    const before = await routesYaml();
    const start = Number(/url: http:\/\/127\.0\.0\.1:9102\n {8}weight: (\d+)/.exec(before.text)![1]);
    // In one process, the ConfigMap alone (a file source would be locked for the whole edit, which
    // queues the writers): every read goes out before any patch, so patches meet a newer resourceVersion.
    process.env['KUBECONFIG'] = api.adminKubeconfig;
    const n = 6;
    const results = await Promise.all(Array.from({ length: n }, () => updateRoute([source], {
      route: 'ledger',
      plan: (route) => [{ op: 'set', path: ['backends', 1, 'weight'], value: route.backends![1]!.weight + 1 }],
    })));
    delete process.env['KUBECONFIG'];
    assert.ok(results.reduce((sum, r) => sum + r.attempts - 1, 0) > 0, 'some writer met a conflict');
    // And as processes.
    const cli = await Promise.all(Array.from({ length: 3 }, () => runCli(['weights', 'ledger', '--shift', 'new=+1', '--config', listeners, '--config', source], env())));
    for (const r of cli) assert.equal(r.code, 0, r.stderr);
    const after = await routesYaml();
    assert.match(after.text, new RegExp(`url: http://127\\.0\\.0\\.1:9102\\n {8}weight: ${start + n + 3}\\n`));
    assert.ok(after.text.includes('  # First canary step.\n'), 'comments kept');
  });

  test('status reaches replicas by --admin, or lists the pods by label and asks through the pod proxy', async () => {
    const source = `kubernetes://${namespace}/routes`;
    const sy = await Switchyard.start([listeners, source], createLogger('silent'), DEFAULT_WATCH, {
      kubernetes: { credentials: await loadCredentials({ kubeconfig: api.adminKubeconfig }) },
    });
    try {
      const admin = `http://127.0.0.1:${sy.addresses.admin.port}`;
      let r = await runCli(['weights', 'billing', 'old=60', 'new=40', '--config', listeners, '--config', source], env());
      assert.equal(r.code, 0, r.stderr);
      r = await runCli(['status', '--config', listeners, '--config', source, '--admin', admin, '--wait', '20s'], env());
      assert.equal(r.code, 0, r.stdout);
      assert.match(r.stdout, /\nbilling +ramping 40% +old=60 new=40 +same\n/);
      assert.match(r.stdout, /\nconverged: all 1 replicas run version [0-9a-f]{12}\n$/);

      // Pods are stored but never run here (no kubelet): the proxy has nowhere to go, and status says so.
      await api.admin.request('POST', `/api/v1/namespaces/${namespace}/serviceaccounts`, { body: { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default' } } });
      await api.admin.request('POST', `/api/v1/namespaces/${namespace}/pods`, { body: {
        apiVersion: 'v1', kind: 'Pod',
        metadata: { name: 'sy-0', labels: { 'app.kubernetes.io/name': 'switchyard' } },
        spec: { automountServiceAccountToken: false, containers: [{ name: 'switchyard', image: 'switchyard:test' }] },
      } });
      r = await runCli(['status', '--config', listeners, '--config', source], env());
      assert.equal(r.code, 1);
      assert.match(r.stdout, /\npod\/sy-0 +- +unreachable: HTTP \d{3}\n/);
      r = await runCli(['status', '--config', listeners, '--config', source, '--selector', 'app=none'], env());
      assert.equal(r.code, 1);
      assert.equal(r.stderr, `switchyard status: no pods match app=none in namespace ${namespace} (--selector, --namespace)\n`);
    } finally {
      await sy.shutdown();
    }
  });
});

describe('three replicas on one ConfigMap, moved with weights and confirmed with status', () => {
  let api: ApiServer;
  before(async () => { api = await startApiServer(); });
  after(() => api?.stop());

  test('every change made with switchyard weights is in force on all three replicas, and status says so', async () => {
    const namespace = await createNamespace(api.admin, 'fleet');
    const source = `kubernetes://${namespace}/routes`;
    await api.admin.createConfigMap(namespace, { metadata: { name: 'routes' }, data: { 'routes.yaml': CONFIG.slice(CONFIG.indexOf('routes:')) } });
    const listeners = configFile('entrypoint: { address: "127.0.0.1:0" }\nadmin: { address: "127.0.0.1:0" }\n');
    const credentials = await loadCredentials({ kubeconfig: api.adminKubeconfig });
    const replicas = await Promise.all([0, 1, 2].map(() => Switchyard.start([listeners, source], createLogger('silent'), DEFAULT_WATCH, { kubernetes: { credentials } })));
    try {
      const admins = replicas.flatMap((sy) => ['--admin', `http://127.0.0.1:${sy.addresses.admin.port}`]);
      const env = { KUBECONFIG: api.adminKubeconfig };
      for (let step = 1; step <= 4; step++) {
        const w = await runCli(['weights', 'ledger', '--shift', 'new=+25', '--config', listeners, '--config', source], env);
        assert.equal(w.code, 0, w.stderr);
        const r = await runCli(['status', 'ledger', '--config', listeners, '--config', source, ...admins, '--wait', '20s'], env);
        assert.equal(r.code, 0, r.stdout);
        const stage = step === 4 ? 'new only' : `ramping ${step * 25}%`;
        assert.match(r.stdout, new RegExp(`\\nledger +${stage} +old=${100 - step * 25} new=${step * 25} +same +same +same\\n`));
        assert.match(r.stdout, /\nconverged: all 3 replicas run version [0-9a-f]{12}\n$/);
      }
    } finally {
      await Promise.all(replicas.map((sy) => sy.shutdown()));
    }
  });
});
