/**
 * log.disk larger than the filesystem under `dir` (the 1gb default on a small volume): the disk log must not fill the
 * filesystem by itself. Found by disk-full-crash-storm.test.ts (DSTORM_SEED=9 DSTORM_DIRECT=false, and seed 4): the
 * log grew until ENOSPC and stayed there, failing, with nothing left for the snapshot a replica's full sync needs;
 * the fetch failed with ENOSPC every second and the replica waited forever, with the disk log never writing again.
 */
import t from 'tap';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { relayArgs, startRelayProcess } from '../helpers/relay-process.js';
import { onlineReplicas, replicaOf, stat, waitConverged } from '../helpers/replication.js';
import { benchmarkLoad } from '../helpers/load.js';
import { smallFilesystem } from '../helpers/small-fs.js';
import { RedisClient } from '../helpers/redis-client.js';

t.teardown(stopAll);

t.test('a disk log larger than its filesystem keeps to half of it: it never runs the disk out, and a snapshot for a full sync still fits', async (t) => {
  const master = await startRedis({ args: ['--repl-backlog-size', '256mb'] });
  const m = await master.client();
  t.teardown(() => m.close());
  const { dir: fs } = smallFilesystem(t, 'tmpfs', '16m');
  const { port, args } = await relayArgs(
    'relay-bigdisk-',
    master.port,
    'log:\n  memory: 1mb\n  disk: 1gb\n  disk-queue: 4mb\nreplication:\n  snapshot-refresh-min-interval: 1s\nweb:\n  port: 0\n',
    join(fs, 'data'),
  );
  const relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const { clients: [a] } = await onlineReplicas(t, port, m, 1);

  // Three times the filesystem's size of stream.
  await benchmarkLoad(master.port, 100_000, 512, 10_000);
  await waitConverged(m, [a!], 'the replica keeps up', 60_000);
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  const xi = await x.info('replication');
  t.equal(xi['relay_log_disk_state'], 'ok');
  t.equal(stat(xi, 'relay_log_disk_write_errors'), 0, 'no write ran out of space');
  t.equal(stat(xi, 'relay_log_disk_detaches'), 0, 'the disk history was never given up');
  const held = stat(xi, 'relay_log_disk_bytes');
  t.ok(held > 0 && held <= 8 * 1024 * 1024 + 1024 * 1024, `the disk log holds ${held} bytes: half of 16 MiB and a segment at most`);
  t.match(relay.logs(), /log.disk is larger than half of its filesystem/, 'the relay says why it keeps less than log.disk');
  t.equal(stat(xi, 'relay_log_disk_limit'), 8 * 1024 * 1024, 'INFO shows the limit in use, half of the 16 MiB filesystem, not log.disk');

  // The log no longer holds the first snapshot's next byte: a new replica's full sync needs a fresh snapshot, on this disk.
  const { r: b } = await replicaOf(t, port);
  await m.call('SET', 'after-load', '1');
  await waitConverged(m, [a!, b], 'a new replica full-syncs from a fresh snapshot', 60_000);
  t.match(relay.logs(), /fresh snapshot committed/);
});
