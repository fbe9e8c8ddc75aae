// The bench report over the runs committed in bench/results: issue 15's
// targets with how far a missed one falls short, and the before/after section
// against an earlier run, for the JSON shapes those runs have (no gRPC
// fixed-rate scenario, no fresh-instance memory figures).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { markdown, readRun, verdicts, type Run } from '../bench/report.ts';

const RESULTS = join(import.meta.dirname, '../bench/results');
const run1126 = readRun(join(RESULTS, '2026-11-26-0718.json'));
const run1130 = readRun(join(RESULTS, '2026-11-30-0646.json'));

function compared(old: Run): Run['compared'] {
  return [{ file: 'old.json', startedAt: old.startedAt.toISOString(), version: old.versions['switchyard'] ?? '', results: old.results }];
}

test('targets: issue 15 bars, the shortfall of a missed one, and what the run did not measure', () => {
  const v = verdicts(run1130);
  const h1 = v.find((t) => t.target === 'HTTP/1.1 keep-alive, 13 B body: switchyard ≥ 0.6× HAProxy');
  // 28,261 / 49,931 req/s = 0.566: 6% short of 0.6.
  assert.deepEqual({ figure: h1?.figure, result: h1?.result, miss: h1?.miss }, { figure: '0.57×', result: 'not met', miss: 'short by 6%' });
  const traefik = v.find((t) => t.target === 'HTTP/1.1 keep-alive, 13 B body: switchyard ≥ 2.0× Traefik');
  assert.equal(traefik?.result, 'met');
  assert.equal(traefik?.miss, undefined);
  // 4.412 - 0.411 ms at p99.9.
  const tail = v.find((t) => t.target.startsWith('HTTP/1.1 at a fixed 5,000 req/s'));
  assert.deepEqual({ figure: tail?.figure, miss: tail?.miss }, { figure: '4.001 ms', miss: '3.001 ms over (300%)' });
  for (const prefix of ['gRPC at a fixed 2,000 RPC/s', 'Idle RSS of a freshly started', 'Idle keep-alive connections cost']) {
    assert.equal(v.find((t) => t.target.startsWith(prefix))?.result, 'not measured', prefix);
  }
  assert.ok(!v.some((t) => t.target.includes('Caddy') || t.target.includes('0.5×')), 'the issue-5 bars are gone');
});

test('before/after against an earlier run, in both directions', () => {
  const md = markdown({ ...run1130, compared: compared(run1126) }, 'x.svg');
  assert.match(md, /## Before\/after\n\n### Before\/after against the run of 2026-11-26 07:18 UTC \(old\.json\)/);
  assert.match(md, /\| HTTP\/1\.1 keep-alive, 13 B body, req\/s \| 21,209 \| 28,261 \| 1\.33× \| higher \| 0\.41× \| 0\.53× \|/);
  assert.match(md, /\| HTTP\/1\.1 at 5,000 req\/s, p99\.9 ms \| 5\.368 \| 4\.412 \| 0\.82× \| lower \|/);
  assert.doesNotMatch(md, /gRPC at 2,000 RPC\/s, p99 ms/, 'a row neither run measured is left out');
  const back = markdown({ ...run1126, compared: compared(run1130) }, 'x.svg');
  assert.match(back, /\| HTTP\/1\.1 keep-alive, 13 B body, req\/s \| 28,261 \| 21,209 \| 0\.75× \| higher \|/);
  assert.doesNotMatch(markdown(run1130, 'x.svg'), /Before\/after/);
});

test('a second checkout in the same run gets its own before/after section', () => {
  const before = run1130.results.filter((m) => m.peer === 'switchyard').map((m) => ({ ...m, peer: 'switchyard-before', rps: (m.rps ?? 0) / 2 }));
  const md = markdown({ ...run1130, peers: [...run1130.peers.slice(0, -1), 'switchyard-before', 'switchyard'], results: [...run1130.results, ...before] }, 'x.svg');
  assert.match(md, /### Before\/after, same run: switchyard \(before\) → switchyard/);
  assert.match(md, /\| gRPC unary, saturation, req\/s \| 4,412 \| 8,824 \| 2\.00× \| higher \|/);
  assert.match(md, /\| switchyard \| 28,261 \| 8\.1 \| 100% \| 71% \| 0\.53× \| 0\.57× \| 0\.56× \| 1\.70× \| 2\.76× \| 2\.00× \| — \|/, 'a "vs switchyard (before)" column');
});

test('a latency tail measured while the proxy waited for its core says so', () => {
  const waited = (share: number): Run => ({
    ...run1130,
    results: run1130.results.map((m) => (m.scenario === 'latency' && m.peer === 'switchyard' ? { ...m, proxyWait: share } : m)),
  });
  const tail = (r: Run) => verdicts(r).find((t) => t.target.startsWith('HTTP/1.1 at a fixed 5,000 req/s'));
  assert.match(tail(waited(0.35))?.caveat ?? '', /switchyard waited for its core 35% of the time/);
  assert.equal(tail(waited(0.01))?.caveat, undefined, 'a percent or so is every machine');
  const md = markdown(waited(0.35), 'x.svg');
  assert.match(md, /\| proxy CPU \| proxy waited \| load core \|/);
  assert.match(md, /\| switchyard \| 5,000 \|[^\n]*\| 35% \|/);
  assert.doesNotMatch(markdown(run1130, 'x.svg'), /proxy waited/, 'runs from before the figure existed have no such column');
});
