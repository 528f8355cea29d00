import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { call, convergedPorts, infoOf, num, writeKeys } from '../helpers/failover.js';

// A master's FAILOVER command (Redis 6.2+) hands the master role to a replica with `PSYNC <replid> <offset>
// FAILOVER`. A relay cannot take it: it holds no dataset to write to.

t.teardown(stopAll);

/** Once the master's FAILOVER has ended (accepted or aborted): its role and whether it takes writes. */
async function afterFailover(masterPort: number): Promise<{ role: string; set: string }> {
  await waitFor(async () => (await infoOf(masterPort))['master_failover_state'] === 'no-failover', {
    what: "the master's FAILOVER over",
  });
  const role = (await infoOf(masterPort))['role']!;
  const set = await call(masterPort, 'SET', 'after-failover', '1').then(String, (e: Error) => e.message);
  return { role, set };
}

t.test('FAILOVER TO the relay: refused, the master aborts and stays the master; every replica continues partially', async (t) => {
  const m = await startRedis();
  const x = await startRelay({ upstream: { host: '127.0.0.1', port: m.port } });
  t.teardown(() => x.stop());
  const below = await startReplica(x.port);
  const direct = await startReplica(m.port);
  await writeKeys(m.port, 'before');
  await convergedPorts(m.port, [below.port, direct.port], 'all replicas hold the master');
  const syncFull = num(await infoOf(m.port, 'stats'), 'sync_full');

  await t.rejects(
    call(x.port, 'PSYNC', (await infoOf(x.port))['master_replid']!, 1, 'FAILOVER'),
    /PSYNC FAILOVER refused/,
    'the relay refuses PSYNC FAILOVER from any client',
  );

  t.equal(await call(m.port, 'FAILOVER', 'TO', '127.0.0.1', x.port), 'OK');
  t.same(await afterFailover(m.port), { role: 'master', set: 'OK' }, 'the master is still the master and takes writes');

  await writeKeys(m.port, 'after');
  await convergedPorts(m.port, [below.port, direct.port], 'all replicas follow the master again');
  t.equal(num(await infoOf(m.port, 'stats'), 'sync_full'), syncFull, 'no replica of the master full-synced again');
  t.equal(num(await infoOf(x.port, 'stats'), 'sync_full'), 1, "the relay's replica did not full-sync again");
  const xi = await infoOf(x.port);
  t.equal(num(xi, 'master_port'), m.port, 'the relay still follows the master');
  t.equal(xi['master_replid'], (await infoOf(m.port))['master_replid'], "the relay carries the master's new replid");
});

t.test('FAILOVER with no target and the relay its only replica: the master stays the master', async (t) => {
  const m = await startRedis();
  const x = await startRelay({ upstream: { host: '127.0.0.1', port: m.port } });
  t.teardown(() => x.stop());
  const below = await startReplica(x.port);
  await writeKeys(m.port, 'before');
  await convergedPorts(m.port, [below.port], 'the relay and its replica hold the master');

  t.equal(await call(m.port, 'FAILOVER'), 'OK');
  t.same(await afterFailover(m.port), { role: 'master', set: 'OK' }, 'the master is still the master and takes writes');
  await writeKeys(m.port, 'after');
  await convergedPorts(m.port, [below.port], "the relay's replica follows the master again");
  t.equal(num(await infoOf(x.port, 'stats'), 'sync_full'), 1, "the relay's replica did not full-sync again");
});
