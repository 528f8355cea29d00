/**
 * replication.ack-policy: with `min`, the relay acknowledges upstream only what its downstream replicas hold, so
 * WAIT on the master means "held by the replicas behind the relay". With `self` (the default) it acknowledges
 * what it holds itself, like a Redis replica.
 */
import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica, waitConverged } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { freezeIntervals } from '../helpers/clock.js';

t.teardown(stopAll);

const master = await startRedis();
const m = await master.client();
t.teardown(() => m.close());

/** The offset the master has from the relay's ACKs (INFO replication slave0 offset=). */
async function relayAckOnMaster(): Promise<number> {
  const line = (await m.info('replication'))['slave0'] ?? '';
  return Number(/offset=(\d+)/.exec(line)?.[1] ?? -1);
}

t.test('ack-policy min: WAIT on the master counts the relay only once its replica holds the write, passed on as it arrives', async (t) => {
  // The relay's periodic ACK (every second) never fires in this test: whatever the master learns from the relay
  // comes from its answers to GETACK and from passing its replica's ACKs on as they arrive.
  const intervals = freezeIntervals(t);
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port }, replication: { 'ack-policy': 'min' } });
  t.teardown(() => relay.stop());
  const replica = await startReplica(relay.port);
  const r = await replica.client();
  t.teardown(() => r.close());

  await m.call('SET', 'a', '1');
  await waitConverged(m, [r], 'replica online');
  t.equal(await m.call('WAIT', 1, 2000), 1, 'the replica holds the write: WAIT returns 1');

  replica.proc.kill('SIGSTOP');
  try {
    await m.call('SET', 'b', '2');
    t.equal(await m.call('WAIT', 1, 1000), 0, 'replica frozen: WAIT times out with 0');
    const masterOffset = Number((await m.info('replication'))['master_repl_offset']);
    t.ok((await relayAckOnMaster()) < masterOffset, 'the relay acknowledges less than the master sent');
    const relayHeld = relay.relay.status().masterReplOffset;
    t.equal(relayHeld, masterOffset, 'though the relay itself holds everything');
  } finally {
    replica.proc.kill('SIGCONT');
  }
  t.equal(await m.call('WAIT', 1, 5000), 1, 'replica resumed: WAIT returns 1 without any periodic ACK from the relay');
  t.ok(intervals.count > 0, 'the relay did set its periodic timers (frozen)');
  t.equal(await r.callString('GET', 'b'), '2');
});

t.test('ack-policy min with no replica connected acknowledges nothing new', async (t) => {
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port }, replication: { 'ack-policy': 'min' } });
  t.teardown(() => relay.stop());
  await m.call('SET', 'c', '3');
  await waitFor(
    async () => {
      const s = relay.relay.status();
      return (s.upstream.linkUp && s.masterReplOffset === Number((await m.info('replication'))['master_repl_offset'])) || undefined;
    },
    { what: 'relay streaming, caught up' },
  );
  t.equal(await m.call('WAIT', 1, 500), 0, 'no replica behind the relay: WAIT returns 0');
  t.ok((await relayAckOnMaster()) < Number((await m.info('replication'))['master_repl_offset']));
});

t.test('ack-policy self (default): the relay acknowledges what it holds, even with its replica frozen', async (t) => {
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
  t.teardown(() => relay.stop());
  const replica = await startReplica(relay.port);
  const r = await replica.client();
  t.teardown(() => r.close());
  await m.call('SET', 'd', '4');
  await waitConverged(m, [r], 'replica online');
  replica.proc.kill('SIGSTOP');
  try {
    await m.call('SET', 'e', '5');
    t.equal(await m.call('WAIT', 1, 2000), 1, 'WAIT returns 1: the relay holds the write');
  } finally {
    replica.proc.kill('SIGCONT');
  }
});
