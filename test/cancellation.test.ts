// Cancellation: once an exchange is settled (the router answered on its own,
// or the client left), no upstream call may start for it. The backends here
// accept a connection at once but send their HTTP/2 SETTINGS late, so the
// router's call waits for a session when the exchange settles.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { startRouter, type Router } from './helpers.ts';

// The backend's SETTINGS (and so the router's session) arrive this late.
const SETTINGS_DELAY_MS = 800;

interface SlowH2Backend {
  readonly url: string;
  /** Requests the backend received, as "METHOD path". */
  readonly seen: string[];
  close(): Promise<void>;
}

/**
 * An h2c backend that takes each TCP connection at once and hands it to the
 * HTTP/2 server only after SETTINGS_DELAY_MS: the router's session is not
 * ready (no SETTINGS) until then. Answers every request with 200.
 */
async function startSlowH2Backend(): Promise<SlowH2Backend> {
  const seen: string[] = [];
  const h2 = http2.createServer();
  h2.on('stream', (stream, headers) => {
    seen.push(`${headers[':method']} ${headers[':path']}`);
    stream.respond({ ':status': 200 });
    stream.end('charged');
  });
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const front = net.createServer({ pauseOnConnect: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const timer = setTimeout(() => {
      timers.delete(timer);
      if (socket.destroyed) return;
      h2.emit('connection', socket);
      // Paused since accept: the session reads only once the socket flows.
      socket.resume();
    }, SETTINGS_DELAY_MS);
    timers.add(timer);
  });
  await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
  const { port } = front.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: async () => {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => front.close(() => resolve()));
    },
  };
}

describe('cancellation', () => {
  let backend: SlowH2Backend;
  let router: Router;

  before(async () => {
    backend = await startSlowH2Backend();
    router = await startRouter({ routes: [{
      name: 'pay', hosts: ['pay.test'], protocol: 'h2c',
      backends: [{ name: 'slow', url: backend.url, weight: 1 }],
      timeouts: { overall: '200ms' },
      outlierDetection: { consecutiveFailures: 0 },
    }] });
  });

  after(async () => {
    await router.close();
    await backend.close();
  });

  test('an overall timeout while the upstream session is still connecting: 504, and the backend never receives the request', async () => {
    const res = await request(`${router.url}/charge`, {
      method: 'POST', headers: { host: 'pay.test', 'content-type': 'application/json' }, body: '{"amount":100}',
    });
    assert.equal(res.statusCode, 504);
    await res.body.text();
    // The session becomes ready at SETTINGS_DELAY_MS; give the router time to (wrongly) send then.
    await sleep(SETTINGS_DELAY_MS + 700);
    assert.deepEqual(backend.seen, [], 'the client already had its 504; the request must not reach the backend');
  });
});
