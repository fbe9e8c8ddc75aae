import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { BlockList } from 'node:net';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { loadConfig, loadConfigSources } from '../src/config/load.ts';
import { ConfigError, formatIssue } from '../src/config/model.ts';
import { parseCidr, parseDuration } from '../src/config/parse.ts';
import type { ConfigIssue, EffectiveConfig } from '../src/config/model.ts';
import schema from '../config/switchyard.schema.json' with { type: 'json' };
import { validateConfigText } from './helpers.ts';

const EXAMPLE = new URL('../config/example.yaml', import.meta.url).pathname;

// Joining lines keeps the line numbers asserted below easy to count.
const lines = (...ls: string[]): string => `${ls.join('\n')}\n`;

/** A valid route, as YAML lines, for files that need one. */
function route(name: string, host: string, prefix = '/'): string[] {
  return [
    `  - name: ${name}`,
    `    hosts: ["${host}"]`,
    `    pathPrefix: ${prefix}`,
    '    backends:',
    '      - name: old',
    '        url: http://old.internal:80',
    '        weight: 1',
  ];
}

const tmpDirs: string[] = [];
after(async () => {
  await Promise.all(tmpDirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-config-'));
  tmpDirs.push(dir);
  return dir;
}

/** Writes files into a fresh temp dir and returns it. */
async function dirWith(files: Record<string, string>): Promise<string> {
  const dir = await tempDir();
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return dir;
}

/** The issues `switchyard validate PATH` reports (it throws the ConfigError of loadConfigSources). */
async function issuesOf(path: string): Promise<readonly ConfigIssue[]> {
  const err = await loadConfig(path).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof ConfigError, 'expected the config to be rejected');
  return err.issues;
}

/** The one issue whose path is `path`. */
function issueAt(issues: readonly ConfigIssue[], path: string): ConfigIssue {
  const found = issues.filter((i) => i.path === path);
  assert.equal(found.length, 1, `expected one issue at ${path}, got:\n${issues.map(formatIssue).join('\n')}`);
  return found[0]!;
}

describe('loading', () => {
  test('a route\'s fingerprint changes with its resilience settings too', () => {
    const fingerprint = (...extra: string[]) => loadConfigSources([{ file: 'f.yaml', text: lines('routes:', ...route('a', 'a.com'), ...extra) }]).fingerprints[0]!;
    const base = fingerprint();
    assert.equal(fingerprint('    retries: { attempts: 2 }'), base, 'writing out a default changes nothing');
    const variants = [
      ['    retries: { attempts: 3 }'],
      ['    retries: { budget: 50 }'],
      ['    timeouts: { idle: 5s }'],
      ['    timeouts: { overallIncludesStreams: true }'],
      ['    healthCheck: { http: {} }'],
      ['    healthCheck: { grpc: {} }'],
      ['    healthCheck: { http: { path: /ready } }'],
      ['    outlierDetection: { consecutiveFailures: 0 }'],
      ['    allUnhealthy: fail'],
      ['    sticky: { header: x-user }'],
      ['    sticky: { cookie: x-user }'],
      ['    maxBodyBytes: 1024'],
    ].map((extra) => fingerprint(...extra));
    assert.equal(new Set([base, ...variants]).size, variants.length + 1);
  });

  test('a route\'s fingerprint changes with its config and only with it', () => {
    const load = (w: number) => loadConfigSources([{ file: 'a.yaml', text: lines('routes:', ...route('a', 'a.com'), ...route('b', 'b.com').map((l) => l.replace('weight: 1', `weight: ${w}`))) }]).fingerprints;
    const [a1, b1] = load(1);
    const [a2, b2] = load(2);
    assert.equal(a1, a2);
    assert.notEqual(b1, b2);
  });

  test('a minimal file loads with every default filled in', () => {
    const loaded = loadConfigSources([{ file: 'min.yaml', text: lines('routes:', ...route('billing', 'Billing.Example.COM')) }]);
    const { config } = loaded;
    assert.deepEqual(config.entrypoint, {
      host: '0.0.0.0',
      port: 8080,
      maxConnectionAgeMs: 300_000,
      maxConnectionAgeGraceMs: 30_000,
      maxConnections: 10_000,
      maxHeaderBytes: 16_384,
      maxUrlLength: 8_192,
      headersTimeoutMs: 10_000,
      idleTimeoutMs: 65_000,
      trustedProxies: [],
      requestIdHeader: 'x-request-id',
    });
    assert.deepEqual(config.admin, { host: '0.0.0.0', port: 9901 });
    assert.deepEqual(config.shutdown, { drainDelayMs: 5_000, timeoutMs: 30_000 });
    assert.deepEqual(config.routes, [{
      name: 'billing',
      hosts: ['billing.example.com'],
      pathPrefix: '/',
      protocol: 'http',
      timeouts: { connect: '5s', response: '30s', idle: '60s', overall: '0s', overallIncludesStreams: false },
      retries: { attempts: 2, budget: 20, minRetriesPerSecond: 10 },
      outlierDetection: { consecutiveFailures: 5, ejectionTime: '30s', maxEjectionTime: '5m' },
      allUnhealthy: 'serve',
      maxBodyBytes: 0,
      backends: [{ name: 'old', url: 'http://old.internal:80', weight: 1 }],
    }]);
    assert.equal(config.routes[0], loaded.effective.routes[0], 'one object: the route as configured');
    assert.match(loaded.fingerprints[0]!, /^[0-9a-f]{16}$/);
    assert.deepEqual(loaded.files, ['min.yaml']);
    assert.match(loaded.version, /^[0-9a-f]{12}$/);
  });

  test('the schema documents the same defaults the loader applies', () => {
    const { effective } = loadConfigSources([{ file: 'empty.yaml', text: '' }], { guard: false });
    const e = effective as EffectiveConfig;
    const p = schema.properties;
    // Each field's schema "default", keyed like the YAML.
    const defaultsOf = (properties: Record<string, object>) =>
      Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, (v as { default?: unknown }).default]));
    assert.deepEqual(e.entrypoint, defaultsOf(p.entrypoint.properties));
    assert.deepEqual(e.admin, { address: p.admin.properties.address.default });
    assert.deepEqual(e.shutdown, {
      drainDelay: p.shutdown.properties.drainDelay.default,
      timeout: p.shutdown.properties.timeout.default,
    });
    assert.equal(e.allowRouteRemoval, p.allowRouteRemoval.default);
    assert.deepEqual(e.removalGuard, defaultsOf(p.removalGuard.properties));
    const r = p.routes.items.properties;
    const { effective: withRoute } = loadConfigSources([{ file: 'r.yaml', text: lines('routes:', ...route('a', 'a.com')) }]);
    const effRoute = (withRoute as EffectiveConfig).routes[0]!;
    assert.equal(effRoute.pathPrefix, r.pathPrefix.default);
    assert.equal(effRoute.protocol, r.protocol.default);
    assert.deepEqual(effRoute.timeouts, defaultsOf(r.timeouts.properties));
    assert.deepEqual(effRoute.retries, defaultsOf(r.retries.properties));
    assert.deepEqual(effRoute.outlierDetection, defaultsOf(r.outlierDetection.properties));
    assert.equal(effRoute.allUnhealthy, r.allUnhealthy.default);
    assert.equal(effRoute.maxBodyBytes, r.maxBodyBytes.default);
    assert.equal(effRoute.healthCheck, undefined);
    assert.equal(effRoute.sticky, undefined);

    const hc = r.healthCheck.properties;
    const withChecks = (probe: string) => (loadConfigSources([{ file: 'h.yaml', text: lines('routes:', ...route('a', 'a.com'), '    healthCheck:', `      ${probe}:`) }]).effective as EffectiveConfig).routes[0]!.healthCheck;
    const { http: _http, grpc: _grpc, ...timing } = defaultsOf(hc);
    assert.deepEqual(withChecks('http'), { http: defaultsOf(hc.http.properties), ...timing });
    assert.deepEqual(withChecks('grpc'), { grpc: defaultsOf(hc.grpc.properties), ...timing });
  });

  test('the version hash ignores key order but not values, and effective reloads as itself', () => {
    const a = lines('admin: { address: ":9000" }', 'shutdown: { timeout: 10s, drainDelay: 1s }');
    const b = lines('shutdown: { drainDelay: 1s, timeout: 10s }', 'admin: { address: ":9000" }');
    const c = lines('shutdown: { drainDelay: 1s, timeout: 11s }', 'admin: { address: ":9000" }');
    const version = (text: string) => loadConfigSources([{ file: 'x.yaml', text }], { guard: false }).version;
    assert.equal(version(a), version(b));
    assert.notEqual(version(a), version(c));

    const example = loadConfigSources([{ file: 'x.yaml', text: a + lines('routes:', ...route('r', 'r.com')) }]);
    assert.equal(version(stringify(example.effective)), example.version);
  });

  test('an empty directory has no routes: refused unless allowRouteRemoval says so (the removal guard)', async () => {
    const dir = await tempDir();
    await assert.rejects(loadConfig(dir), /no routes: every request would get 404 SY_NO_ROUTE; add routes, or set allowRouteRemoval: true/);
    await writeFile(join(dir, 'allow.yaml'), 'allowRouteRemoval: true\n');
    const loaded = await loadConfig(dir);
    assert.deepEqual(loaded.config.routes, []);
    assert.deepEqual(loaded.files, [join(dir, 'allow.yaml')]);
    assert.equal(loaded.config.entrypoint.port, 8080);
  });

  test('a kubelet ConfigMap directory is merged, each file read once through its symlink', async () => {
    const dir = await tempDir();
    const generation = '..2026_11_26_10_00_00.123';
    await mkdir(join(dir, generation));
    await writeFile(join(dir, generation, 'ledger.yaml'), lines('routes:', ...route('ledger', 'ledger.example.com')));
    await writeFile(join(dir, generation, 'billing.yaml'), lines('entrypoint:', '  address: ":8081"', 'routes:', ...route('billing', 'billing.example.com')));
    await writeFile(join(dir, generation, 'notes.txt'), 'not config');
    await symlink(generation, join(dir, '..data'));
    for (const name of ['ledger.yaml', 'billing.yaml', 'notes.txt']) await symlink(join('..data', name), join(dir, name));

    const loaded = await loadConfig(dir);
    assert.deepEqual(loaded.files, [join(dir, 'billing.yaml'), join(dir, 'ledger.yaml')]);
    assert.deepEqual(loaded.config.routes.map((r) => r.name), ['billing', 'ledger']);
    assert.equal(loaded.config.entrypoint.port, 8081);
  });

  test('the example config loads', async () => {
    const { config } = await loadConfig(EXAMPLE);
    assert.deepEqual([config.entrypoint.host, config.entrypoint.port], ['127.0.0.1', 8080]);
    assert.deepEqual([config.admin.host, config.admin.port], ['127.0.0.1', 9901]);
    const [billing, ledger] = config.routes;
    assert.deepEqual(billing!.backends.map((b) => [b.name, b.weight, b.hostHeader]), [
      ['old', 90, undefined],
      ['new', 10, 'billing.new-cluster.example.com'],
    ]);
    assert.ok(billing!.hosts.includes('*.billing.example.com'));
    assert.equal(ledger!.protocol, 'h2c');
    assert.deepEqual(ledger!.backends.map((b) => b.weight), [100, 0]);
  });

  test('a missing path is a ConfigError naming it', async () => {
    const missing = join(await tempDir(), 'nope.yaml');
    await assert.rejects(loadConfig(missing), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.issues[0]!.file, missing);
      assert.match(err.message, /ENOENT/);
      return true;
    });
  });
});

describe('issues carry file, line and field path', () => {
  test('an unknown key names file, line, column and field, and suggests the real one', async () => {
    const dir = await dirWith({
      'billing.yaml': lines(
        'routes:',                           // 1
        '  - name: billing',                 // 2
        '    hosts: [billing.example.com]',  // 3
        '    backends:',                     // 4
        '      - name: old',                 // 5
        '        url: http://old:80',        // 6
        '        weight: 90',                // 7
        '      - name: new',                 // 8
        '        url: http://new:80',        // 9
        '        weigth: 10',                // 10
      ),
    });
    const issues = await issuesOf(dir);
    const unknown = issueAt(issues, 'routes[0].backends[1].weigth');
    assert.deepEqual(unknown, {
      file: join(dir, 'billing.yaml'),
      line: 10,
      column: 9,
      path: 'routes[0].backends[1].weigth',
      message: 'unknown field "weigth" (did you mean "weight"?)',
    });
    assert.match(formatIssue(unknown), /billing\.yaml:10:9: routes\[0\]\.backends\[1\]\.weigth: unknown field "weigth"/);
    // The misspelt field also leaves the real one missing; that issue points at the backend.
    assert.equal(issueAt(issues, 'routes[0].backends[1].weight').line, 8);
  });

  test('a YAML syntax error has its line', () => {
    const issues = validateConfigText(lines('routes:', '  - name: a', '    hosts: [a.com', '    backends: []'), 'broken.yaml');
    assert.ok(issues.length > 0);
    assert.equal(issues[0]!.file, 'broken.yaml');
    assert.ok(issues[0]!.line >= 3, `line ${issues[0]!.line}`);
  });

  test('a duplicate key is a YAML error at the second key', () => {
    const issues = validateConfigText(lines('admin:', '  address: ":1"', 'admin:', '  address: ":2"'), 'dup.yaml');
    assert.equal(issues.length, 1);
    assert.equal(issues[0]!.line, 3);
    assert.match(issues[0]!.message, /unique/i);
  });

  test('issues from every file are collected and sorted', async () => {
    const dir = await dirWith({
      'a.yaml': lines('shutdown:', '  timeout: soon'),
      'b.yaml': lines('admin:', '  adress: ":9000"'),
    });
    const issues = await issuesOf(dir);
    assert.deepEqual(issues.map((i) => [i.file, i.line, i.path]), [
      [join(dir, 'a.yaml'), 2, 'shutdown.timeout'],
      [join(dir, 'b.yaml'), 2, 'admin.adress'],
    ]);
  });

  test('a wrong version or protocol is named with the allowed values', () => {
    const issues = validateConfigText(lines('version: 2', 'routes:', ...route('a', 'a.com'), '    protocol: grpc'), 'v.yaml');
    assert.equal(issueAt(issues, 'version').message, 'must be 1');
    assert.equal(issueAt(issues, 'routes[0].protocol').message, 'must be one of "http", "h2c"');
  });
});

describe('semantic checks', () => {
  test('a route name defined in two files names both', async () => {
    const dir = await dirWith({
      'a.yaml': lines('routes:', ...route('billing', 'a.example.com')),
      'b.yaml': lines('# second file', 'routes:', ...route('billing', 'b.example.com')),
    });
    const issue = issueAt(await issuesOf(dir), 'routes[0].name');
    assert.equal(issue.file, join(dir, 'b.yaml'));
    assert.equal(issue.line, 3);
    assert.ok(issue.message.includes(`${join(dir, 'a.yaml')}:2:`), issue.message);
  });

  test('the same host and pathPrefix in two routes is an error, compared case-insensitively', () => {
    const issues = validateConfigText(lines(
      'routes:',
      ...route('a', 'api.example.com'),
      ...route('b', 'API.example.com'),
      ...route('c', 'api.example.com', '/v2'),
    ), 'hp.yaml');
    assert.equal(issues.length, 1, issues.map(formatIssue).join('\n'));
    assert.equal(issues[0]!.path, 'routes[1].hosts[0]');
    assert.match(issues[0]!.message, /already routed by route "a" at hp\.yaml:3:/);
  });

  test('backend names are unique within a route, not across routes', () => {
    const twoOld = lines('routes:', ...route('a', 'a.com'), '      - name: old', '        url: http://x', '        weight: 0', ...route('b', 'b.com'));
    const issues = validateConfigText(twoOld, 'dup.yaml');
    assert.equal(issues.length, 1);
    assert.equal(issues[0]!.path, 'routes[0].backends[1].name');
    assert.match(issues[0]!.message, /duplicate backend name "old"/);
  });

  test('route "unmatched" and backend "none" are reserved', () => {
    const text = lines('routes:', ...route('unmatched', 'a.com'), ...route('b', 'b.com').map((l) => l.replace('name: old', 'name: none')));
    const issues = validateConfigText(text, 'reserved.yaml');
    assert.match(issueAt(issues, 'routes[0].name').message, /reserved/);
    assert.match(issueAt(issues, 'routes[1].backends[0].name').message, /reserved/);
    assert.equal(issues.length, 2);
  });

  test('names must be lowercase letters, digits and -', () => {
    const issues = validateConfigText(lines('routes:', ...route('Billing_1', 'a.com')), 'n.yaml');
    assert.equal(issueAt(issues, 'routes[0].name').message, 'must contain only lowercase letters, digits and "-"');
  });

  test('entrypoint defined in two files names both', async () => {
    const dir = await dirWith({
      'a.yaml': lines('entrypoint:', '  address: ":8080"'),
      'b.yaml': lines('routes: []', 'entrypoint:', '  address: ":8081"'),
    });
    const issues = await issuesOf(dir);
    assert.equal(issues.length, 1);
    const issue = issueAt(issues, 'entrypoint');
    assert.deepEqual([issue.file, issue.line, issue.column], [join(dir, 'b.yaml'), 2, 1]);
    assert.ok(issue.message.includes(`${join(dir, 'a.yaml')}:1:1`), issue.message);
  });

  test('bad durations are rejected, good ones parse', () => {
    const issues = validateConfigText(lines('entrypoint:', '  maxConnectionAge: 5 minutes', '  maxConnectionAgeGrace: -1s', 'shutdown:', '  timeout: 30'), 'd.yaml');
    assert.match(issueAt(issues, 'entrypoint.maxConnectionAge').message, /must be a duration/);
    assert.match(issueAt(issues, 'entrypoint.maxConnectionAgeGrace').message, /must be a duration/);
    assert.equal(issueAt(issues, 'shutdown.timeout').line, 5);

    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('1.5s'), 1_500);
    assert.equal(parseDuration('2m'), 120_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration('0s'), 0);
    assert.throws(() => parseDuration('5'), /not a duration/);
    assert.throws(() => parseDuration('1d'), /not a duration/);
  });

  test('per-route timeouts override the defaults', () => {
    const text = lines('routes:', ...route('a', 'a.com'), '    timeouts:', '      connect: 250ms');
    const { config } = loadConfigSources([{ file: 't.yaml', text }]);
    assert.deepEqual(config.routes[0]!.timeouts, { connect: '250ms', response: '30s', idle: '60s', overall: '0s', overallIncludesStreams: false });
  });

  test('backend URLs must be http://host[:port] and are normalised', () => {
    const withUrl = (url: string) => lines('routes:', ...route('a', 'a.com').map((l) => l.replace('http://old.internal:80', url)));
    for (const bad of ['https://x', 'http://x/api', 'http://x?y=1', 'http://u:p@x', 'http://x:0', 'http://x:70000', 'x:80', 'http:x', 'http://']) {
      const issues = validateConfigText(withUrl(bad), 'u.yaml');
      assert.equal(issueAt(issues, 'routes[0].backends[0].url').line, 7, bad);
    }
    const url = (u: string) => loadConfigSources([{ file: 'u.yaml', text: withUrl(u) }]).config.routes[0]!.backends[0]!.url;
    assert.equal(url('http://Old.Internal'), 'http://old.internal:80');
    assert.equal(url('http://10.0.0.1:8080/'), 'http://10.0.0.1:8080');
    assert.equal(url('http://[::1]:9000'), 'http://[::1]:9000');
  });

  test('weights must be integers >= 0', () => {
    const withWeight = (w: string) => lines('routes:', ...route('a', 'a.com').map((l) => l.replace('weight: 1', `weight: ${w}`)));
    assert.equal(issueAt(validateConfigText(withWeight('-1'), 'w.yaml'), 'routes[0].backends[0].weight').message, 'must be >= 0');
    assert.equal(issueAt(validateConfigText(withWeight('1.5'), 'w.yaml'), 'routes[0].backends[0].weight').message, 'must be integer');
    assert.equal(issueAt(validateConfigText(withWeight('"10"'), 'w.yaml'), 'routes[0].backends[0].weight').line, 8);
    assert.deepEqual(validateConfigText(withWeight('0'), 'w.yaml'), []);
  });

  test('a route needs at least one backend and one host', () => {
    const text = lines('routes:', '  - name: a', '    hosts: []', '    backends: []');
    const issues = validateConfigText(text, 'e.yaml');
    assert.equal(issueAt(issues, 'routes[0].hosts').line, 3);
    assert.equal(issueAt(issues, 'routes[0].backends').line, 4);
  });

  test('hosts: exact or one leading wildcard label, no port, lowercased', () => {
    const hostIssue = (host: string) => issueAt(validateConfigText(lines('routes:', ...route('a', host)), 'h.yaml'), 'routes[0].hosts[0]').message;
    assert.match(hostIssue('a.example.com:8080'), /must not include a port/);
    assert.match(hostIssue('a.*.example.com'), /"\*" only as the whole first label/);
    assert.match(hostIssue('*'), /"\*" only as the whole first label/);
    assert.match(hostIssue('a..com'), /not a valid host name/);
    const { config } = loadConfigSources([{ file: 'h.yaml', text: lines('routes:', ...route('a', '*.Example.com')) }]);
    assert.deepEqual(config.routes[0]!.hosts, ['*.example.com']);
  });

  test('hostHeader must be a non-empty host', () => {
    const withHostHeader = (h: string) => lines('routes:', ...route('a', 'a.com'), `        hostHeader: "${h}"`);
    assert.equal(issueAt(validateConfigText(withHostHeader(''), 'hh.yaml'), 'routes[0].backends[0].hostHeader').line, 9);
    assert.equal(issueAt(validateConfigText(withHostHeader('a b'), 'hh.yaml'), 'routes[0].backends[0].hostHeader').line, 9);
    const { config } = loadConfigSources([{ file: 'hh.yaml', text: withHostHeader('billing.new.example.com') }]);
    assert.equal(config.routes[0]!.backends[0]!.hostHeader, 'billing.new.example.com');
  });

  test('pathPrefix must start with /', () => {
    const issues = validateConfigText(lines('routes:', ...route('a', 'a.com', 'api')), 'p.yaml');
    assert.match(issueAt(issues, 'routes[0].pathPrefix').message, /must start with "\/"/);
  });

  test('addresses: host:port, [ipv6]:port or :port', () => {
    const load = (admin: string) => loadConfigSources([{ file: 'a.yaml', text: lines('admin:', `  address: "${admin}"`) }], { guard: false }).config.admin;
    assert.deepEqual(load(':9000'), { host: '0.0.0.0', port: 9000 });
    assert.deepEqual(load('[::1]:9000'), { host: '::1', port: 9000 });
    assert.deepEqual(load('localhost:9000'), { host: 'localhost', port: 9000 });
    assert.deepEqual(load('127.0.0.1:0'), { host: '127.0.0.1', port: 0 }); // the OS picks a free port
    for (const bad of ['9000', ':65536', '[nope]:9000', 'a b:9000', 'host:']) {
      const issues = validateConfigText(lines('admin:', `  address: "${bad}"`), 'a.yaml');
      assert.equal(issueAt(issues, 'admin.address').line, 2, bad);
    }
  });

  test('schema issues do not hide semantic issues in the valid parts', () => {
    const text = lines(
      'routes:',
      ...route('a', 'a.com:80').map((l) => l.replace('weight: 1', 'weight: x')),
      ...route('B', 'b.com').map((l) => l.replace('http://old.internal:80', 'http://x/path')),
    );
    const issues = validateConfigText(text, 'mix.yaml');
    assert.deepEqual(issues.map((i) => i.path), [
      'routes[0].hosts[0]',
      'routes[0].backends[0].weight',
      'routes[1].name',
      'routes[1].backends[0].url',
    ]);
  });

  test('a host listed twice is blamed on the repeat', () => {
    const text = lines('routes:', '  - name: a', '    hosts: [a.com, b.com, a.com, B.COM]', ...route('x', 'x.com').slice(3));
    const issues = validateConfigText(text, 'twice.yaml');
    assert.deepEqual(issues.map((i) => [i.path, i.message]), [
      ['routes[0].hosts[2]', 'is listed twice (same as routes[0].hosts[0])'],
      ['routes[0].hosts[3]', 'host "B.COM" is listed twice in this route'],
    ]);
  });
});

describe('resilience settings', () => {
  const load = (text: string) => loadConfigSources([{ file: 'r.yaml', text }], { guard: false }).config;
  const routeWith = (...extra: string[]) => load(lines('routes:', ...route('a', 'a.com'), ...extra)).routes[0]!;
  /** The issues of a one-route file whose route has `extra` lines appended after its backends. */
  const routeIssues = (...extra: string[]) => validateConfigText(lines('routes:', ...route('a', 'a.com'), ...extra), 'r.yaml');
  // route() takes lines 2-8 of such a file, so `extra` starts at line 9.

  test('entrypoint limits are read, addresses normalised to CIDRs, the header name lowercased', () => {
    const { entrypoint } = load(lines(
      'entrypoint:',
      '  maxConnections: 0',
      '  maxHeaderBytes: 32768',
      '  maxUrlLength: 4096',
      '  headersTimeout: 2.5s',
      '  idleTimeout: 90s',
      '  trustedProxies: [10.0.0.0/8, 192.168.1.7, "::1", FD00::/8, "::ffff:10.0.0.1/128", 0.0.0.0/0]',
      '  requestIdHeader: X-Trace-ID',
    ));
    assert.deepEqual(entrypoint, {
      host: '0.0.0.0',
      port: 8080,
      maxConnectionAgeMs: 300_000,
      maxConnectionAgeGraceMs: 30_000,
      maxConnections: 0,
      maxHeaderBytes: 32_768,
      maxUrlLength: 4_096,
      headersTimeoutMs: 2_500,
      idleTimeoutMs: 90_000,
      trustedProxies: ['10.0.0.0/8', '192.168.1.7/32', '::1/128', 'fd00::/8', '::ffff:10.0.0.1/128', '0.0.0.0/0'],
      requestIdHeader: 'x-trace-id',
    });
    // What the runtime does with them: node:net's BlockList takes every entry.
    const list = new BlockList();
    for (const cidr of entrypoint.trustedProxies) {
      const { address, prefix, family } = parseCidr(cidr);
      list.addSubnet(address, prefix, family);
    }
    assert.ok(list.check('10.200.0.1', 'ipv4'));
    assert.ok(list.check('fd12::1', 'ipv6'));
  });

  test('parseCidr accepts what BlockList accepts and names the problem otherwise', () => {
    assert.deepEqual(parseCidr('10.0.0.0/8'), { address: '10.0.0.0', prefix: 8, family: 'ipv4' });
    assert.deepEqual(parseCidr('::1'), { address: '::1', prefix: 128, family: 'ipv6' });
    assert.deepEqual(parseCidr('FD00::/8'), { address: 'fd00::', prefix: 8, family: 'ipv6' });
    for (const bad of ['10.0.0.0/33', 'fd00::/129', '10.0.0.0/', '10.0.0.0/a', '10.0.0/8', '010.0.0.1', 'localhost', 'fe80::1%eth0', '10.0.0.0/8/8', '']) {
      assert.throws(() => parseCidr(bad), Error, bad);
    }
  });

  test('entrypoint issues: bad CIDRs, limits out of range, a zero headersTimeout or idleTimeout, a bad header name', () => {
    const issues = validateConfigText(lines(
      'entrypoint:',                                              // 1
      '  trustedProxies:',                                        // 2
      '    - 10.0.0.0/8',                                         // 3
      '    - 10.0.0.0/33',                                        // 4
      '    - proxy.internal',                                     // 5
      '  maxHeaderBytes: 512',                                    // 6
      '  maxUrlLength: 2000000',                                  // 7
      '  maxConnections: -1',                                     // 8
      '  headersTimeout: 0s',                                     // 9
      '  requestIdHeader: "x request id"',                        // 10
      '  idleTimeout: 0s',                                        // 11
    ), 'e.yaml');
    assert.deepEqual(issues.map((i) => [i.line, i.path]), [
      [4, 'entrypoint.trustedProxies[1]'],
      [5, 'entrypoint.trustedProxies[2]'],
      [6, 'entrypoint.maxHeaderBytes'],
      [7, 'entrypoint.maxUrlLength'],
      [8, 'entrypoint.maxConnections'],
      [9, 'entrypoint.headersTimeout'],
      [10, 'entrypoint.requestIdHeader'],
      [11, 'entrypoint.idleTimeout'],
    ]);
    assert.match(issueAt(issues, 'entrypoint.trustedProxies[1]').message, /"10\.0\.0\.0\/33": the prefix length must be 0-32/);
    assert.match(issueAt(issues, 'entrypoint.trustedProxies[2]').message, /is not an IPv4\/IPv6 address or CIDR/);
    assert.equal(issueAt(issues, 'entrypoint.maxHeaderBytes').message, 'must be >= 1024');
    assert.equal(issueAt(issues, 'entrypoint.headersTimeout').message, 'must be at least 1ms');
    assert.equal(issueAt(issues, 'entrypoint.idleTimeout').message, 'must be at least 1ms');
    assert.match(issueAt(issues, 'entrypoint.requestIdHeader').message, /must be an HTTP header name/);
  });

  test('an http health check: defaults, and every field read', () => {
    assert.deepEqual(routeWith('    healthCheck:', '      http: {}').healthCheck, {
      http: { path: '/healthz', expectStatus: [200, 399] },
      interval: '5s', timeout: '1s', healthyThreshold: 2, unhealthyThreshold: 3,
    });
    assert.deepEqual(routeWith(
      '    healthCheck:',
      '      interval: 10s',
      '      timeout: 500ms',
      '      healthyThreshold: 1',
      '      unhealthyThreshold: 100',
      '      http:',
      '        path: /ready?full=1',
      '        expectStatus: [200, 204]',
    ).healthCheck, {
      http: { path: '/ready?full=1', expectStatus: [200, 204] },
      interval: '10s', timeout: '500ms', healthyThreshold: 1, unhealthyThreshold: 100,
    });
  });

  test('a grpc health check, written as a bare key or with a service', () => {
    const timing = { interval: '5s', timeout: '1s', healthyThreshold: 2, unhealthyThreshold: 3 };
    assert.deepEqual(routeWith('    healthCheck:', '      grpc:').healthCheck, { grpc: { service: '' }, ...timing });
    assert.deepEqual(routeWith('    healthCheck: { grpc: { service: ledger.v1.Ledger } }').healthCheck, { grpc: { service: 'ledger.v1.Ledger' }, ...timing });
  });

  test('outlier detection, allUnhealthy, retries, timeouts, sticky and maxBodyBytes are read', () => {
    const r = routeWith(
      '    outlierDetection: { consecutiveFailures: 0, ejectionTime: 10s, maxEjectionTime: 10s }',
      '    allUnhealthy: fail',
      '    retries: { attempts: 1, budget: 12.5, minRetriesPerSecond: 0 }',
      '    timeouts: { idle: 0s, overall: 2m, overallIncludesStreams: true }',
      '    sticky: { header: X-User-ID }',
      '    maxBodyBytes: 1048576',
    );
    assert.deepEqual(r.outlierDetection, { consecutiveFailures: 0, ejectionTime: '10s', maxEjectionTime: '10s' });
    assert.equal(r.allUnhealthy, 'fail');
    assert.deepEqual(r.retries, { attempts: 1, budget: 12.5, minRetriesPerSecond: 0 });
    assert.deepEqual(r.timeouts, { connect: '5s', response: '30s', idle: '0s', overall: '2m', overallIncludesStreams: true });
    assert.deepEqual(r.sticky, { header: 'x-user-id' });
    assert.equal(r.maxBodyBytes, 1_048_576);
    // Cookie names are case-sensitive, so they are kept as written.
    assert.deepEqual(routeWith('    sticky: { cookie: SessionID }').sticky, { cookie: 'SessionID' });
  });

  test('the effective config shows the blocks in YAML form and reloads as itself', () => {
    const text = lines(
      'entrypoint: { trustedProxies: [10.1.2.3], requestIdHeader: X-Req }',
      'routes:', ...route('a', 'a.com'),
      '    healthCheck: { grpc: {}, interval: 2s }',
      '    sticky: { header: X-User }',
    );
    const loaded = loadConfigSources([{ file: 'e.yaml', text }]);
    const e = loaded.effective as EffectiveConfig;
    assert.deepEqual(e.entrypoint.trustedProxies, ['10.1.2.3/32']);
    assert.equal(e.entrypoint.requestIdHeader, 'x-req');
    const r = e.routes[0]!;
    assert.deepEqual(r.healthCheck, { grpc: { service: '' }, interval: '2s', timeout: '1s', healthyThreshold: 2, unhealthyThreshold: 3 });
    assert.deepEqual(r.sticky, { header: 'x-user' });
    const again = loadConfigSources([{ file: 'e2.yaml', text: stringify(loaded.effective) }]);
    assert.equal(again.version, loaded.version);
    assert.deepEqual(again.fingerprints, loaded.fingerprints);
    // The config crosses the worker boundary as JSON.
    assert.deepEqual(JSON.parse(JSON.stringify(loaded.config)), loaded.config);
  });

  test('healthCheck with both http and grpc is blamed on the second', () => {
    const issues = routeIssues(
      '    healthCheck:',           // 9
      '      http: { path: /hz }',  // 10
      '      grpc: {}',             // 11
    );
    assert.equal(issues.length, 1, issues.map(formatIssue).join('\n'));
    assert.deepEqual(issueAt(issues, 'routes[0].healthCheck.grpc'), {
      file: 'r.yaml',
      line: 11,
      column: 7,
      path: 'routes[0].healthCheck.grpc',
      message: '"grpc" cannot be combined with "http" (at r.yaml:10:7); set exactly one of "http" or "grpc"',
    });
  });

  test('healthCheck with neither http nor grpc is blamed on the block', () => {
    const issue = issueAt(routeIssues('    healthCheck:', '      interval: 10s'), 'routes[0].healthCheck');
    assert.equal(issue.line, 10);
    assert.equal(issue.message, 'needs exactly one of "http" or "grpc"');
  });

  test('a health check timeout must be shorter than its interval', () => {
    const issues = routeIssues(
      '    healthCheck:',      // 9
      '      grpc: {}',        // 10
      '      interval: 2s',    // 11
      '      timeout: 2s',     // 12
    );
    assert.equal(issues.length, 1, issues.map(formatIssue).join('\n'));
    const issue = issueAt(issues, 'routes[0].healthCheck.timeout');
    assert.equal(issue.line, 12);
    assert.equal(issue.message, 'timeout (2s) must be shorter than interval (2s)');

    // With the default timeout (1s), a shorter interval is what is wrong.
    const byDefault = issueAt(routeIssues('    healthCheck:', '      http: {}', '      interval: 500ms'), 'routes[0].healthCheck.interval');
    assert.equal(byDefault.line, 11);
    assert.equal(byDefault.message, 'timeout (1s, the default) must be shorter than interval (500ms)');
  });

  test('health check values out of range', () => {
    const issues = routeIssues(
      '    healthCheck:',                      // 9
      '      http:',                           // 10
      '        path: healthz',                 // 11
      '        expectStatus: [399, 200]',      // 12
      '      interval: 0s',                    // 13
      '      healthyThreshold: 0',             // 14
      '      unhealthyThreshold: 101',         // 15
    );
    assert.deepEqual(issues.map((i) => [i.line, i.path, i.message]), [
      [11, 'routes[0].healthCheck.http.path', 'must start with "/" and contain no spaces'],
      [12, 'routes[0].healthCheck.http.expectStatus', '[399, 200] is not a range: the first status must not exceed the second'],
      [13, 'routes[0].healthCheck.interval', 'must be at least 1ms'],
      [14, 'routes[0].healthCheck.healthyThreshold', 'must be >= 1'],
      [15, 'routes[0].healthCheck.unhealthyThreshold', 'must be <= 100'],
    ]);
    const statuses = routeIssues('    healthCheck:', '      http:', '        expectStatus: [200, 600, 700]');
    assert.equal(issueAt(statuses, 'routes[0].healthCheck.http.expectStatus[1]').line, 11);
    assert.equal(issueAt(statuses, 'routes[0].healthCheck.http.expectStatus').message, 'must NOT have more than 2 items');
  });

  test('sticky with both header and cookie is blamed on the second', () => {
    const issues = routeIssues(
      '    sticky:',                // 9
      '      cookie: session',      // 10
      '      header: x-user',       // 11
    );
    assert.equal(issues.length, 1, issues.map(formatIssue).join('\n'));
    const issue = issueAt(issues, 'routes[0].sticky.header');
    assert.deepEqual([issue.line, issue.column], [11, 7]);
    assert.match(issue.message, /"header" cannot be combined with "cookie" \(at r\.yaml:10:7\)/);
    assert.equal(issueAt(routeIssues('    sticky: {}'), 'routes[0].sticky').message, 'needs exactly one of "header" or "cookie"');
    assert.match(issueAt(routeIssues('    sticky: { header: "x user" }'), 'routes[0].sticky.header').message, /must be an HTTP header name/);
  });

  test('retries.attempts 0 and other retry values out of range', () => {
    const issues = routeIssues(
      '    retries:',                       // 9
      '      attempts: 0',                  // 10
      '      budget: 101',                  // 11
      '      minRetriesPerSecond: 1.5',     // 12
    );
    assert.deepEqual(issues.map((i) => [i.line, i.path, i.message]), [
      [10, 'routes[0].retries.attempts', 'must be >= 1'],
      [11, 'routes[0].retries.budget', 'must be <= 100'],
      [12, 'routes[0].retries.minRetriesPerSecond', 'must be integer'],
    ]);
    assert.equal(issueAt(routeIssues('    retries: { attempts: 6 }'), 'routes[0].retries.attempts').message, 'must be <= 5');
  });

  test('maxEjectionTime shorter than ejectionTime', () => {
    const issues = routeIssues(
      '    outlierDetection:',              // 9
      '      ejectionTime: 1m',             // 10
      '      maxEjectionTime: 30s',         // 11
    );
    assert.equal(issues.length, 1, issues.map(formatIssue).join('\n'));
    const issue = issueAt(issues, 'routes[0].outlierDetection.maxEjectionTime');
    assert.equal(issue.line, 11);
    assert.equal(issue.message, 'maxEjectionTime (30s) must be at least ejectionTime (1m)');

    // Against the default maxEjectionTime (5m), the long ejectionTime is blamed.
    const byDefault = issueAt(routeIssues('    outlierDetection: { ejectionTime: 10m }'), 'routes[0].outlierDetection.ejectionTime');
    assert.equal(byDefault.line, 9);
    assert.equal(byDefault.message, 'maxEjectionTime (5m, the default) must be at least ejectionTime (10m)');
    assert.equal(issueAt(routeIssues('    outlierDetection: { ejectionTime: 0s, consecutiveFailures: -1 }'), 'routes[0].outlierDetection.ejectionTime').message, 'must be at least 1ms');
  });

  test('other route values: allUnhealthy, maxBodyBytes, timeouts, unknown keys', () => {
    const issues = routeIssues(
      '    allUnhealthy: drop',                          // 9
      '    maxBodyBytes: -1',                            // 10
      '    timeouts: { idle: forever, overallIncludesStreams: yes }',  // 11
      '    outlierDetection: { consecutiveFailure: 3 }', // 12
    );
    assert.deepEqual(issues.map((i) => [i.line, i.path, i.message]), [
      [9, 'routes[0].allUnhealthy', 'must be one of "serve", "fail"'],
      [10, 'routes[0].maxBodyBytes', 'must be >= 0'],
      [11, 'routes[0].timeouts.idle', 'must be a duration such as 250ms, 5s, 1.5s, 2m or 1h'],
      [11, 'routes[0].timeouts.overallIncludesStreams', 'must be boolean'],
      [12, 'routes[0].outlierDetection.consecutiveFailure', 'unknown field "consecutiveFailure" (did you mean "consecutiveFailures"?)'],
    ]);
  });
});
