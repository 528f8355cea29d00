import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { call, convergedPorts, digestOf, infoOf, num, writeKeys } from '../helpers/failover.js';

t.teardown(stopAll);

t.test('upstream down for 5 s: replicas resync from the relay (partial and full), then catch up when it returns', async (t) => {
  const m = await startRedis();
  const x = await startRelay({ upstream: { host: '127.0.0.1', port: m.port } });
  t.teardown(() => x.stop());
  const replicas = await Promise.all([0, 1, 2].map(() => startReplica(x.port)));
  await writeKeys(m.port, 'before');
  const { digest } = await convergedPorts(m.port, replicas.map((s) => s.port), 'initial syncs');

  // SHUTDOWN SAVE: on restart M 7.0 loads the RDB and keeps the old replid as replid2, so it can continue us.
  await call(m.port, 'SHUTDOWN', 'SAVE').catch(() => {});
  await m.stop();
  await waitFor(async () => (await infoOf(x.port))['master_link_status'] === 'down', { what: 'the relay sees its upstream down' });
  const before = await infoOf(x.port, 'stats');
  // A 7.0 master's SHUTDOWN sends REPLCONF GETACK to its replicas first: the relay's offset is past the one above.
  const offset = num(await infoOf(x.port), 'master_repl_offset');

  // Every replica link cut, one replica restarted from its RDB, one new replica: all served from the relay alone.
  t.equal(await call(x.port, 'CLIENT', 'KILL', 'TYPE', 'replica'), 3);
  await waitFor(async () => num(await infoOf(x.port, 'stats'), 'sync_partial_ok') - num(before, 'sync_partial_ok') === 3, {
    what: 'the three cut replicas continue',
  });
  await call(replicas[0]!.port, 'SHUTDOWN', 'SAVE').catch(() => {});
  await replicas[0]!.restart();
  replicas.push(await startReplica(x.port));
  const ports = replicas.map((s) => s.port);
  await waitFor(
    async () => {
      for (const p of ports) {
        const i = await infoOf(p);
        if (i['master_link_status'] !== 'up' || num(i, 'master_repl_offset') !== offset) return false;
        if ((await digestOf(p)) !== digest) return false;
      }
      return true;
    },
    { what: 'replicas resync from the relay while upstream is down', timeoutMs: 30_000 },
  );
  const during = await infoOf(x.port, 'stats');
  t.equal((await infoOf(x.port))['master_link_status'], 'down', 'upstream still down');
  t.equal(num(during, 'sync_partial_ok') - num(before, 'sync_partial_ok'), 4, 'cut and restarted replicas continued partially');
  t.equal(num(during, 'sync_full') - num(before, 'sync_full'), 1, 'the new replica got the snapshot');

  await waitFor(async () => num(await infoOf(x.port), 'master_link_down_since_seconds') >= 5, {
    what: 'upstream down for 5 s',
    timeoutMs: 15_000,
  });
  await m.restart();
  await writeKeys(m.port, 'after');
  await convergedPorts(m.port, ports, 'replicas catch up once upstream is back');
  const mid = (await infoOf(m.port))['master_replid'];
  for (const p of ports) t.equal((await infoOf(p))['master_replid'], mid, "replica has the restarted master's replid");
  const after = await infoOf(x.port, 'stats');
  t.equal(num(after, 'relay_upstream_full_syncs'), 1, 'the relay continued from the restarted master');
  t.equal(num(after, 'sync_full'), num(during, 'sync_full'), 'no more full syncs');
  t.equal(num(await infoOf(m.port, 'stats'), 'sync_full'), 0, 'the restarted master made no full sync');
});
