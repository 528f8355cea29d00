/**
 * Connections to the web port that never send a whole request, reopened as the relay closes them, must not take the
 * descriptors the relay keeps for its upstream link and its files (src/web/fd-guard.ts): under a limit of 256 they
 * took every one, and the relay could not reconnect upstream (EMFILE) for as long as they were reopened.
 */
import t from 'tap';
import { connect, type Socket } from 'node:net';
import { get } from 'node:http';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startReplica, waitConverged } from '../helpers/replication.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';
import { writeConfig } from '../helpers/raw.js';
import { startRelayProcess } from '../helpers/relay-process.js';

t.teardown(stopAll);

/**
 * `n` connections to `port`, each sending half a request header and a byte more every 2 s (uWS then never closes
 * it), each reopened (after a refusal, 50 ms later) once closed, until stop().
 */
function halfHeaders(port: number, n: number) {
  let stopped = false;
  let refused = 0;
  const open = new Set<Socket>();
  const trickle = setInterval(() => {
    for (const s of open) s.write('a');
  }, 2000);
  const one = (): void => {
    if (stopped) return;
    const s = connect({ port, host: '127.0.0.1' });
    // Refused by the closed port, or reset from its backlog as it closed.
    s.on('error', () => refused++);
    s.on('connect', () => {
      open.add(s);
      s.write('GET /healthz HTTP/1.1\r\nX-Half: ');
    });
    s.on('close', () => {
      open.delete(s);
      setTimeout(one, 50).unref();
    });
  };
  for (let i = 0; i < n; i++) one();
  return {
    get open() {
      return open.size;
    },
    get refused() {
      return refused;
    },
    stop(): void {
      stopped = true;
      clearInterval(trickle);
      for (const s of open) s.destroy();
    },
  };
}

function healthz(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path: '/healthz', timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

t.test('web connections held half-open do not take the descriptors of the upstream link: the relay reconnects and its replica keeps up', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const port = await freePort();
  const webPort = await freePort();
  const dir = t.testdir({});
  const config = writeConfig(dir, { upstream: { host: '127.0.0.1', port: master.port, 'backoff-min': '50ms', 'backoff-max': '200ms' }, listen: { port }, log: { memory: '4mb', disk: '8mb' }, web: { port: webPort }, dir });
  const relay = await startRelayProcess(['--config', config, '--port', String(port)], { prefix: ['prlimit', '--nofile=256', '--'] });
  t.teardown(() => relay.stop());
  const replica = await startReplica(port);
  const r = await replica.client();
  t.teardown(() => r.close());
  await waitConverged(m, [r], 'the replica online');

  const attack = halfHeaders(webPort, 400);
  t.teardown(() => attack.stop());
  await waitFor(() => attack.open >= 250 || attack.refused > 0 || undefined, { what: `the web port flooded (${attack.open} open, ${attack.refused} refused)` });
  // A burst faster than the relay's count can take every descriptor, and these connections stay (a byte every 2 s).
  // The web port closes, then frees its spare descriptors for the relay's files and links.
  await waitFor(() => /web port stops accepting connections/.test(relay.logs()) || undefined, { what: 'the web port to stop accepting' });
  await waitFor(() => attack.refused > 0 || undefined, { what: 'the flood turned away' });
  const before = relay.logs().length;
  // The master drops the relay's link: it connects again at once, the flood still on.
  await m.call('CLIENT', 'KILL', 'TYPE', 'replica');
  await m.call('SET', 'during-the-flood', '1');
  await waitConverged(m, [r], 'the relay reconnected upstream during the flood, and its replica has the write');
  t.notMatch(relay.logs().slice(before), /EMFILE/, 'without running out of descriptors');

  attack.stop();
  await waitFor(async () => (await healthz(webPort).catch(() => 0)) === 200 || undefined, { what: 'the web port answering again once the flood is gone', timeoutMs: 30_000 });
  // The line comes through the relay's stdout, a pipe the test reads apart from the HTTP answer: it may come after it.
  await waitFor(() => /web port accepts connections again/.test(relay.logs()) || undefined, { what: 'the relay saying the web port accepts again' });
});
