import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { LiveStats, type LiveRouteInput } from '../src/observe/live.ts';

const BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

function counters() {
  return { byCode: [] as number[], count: 0, buckets: new Float64Array(BOUNDS.length + 1) };
}

describe('live stats', () => {
  it('rates, error rate and quantiles over the sampled window', () => {
    const old = counters();
    const nw = counters();
    const route = (w: [number, number]): LiveRouteInput => ({
      name: 'billing', hosts: ['billing.example.com'], ramp: null, mirror: null,
      backends: [
        { name: 'old', configuredWeight: w[0], weight: w[0], up: true, counters: old },
        { name: 'new', configuredWeight: w[1], weight: w[1], up: false, counters: nw },
      ],
    });
    const live = new LiveStats(BOUNDS);
    live.sample([route([90, 10])]);
    // 10 "seconds": old 100 req/s all 200 in the 5-10 ms bucket; new 10 req/s, 1 in 10 a 503, in 25-50 ms.
    for (let s = 0; s < 10; s++) {
      old.byCode[200] = (old.byCode[200] ?? 0) + 100;
      old.count += 100;
      nw.count += 10;
      old.buckets[4]! += 100;
      nw.byCode[200] = (nw.byCode[200] ?? 0) + 9;
      nw.byCode[503] = (nw.byCode[503] ?? 0) + 1;
      nw.buckets[6]! += 10;
      live.sample([route([90, 10])]);
    }
    const [r] = live.view([route([90, 10])]);
    assert.equal(r!.stage, 'ramping');
    assert.equal(r!.percent, 10);
    const [o, n] = r!.backends;
    assert.equal(o!.rps, 100);
    assert.equal(o!.errorRate, 0);
    assert.ok(o!.p50Ms! > 5 && o!.p50Ms! <= 10 && o!.p99Ms! <= 10, JSON.stringify(o));
    assert.equal(n!.rps, 10);
    assert.equal(n!.errorRate, 0.1);
    assert.ok(n!.p50Ms! > 25 && n!.p99Ms! <= 50);
    assert.equal(n!.up, false);
  });

  it('names the migration stage of every route', () => {
    const live = new LiveStats(BOUNDS);
    const mk = (w: number[], extra: Partial<LiveRouteInput> = {}): LiveRouteInput => ({
      name: 'r', hosts: [], ramp: null, mirror: null,
      backends: w.map((x, i) => ({ name: ['old', 'new'][i]!, configuredWeight: x, weight: x, up: true, counters: counters() })),
      ...extra,
    });
    const stage = (r: LiveRouteInput) => live.view([r])[0]!.stage;
    assert.equal(stage(mk([100])), 'old only');
    assert.equal(stage(mk([100, 0])), 'old only');
    assert.equal(stage(mk([100, 0], { mirror: { to: 'new', percent: 100 } })), 'mirroring');
    assert.equal(stage(mk([50, 50])), 'ramping');
    assert.equal(stage(mk([0, 100])), 'new only');
    const halted = { from: 'old', to: 'new', state: 'halted', percent: 0, mirror: false } as never;
    assert.equal(stage(mk([100, 0], { ramp: halted })), 'halted');
  });
});
