/**
 * The relay's data directory on an ext4 over a block device whose faults are switched live (flakey-disk.ts: the
 * dm-flakey / dm-error equivalent for kernels without device-mapper). A device that fails writes for a while, then
 * heals: replicas converge, none full-syncs, the relay answers throughout and resumes its disk log. A device that
 * returns other bytes than were written (a bad sector) for the end of the last log segment, read at a restart: those
 * bytes are never served.
 */
import t, { type Test } from 'tap';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelayProcess } from '../helpers/relay-process.js';
import { freePort } from '../helpers/ports.js';
import { diskLogCaughtUp, replicaOf, waitConverged, stat } from '../helpers/replication.js';
import { benchmarkLoad } from '../helpers/load.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';
import { tempDir } from '../helpers/temp-dir.js';
import { flakeyDisk } from '../helpers/flakey-disk.js';
import { deviceOffset, lastSegmentEnd } from '../helpers/damage.js';
import { PIECE, pieceEnd } from '../../src/backlog/segment-sums.js';
import { nodeFileIo } from '../../src/backlog/file-io.js';

t.teardown(stopAll);

const YAML = 'log:\n  memory: 1mb\n  disk: 64mb\nweb:\n  port: 0\nupstream:\n  backoff-min: 50ms\n  backoff-max: 300ms\n';

/** A master, a flakey disk and the arguments of a relay of that master keeping its data on it; closed with `t`. */
async function relayOnFlakeyDisk(t: Test) {
  const master = await startRedis({ args: ['--repl-backlog-size', '64mb'] });
  const m = await master.client();
  t.teardown(() => m.close());
  const disk = await flakeyDisk(t);
  const conf = join(tempDir('relay-conf-'), 'relay.yaml');
  writeFileSync(conf, YAML);
  const port = await freePort();
  const args = ['--config', conf, '--upstream', `127.0.0.1:${master.port}`, '--port', String(port), '--dir', join(disk.dir, 'data')];
  return { master, m, disk, args, port };
}

t.test('a disk that fails every write and fsync (EIO) for seconds, then heals: replicas converge without a full sync', async (t) => {
  const { master, m, disk, args, port } = await relayOnFlakeyDisk(t);
  const relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  const a = await replicaOf(t, port);
  const b = await replicaOf(t, port);
  await benchmarkLoad(master.port, 5000, 512, 5000);
  await waitConverged(m, [a.r, b.r], 'replicas online');
  // One replica stops reading: once the stream passes the memory tail it is served from disk.
  b.replica.proc.kill('SIGSTOP');
  t.teardown(() => b.replica.proc.kill('SIGCONT'));

  await disk.set([{ write: 'error', sync: 'error' }]);
  const load = benchmarkLoad(master.port, 8000, 1024, 8000);
  await waitFor(async () => {
    t.equal(await x.callString('PING'), 'PONG', 'the relay answers while its disk fails');
    return (await x.info('replication'))['relay_log_disk_state'] === 'failing' || undefined;
  }, { what: 'the disk log failing' });
  await load;
  await waitConverged(m, [a.r], 'the online replica keeps up while the disk fails');
  const failing = await x.info('replication');
  t.match(failing['relay_log_disk_problem'], /EIO/, `INFO names the cause: ${failing['relay_log_disk_problem']}`);
  t.ok((await disk.stats()).writeErrors > 0, 'the device failed writes');

  await disk.heal();
  await waitFor(async () => (await x.info('replication'))['relay_log_disk_state'] === 'ok' || undefined, { what: 'the disk log writing again' });
  b.replica.proc.kill('SIGCONT');
  await m.call('SET', 'after-the-fault', '1');
  await waitConverged(m, [a.r, b.r], 'both replicas end with the master dataset');
  // Writes go out in batches (or after a short delay): the last one may still be on its way.
  await diskLogCaughtUp(x, 'the disk has the whole stream');
  const xi = await x.info('replication');
  t.equal(stat(xi, 'relay_log_disk_detaches'), 0, 'the disk history was kept');
  t.equal(stat(await x.info('stats'), 'sync_full'), 2, 'no full sync after the first two');
  t.equal(stat(await m.info('stats'), 'sync_full'), 1, 'the master served the relay one full sync');
  t.match(relay.logs(), /disk log write failed: forwarding from memory, retrying.*"code":"EIO"|"code":"EIO".*disk log write failed/, 'the failure logged with its code');
  t.match(relay.logs(), /disk log writes work again/);
  await Promise.all([a.replica.stop(), b.replica.stop()]);
});

t.test('a bad sector in the last log piece (no checksum on disk yet) read at a restart: the bytes are not served', async (t) => {
  const { master, m, disk, args, port } = await relayOnFlakeyDisk(t);
  let relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const a = await replicaOf(t, port);
  await benchmarkLoad(master.port, 3000, 512, 3000);
  // The last command: a key written once, whose value ends the last segment.
  await m.call('SET', 'last-key', 'v'.repeat(3000));
  await waitConverged(m, [a.r], 'the replica has it');
  const x = await RedisClient.connect(port);
  await diskLogCaughtUp(x, 'the disk has it');
  await x.close();
  await relay.stop('SIGKILL');

  const logDir = join(disk.dir, 'data', 'log');
  const { path: seg, end } = lastSegmentEnd(logDir);
  const segStart = Number(/-(\d{20})\.log$/.exec(seg)![1]);
  const bytes = readFileSync(seg).subarray(0, end);
  const at = bytes.lastIndexOf('$3000\r\n') + 7 + 1500;
  const offset = segStart + at;
  const stored = statSync(seg.replace(/\.log$/, '.sum')).size / 4;
  const piece = Math.floor((offset - 1) / PIECE) - Math.floor((segStart - 1) / PIECE);
  t.ok(pieceEnd(offset) > segStart + end - 1, `the byte is in the last piece, incomplete (piece ${piece}; ${stored} checksums on disk)`);
  // The device returns that byte changed from now on, as a bad sector would.
  const dev = deviceOffset(seg, at);
  await disk.set([{ from: dev, to: dev + 1, read: 'corrupt' }]);
  disk.dropCaches();

  relay = await startRelayProcess(args);
  // A replica that reads the stream from the relay's disk: it full-syncs from the snapshot (offset 0) and is sent
  // the log after it.
  const b = await replicaOf(t, port);
  await m.call('SET', 'after-the-restart', '1');
  await waitConverged(m, [a.r, b.r], 'both replicas end with the master dataset').catch(async (err: Error) => {
    // Served the changed byte: the new replica has the master's offset and another value.
    const value = await b.r.callString('GET', 'last-key').catch((e: Error) => e.message);
    throw new Error(`${err.message}; last-key on the new replica: ${value.replace(/v+/g, (v) => `v*${v.length}`)}`, { cause: err });
  });

  t.ok((await disk.stats()).corrupted > 0, 'the device returned the changed byte');
  t.match(relay.logs(), /log segment bytes do not match their checksum: the segment is cut back/, 'the relay says it did not keep the bytes');
  await Promise.all([a.replica.stop(), b.replica.stop()]);
});

t.test("a directory fsync the device fails (EIO) is reported, not taken for done: a new file's name may not survive a power loss", async (t) => {
  const disk = await flakeyDisk(t, 32);
  await disk.set([{ sync: 'error' }]);
  writeFileSync(join(disk.dir, 'new-file'), 'x');
  await t.rejects(nodeFileIo.syncDir(disk.dir), { code: 'EIO' });
  t.ok((await disk.stats()).syncErrors > 0, 'the device failed a flush');
  await disk.heal();
  await nodeFileIo.syncDir(disk.dir);
});
