import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { call, convergedPorts, digestOf, infoOf, num, writeKeys } from '../helpers/failover.js';

t.teardown(stopAll);

function linkedTo(relayPort: number, upstreamPort: number): Promise<boolean> {
  return waitFor(
    async () => {
      const i = await infoOf(relayPort);
      return num(i, 'master_port') === upstreamPort && i['master_link_status'] === 'up';
    },
    { what: `the relay linked to ${upstreamPort}` },
  );
}

t.test('REPLICAOF an unrelated master: the relay and its replicas full-resync to its data and replid', async (t) => {
  const m = await startRedis();
  const u = await startRedis();
  const x = await startRelay({ upstream: { host: '127.0.0.1', port: m.port } });
  t.teardown(() => x.stop());
  const replicas = await Promise.all([0, 1, 2].map(() => startReplica(x.port)));
  const ports = replicas.map((s) => s.port);
  await writeKeys(m.port, 'm');
  await writeKeys(u.port, 'u', 50);
  const onM = await convergedPorts(m.port, ports, 'replicas follow M through the relay');
  t.not(onM.digest, await digestOf(u.port), 'M and U hold different data');

  await t.rejects(call(x.port, 'REPLICAOF', 'NO', 'ONE'), /REPLICAOF NO ONE refused/, 'the relay never becomes a master');
  t.equal(await call(x.port, 'REPLICAOF', '127.0.0.1', u.port), 'OK');
  // U takes a new replid when its first replica (the relay) arrives: read it once the relay is linked.
  await linkedTo(x.port, u.port);
  const uid = (await infoOf(u.port))['master_replid']!;
  await waitFor(
    async () => {
      for (const p of [x.port, ...ports]) if ((await infoOf(p))['master_replid'] !== uid) return false;
      return true;
    },
    { what: "the relay and its replicas carry U's replid", timeoutMs: 30_000 },
  );
  await writeKeys(u.port, 'u-after');
  const onU = await convergedPorts(u.port, ports, 'replicas converge with U');
  t.equal(onU.digest, await digestOf(u.port));
  const xi = await infoOf(x.port);
  t.equal(num(xi, 'master_port'), u.port);
  t.equal(xi['master_replid2'], '0000000000000000000000000000000000000000', 'a new history: no replid2');
  const stats = await infoOf(x.port, 'stats');
  t.equal(num(stats, 'relay_upstream_full_syncs'), 2, 'the relay full-synced from U');
  t.equal(num(stats, 'sync_full'), 6, 'each replica full-synced again, from the new snapshot');

  // SLAVEOF is the same command; back to M is another new history.
  t.equal(await call(x.port, 'SLAVEOF', '127.0.0.1', m.port), 'OK');
  await linkedTo(x.port, m.port);
  const mid = (await infoOf(m.port))['master_replid']!;
  await waitFor(
    async () => {
      for (const p of [x.port, ...ports]) if ((await infoOf(p))['master_replid'] !== mid) return false;
      return true;
    },
    { what: "back on M's replid", timeoutMs: 30_000 },
  );
  await writeKeys(m.port, 'm-again');
  t.equal((await convergedPorts(m.port, ports, 'replicas converge with M again')).digest, await digestOf(m.port));
  t.equal(num(await infoOf(x.port, 'stats'), 'relay_upstream_full_syncs'), 3);
});
