/**
 * A data directory that is read-only when the relay starts (a filesystem remounted read-only after I/O errors, as
 * ext4's errors=remount-ro does, with what a SIGKILL left in it: a torn log tail, an unfinished snapshot transfer).
 * The relay must start, serve what it holds, forward from memory while the disk refuses writes, and use the disk
 * again once it is writable.
 */
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll, type RedisServer } from '../helpers/redis-server.js';
import { logsOnFailure, startRelayProcess, type RelayProcess } from '../helpers/relay-process.js';
import { freePort } from '../helpers/ports.js';
import { replicaOf, waitConverged, stat } from '../helpers/replication.js';
import { benchmarkLoad } from '../helpers/load.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';
import { tempDir } from '../helpers/temp-dir.js';
import { smallFilesystem } from '../helpers/small-fs.js';
import { lastSegmentEnd } from '../helpers/damage.js';
import { crashAfterLoad } from '../helpers/relay-setup.js';

t.teardown(stopAll);

t.test('a relay killed, then started on a read-only data directory, starts and continues; the disk log resumes once it is writable', async (t) => {
  const master = await startRedis({ args: ['--repl-backlog-size', '64mb'] });
  const m = await master.client();
  t.teardown(() => m.close());
  await m.call('DEBUG', 'POPULATE', 5000, 'seed', 100);
  const { dir: fs } = smallFilesystem(t, 'tmpfs', '128m');
  const data = join(fs, 'data');
  const conf = join(tempDir('relay-conf-'), 'relay.yaml');
  writeFileSync(conf, 'log:\n  memory: 1mb\n  disk: 64mb\nweb:\n  port: 0\nupstream:\n  backoff-min: 50ms\n  backoff-max: 300ms\n');
  const port = await freePort();
  const args = ['--config', conf, '--upstream', `127.0.0.1:${master.port}`, '--port', String(port), '--dir', data];
  const { replica, r } = await crashAfterLoad(t, args, port, m, () => benchmarkLoad(master.port, 20000, 100, 1000));

  // What a SIGKILL can leave: a last segment ending inside a command, a snapshot transfer from upstream cut midway.
  const { path: last, end } = lastSegmentEnd(join(data, 'log'));
  truncateSync(last, end - 5);
  writeFileSync(join(data, 'temp-1-1.rdb'), 'REDIS0010');
  execFileSync('mount', ['-o', 'remount,ro', fs]);
  const mBefore = await m.info('stats');

  let relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  await benchmarkLoad(master.port, 5000, 100, 1000);
  await waitConverged(m, [r], 'the replica converges through the relay on a read-only disk');
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  await waitFor(async () => /EROFS/.test((await x.info('replication'))['relay_log_disk_problem'] ?? '') || undefined, { what: 'INFO names the read-only disk' });
  const mAfter = await m.info('stats');
  t.equal(stat(mAfter, 'sync_full'), stat(mBefore, 'sync_full'), 'the master continued the relay: no full sync');
  t.equal(stat(await x.info('stats'), 'sync_full'), 0, 'the replica continued: no full sync');

  // Writable again: the disk log takes the stream again, and a restart after that keeps it.
  execFileSync('mount', ['-o', 'remount,rw', fs]);
  await benchmarkLoad(master.port, 5000, 100, 1000);
  await waitFor(async () => (await x.info('replication'))['relay_log_disk_state'] === 'ok' || undefined, { what: 'the disk log writing again' });
  await waitConverged(m, [r], 'replica converged');
  t.match(relay.logs(), /data directory lock not written \(the disk refuses writes\): starting without it/);
  await waitFor(() => /"pid":(\d+)/.exec(readFileSync(join(data, 'relay.lock'), 'utf8'))?.[1] === String(relay.proc.pid) || undefined, {
    what: 'the relay holding its data directory once it is writable',
  });
  await relay.stop('SIGKILL');
  relay = await startRelayProcess(args);
  await m.call('SET', 'after-the-second-kill', '1');
  await waitConverged(m, [r], 'replica converges after a restart on the writable disk');
  t.equal(stat(await m.info('stats'), 'sync_full'), stat(mBefore, 'sync_full'), 'still no full sync from the master');
  await replica.stop();
});

/** A relay on a 128 MiB tmpfs, crashed after a load with its replica online, its filesystem then remounted read-only. */
async function onReadOnlyDisk(
  t: Test,
  masterArgs: string[],
  yaml: string,
): Promise<{ m: RedisClient; masterPort: number; fs: string; args: string[]; port: number; replica: RedisServer; r: RedisClient }> {
  const master = await startRedis({ args: masterArgs });
  const m = await master.client();
  t.teardown(() => m.close());
  await m.call('DEBUG', 'POPULATE', 5000, 'seed', 100);
  const { dir: fs } = smallFilesystem(t, 'tmpfs', '128m');
  const conf = join(tempDir('relay-conf-'), 'relay.yaml');
  writeFileSync(conf, yaml);
  const port = await freePort();
  const args = ['--config', conf, '--upstream', `127.0.0.1:${master.port}`, '--port', String(port), '--dir', join(fs, 'data')];
  const { replica, r } = await crashAfterLoad(t, args, port, m, () => benchmarkLoad(master.port, 5000, 100, 1000));
  t.teardown(() => replica.stop());
  execFileSync('mount', ['-o', 'remount,ro', fs]);
  return { m, masterPort: master.port, fs, args, port, replica, r };
}

/** The relay started with `args` (its logs printed if the test fails), and a client of it. */
async function relayOn(t: Test, args: string[], port: number): Promise<{ relay: RelayProcess; x: RedisClient }> {
  const relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  logsOnFailure(t, relay);
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  return { relay, x };
}

t.test('a read-only data directory: a replica that needs a full sync is served a snapshot fetched into memory, with one master fork', async (t) => {
  // A disk-queue small enough that the read-only disk's history is given up: the snapshot on disk no longer serves.
  const yaml = 'log:\n  memory: 1mb\n  disk: 64mb\n  disk-queue: 4mb\nreplication:\n  snapshot-refresh-min-interval: 1s\nweb:\n  port: 0\nupstream:\n  backoff-min: 50ms\n  backoff-max: 300ms\n';
  const { m, masterPort, args, port, r: first } = await onReadOnlyDisk(t, ['--repl-backlog-size', '64mb'], yaml);
  const forks = stat(await m.info('stats'), 'total_forks');
  const { relay, x } = await relayOn(t, args, port);
  await benchmarkLoad(masterPort, 20000, 1000);
  await waitFor(() => relay.logs().includes('disk log detached: forwarding from memory only') || undefined, { what: 'the disk history given up' });
  const { r } = await replicaOf(t, port);
  // The replica that was online may need a full sync too (one that reconnected after the history was given up).
  await waitConverged(m, [first, r], 'a new replica converges through the relay', 30_000);
  t.match(relay.logs(), /fresh snapshot held in memory/, 'served from memory');
  const forked = stat(await m.info('stats'), 'total_forks') - forks;
  t.equal(forked, 1, `one master fork, for the snapshot fetched into memory, while the disk is read-only (${forked})`);
  t.notMatch(relay.logs(), /"msg":"snapshot fetch failed"/, 'no fetch to the disk was tried');
  t.equal((await x.info('replication'))['relay_snapshot_disk_refused'], 'EROFS', 'INFO names the refusing disk');
});

t.test('a read-only data directory: a relay that needs its own full sync from upstream tries once, then waits for the disk to take writes; a replica ahead of it waits too', async (t) => {
  const yaml = 'log:\n  memory: 1mb\n  disk: 64mb\nreplication:\n  ahead-wait: 1s\nweb:\n  port: 0\nupstream:\n  backoff-min: 50ms\n  backoff-max: 300ms\n';
  const { m, masterPort, fs, args, port, replica, r } = await onReadOnlyDisk(t, ['--repl-backlog-size', '1mb'], yaml);
  // While the relay is down its replica follows the master directly (a partial resync), and the master's backlog
  // moves past the relay: the relay's next PSYNC is answered with a full sync; the replica is ahead of the relay.
  await r.call('REPLICAOF', '127.0.0.1', String(masterPort));
  await benchmarkLoad(masterPort, 10000, 1000);
  await waitConverged(m, [r], 'the replica follows the master directly');
  const ahead = stat(await r.info('replication'), 'master_repl_offset');
  const forks = stat(await m.info('stats'), 'total_forks');
  const { relay, x } = await relayOn(t, args, port);
  await waitFor(async () => (await x.info('replication'))['relay_snapshot_disk_refused'] === 'EROFS' || undefined, { what: 'the full sync refused by the disk' });
  await waitFor(() => relay.logs().includes('waiting for the disk to take writes') || undefined, { what: 'the link waiting' });

  // The replica comes back, ahead of the relay's stale history: held (not sent that history's older snapshot).
  const movedAt = replica.logs().length;
  await r.call('REPLICAOF', '127.0.0.1', String(port));
  await waitFor(async () => /state=wait_bgsave/.test((await x.info('replication'))['slave0'] ?? '') || undefined, { what: 'the relay holds the replica' });
  const heldAt = Number((await x.info('replication'))['master_link_down_since_seconds']);
  // Link down for many of its reconnect delays (50-300 ms): each one was another fork before. The replica's
  // ahead-wait (1 s) has run out meanwhile.
  await waitFor(async () => Number((await x.info('replication'))['master_link_down_since_seconds']) >= heldAt + 3 || undefined, { what: 'the link down 3 s more' });
  t.match((await x.info('replication'))['slave0'], /state=wait_bgsave/, 'the replica ahead of the relay is still held');
  t.equal(stat(await x.info('stats'), 'sync_full'), 0, 'no full sync of the stale history');
  t.equal(stat(await m.info('stats'), 'total_forks') - forks, 1, 'one master fork: the full sync the disk refused');
  execFileSync('mount', ['-o', 'remount,rw', fs]);
  await m.call('SET', 'after-the-disk-came-back', '1');
  await waitConverged(m, [r], 'the replica converges once the disk takes writes', 30_000);
  t.match(relay.logs(), /the disk takes writes again: connecting/, 'the link connects once the disk takes writes');
  const resynced = [...replica.logs().slice(movedAt).matchAll(/Full resync from master: [0-9a-f]{40}:(\d+)/g)].map((x) => Number(x[1]));
  t.ok(
    resynced.every((offset) => offset >= ahead),
    `every full sync of the replica after it came back starts at or past its offset ${ahead}: ${resynced.join(', ') || 'none'}`,
  );
});
