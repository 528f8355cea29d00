import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica } from '../helpers/replication.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';
import { MASTER_NAME, convergedPorts, infoOf, num, sentinelMasterAddr, sentinelsReady, startSentinels, waitPromoted, writeKeys } from '../helpers/failover.js';

t.teardown(stopAll);

const RELAY_PASS = 'relay-pw';

/** INFO on the relay, which requires AUTH here. */
async function relayInfo(port: number, section = 'replication'): Promise<Record<string, string>> {
  const c = await RedisClient.connect(port);
  try {
    await c.call('AUTH', RELAY_PASS);
    return await c.info(section);
  } finally {
    await c.close().catch(() => {});
  }
}

t.test('Sentinel mode: the relay finds the master through the Sentinels and follows a failover with one Sentinel down', async (t) => {
  const m = await startRedis();
  const r = await startReplica(m.port);
  await writeKeys(m.port, 'before');
  await convergedPorts(m.port, [r.port], 'R follows M');
  // failover-timeout bounds the failover: Sentinel cannot reconfigure the relay here (see below), so it ends on timeout.
  const sentinels = await startSentinels(m.port, { failoverTimeoutMs: 4000 });
  await sentinelsReady(sentinels, 1);

  // The relay requires a password Sentinel does not know: Sentinel sees it in M's INFO but its SLAVEOF is refused
  // (NOAUTH), so following the failover is the connector's doing. The first listed Sentinel does not exist.
  const dead = await freePort();
  const x = await startRelay({
    upstream: { timeout: 600, sentinel: { nodes: [`127.0.0.1:${dead}`, ...sentinels.map((s) => `127.0.0.1:${s.port}`)], 'master-name': MASTER_NAME } },
    listen: { password: RELAY_PASS },
  });
  t.teardown(() => x.stop());
  await waitFor(
    async () => {
      const i = await relayInfo(x.port);
      return num(i, 'master_port') === m.port && i['master_link_status'] === 'up';
    },
    { what: 'the relay finds M through the Sentinels' },
  );
  const replicas = await Promise.all([0, 1, 2].map(() => startReplica(x.port, ['--masterauth', RELAY_PASS])));
  const ports = replicas.map((s) => s.port);
  await writeKeys(m.port, 'on-m');
  await convergedPorts(m.port, ports, 'replicas of the relay follow M');
  await sentinelsReady(sentinels, 2);

  // The connector is subscribed to the first live Sentinel; take it away, then fail M over.
  await sentinels[0]!.stop();
  const live = sentinels.slice(1);
  await m.stop('SIGKILL');
  const rid = await waitPromoted(r.port);
  await waitFor(async () => (await sentinelMasterAddr(live[0]!.port)) === `127.0.0.1:${r.port}`, {
    what: 'the Sentinels switch to R',
    timeoutMs: 30_000,
  });
  await waitFor(
    async () => {
      const i = await relayInfo(x.port);
      return num(i, 'master_port') === r.port && i['master_link_status'] === 'up' && i['master_replid'] === rid;
    },
    { what: 'the relay follows R', timeoutMs: 30_000 },
  );
  await writeKeys(r.port, 'on-r');
  await convergedPorts(r.port, ports, 'replicas of the relay converge with R');
  for (const p of ports) t.equal((await infoOf(p))['master_replid'], rid, "replica has R's replid");
  const stats = await relayInfo(x.port, 'stats');
  t.equal(num(stats, 'relay_upstream_full_syncs'), 1, 'R continued the relay');
  t.equal(num(stats, 'sync_full'), 3, 'the replicas resynced partially');
  t.equal(num(await infoOf(r.port, 'stats'), 'sync_full'), 0, 'R made no full sync');
});
