import t, { type Test } from 'tap';
import { startRedis, stopAll, type RedisServer } from '../helpers/redis-server.js';
import { startRelay, type TestRelay } from '../helpers/relay.js';
import { startReplica } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import {
  CANDIDATE_ARGS,
  QUIET_MASTER_ARGS,
  call,
  convergedPorts,
  infoOf,
  num,
  sentinelMasterAddr,
  sentinelsReady,
  startSentinels,
  writeKeys,
  waitFollowing,
  waitPromoted,
  waitReplid,
} from '../helpers/failover.js';

t.teardown(stopAll);

interface Topology {
  master: RedisServer;
  /** The Redis replica Sentinel promotes. */
  r: RedisServer;
  x: TestRelay;
  replicas: RedisServer[];
  sentinels: RedisServer[];
}

/**
 * M, its Redis replica R, the relay X following M, three Redis replicas of X, three Sentinels monitoring M.
 * Sentinel learns X from M's INFO (X announces its port with REPLCONF listening-port), polls it and uses its
 * hello channel; X reports replica_priority 0, so R is the only candidate. X's own replicas are not seen by
 * Sentinel: it reads `slaveN:` lines only from masters, and X reports role:slave.
 */
async function topology(t: Test): Promise<Topology> {
  const master = await startRedis({ args: QUIET_MASTER_ARGS });
  const r = await startReplica(master.port, CANDIDATE_ARGS);
  const x = await startRelay({ upstream: { host: '127.0.0.1', port: master.port, timeout: 600 } });
  t.teardown(() => x.stop());
  const replicas = await Promise.all([0, 1, 2].map(() => startReplica(x.port)));
  await writeKeys(master.port, 'before');
  await convergedPorts(master.port, [r.port, ...replicas.map((s) => s.port)], 'initial syncs');
  const sentinels = await startSentinels(master.port, { auth: true });
  await sentinelsReady(sentinels, 2);
  return { master, r, x, replicas, sentinels };
}

/** Waits for R to be master, X to follow it, and every replica of X to carry R's replid; then writes and converges. */
async function afterFailover(t: Test, topo: Topology): Promise<void> {
  const { r, x, replicas, sentinels } = topo;
  const rid = await waitPromoted(r.port);
  await waitFollowing(x.port, r.port, rid, 'the relay follows R under its replid');
  await waitReplid(replicas.map((s) => s.port), rid, "every replica of the relay has R's replid");
  await writeKeys(r.port, 'after');
  const { digest } = await convergedPorts(r.port, replicas.map((s) => s.port), 'replicas of the relay converge with R');
  t.not(digest, '0000000000000000000000000000000000000000', 'the dataset is not empty');
  for (const s of sentinels) t.equal(await sentinelMasterAddr(s.port), `127.0.0.1:${r.port}`, 'the Sentinel names R');
}

t.test('SENTINEL FAILOVER: R is promoted, the relay follows it with +CONTINUE, its replicas resync partially', async (t) => {
  const topo = await topology(t);
  const { master, r, x } = topo;
  const xBefore = await infoOf(x.port, 'stats');
  t.equal(num(xBefore, 'sync_full'), 3, 'three initial full syncs from the relay');
  t.equal(num(xBefore, 'relay_upstream_full_syncs'), 1);

  t.equal(await call(topo.sentinels[0]!.port, 'SENTINEL', 'FAILOVER', 'mymaster'), 'OK');
  await afterFailover(t, topo);

  const xAfter = await infoOf(x.port, 'stats');
  t.equal(num(xAfter, 'sync_full'), 3, 'no full sync from the relay');
  t.ok(num(xAfter, 'sync_partial_ok') >= 3, 'the replicas came back with partial resyncs');
  t.equal(num(xAfter, 'relay_upstream_full_syncs'), 1, 'the relay did not full-sync from R');
  t.ok(num(xAfter, 'relay_upstream_partial_syncs') >= 1, 'R continued the relay');
  const xi = await infoOf(x.port);
  t.equal(xi['master_replid2'], (await infoOf(r.port))['master_replid2'], "the relay's replid2 is M's replid, like R's");

  // Sentinel turns the old master into a replica of R: everyone ends up on R without a full sync.
  await waitFor(
    async () => {
      const mi = await infoOf(master.port);
      return mi['role'] === 'slave' && num(mi, 'master_port') === r.port && mi['master_link_status'] === 'up';
    },
    { what: 'the old master follows R', timeoutMs: 45_000 },
  );
  await writeKeys(r.port, 'last');
  await convergedPorts(r.port, [master.port, ...topo.replicas.map((s) => s.port)], 'everyone converges with R');
  t.equal(num(await infoOf(r.port, 'stats'), 'sync_full'), 0, 'R made no full sync');
});

t.test('master killed: Sentinel promotes R, the relay follows it and its replicas resync partially', async (t) => {
  const topo = await topology(t);
  const { master, r, x } = topo;
  const xBefore = await infoOf(x.port, 'stats');

  await master.stop('SIGKILL');
  await afterFailover(t, topo);

  const xAfter = await infoOf(x.port, 'stats');
  t.equal(num(xAfter, 'sync_full'), num(xBefore, 'sync_full'), 'no full sync from the relay');
  t.ok(num(xAfter, 'sync_partial_ok') - num(xBefore, 'sync_partial_ok') >= 3, 'the replicas came back with partial resyncs');
  t.equal(num(xAfter, 'relay_upstream_full_syncs'), 1, 'the relay did not full-sync from R');
  t.equal(num(await infoOf(r.port, 'stats'), 'sync_full'), 0, 'R made no full sync');
  t.equal((await infoOf(x.port))['replica_priority'], '0', 'the relay is never a candidate');
});
