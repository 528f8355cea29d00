/**
 * log.disk larger than the filesystem under `dir` (the 1gb default on a small volume): the disk log must not fill the
 * filesystem by itself. Found by disk-full-crash-storm.test.ts (DSTORM_SEED=9 DSTORM_DIRECT=false, and seed 4): the
 * log grew until ENOSPC and stayed there, failing, with nothing left for the snapshot a replica's full sync needs;
 * the fetch failed with ENOSPC every second and the replica waited forever, with the disk log never writing again.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { logsOnFailure, relayArgs, startRelayProcess } from '../helpers/relay-process.js';
import { onlineReplicas, replicaOf, stat, statOf, waitConverged } from '../helpers/replication.js';
import { benchmarkLoad } from '../helpers/load.js';
import { smallFilesystem } from '../helpers/small-fs.js';
import { RedisClient } from '../helpers/redis-client.js';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { waitFor } from '../helpers/wait.js';

t.teardown(stopAll);

/**
 * A master, and a relay with log.disk 1gb (and 1mb of memory) on a 16 MiB filesystem, with one replica online. Its
 * log goes to the test's output when the test fails (once failed on a loaded machine: its log says why next time).
 */
async function bigDiskOnSmallFilesystem(t: Test) {
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
  logsOnFailure(t, relay);
  const replicas = await onlineReplicas(t, port, m, 1);
  return { master, m, port, relay, replicas };
}

t.test('a disk log larger than its filesystem keeps to half of it: it never runs the disk out, and a snapshot for a full sync still fits', async (t) => {
  const { master, m, port, relay, replicas: { clients: [a] } } = await bigDiskOnSmallFilesystem(t);

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

t.test('a snapshot fetched during a burst on a small filesystem: the disk log keeps no segment for it past half of the filesystem, and nothing runs out of space', async (t) => {
  const { master, m, port, relay, replicas: { servers: [replica], clients: [a] } } = await bigDiskOnSmallFilesystem(t);
  // The replica stops reading as the burst starts: it loses its place in the 8 MiB disk log, and its full sync needs
  // a snapshot fetched while the burst goes on. Holding the stream after that snapshot's offset (log.refresh-hold,
  // 256 MiB) kept every segment: the filesystem filled, and the disk log and the fetch failed with ENOSPC.
  replica!.proc.kill('SIGSTOP');
  const load = benchmarkLoad(master.port, 100_000, 512, 10_000);
  await waitFor(async () => (await statOf(master.port, 'replication', 'master_repl_offset')) > 4 * 1024 * 1024 || undefined, { what: 'the burst under way' });
  replica!.proc.kill('SIGCONT');
  await load;
  await waitConverged(m, [a!], 'the replica full-syncs and catches up', 60_000);
  const xi = await statsOf(port);
  t.equal(stat(xi, 'relay_log_disk_write_errors'), 0, 'no disk log write ran out of space');
  t.equal(stat(xi, 'relay_log_disk_detaches'), 0, 'the disk history was never given up');
  t.notMatch(relay.logs(), /ENOSPC/, 'nothing ran out of space (the snapshot fetch neither)');
});

/** INFO replication of the relay on `port`, over a connection of its own. */
async function statsOf(port: number): Promise<Record<string, string>> {
  const x = await RedisClient.connect(port);
  try {
    return await x.info('replication');
  } finally {
    await x.close();
  }
}

/** SETs of `n` keys (of `keys`, in turn from `from`) to incompressible values of `size` bytes, pipelined. */
async function writeRandom(m: RedisClient, n: number, keys: number, size: number, from = 0): Promise<void> {
  for (let i = 0; i < n; i += 1000) {
    const batch = Array.from({ length: Math.min(1000, n - i) }, (_, j) => ['SET', `k:${(from + i + j) % keys}`, randomBytes(size)]);
    await m.pipeline(batch);
  }
}

/**
 * A relay on a 48 MB tmpfs (its disk log keeps to 24 MB), with a dataset of `keys` random 1100-byte values, that
 * fetches `fetches` fresh snapshots for new replicas, then holds a stream that has left every snapshot behind: a new
 * replica's full sync needs one more, on a disk those snapshots and the disk log filled.
 */
async function fullSyncAfterSnapshotsLeftBehind(t: Test, keys: number, fetches: number): Promise<void> {
  const master = await startRedis({ args: ['--repl-backlog-size', '256mb'] });
  const m = await master.client();
  t.teardown(() => m.close());
  await writeRandom(m, keys, keys, 1100);
  const { dir: fs } = smallFilesystem(t, 'tmpfs', '48m');
  const data = join(fs, 'data');
  const relay = await startLoggedRelay(t, {
    dir: data,
    upstream: { host: '127.0.0.1', port: master.port, 'backoff-min': '50ms', 'backoff-max': '500ms' },
    log: { memory: '1mb', disk: '1gb', 'disk-queue': '4mb' },
    replication: { 'snapshot-refresh-min-interval': '1s' },
    history: { 'keep-snapshots': 3 },
  });
  const x = await relay.client();
  const caughtUp = (what: string) =>
    waitFor(async () => (await x.info('replication'))['master_repl_offset'] === (await m.info('replication'))['master_repl_offset'] || undefined, { what, timeoutMs: 30_000 });
  const snapshots = () => readdirSync(data).filter((f) => f.startsWith('snapshot-'));
  await waitFor(() => snapshots().length === 1 || undefined, { what: "the full sync's snapshot" });

  for (let round = 1; round <= fetches; round++) {
    await writeRandom(m, 30_000, keys, 1100, round);
    await caughtUp('the relay holds the stream past its snapshots');
    const { r } = await replicaOf(t, relay.port);
    await waitConverged(m, [r], `replica ${round} full-synced from a fresh snapshot`, 60_000);
  }

  // 30 MB of stream: the log has left every snapshot behind; none can serve a full sync now.
  await writeRandom(m, 30_000, keys, 1100, fetches + 1);
  await caughtUp('the relay holds the stream past its snapshots');
  t.equal((await x.info('replication'))['relay_snapshot_usable'], '0', 'no snapshot is usable');

  const { r: late } = await replicaOf(t, relay.port);
  await waitConverged(m, [late], 'a new replica full-syncs from a fresh snapshot', 60_000);
  t.ok(
    relay.lines.some((l) => l['msg'] === 'snapshots the log has left behind removed: they can serve no full sync or point in time'),
    'the relay said which snapshots it removed to make room',
  );
  t.equal(snapshots().length, 1, `only the fresh snapshot is held (${snapshots().join(', ')})`);
}

// Both found by the storage soak against Valkey 8, where every fetch for the waiting replicas' full sync then failed
// with ENOSPC and they waited for good, while snapshots that could serve nothing stayed.
t.test('snapshots the log has left behind give up their room: three kept ones do not keep a full sync off the disk', async (t) => {
  // Before: 3 x 7.6 MB beside the disk log, 22.5 of its 24 MB, left 3.7 MB of the 48 MB disk for a fourth.
  await fullSyncAfterSnapshotsLeftBehind(t, 7000, 2);
});

t.test('snapshots the log has left behind give up their room: the newest too, when the fresh one needs it', async (t) => {
  // Before (the newest was kept): a 14 MB snapshot beside the disk log left 10 MB of the 48 MB disk for a fresh one.
  await fullSyncAfterSnapshotsLeftBehind(t, 13_000, 0);
});
