/**
 * Bogus Sentinel answers. A `get-master-addr-by-name` reply whose host is empty would make the relay dial '' (Node
 * connects to localhost) and full-sync from whatever listens on that port there: another dataset, passed on to
 * every replica. The relay must check the host as REPLICAOF does, refuse the answer with a logged reason, and follow
 * nothing until a Sentinel names a real master.
 */
import t from 'tap';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { startFakeMaster } from '../helpers/fake-master.js';
import { waitFor } from '../helpers/wait.js';
import { scriptedSentinel } from '../helpers/scripted-sentinel.js';
import { startRedis, stopAll } from '../helpers/redis-server.js';

t.teardown(stopAll);

t.test('a Sentinel naming an empty host is refused: the relay does not dial localhost, and says why', async (t) => {
  // What listens on localhost at the named port: a master of some other dataset.
  const other = await startFakeMaster((socket) => socket.end('-ERR not for you\r\n'));
  t.teardown(() => other.close());
  const sentinel = await scriptedSentinel('', other.port);
  t.teardown(() => sentinel.close());
  const relay = await startLoggedRelay(t, {
    upstream: { host: null, 'backoff-min': '50ms', 'backoff-max': '200ms', sentinel: { nodes: [`127.0.0.1:${sentinel.port}`], 'master-name': 'mymaster' } },
  });
  const client = await relay.client();
  const refused = () => relay.lines.some((l) => JSON.stringify(l).includes('malformed master host'));
  await waitFor(() => other.psyncs.length > 0 || (sentinel.asked() >= 3 && refused()), {
    what: 'the empty host refused on several asks, or followed',
    timeoutMs: 10_000,
  });
  t.same(other.psyncs, [], 'nothing on localhost was asked for a sync');
  t.ok(refused(), 'the refusal is logged with its reason');
  const info = await client.info('replication');
  t.not(info['master_port'], String(other.port), 'the relay does not follow the bogus address');
  t.equal(info['master_host'], undefined, 'no master is followed');
});

t.test('Sentinels that drop the connection right after SUBSCRIBE are asked again after a growing delay, not in a loop', async (t) => {
  const master = await startFakeMaster((socket) => socket.end('-ERR not a master\r\n'));
  t.teardown(() => master.close());
  const a = await scriptedSentinel('127.0.0.1', master.port, true);
  t.teardown(() => a.close());
  const b = await scriptedSentinel('127.0.0.1', master.port, true);
  t.teardown(() => b.close());
  const relay = await startLoggedRelay(t, {
    upstream: { host: null, 'backoff-min': '10ms', 'backoff-max': '400ms', sentinel: { nodes: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`], 'master-name': 'mymaster' } },
  });
  const sessions = () => relay.lines.filter((l) => l['msg'] === 'sentinel unusable, trying the next one').length;
  await waitFor(() => sessions() >= 16 || undefined, { what: '16 Sentinel sessions dropped', timeoutMs: 15_000 });
  // A subscription that lasted no time proves nothing: both Sentinels failing is a round, and rounds back off
  // (with full jitter: the last three all at or under 10ms has a chance of about 1 in 10^5).
  const delays = relay.lines.filter((l) => l['msg'] === 'sentinel connector state' && l['to'] === 'backoff').map((l) => l['delayMs'] as number);
  t.ok(delays.length >= 4, `${delays.length} back-offs in ${sessions()} dropped sessions (2 Sentinels)`);
  t.ok(delays.slice(-3).some((d) => d > 10), `the later delays grow past backoff-min (10ms): ${delays.join(', ')}ms`);
});

t.test("upstream.host set to a real Sentinel's port: the relay's warning says it is no master and to list it in upstream.sentinel.nodes", async (t) => {
  const sentinel = await startRedis({ sentinel: true, sentinelConf: 'bind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 1 1\n' });
  const relay = await startLoggedRelay(t, { upstream: { host: '127.0.0.1', port: sentinel.port, 'backoff-min': '50ms', 'backoff-max': '200ms' } });
  const hint = await waitFor(() => relay.lines.find((l) => JSON.stringify(l).includes('it is no Redis master')), { what: 'the hint logged' });
  t.match(JSON.stringify(hint), /unknown command 'SYNC'.*if it is a Sentinel, list it in upstream\.sentinel\.nodes/);
  const info = await (await relay.client()).info('replication');
  t.equal(info['master_link_status'], 'down', 'nothing is streamed from a Sentinel');
});
