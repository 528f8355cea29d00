/**
 * A data directory that is read-only when the relay starts (a filesystem remounted read-only after I/O errors, as
 * ext4's errors=remount-ro does, with what a SIGKILL left in it: a torn log tail, an unfinished snapshot transfer).
 * The relay must start, serve what it holds, forward from memory while the disk refuses writes, and use the disk
 * again once it is writable.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelayProcess } from '../helpers/relay-process.js';
import { freePort } from '../helpers/ports.js';
import { waitConverged, stat } from '../helpers/replication.js';
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
