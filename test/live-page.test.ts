import { strict as assert } from 'node:assert';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { request } from 'undici';
import { LiveStats, type LiveRouteInput } from '../src/observe/live.ts';
import { startBackend, startRouter } from './helpers.ts';

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

/** The page polls once a second: what it shows is right within a few polls. */
async function eventually(read: () => Promise<string>, re: RegExp, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  let text = '';
  while (Date.now() < end) {
    text = await read();
    if (re.test(text)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.match(text, re);
}

describe('the live page in a real browser', () => {
  const CHROMIUM = '/usr/bin/chromium';

  it('shows the traffic a test sends, then the guard\'s rollback as it happens, and a failed reload in its header', { skip: !existsSync(CHROMIUM) && 'needs Debian\'s chromium (.ci/run installs it)' }, async () => {
    const old = await startBackend('old');
    let failing = false;
    const nw = await startBackend('new', (req, res) => {
      req.resume();
      res.writeHead(failing ? 503 : 200, { 'x-backend': 'new' });
      res.end();
    });
    const other = await startBackend('search-old');
    const router = await startRouter({ routes: [
      {
        name: 'billing', hosts: ['billing.test'],
        backends: [{ name: 'old', url: old.url, weight: 100 }, { name: 'new', url: nw.url, weight: 0 }],
        ramp: { from: 'old', to: 'new', steps: [50, 100], interval: '10m', startedAt: new Date().toISOString(), guard: { minRequests: 20 } },
      },
      { name: 'search', hosts: ['search.test'], backends: [{ name: 'old', url: other.url, weight: 1 }] },
    ] });
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1200, height: 820 } });
      const failed: string[] = [];
      page.on('requestfailed', (r) => failed.push(r.url()));
      await page.goto(`${router.adminUrl}/`);
      const row = (route: string) => page.locator(`#fleet tr[data-route="${route}"]`);
      await row('billing').getByText('ramping 50%').waitFor({ timeout: 10_000 });
      await row('search').getByText('old only').waitFor();
      const send = async (n: number, host: string) => {
        for (let i = 0; i < n; i++) await (await request(`${router.url}/`, { headers: { host } })).body.dump();
      };
      await send(60, 'billing.test');
      await send(10, 'search.test');
      // The page samples once a second: the card shows both sides' traffic within a few polls.
      const card = page.locator('.route[data-route="billing"]');
      await page.waitForFunction(() => {
        const rows = [...document.querySelectorAll('.route[data-route="billing"] table.backends tr')];
        const rps = rows.find((r) => r.firstElementChild?.textContent === 'req/s');
        return rps !== undefined && [...rps.querySelectorAll('td')].every((td) => Number(td.textContent) > 0);
      }, undefined, { timeout: 15_000 });
      await eventually(() => card.locator('table.guard').innerText(), /old \(old\)\s+30\s+0\.00%/);
      failing = true;
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline && !(await row('billing').innerText()).includes('halted')) await send(20, 'billing.test');
      await row('billing').getByText('halted').first().waitFor({ timeout: 5_000 });
      await eventually(() => card.locator('.reason').innerText(), /^guard: (?:error rate new|new is down).*; new \d+\.\d\d% errors.* old 0\.00% errors/);
      await eventually(() => card.locator('table.backends').innerText(), /weight in force\s+100 \(100%\)\s+0 \(0%\)[^]*health\s+up\s+down/);
      if (process.env['LIVE_PAGE_SCREENSHOT']) await page.screenshot({ path: process.env['LIVE_PAGE_SCREENSHOT'], fullPage: true });
      // The header names the config version in force, and says when a reload
      // fails. The halt is written into the config file, so wait for the
      // version that holds it before breaking the file.
      let version = '';
      const deadline2 = Date.now() + 10_000;
      while (version === '' && Date.now() < deadline2) {
        const api = await (await request(`${router.adminUrl}/api/config`)).body.json() as { version: string; config: { routes: { name: string; ramp?: { halted?: unknown } }[] } };
        if ((api.config.routes.find((r) => r.name === 'billing')?.ramp?.halted ?? null) !== null) version = api.version;
        else await new Promise((r) => setTimeout(r, 100));
      }
      assert.match(version, /^[0-9a-f]{12}$/, 'the halt written into the config is in force');
      await eventually(() => page.locator('#version').innerText(), new RegExp(`^${version}$`));
      assert.equal(await page.locator('#error').innerText(), '');
      writeFileSync(router.path, readFileSync(router.path, 'utf8').replace(/weight: 1\n/, 'weight: -1\n'));
      await eventually(() => page.locator('#error').innerText(), /^last reload failed: .*routes\[1\]\.backends\[0\]\.weight: must be >= 0/);
      assert.equal(await page.locator('#version').innerText(), version, 'the old config stays in force');
      assert.deepEqual(failed, [], 'the page loads nothing from elsewhere');
    } finally {
      await browser.close();
      await router.close();
      await Promise.all([old.close(), nw.close(), other.close()]);
    }
  });
});
