// log.memory bounds the in-memory log (memory only: no disk log behind it). A replica that lags pins what it has not
// read, as Redis's shared replication buffer does; once it has caught up, the log goes back under its limit.
import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica, waitConverged, stat } from '../helpers/replication.js';
import { benchmarkLoad } from '../helpers/load.js';
import { waitFor } from '../helpers/wait.js';

t.teardown(stopAll);

t.test('a memory log a lagging replica held past log.memory is back under it within seconds of the replica catching up, with no more stream', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port }, log: { memory: '2mb', disk: 0 } });
  t.teardown(() => relay.stop());
  const x = await relay.client();
  t.teardown(() => x.close());
  const replica = await startReplica(relay.port);
  t.teardown(() => replica.stop());
  const r = await replica.client();
  t.teardown(() => r.close());
  await waitConverged(m, [r], 'the replica online');

  // Stopped, it reads nothing: the log keeps for it all of the load (about 29 MB) its socket buffers could not take.
  replica.proc.kill('SIGSTOP');
  await benchmarkLoad(master.port, 200_000, 100, 100_000);
  const end = stat(await m.info('replication'), 'master_repl_offset');
  await waitFor(async () => stat(await x.info('replication'), 'master_repl_offset') === end || undefined, { what: 'the relay holding the whole load' });
  const pinned = stat(await x.info('replication'), 'repl_backlog_histlen');
  t.ok(pinned > 8 * 1024 * 1024, `the lagging replica holds the log past log.memory (${pinned} bytes)`);

  replica.proc.kill('SIGCONT');
  await waitConverged(m, [r], 'the replica catches up');
  // The master sends nothing more (its PING every 10 s aside): no new block starts.
  // Whole blocks go: up to one read block (256 KiB for this limit) over it.
  const limit = 2 * 1024 * 1024 + 256 * 1024;
  const histlen = await waitFor(
    async () => {
      const n = stat(await x.info('replication'), 'repl_backlog_histlen');
      return n <= limit ? n : undefined;
    },
    { what: 'the log back under log.memory', timeoutMs: 5000 },
  );
  t.ok(histlen > 0, `the log keeps the stream's last ${histlen} bytes`);
  t.equal(stat(await x.info('replication'), 'master_repl_offset'), end, 'with no more stream');
});
