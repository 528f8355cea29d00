/**
 * upstream.snapshot-source: fresh snapshots come from a replica of the same master, so the master never forks for
 * the relay after its first sync; a source that is not in the relay's history is refused in favour of the master.
 */
import t, { type Test } from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay, type TestRelay } from '../helpers/relay.js';
import { startReplica, waitConverged, stat, offsetsBeside } from '../helpers/replication.js';
import { benchmarkLoad } from '../helpers/load.js';
import { waitFor } from '../helpers/wait.js';
import type { RedisClient } from '../helpers/redis-client.js';
import { subscribe } from '../../src/observability/telemetry.js';

t.teardown(stopAll);

/** A relay behind `master` with a small disk log, refreshing at once, fetching snapshots from `sourcePort`; linked. */
async function relayWithSource(t: Test, masterPort: number, sourcePort: number): Promise<{ relay: TestRelay; x: RedisClient }> {
  const relay = await startRelay({
    upstream: { host: '127.0.0.1', port: masterPort, 'snapshot-source': { host: '127.0.0.1', port: sourcePort } },
    log: { memory: '64kb', disk: '2mb' },
    replication: { 'snapshot-refresh-min-interval': '0s' },
  });
  t.teardown(() => relay.stop());
  const x = await relay.client();
  t.teardown(() => x.close());
  await waitFor(async () => (await x.info('replication'))['master_link_status'] === 'up' || undefined, { what: 'relay linked' });
  return { relay, x };
}

/** Writes until the relay's small disk log no longer holds the byte after its snapshot. */
async function outgrowSnapshot(masterPort: number, x: RedisClient): Promise<void> {
  await waitFor(
    async () => {
      if (stat(await x.info('replication'), 'relay_snapshot_usable') === 0) return true;
      await benchmarkLoad(masterPort, 20000, 256, 5000);
      return undefined;
    },
    { what: 'the snapshot outgrown by the log', timeoutMs: 120_000 },
  );
}

t.test('a fresh snapshot comes from the snapshot source: its fork, not the master\'s, and a new replica converges', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  await m.call('DEBUG', 'POPULATE', 5000, 'seed', 100);
  const source = await startReplica(master.port);
  const s = await source.client();
  t.teardown(() => s.close());
  await waitConverged(m, [s], 'the source replica online');
  const { relay, x } = await relayWithSource(t, master.port, source.port);
  const refreshes: string[] = [];
  const off = subscribe('snapshot.refresh', (e) => e.relay === relay.relay.runId && refreshes.push(`${e.phase} from ${e.from}${e.reason ? `: ${e.reason}` : ''}`));
  t.teardown(off);
  await outgrowSnapshot(master.port, x);
  // Both hold what the master sent before the replica asks: a source behind the relay's small log would not fit its
  // history (the master would be asked instead), and one ahead of the relay would leave the fetched snapshot waiting
  // for the relay's stream while the test's 0s refresh interval lets a second fetch start.
  const held = await offsetsBeside(master.port, [source.port, relay.port]);
  t.same(held.others, [held.master, held.master], 'the source and the relay hold the master\'s offset');
  const masterForks = stat(await m.info('stats'), 'total_forks');
  const sourceForks = stat(await s.info('stats'), 'total_forks');

  const replica = await startReplica(relay.port);
  const r = await replica.client();
  t.teardown(() => r.close());
  await m.call('SET', 'after', '1');
  await waitConverged(m, [r, s], 'a replica needing a full sync converges', 60_000);
  t.equal(stat(await m.info('stats'), 'total_forks'), masterForks, `the master did not fork (refreshes: ${refreshes.join('; ')})`);
  t.ok(stat(await s.info('stats'), 'total_forks') > sourceForks, 'the snapshot source did');
  t.equal(stat(await x.info('replication'), 'relay_snapshot_refreshes'), 1, `one refresh (${refreshes.join('; ')})`);
  await Promise.all([replica.stop(), source.stop()]);
});

t.test('a snapshot source of another history is refused and the master supplies the snapshot', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const unrelated = await startRedis();
  const u = await unrelated.client();
  t.teardown(() => u.close());
  await u.call('SET', 'not-ours', '1');
  const { relay, x } = await relayWithSource(t, master.port, unrelated.port);
  await outgrowSnapshot(master.port, x);
  const masterForks = stat(await m.info('stats'), 'total_forks');
  const replica = await startReplica(relay.port);
  const r = await replica.client();
  t.teardown(() => r.close());
  await m.call('SET', 'after', '1');
  await waitConverged(m, [r], 'the replica converges on the master\'s dataset', 60_000);
  t.equal(await r.call('EXISTS', 'not-ours'), 0, 'nothing of the unrelated dataset');
  t.equal(stat(await m.info('stats'), 'total_forks'), masterForks + 1, 'the master supplied it');
  await replica.stop();
});
