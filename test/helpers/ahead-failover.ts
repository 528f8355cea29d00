/**
 * The replication audit's F1 scenario, shared by its disk and memory variants (snapshot-source.test.ts,
 * disk-full.test.ts): a master with two replicas, the relay's upstream U and its snapshot source S. U stalls while S
 * goes on, the relay fetches a snapshot from S ahead of its own stream; then the master dies and U is promoted behind
 * that snapshot.
 */
import type { Test } from 'tap';
import { startRedis, type RedisServer } from './redis-server.js';
import { startReplica, waitConverged, stat } from './replication.js';
import { benchmarkLoad } from './load.js';
import { waitFor } from './wait.js';
import type { RedisClient } from './redis-client.js';

export interface AheadSetup {
  readonly master: RedisServer;
  readonly m: RedisClient;
  /** The relay's upstream, with a backlog that reaches back to where it stalls: promoted, it continues the relay. */
  readonly upstream: RedisServer;
  readonly u: RedisClient;
  /** The relay's snapshot source. */
  readonly source: RedisServer;
  readonly s: RedisClient;
}

/** A master (5,000 keys) and its two replicas online, clients closed at the end of `t`. */
export async function masterUpstreamAndSource(t: Test): Promise<AheadSetup> {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  await m.call('DEBUG', 'POPULATE', 5000, 'seed', 100);
  const upstream = await startReplica(master.port, ['--repl-backlog-size', '64mb']);
  const u = await upstream.client();
  t.teardown(() => u.close());
  const source = await startReplica(master.port);
  const s = await source.client();
  t.teardown(() => s.close());
  await waitConverged(m, [u, s], 'both replicas of the master online');
  return { master, m, upstream, u, source, s };
}

/**
 * The master dies and the stalled upstream (SIGSTOPped) is promoted behind `X`, the offset of the snapshot the relay
 * (client `x`) fetched; the relay continues under the new id, and the new master's writes (`step` SETs at a time)
 * carry its stream past `X + past`. Returns the promoted upstream's INFO replication.
 */
export async function promoteBehind(t: Test, a: AheadSetup, x: RedisClient, X: number, opts: { step: number; past: number }): Promise<Record<string, string>> {
  await a.master.stop('SIGKILL');
  a.upstream.proc.kill('SIGCONT');
  await waitFor(async () => stat(await a.u.info('replication'), 'master_repl_offset') < X || undefined, { what: 'the promoted replica behind the snapshot' });
  await a.u.call('REPLICAOF', 'NO', 'ONE');
  const promoted = await a.u.info('replication');
  t.ok(stat(promoted, 'second_repl_offset') - 1 < X, `promoted at ${stat(promoted, 'second_repl_offset') - 1}, before the snapshot's offset`);
  await waitFor(async () => (await x.info('replication'))['master_replid'] === promoted['master_replid'] || undefined, { what: 'the relay continued under the new id' });
  await waitFor(
    async () => {
      if (stat(await x.info('replication'), 'master_repl_offset') > X + opts.past) return true;
      await benchmarkLoad(a.upstream.port, opts.step, 100, 100_000);
      return undefined;
    },
    { what: "the relay's stream under the new id past the snapshot's offset", timeoutMs: 60_000 },
  );
  return promoted;
}
