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
 * HTTP/2 server only after settingsDelayMs: the router's session is not
 * ready (no SETTINGS) until then. Answers every request with 200.
 */
async function startSlowH2Backend(settingsDelayMs = SETTINGS_DELAY_MS): Promise<SlowH2Backend> {
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
    }, settingsDelayMs);
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

  test('a client that leaves while the upstream session is still connecting: the backend never receives its request (HTTP/1.1 and HTTP/2)', async () => {
    // A fresh backend and router: the session above is ready by now. SETTINGS
    // come late enough that both clients are gone first, even on a loaded machine.
    const delayMs = 3_000;
    const slow = await startSlowH2Backend(delayMs);
    const r = await startRouter({ routes: [{
      name: 'gone', hosts: ['gone.test'], protocol: 'h2c',
      backends: [{ name: 'slow', url: slow.url, weight: 1 }],
      outlierDetection: { consecutiveFailures: 0 },
    }] });
    try {
      // HTTP/1.1: the client closes its connection.
      await assert.rejects(request(`${r.url}/h1-left`, {
        method: 'POST', headers: { host: 'gone.test' }, body: '{"amount":1}', signal: AbortSignal.timeout(150),
      }));
      // HTTP/2: the client resets its stream.
      const session = http2.connect(r.url);
      session.on('error', () => {});
      const stream = session.request({ ':method': 'POST', ':path': '/h2-left', ':authority': 'gone.test' });
      stream.on('error', () => {});
      stream.end('{"amount":2}');
      await sleep(150);
      stream.close(http2.constants.NGHTTP2_CANCEL);
      session.close();
      await sleep(delayMs + 700);
      assert.deepEqual(slow.seen, [], 'both clients left before the session was ready; neither request may reach the backend');
    } finally {
      await r.close();
      await slow.close();
    }
  });
});
