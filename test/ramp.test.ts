import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { Guard, isGuardError } from '../src/ramp/guard.ts';
import { RampRun, type RampChange, type RampHooks } from '../src/ramp/runner.ts';
import { loadConfigSources } from '../src/config/load.ts';
import { rampWrite } from '../src/config/ramp-write.ts';
import { formatIssue, type EffectiveConfig } from '../src/config/model.ts';
import { rampPlan, rampPosition, type RampPlan } from '../src/ramp/schedule.ts';
import { validateConfigText } from './helpers.ts';

const T0 = Date.parse('2026-12-01T10:00:00Z');
const MIN = 60_000;
const backends = [
  { name: 'old', weight: 100 },
  { name: 'new', weight: 0 },
];

function ramp(over: Partial<RampPlan> = {}): RampPlan {
  return {
    from: 'old',
    to: 'new',
    steps: [1, 5, 25, 50, 100],
    intervalMs: 5 * MIN,
    startedAt: T0,
    pausedAt: null,
    pauseReason: null,
    halted: null,
    guard: { minRequests: 200, maxErrorRateIncrease: 0.005, maxLatencyIncrease: 0.2 },
    onBreach: 'rollback',
    ...over,
  };
}

describe('ramp schedule', () => {
  it('is pending without startedAt or before it, with the configured weights', () => {
    const a = rampPosition(ramp({ startedAt: null }), backends, T0);
    assert.equal(a.state, 'pending');
    assert.equal(a.step, -1);
    assert.deepEqual(a.weights, [100, 0]);
    assert.equal(a.nextChangeAt, null);
    const b = rampPosition(ramp(), backends, T0 - 1);
    assert.equal(b.state, 'pending');
    assert.equal(b.nextChangeAt, T0);
  });

  it('walks the steps on the clock, with step boundaries exact to the millisecond', () => {
    const cases: [number, number, number, number[]][] = [
      [0, 0, 1, [99, 1]],
      [5 * MIN - 1, 0, 1, [99, 1]],
      [5 * MIN, 1, 5, [95, 5]],
      [12 * MIN, 2, 25, [75, 25]],
      [15 * MIN, 3, 50, [50, 50]],
      [20 * MIN, 4, 100, [0, 100]],
    ];
    for (const [dt, step, percent, weights] of cases) {
      const p = rampPosition(ramp(), backends, T0 + dt);
      assert.equal(p.state, 'ramping', `at +${dt}`);
      assert.equal(p.step, step, `at +${dt}`);
      assert.equal(p.percent, percent);
      assert.deepEqual(p.weights, weights);
      assert.equal(p.stepStartedAt, T0 + step * 5 * MIN);
      assert.equal(p.nextChangeAt, T0 + (step + 1) * 5 * MIN);
    }
  });

  it('is done once the last step has run its interval, holding the last step', () => {
    const p = rampPosition(ramp(), backends, T0 + 25 * MIN);
    assert.equal(p.state, 'done');
    assert.equal(p.step, 4);
    assert.deepEqual(p.weights, [0, 100]);
    assert.equal(p.nextChangeAt, null);
  });

  it('splits the from+to share and leaves other backends their weights', () => {
    const three = [
      { name: 'old', weight: 6 },
      { name: 'new', weight: 0 },
      { name: 'edge', weight: 4 },
    ];
    const p = rampPosition(ramp(), three, T0 + 10 * MIN); // 25 %
    // old+new = 6 → 4.5 : 1.5, edge 4: divided by gcd(6, 4) = 2 after × 100
    assert.deepEqual(p.weights, [225, 75, 200]);
    // Both at 0: the ramp uses 100 as their share.
    const zero = rampPosition(ramp(), [{ name: 'old', weight: 0 }, { name: 'new', weight: 0 }], T0 + 5 * MIN);
    assert.deepEqual(zero.weights, [95, 5]);
  });

  it('holds the step in force at pausedAt, whatever the clock says', () => {
    const r = ramp({ pausedAt: T0 + 7 * MIN });
    for (const now of [T0 + 7 * MIN, T0 + 60 * MIN]) {
      const p = rampPosition(r, backends, now);
      assert.equal(p.state, 'paused');
      assert.equal(p.step, 1);
      assert.deepEqual(p.weights, [95, 5]);
      assert.equal(p.nextChangeAt, null);
    }
    // Resume = startedAt shifted by the pause: the paused step continues with the 3 minutes it had left.
    const resumedAt = T0 + 60 * MIN;
    const resumed = ramp({ startedAt: T0 + (resumedAt - (T0 + 7 * MIN)) });
    const p = rampPosition(resumed, backends, resumedAt);
    assert.equal(p.state, 'ramping');
    assert.equal(p.step, 1);
    assert.equal(p.nextChangeAt, resumedAt + 3 * MIN);
    // Paused before it began: the configured weights.
    const early = rampPosition(ramp({ pausedAt: T0 - 1 }), backends, T0 + MIN);
    assert.equal(early.state, 'paused');
    assert.deepEqual(early.weights, [100, 0]);
  });

  it('halted wins over everything and puts `to` at 0', () => {
    const r = ramp({ pausedAt: T0 + MIN, halted: { at: T0 + 11 * MIN, reason: 'guard' } });
    const p = rampPosition(r, backends, T0 + 11 * MIN);
    assert.equal(p.state, 'halted');
    assert.equal(p.step, 2);
    assert.equal(p.percent, 0);
    assert.deepEqual(p.weights, [100, 0]);
    assert.equal(p.nextChangeAt, null);
  });

  it('a mirror step puts nothing on `to` and turns mirroring on', () => {
    const r = ramp({ steps: ['mirror', 10, 100] });
    const m = rampPosition(r, backends, T0 + MIN);
    assert.equal(m.state, 'ramping');
    assert.equal(m.mirror, true);
    assert.deepEqual(m.weights, [100, 0]);
    const s = rampPosition(r, backends, T0 + 5 * MIN);
    assert.equal(s.mirror, false);
    assert.deepEqual(s.weights, [90, 10]);
  });

  it('is the same on every replica: a pure function of config and clock', () => {
    const r = ramp({ intervalMs: 1500, steps: [1, 25, 100] });
    for (let t = -2000; t < 6000; t += 97) {
      assert.deepEqual(rampPosition(r, backends, T0 + t), rampPosition(structuredClone(r), structuredClone(backends), T0 + t));
    }
  });
});

describe('ramp guard', () => {
  const cfg = { minRequests: 200, maxErrorRateIncrease: 0.005, maxLatencyIncrease: 0.2 };

  /** mulberry32, so every run judges the same samples. */
  function rng(seed: number): () => number {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  function lognormal(r: () => number, median: number): number {
    return median * Math.exp(0.4 * Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()));
  }
  /** `n` requests on each side of the guard. */
  function feed(g: Guard, n: number, side: 'from' | 'to', errorRate: number, median: number, seed: number): void {
    const r = rng(seed);
    for (let i = 0; i < n; i++) g[side].record(lognormal(r, median), r() < errorRate);
  }

  it('waits until both sides have minRequests', () => {
    const g = new Guard(cfg);
    feed(g, 5000, 'from', 0.5, 20, 1);
    feed(g, 199, 'to', 0.5, 20, 2);
    const v = g.judge();
    assert.equal(v.status, 'waiting');
    assert.equal(v.errorZ, null);
    assert.match(v.reason, /old 5000, new 199/);
  });

  it('passes identical sides, even with errors on both', () => {
    const g = new Guard(cfg);
    feed(g, 20_000, 'from', 0.01, 20, 3);
    feed(g, 2000, 'to', 0.01, 20, 4);
    const v = g.judge();
    assert.equal(v.status, 'pass');
    assert.ok(v.errorZ! < 0 && v.latencyZ! < 0 && (v.tailZ === null || v.tailZ < 0) && (v.p99Z === null || v.p99Z < 0), JSON.stringify(v));
  });

  it('passes an increase inside the limits (+0.3 points, +10 % latency)', () => {
    const g = new Guard(cfg);
    feed(g, 50_000, 'from', 0.005, 20, 5);
    feed(g, 50_000, 'to', 0.008, 22, 6);
    assert.equal(g.judge().status, 'pass');
  });

  it('breaches on +2 points of errors, with both sides in the reason', () => {
    const g = new Guard(cfg);
    feed(g, 20_000, 'from', 0.005, 20, 7);
    feed(g, 2000, 'to', 0.025, 20, 8);
    const v = g.judge();
    assert.equal(v.status, 'breach');
    assert.equal(v.kind, 'errors');
    assert.ok(v.to.errorRate > 0.02 && v.from.errorRate < 0.01);
    assert.match(v.reason, /^error rate new 2\.\d\d% vs old 0\.\d\d%.*over 2000 requests; old .* over 20000 requests$/);
  });

  it('breaches when new is 30 % slower, not when it is 10 % slower', () => {
    const slow = new Guard(cfg);
    feed(slow, 20_000, 'from', 0, 20, 9);
    feed(slow, 2000, 'to', 0, 26, 10);
    const v = slow.judge();
    assert.equal(v.status, 'breach');
    assert.equal(v.kind, 'latency');
    assert.ok(v.to.p50Ms > v.from.p50Ms * 1.2, JSON.stringify(v));
    const ok = new Guard(cfg);
    feed(ok, 20_000, 'from', 0, 20, 9);
    feed(ok, 2000, 'to', 0, 22, 10);
    assert.equal(ok.judge().status, 'pass');
  });

  /**
   * Old: lognormal body (median 20 ms) with a 3 % slow mode (median 70 ms), p99
   * ~87 ms. New: the same, with every request over 40 ms (old's p95) `factor`
   * slower: every quantile above p95 × factor, p50 unchanged.
   */
  function feedTail(g: Guard, n: number, side: 'from' | 'to', factor: number, seed: number): void {
    const r = rng(seed);
    const normal = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
    for (let i = 0; i < n; i++) {
      const x = r() < 0.03 ? 70 * Math.exp(0.5 * normal()) : 20 * Math.exp(0.35 * normal());
      g[side].record(x > 40 ? x * factor : x, false);
    }
  }

  it('breaches when only the tail is 30 % slower (p99 +30 %, median equal), not at +10 % or with identical sides', () => {
    const tail = new Guard(cfg);
    // 40,000 requests of new (a 25 % step at 500 req/s for ~5 min): a tail-only change needs that many.
    feedTail(tail, 100_000, 'from', 1, 17);
    feedTail(tail, 40_000, 'to', 1.3, 18);
    const v = tail.judge();
    assert.equal(v.status, 'breach', JSON.stringify(v));
    assert.equal(v.kind, 'latency');
    assert.match(v.reason, /^latency tail \(slowest 5%\) new slower than old by more than \+20%/);
    assert.ok(v.tailZ! > 3.09, JSON.stringify(v));
    assert.ok(Math.abs(v.to.p50Ms - v.from.p50Ms) < 1 && v.to.p99Ms > v.from.p99Ms * 1.2, JSON.stringify(v));
    assert.ok(v.latencyZ! < 0, 'the whole-distribution rank test alone does not see it');
    for (const [factor, seed] of [[1.1, 19], [1, 21]] as const) {
      const ok = new Guard(cfg);
      feedTail(ok, 100_000, 'from', 1, 17);
      feedTail(ok, 40_000, 'to', factor, seed);
      const w = ok.judge();
      assert.equal(w.status, 'pass', `factor ${factor}: ${w.reason}`);
      assert.ok(w.tailZ! < 0 && (w.p99Z === null || w.p99Z < 0), JSON.stringify(w));
    }
  });

  it('breaches on p99 alone when 2 % are far out and the rest of the tail is faster', () => {
    const g = new Guard(cfg);
    feedTail(g, 30_000, 'from', 1, 23);
    const r = rng(24);
    // 2 % at 2-3 × old p99, the rest without the slow mode: 2 % above 1.2 × old p99 where 1 % is allowed.
    for (let i = 0; i < 10_000; i++) g.to.record(r() < 0.02 ? 180 + 100 * r() : 20 * Math.exp(0.35 * Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r())), false);
    const v = g.judge();
    assert.equal(v.status, 'breach', JSON.stringify(v));
    assert.ok(v.p99Z! > 3.09 && v.tailZ! < 0 && v.latencyZ! < 0, JSON.stringify(v));
    assert.match(v.reason, /^latency new p99 above old p99 \+20%/);
  });

  it('does not call sub-millisecond differences a latency regression', () => {
    const g = new Guard(cfg);
    feed(g, 20_000, 'from', 0, 0.25, 15);
    feed(g, 2000, 'to', 0, 0.45, 16);
    assert.equal(g.judge().status, 'pass');
  });

  it('starts over at a step boundary', () => {
    const g = new Guard(cfg);
    feed(g, 20_000, 'from', 0.005, 20, 11);
    feed(g, 2000, 'to', 0.05, 20, 12);
    assert.equal(g.judge().status, 'breach');
    g.reset();
    assert.equal(g.judge().status, 'waiting');
    feed(g, 20_000, 'from', 0.005, 20, 13);
    feed(g, 2000, 'to', 0.005, 20, 14);
    assert.equal(g.judge().status, 'pass');
  });

  it('counts 5xx, the failing gRPC statuses, resets and timeouts as errors', () => {
    assert.deepEqual([200, 404, 499, 500, 502, 503, 504].map((c) => isGuardError(c, false)), [false, false, false, true, true, true, true]);
    const failing = [2, 4, 13, 14, 15];
    for (let c = 0; c <= 16; c++) assert.equal(isGuardError(c, true), failing.includes(c), `grpc ${c}`);
  });
});

describe('ramp runner', () => {
  function hooks() {
    const log = {
      weights: [] as number[][],
      attached: [] as boolean[],
      mirror: [] as boolean[],
      breaches: [] as RampChange[],
      down: false,
    };
    const h: RampHooks = {
      setWeights: (w) => log.weights.push([...w]),
      attach: (f, t) => log.attached.push(f !== null && t !== null),
      mirror: (recorder) => log.mirror.push(recorder !== null),
      breached: (_v, change) => log.breaches.push(change),
      toDown: () => log.down,
    };
    return { h, log };
  }

  it('puts each step in force at its boundary on the timer', async () => {
    const { h, log } = hooks();
    const start = Date.now();
    const run = new RampRun('billing', ramp({ startedAt: start, intervalMs: 150, steps: ['mirror', 10, 100] }), backends, h);
    run.start();
    try {
      assert.deepEqual(log.weights, [[100, 0]]);
      assert.equal(log.mirror.at(-1), true);
      // Wait for the end, not a fixed time: timers may run late on a loaded machine.
      for (let i = 0; i < 200 && run.status().state !== 'done'; i++) await new Promise((r) => setTimeout(r, 25));
      assert.deepEqual(log.weights, [[100, 0], [90, 10], [0, 100]]);
      assert.equal(run.status().state, 'done');
      assert.equal(log.mirror.at(-1), false);
      assert.equal(log.attached.at(-1), false, 'no judging once done');
    } finally {
      run.stop();
    }
  });

  it('on a breach rolls back at once, halts and hands the change to the config source', () => {
    const { h, log } = hooks();
    const now = T0 + 11 * MIN; // step 25 %
    const run = new RampRun('billing', ramp(), backends, h, () => now);
    run.start();
    try {
      assert.deepEqual(log.weights, [[75, 25]]);
      for (let i = 0; i < 3000; i++) run.guard.from.record(20, i % 200 === 0);
      for (let i = 0; i < 1000; i++) run.guard.to.record(20, i % 20 === 0);
      const v = run.judge();
      assert.equal(v?.status, 'breach');
      assert.deepEqual(log.weights.at(-1), [100, 0]);
      assert.equal(log.breaches.length, 1);
      const change = log.breaches[0]!;
      assert.ok('halted' in change && change.halted.at === now && /^guard: error rate new 5\.00% vs old 0\.50%/.test(change.halted.reason));
      const s = run.status();
      assert.equal(s.state, 'halted');
      assert.equal(s.breaches, 1);
      assert.equal(s.verdict?.kind, 'errors');
      assert.equal(log.attached.at(-1), false);
    } finally {
      run.stop();
    }
  });

  it('halts when `to` is down while `from` is up, before the error counts are in', () => {
    const { h, log } = hooks();
    const run = new RampRun('billing', ramp(), backends, h, () => T0 + MIN);
    run.start();
    try {
      log.down = true;
      const v = run.judge();
      assert.equal(v?.kind, 'health');
      assert.match(v!.reason, /^new is down/);
      assert.equal(run.status().state, 'halted');
      assert.deepEqual(log.weights.at(-1), [100, 0]);
    } finally {
      run.stop();
    }
  });

  it('with onBreach: pause holds the step instead', () => {
    const { h, log } = hooks();
    const now = T0 + 6 * MIN; // step 5 %
    const run = new RampRun('billing', ramp({ onBreach: 'pause' }), backends, h, () => now);
    run.start();
    try {
      for (let i = 0; i < 3000; i++) run.guard.from.record(20, false);
      for (let i = 0; i < 1000; i++) run.guard.to.record(40, false);
      assert.equal(run.judge()?.kind, 'latency');
      assert.equal(run.status().state, 'paused');
      assert.deepEqual(log.weights, [[95, 5]]);
      assert.ok('pausedAt' in log.breaches[0]!);
    } finally {
      run.stop();
    }
  });
});

describe('ramp and mirror config', () => {
  const head = [
    'routes:',
    '  - name: billing',
    '    hosts: [billing.example.com]',
    '    backends:',
    '      - { name: old, url: "http://127.0.0.1:1", weight: 100 }',
    '      - { name: new, url: "http://127.0.0.1:2", weight: 0 }',
  ];
  const text = (...more: string[]) => [...head, ...more].join('\n') + '\n';

  it('loads the issue\'s form, unquoted timestamp included, with defaults written out', () => {
    const loaded = loadConfigSources([{ file: 'c.yaml', text: text(
      '    mirror: { to: new }',
      '    ramp:',
      '      from: old',
      '      to: new',
      '      steps: [mirror, 1, 5, 25, 50, 100]',
      '      interval: 5m',
      '      startedAt: 2026-12-01T10:00:00Z',
      '      guard: { minRequests: 200, maxErrorRateIncrease: 0.5%, maxLatencyIncrease: 20% }',
      '      onBreach: rollback',
    ) }]);
    const r = loaded.config.routes[0]!;
    assert.deepEqual(rampPlan(r.ramp!), {
      from: 'old', to: 'new', steps: ['mirror', 1, 5, 25, 50, 100], intervalMs: 300_000,
      startedAt: T0, pausedAt: null, pauseReason: null, halted: null,
      guard: { minRequests: 200, maxErrorRateIncrease: 0.005, maxLatencyIncrease: 0.2 }, onBreach: 'rollback',
    });
    assert.deepEqual(r.mirror, { to: 'new', percent: 100, maxBodyBytes: 65_536, maxInFlight: 64 });
    const eff = (loaded.effective as EffectiveConfig).routes[0]!;
    assert.equal(eff.ramp?.startedAt, '2026-12-01T10:00:00Z');
    const minimal = loadConfigSources([{ file: 'c.yaml', text: text('    ramp: { from: old, to: new, steps: [100], interval: 1s, halted: { at: "2026-12-01T10:00:00+01:00", reason: aborted } }') }]);
    assert.deepEqual(rampPlan(minimal.config.routes[0]!.ramp!).guard, { minRequests: 200, maxErrorRateIncrease: 0.005, maxLatencyIncrease: 0.2 });
    assert.equal(rampPlan(minimal.config.routes[0]!.ramp!).halted!.at, T0 - 3_600_000);
  });

  it('names file, line and field of every mistake', () => {
    const issues = validateConfigText(text(
      '    mirror: { to: newer }',
      '    ramp:',
      '      from: old',
      '      to: old',
      '      steps: [5, mirror, 1, 101, half]',
      '      interval: 500ms',
      '      startedAt: yesterday',
      '      guard: { maxErrorRateIncrease: 0.5, maxLatencyIncrease: 20%, minRequest: 5 }',
      '      onBreach: panic',
    ), 'c.yaml').map(formatIssue);
    const expected = [
      /^c\.yaml:7:19: routes\[0\]\.mirror\.to: "newer" is not a backend of route "billing" \(it has "old", "new"\)$/,
      /^c\.yaml:10:11: routes\[0\]\.ramp\.to: must differ from "from"/,
      /^c\.yaml:11:18: routes\[0\]\.ramp\.steps\[1\]: "mirror" steps must come before/,
      /^c\.yaml:11:26: routes\[0\]\.ramp\.steps\[2\]: 1% comes after 5%/,
      /^c\.yaml:11:29: routes\[0\]\.ramp\.steps\[3\]: 101 is not a step/,
      /^c\.yaml:11:34: routes\[0\]\.ramp\.steps\[4\]: "half" is not a step/,
      /^c\.yaml:12:17: routes\[0\]\.ramp\.interval: must be at least 1s/,
      /^c\.yaml:13:18: routes\[0\]\.ramp\.startedAt: "yesterday" is not an RFC 3339 time/,
      /^c\.yaml:14:38: routes\[0\]\.ramp\.guard\.maxErrorRateIncrease: must be a percentage such as 0\.5% or 20% \(with the % sign\)/,
      /^c\.yaml:14:68: routes\[0\]\.ramp\.guard\.minRequest: unknown field "minRequest" \(did you mean "minRequests"\?\)/,
      /^c\.yaml:15:17: routes\[0\]\.ramp\.onBreach: must be one of "rollback", "pause"/,
    ];
    assert.equal(issues.length, expected.length, issues.join('\n'));
    expected.forEach((re, i) => assert.match(issues[i]!, re));
  });
});

describe('writing a verdict into the config', () => {
  const text = [
    '# billing moves to EKS',
    'routes:',
    '  - name: billing   # the team\'s service',
    '    hosts: [billing.example.com]',
    '    backends:',
    '      - { name: old, url: "http://127.0.0.1:1", weight: 100 }',
    '      - { name: new, url: "http://127.0.0.1:2", weight: 0 }',
    '    ramp:',
    '      from: old   # baseline',
    '      to: new',
    '      steps: [1, 5, 25, 50, 100]',
    '      interval: 5m',
    '      startedAt: 2026-12-01T10:00:00Z',
    '',
  ].join('\n');

  it('sets the halt in the route\'s ramp block, keeps comments, and the result loads', () => {
    const next = rampWrite([{ file: 'a.yaml', text: 'routes: []\n' }, { file: 'b.yaml', text }], 'billing',
      { halted: { at: '2026-12-01T10:12:31.000Z', reason: 'guard: error rate new 2.61% vs old 0.48%' } }, 'halted');
    assert.equal(next?.file, 'b.yaml');
    assert.match(next!.text, /^# billing moves to EKS\n/);
    assert.match(next!.text, /name: billing # the team's service/);
    assert.match(next!.text, /from: old # baseline/);
    const loaded = loadConfigSources([{ file: 'b.yaml', text: next!.text }]);
    assert.deepEqual(rampPlan(loaded.config.routes[0]!.ramp!).halted, { at: Date.parse('2026-12-01T10:12:31Z'), reason: 'guard: error rate new 2.61% vs old 0.48%' });
    // Another replica's verdict is already there: nothing to write.
    assert.equal(rampWrite([{ file: 'b.yaml', text: next!.text }], 'billing', { halted: { at: 'x', reason: 'y' } }, 'halted'), null);
    assert.equal(rampWrite([{ file: 'b.yaml', text }], 'nosuch', { halted: {} }, 'halted'), null);
  });

  it('refuses a result that would not load', () => {
    assert.throws(() => rampWrite([{ file: 'b.yaml', text }], 'billing', { pausedAt: 'yesterday' }, 'pausedAt'), /pausedAt: "yesterday" is not an RFC 3339 time/);
  });
});
