import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import {
  CANDIDATE_ARGS,
  QUIET_MASTER_ARGS,
  call,
  convergedPorts,
  infoOf,
  num,
  sentinelsReady,
  startSentinels,
  writeKeys,
  waitFollowing,
  waitPromoted,
  waitReplid,
} from '../helpers/failover.js';

t.teardown(stopAll);

t.test('relay chain M → X1 → X2 → replicas: after a failover of M everyone converges on R without a full sync', async (t) => {
  const master = await startRedis({ args: QUIET_MASTER_ARGS });
  const r = await startReplica(master.port, CANDIDATE_ARGS);
  const x1 = await startRelay({ upstream: { host: '127.0.0.1', port: master.port, timeout: 600 } });
  t.teardown(() => x1.stop());
  const x2 = await startRelay({ upstream: { host: '127.0.0.1', port: x1.port, timeout: 600 } });
  t.teardown(() => x2.stop());
  // One replica on X1 next to X2, three at the end of the chain.
  const onX1 = await startReplica(x1.port);
  const onX2 = await Promise.all([0, 1, 2].map(() => startReplica(x2.port)));
  const leaves = [onX1, ...onX2].map((s) => s.port);

  await writeKeys(master.port, 'before');
  await convergedPorts(master.port, [r.port, ...leaves], 'initial syncs down the chain');
  const mi = await infoOf(master.port);
  for (const p of [x1.port, x2.port, ...leaves]) {
    const i = await infoOf(p);
    t.equal(i['master_replid'], mi['master_replid'], `node ${p} has the master's replid`);
    t.equal(num(i, 'master_repl_offset'), num(mi, 'master_repl_offset'), `node ${p} has the master's offset`);
  }
  const sentinels = await startSentinels(master.port, { auth: true });
  // Sentinel sees R and X1 (M's replicas); X2 and the leaves sit behind relays that report role:slave.
  await sentinelsReady(sentinels, 2);
  const before = { x1: await infoOf(x1.port, 'stats'), x2: await infoOf(x2.port, 'stats') };
  t.equal(num(before.x1, 'sync_full'), 2, 'X1 full-synced X2 and its own replica');
  t.equal(num(before.x2, 'sync_full'), 3, 'X2 full-synced its three replicas');
  t.equal(num(before.x2, 'relay_upstream_full_syncs'), 1, 'X2 full-synced once from X1');

  t.equal(await call(sentinels[1]!.port, 'SENTINEL', 'FAILOVER', 'mymaster'), 'OK');

  const rid = await waitPromoted(r.port);
  await waitFollowing(x1.port, r.port, rid, 'X1 follows R under its replid');
  // The new id travels down: X1 drops X2, X2 continues through replid2 and learns it, and so on to the leaves.
  await waitReplid([x2.port, ...leaves], rid, "every node below R has R's replid");
  t.equal(num(await infoOf(x2.port), 'master_port'), x1.port, 'X2 still follows X1');

  await waitFor(
    async () => {
      const i = await infoOf(master.port);
      return i['role'] === 'slave' && num(i, 'master_port') === r.port && i['master_link_status'] === 'up';
    },
    { what: 'the old master follows R', timeoutMs: 45_000 },
  );
  await writeKeys(r.port, 'after');
  await convergedPorts(r.port, [master.port, ...leaves], 'every node converges with R');
  // R's stream moves on (Sentinel's hello messages): a look counts only if R's offset did not move during it.
  const relaysAtR = async (): Promise<true | undefined> => {
    const rOffset = num(await infoOf(r.port), 'master_repl_offset');
    for (const p of [x1.port, x2.port]) if (num(await infoOf(p), 'master_repl_offset') !== rOffset) return undefined;
    return num(await infoOf(r.port), 'master_repl_offset') === rOffset || undefined;
  };
  await t.resolves(waitFor(relaysAtR, { what: "X1 and X2 at R's offset" }), "X1 and X2 reach R's offset");

  const after = { x1: await infoOf(x1.port, 'stats'), x2: await infoOf(x2.port, 'stats'), r: await infoOf(r.port, 'stats') };
  t.equal(num(after.r, 'sync_full'), 0, 'R made no full sync');
  t.equal(num(after.x1, 'relay_upstream_full_syncs'), 1, 'X1 did not full-sync from R');
  t.equal(num(after.x1, 'sync_full'), num(before.x1, 'sync_full'), 'X1 made no full sync');
  t.equal(num(after.x2, 'relay_upstream_full_syncs'), 1, 'X2 did not full-sync from X1');
  t.equal(num(after.x2, 'sync_full'), num(before.x2, 'sync_full'), 'X2 made no full sync');
  t.ok(num(after.x2, 'relay_upstream_partial_syncs') >= 1, 'X1 continued X2');
  t.ok(num(after.x2, 'sync_partial_ok') - num(before.x2, 'sync_partial_ok') >= 3, "X2's replicas came back partially");
});
