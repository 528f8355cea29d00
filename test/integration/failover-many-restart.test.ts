/**
 * More switchovers than state.json keeps replids for (16), with no full sync in between, then a relay restart: the
 * state must still vouch for the snapshot of the epoch's full sync, or the restart distrusts it, drops the disk log
 * and asks for an id no master knows any more (a full sync for the relay and every replica). Found by
 * failover-crash-storm (FSTORM_SEED=4 FSTORM_ROUNDS=40 before its random source changed).
 */
import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { relayArgs, startRelayProcess } from '../helpers/relay-process.js';
import { startReplica } from '../helpers/replication.js';
import { call, convergedPorts, infoOf, num, writeKeys } from '../helpers/failover.js';
import { waitFor } from '../helpers/wait.js';

t.teardown(stopAll);

const SWITCHOVERS = 17;

t.test(`a relay restarted after ${SWITCHOVERS} switchovers continues: no full sync for it or its replica`, async (t) => {
  const args = ['--repl-backlog-size', '64mb', '--repl-ping-replica-period', '3600'];
  const nodes = [await startRedis({ args })];
  nodes.push(await startRedis({ args: [...args, '--replicaof', '127.0.0.1', String(nodes[0]!.port)] }));
  const x = await relayArgs('relay-many-', nodes[0]!.port, 'log:\n  memory: 8mb\n  disk: 64mb\nweb:\n  port: 0\nupstream:\n  backoff-min: 20ms\n  backoff-max: 200ms\n');
  let relay = await startRelayProcess(x.args);
  t.teardown(() => relay.stop('SIGKILL'));
  const replica = await startReplica(x.port, ['--repl-timeout', '600']);
  await writeKeys(nodes[0]!.port, 'first');
  await convergedPorts(nodes[0]!.port, [nodes[1]!.port, replica.port], 'first syncs');

  let master = 0;
  for (let i = 0; i < SWITCHOVERS; i++) {
    const [old, next] = [nodes[master]!, nodes[1 - master]!];
    await waitFor(async () => num(await infoOf(next.port), 'master_repl_offset') === num(await infoOf(old.port), 'master_repl_offset') || undefined, { what: 'the replica caught up' });
    await call(next.port, 'REPLICAOF', 'NO', 'ONE');
    await call(old.port, 'REPLICAOF', '127.0.0.1', String(next.port));
    await call(x.port, 'REPLICAOF', '127.0.0.1', String(next.port));
    master = 1 - master;
    const id = (await infoOf(next.port))['master_replid'];
    await waitFor(async () => {
      for (const p of [old.port, x.port, replica.port]) {
        const r = await infoOf(p);
        if (r['master_replid'] !== id || r['master_link_status'] !== 'up') return undefined;
      }
      return true;
    }, { what: `switchover ${i + 1}: everyone on the new id` });
    await writeKeys(next.port, `s${i}`, 20);
  }
  const mp = nodes[master]!.port;
  await convergedPorts(mp, [replica.port], 'the replica holds every switchover');
  const before = await Promise.all(nodes.map(async (n) => num(await infoOf(n.port, 'stats'), 'sync_full')));

  await relay.stop('SIGKILL');
  relay = await startRelayProcess(x.args.map((a) => (a === `127.0.0.1:${nodes[0]!.port}` ? `127.0.0.1:${mp}` : a)));
  await writeKeys(mp, 'after-restart');
  await convergedPorts(mp, [replica.port], 'the replica converges through the restarted relay');

  t.notMatch(relay.logs(), /state file does not name the history/, 'the restart trusts its state file');
  t.same(await Promise.all(nodes.map(async (n) => num(await infoOf(n.port, 'stats'), 'sync_full'))), before, 'no full sync upstream: the master continued the relay');
  t.equal(num(await infoOf(x.port, 'stats'), 'sync_full'), 0, 'the relay continued its replica');
  t.equal((replica.logs().match(/<-> REPLICA sync: Finished with success/g) ?? []).length, 1, 'the replica loaded one RDB: its first');
});
