import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica, waitConverged, stat } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';

t.teardown(stopAll);

t.test('with a memory-only log, a replica attached after the log wrapped past the snapshot still gets a consistent full sync', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  await m.call('DEBUG', 'POPULATE', 1000, 'before', 100);
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port }, log: { memory: '64kb', disk: 0 } });
  t.teardown(() => relay.stop());
  const x = await relay.client();
  t.teardown(() => x.close());
  await waitFor(async () => (await x.info('replication'))['master_link_status'] === 'up', { what: 'relay link up' });
  const firstSnapshot = stat(await x.info('replication'), 'relay_snapshot_offset');

  // Far more than the 64 KiB log: the byte after the snapshot is gone.
  const value = 'v'.repeat(1000);
  for (let batch = 0; batch < 4; batch++) {
    await m.pipeline(Array.from({ length: 500 }, (_, i) => ['SET', `after:${batch}:${i}`, value]));
  }
  await waitFor(async () => (await x.info('replication'))['relay_snapshot_usable'] === '0' || undefined, { what: 'snapshot goes stale' });

  const r = await startReplica(relay.port);
  const rc = await r.client();
  t.teardown(() => rc.close());
  await m.call('SET', 'after-attach', '1');
  await waitConverged(m, [rc], 'late replica converges');
  const xi = await x.info('replication');
  t.ok(stat(xi, 'relay_snapshot_offset') > firstSnapshot, 'a fresh snapshot was fetched');
  t.equal(stat(await m.info('stats'), 'sync_full'), 2, 'the relay link plus one snapshot refresh');
  t.equal(stat(await x.info('replication'), 'master_repl_offset'), stat(await m.info('replication'), 'master_repl_offset'));
  t.equal((await x.info('replication'))['master_link_status'], 'up', 'the streaming link was never disturbed');
  t.equal(stat(await x.info('stats'), 'relay_upstream_full_syncs'), 1, 'the streaming link made one full sync');
});
