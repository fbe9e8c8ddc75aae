// Scale-in and scale-out without a cluster: three switchyard processes behind
// a round-robin TCP balancer on loopback (as kube-proxy spreads a Service's
// connections), steady HTTP/1.1 and gRPC load, one replica terminated
// (SIGTERM, and taken out of the balancer once its /readyz fails, as the
// endpoints controller would), a new replica started and added.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { scrape, spawnRouter, startBackend, startBalancer, writeConfig, type RouterProcess } from './helpers.ts';
import { grpcClient, startGrpcBackend, unary } from './grpc-helpers.ts';

const procs: RouterProcess[] = [];
after(() => { for (const p of procs) p.child.kill('SIGKILL'); });

async function served(p: RouterProcess, route: string, protocol: string, code: string): Promise<number> {
  const m = await scrape(p.adminUrl);
  let n = 0;
  for (const [k, v] of m) if (k.startsWith(`switchyard_requests_total{route="${route}",`) && k.includes(`protocol="${protocol}",code="${code}"`)) n += v;
  return n;
}

test('scale-in and scale-out under HTTP/1.1 and gRPC load: zero failed requests, the new replica serves', { timeout: 120_000 }, async () => {
  const web = await startBackend('web');
  const rpc = await startGrpcBackend('rpc');
  const config = writeConfig({
    shutdown: { drainDelay: '3s', timeout: '10s' },
    // Long-lived connections are asked to reconnect now and then, so they
    // spread over replicas added later.
    entrypoint: { maxConnectionAge: '1s', maxConnectionAgeGrace: '2s' },
    routes: [
      { name: 'web', hosts: ['web.example.com'], backends: [{ name: 'old', url: web.url, weight: 1 }] },
      { name: 'rpc', hosts: ['rpc.example.com'], protocol: 'h2c', backends: [{ name: 'old', url: rpc.url, weight: 1 }] },
    ],
  });
  const [a, b, c] = await Promise.all([spawnRouter(config), spawnRouter(config), spawnRouter(config)]);
  procs.push(a!, b!, c!);
  const lb = await startBalancer([a!.port, b!.port, c!.port]);
  const agent = new Agent({ connections: 6 });
  const grpc = grpcClient(`127.0.0.1:${lb.port}`, 'rpc.example.com', { localPool: true });

  const failures: string[] = [];
  let httpOk = 0;
  let rpcOk = 0;
  let stop = false;
  const httpWorker = async (): Promise<void> => {
    while (!stop) {
      try {
        const res = await request(`http://127.0.0.1:${lb.port}/`, { headers: { host: 'web.example.com' }, dispatcher: agent });
        await res.body.dump();
        if (res.statusCode === 200) httpOk++;
        else failures.push(`http ${res.statusCode}`);
      } catch (err) {
        failures.push(`http ${(err as Error).message}`);
      }
    }
  };
  const rpcWorker = async (): Promise<void> => {
    while (!stop) {
      const r = await unary(grpc, {});
      if (r.code === 0) rpcOk++;
      else failures.push(`grpc ${r.code} ${r.details}`);
    }
  };
  const load = [...Array.from({ length: 4 }, httpWorker), ...Array.from({ length: 4 }, rpcWorker)];
  try {
    await sleep(1000);

    // Scale-in: SIGTERM a; once its readiness fails, the Service stops sending it new connections.
    a!.child.kill('SIGTERM');
    const t0 = Date.now();
    while ((await fetch(`${a!.adminUrl}/readyz`)).status !== 503) {
      assert.ok(Date.now() - t0 < 10_000, 'readiness did not fail');
      await sleep(20);
    }
    lb.targets = [b!.port, c!.port];

    // Scale-out: a new replica joins.
    const d = await spawnRouter(config);
    procs.push(d);
    lb.targets = [b!.port, c!.port, d.port];

    assert.equal(await a!.exited, 0, 'the terminated replica drained and exited 0');
    const t1 = Date.now();
    while ((await served(d, 'web', 'http', '200')) === 0 || (await served(d, 'rpc', 'h2c', '0')) === 0) {
      assert.ok(Date.now() - t1 < 30_000, 'the new replica got no HTTP/1.1 or no gRPC traffic');
      await sleep(100);
    }
    await sleep(500);
  } finally {
    stop = true;
    await Promise.all(load);
    grpc.close();
    await agent.close();
    await lb.close();
    await web.close();
    rpc.close();
  }
  assert.deepEqual(failures, [], `${failures.length} failed of ${httpOk + rpcOk + failures.length}`);
  assert.ok(httpOk > 0 && rpcOk > 0, `http ${httpOk}, grpc ${rpcOk}`);
  const stopped = a!.logs.find((l) => l['msg'] === 'stopped');
  assert.equal(stopped?.['cut'], 0, 'nothing was cut on the terminated replica');
});
