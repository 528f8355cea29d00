/**
 * A relay that catches up on its master (after a pause, a restart or a full sync) receives the master's stream as
 * fast as the network carries it, faster than a disk writes. The disk log must not take that burst for a failed
 * disk and drop its history: replicas behind the memory tail need it for their partial resync.
 */
import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { relayWithReplicas } from '../helpers/relay-setup.js';
import { diskLogCaughtUp, waitConverged, stat } from '../helpers/replication.js';
import { benchmarkLoad } from '../helpers/load.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';

t.teardown(stopAll);

t.test('a relay catching up on 150 MB faster than its disk writes keeps its disk history; a replica behind resyncs from it', async (t) => {
  const master = await startRedis({ args: ['--repl-backlog-size', '256mb'] });
  const m = await master.client();
  t.teardown(() => m.close());
  // A small queue makes any burst "faster than the disk": 150 MB arrive in well under a second on loopback.
  const { relay, x, replicas: [replica], clients: [r] } = await relayWithReplicas(t, 'relay-disk-pace-', { port: master.port, client: m }, 'log:\n  memory: 1mb\n  disk: 1gb\n  disk-queue: 8mb\nweb:\n  port: 0\n', 1);

  const before = await x.info('stats');
  // The replica stops reading (it will need the burst from disk); the relay stops too, and the master goes on alone.
  replica!.proc.kill('SIGSTOP');
  t.teardown(() => replica!.proc.kill('SIGCONT'));
  relay.proc.kill('SIGSTOP');
  t.teardown(() => relay.proc.kill('SIGCONT'));
  await benchmarkLoad(master.port, 150000, 1024, 20000);
  const masterOffset = stat(await m.info('replication'), 'master_repl_offset');
  relay.proc.kill('SIGCONT');

  // At the disk's pace (an 8mb queue): ~10 s here; a disk shared with another writer (a dd oflag=direct loop) once
  // took over 60.
  await waitFor(async () => stat(await x.info('replication'), 'master_repl_offset') === masterOffset || undefined, { what: 'the relay caught up', timeoutMs: 120_000 });
  await diskLogCaughtUp(x, 'the disk caught up', 30_000);
  const xi = await x.info('replication');
  t.equal(stat(xi, 'relay_log_disk_detaches'), 0, 'the disk history was not given up');
  t.ok(stat(xi, 'relay_log_disk_read_waits') >= 1, `the reads waited for the disk (${xi['relay_log_disk_read_waits']} bursts, ${xi['relay_log_disk_read_wait_ms']} ms)`);
  t.equal(xi['relay_log_disk_state'], 'ok');
  t.ok(stat(xi, 'relay_log_disk_bytes') > 140 * 1000 * 1000, 'the disk log holds the burst');

  replica!.proc.kill('SIGCONT');
  await m.call('SET', 'after-the-burst', '1');
  await waitConverged(m, [r!], 'the replica catches up from the disk log', 60000);
  const after = await x.info('stats');
  t.equal(stat(after, 'sync_full'), stat(before, 'sync_full'), 'no full sync');
  t.ok(stat(after, 'relay_disk_read_bytes') - stat(before, 'relay_disk_read_bytes') > 100 * 1000 * 1000, 'the replica read the burst from disk');
  await replica!.stop();
});
