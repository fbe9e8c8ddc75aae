// Mirroring through the running router: copies reach the mirror backend with
// their bodies, answers are discarded, and the client never waits for them.
import { strict as assert } from 'node:assert';
import { after, describe, it } from 'node:test';
import { request } from 'undici';
import { grpcClient, startGrpcBackend, unary, until } from './grpc-helpers.ts';
import { metric, scrape, startBackend, startRouter } from './helpers.ts';

const closers: (() => Promise<void> | void)[] = [];
after(async () => { for (const c of closers.reverse()) await c(); });

describe('mirror', () => {
  it('copies HTTP/1.1 requests with their bodies, skips large bodies, counts by answer', async () => {
    const old = await startBackend('old');
    const copies: { method: string; url: string; body: string; host: string | undefined }[] = [];
    const nw = await startBackend('new', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        copies.push({ method: req.method!, url: req.url!, body: Buffer.concat(chunks).toString(), host: req.headers.host });
        res.writeHead(201);
        res.end('ignored');
      });
    });
    closers.push(() => old.close(), () => nw.close());
    const router = await startRouter({ routes: [{
      name: 'shop', hosts: ['shop.test'],
      backends: [{ name: 'old', url: old.url, weight: 1 }, { name: 'new', url: nw.url, weight: 0 }],
      mirror: { to: 'new' },
    }] });
    closers.push(() => router.close());
    for (let i = 0; i < 5; i++) {
      const res = await request(`${router.url}/get/${i}`, { headers: { host: 'shop.test' } });
      assert.equal(res.statusCode, 200);
      assert.equal(JSON.parse(await res.body.text()).backend, 'old');
    }
    for (let i = 0; i < 3; i++) {
      const res = await request(`${router.url}/post/${i}`, { method: 'POST', headers: { host: 'shop.test' }, body: `body ${i}` });
      assert.equal(res.statusCode, 200);
      await res.body.dump();
    }
    const big = await request(`${router.url}/big`, { method: 'POST', headers: { host: 'shop.test' }, body: Buffer.alloc(100_000, 1) });
    assert.equal(big.statusCode, 200);
    await big.body.dump();
    assert.ok(await until(() => copies.length >= 8, 5_000), `copies: ${copies.length}`);
    copies.sort((a, b) => a.url.localeCompare(b.url));
    assert.deepEqual(copies.map((c) => `${c.method} ${c.url} ${c.body}`), [
      'GET /get/0 ', 'GET /get/1 ', 'GET /get/2 ', 'GET /get/3 ', 'GET /get/4 ',
      'POST /post/0 body 0', 'POST /post/1 body 1', 'POST /post/2 body 2',
    ]);
    assert.equal(copies[0]!.host, 'shop.test', 'the copy carries the client\'s Host');
    const m = await scrape(router.adminUrl);
    assert.equal(metric(m, 'switchyard_mirror_requests_total', { route: 'shop', backend: 'new', code: '201' }), 8);
    assert.equal(metric(m, 'switchyard_mirror_requests_total', { route: 'shop', backend: 'new', code: 'skipped_body' }), 1);
    assert.equal(metric(m, 'switchyard_requests_total', { route: 'shop', backend: 'new', protocol: 'http', code: '201' }), 0, 'copies are not client requests');
  });

  it('never holds up the client: a mirror that never answers, bounded in flight', async () => {
    const old = await startBackend('old');
    const hung: unknown[] = [];
    const nw = await startBackend('new', (req) => { hung.push(req); req.resume(); });
    closers.push(() => old.close(), () => nw.close());
    const router = await startRouter({ routes: [{
      name: 'slow', hosts: ['slow.test'],
      backends: [{ name: 'old', url: old.url, weight: 1 }, { name: 'new', url: nw.url, weight: 0 }],
      mirror: { to: 'new', percent: 50, maxInFlight: 2 },
    }] });
    closers.push(() => router.close());
    for (let i = 0; i < 12; i++) {
      const res = await request(`${router.url}/${i}`, { headers: { host: 'slow.test' } });
      assert.equal(res.statusCode, 200);
      await res.body.dump();
    }
    // 50 %: every second request is offered; two hang upstream, the other four are turned away.
    assert.ok(await until(() => hung.length === 2, 5_000));
    const m = await scrape(router.adminUrl);
    assert.equal(metric(m, 'switchyard_mirror_requests_total', { route: 'slow', backend: 'new', code: 'skipped_busy' }), 4);
  });

  it('copies unary gRPC calls to an h2c backend', async () => {
    const old = await startGrpcBackend('old');
    const nw = await startGrpcBackend('new');
    closers.push(() => old.close(), () => nw.close());
    const router = await startRouter({ routes: [{
      name: 'rpc', hosts: ['rpc.test'], protocol: 'h2c',
      backends: [{ name: 'old', url: old.url, weight: 1 }, { name: 'new', url: nw.url, weight: 0 }],
      mirror: { to: 'new' },
    }] });
    closers.push(() => router.close());
    const client = grpcClient(router.url, 'rpc.test', { localPool: true });
    closers.push(() => client.close());
    for (let i = 0; i < 4; i++) {
      const r = await unary(client, { tag: `t${i}` });
      assert.equal(r.code, 0);
      assert.equal(r.replies[0]!.backend, 'old');
    }
    assert.ok(await until(() => nw.byMethod['Unary'] === 4, 5_000), JSON.stringify(nw.byMethod));
    // The backend counts a call when it starts, the router when the copy's answer is in: wait for both.
    const copies = async (): Promise<number> => metric(await scrape(router.adminUrl), 'switchyard_mirror_requests_total', { route: 'rpc', backend: 'new', code: '0' });
    const end = Date.now() + 5_000;
    while (await copies() < 4 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await copies(), 4);
  });
});
