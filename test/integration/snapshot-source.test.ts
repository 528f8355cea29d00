/**
 * upstream.snapshot-source: fresh snapshots come from a replica of the same master, so the master never forks for
 * the relay after its first sync; a source that is not in the relay's history is refused in favour of the master.
 */
import t, { type Test } from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay, type TestRelay } from '../helpers/relay.js';
import { startReplica, waitConverged, stat, offsetsBeside, replicaSyncs, REPLICA_BAD_STREAM_LINE } from '../helpers/replication.js';
import { rawConnect } from '../helpers/raw.js';
import { benchmarkLoad } from '../helpers/load.js';
import { masterUpstreamAndSource, promoteBehind } from '../helpers/ahead-failover.js';
import { waitFor } from '../helpers/wait.js';
import type { RedisClient } from '../helpers/redis-client.js';
import { subscribe } from '../../src/observability/telemetry.js';

t.teardown(stopAll);

/** A relay behind `master` with a small disk log (or `log`), refreshing at once, fetching snapshots from `sourcePort`; linked. */
async function relayWithSource(t: Test, masterPort: number, sourcePort: number, log = { memory: '64kb', disk: '2mb' }): Promise<{ relay: TestRelay; x: RedisClient }> {
  const relay = await startRelay({
    upstream: { host: '127.0.0.1', port: masterPort, 'snapshot-source': { host: '127.0.0.1', port: sourcePort } },
    log,
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

t.test('a snapshot fetched ahead of the stream is never served under a new id whose history left it behind: a new replica gets the new master\'s data', async (t) => {
  // The replication audit's finding: the relay's upstream U stalls at O while the snapshot source S, another replica
  // of the master, goes on to X; a backup (`redis-cli --rdb`) makes the relay fetch a snapshot from S at X, ahead of
  // its stream. The master dies, U is promoted at O < X (a new id), and its own writes carry the stream past X: the
  // snapshot holds the dead master's writes between O and X, which U never had.
  const a = await masterUpstreamAndSource(t);
  const { master, m, upstream, source, s, u } = a;
  // A log that holds the whole test's stream: the replica of the relay is never left behind by it.
  const { relay, x } = await relayWithSource(t, upstream.port, source.port, { memory: '16mb', disk: '256mb' });
  const early = await startReplica(relay.port);
  const e = await early.client();
  t.teardown(() => e.close());
  // The stream moves past the relay's first snapshot (a backup is then owed a fresher one).
  await benchmarkLoad(master.port, 20_000, 100, 100_000);
  await waitConverged(m, [e], 'a replica of the relay online');

  upstream.proc.kill('SIGSTOP');
  await benchmarkLoad(master.port, 200_000, 100, 100_000);
  await waitConverged(m, [s], 'the source has what the master wrote; the stalled upstream and the relay do not');
  const fetches = { started: 0, committed: 0 };
  t.teardown(subscribe('snapshot.refresh', (ev) => void (ev.relay === relay.relay.runId && ev.phase !== 'failed' && fetches[ev.phase]++)));
  // A backup, as `redis-cli --rdb` asks: the data as of now.
  const backup = await rawConnect(relay.port, '127.0.0.1', { send: 'REPLCONF rdb-only 1\r\nSYNC\r\n' });
  t.teardown(() => backup.socket.destroy());
  await waitFor(() => fetches.committed > 0 || undefined, { what: 'a snapshot fetched from the source for the backup' });
  // It waits for the relay's stream to reach the snapshot, kept alive with a newline a second; each second used to
  // fetch again (snapshot-refresh-min-interval is 0 here), a fork on the source for a snapshot as far ahead.
  const newlines = () => backup.received().split('\n').length;
  const seen = newlines();
  await waitFor(() => newlines() >= seen + 3 || undefined, { what: 'three more keepalives to the waiting backup' });
  t.same(fetches, { started: 1, committed: 1 }, 'one fetch while the backup waits');
  backup.socket.destroy();
  const X = stat(await s.info('replication'), 'master_repl_offset');
  const O = stat(await x.info('replication'), 'master_repl_offset');
  t.ok(O < X, `the relay's snapshot (at ${X}) is ahead of its stream (at ${O})`);

  await promoteBehind(t, a, x, X, { step: 20_000, past: 1_000_000 });

  const late = await startReplica(relay.port);
  const l = await late.client();
  t.teardown(() => l.close());
  await u.call('SET', 'after', '1');
  await waitConverged(u, [e, l], "both replicas hold the new master's dataset", 60_000);
  t.notMatch(late.logs(), REPLICA_BAD_STREAM_LINE, 'the new replica read a whole stream');
  t.equal(replicaSyncs(late.logs()).full, 1, 'one full sync');
  t.equal(replicaSyncs(early.logs()).full, 1, 'the early replica went through the failover without another');
});
