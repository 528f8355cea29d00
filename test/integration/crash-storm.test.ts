/**
 * Crashes at any instant: the relay is SIGKILLed again and again while an order-sensitive load runs (each restart
 * finds a torn log tail, a write half done, replicas ahead of what reached the disk). Every replica must end with the
 * master's digest, and nothing may cost a full sync. STORM_KILLS, STORM_MEMORY (log.memory) and STORM_LOGS (a file
 * for every life's log) make a longer storm by hand.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { relayArgs, startRelayProcess, type RelayProcess } from '../helpers/relay-process.js';
import { onlineReplicas, waitConverged, stat } from '../helpers/replication.js';
import { pacedLoad, seededRandom } from '../helpers/mixed-load.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';

t.teardown(stopAll);

const KILLS = Number(process.env.STORM_KILLS ?? 8);
const MEMORY = process.env.STORM_MEMORY ?? '64mb';

t.test(`a relay SIGKILLed ${KILLS} times under an order-sensitive load: replicas end with the master's digest`, async (t) => {
  const master = await startRedis({ args: ['--repl-backlog-size', '256mb'] });
  const m = await master.client();
  t.teardown(() => m.close());
  const { port, args } = await relayArgs('relay-storm-', master.port, `log:\n  memory: ${MEMORY}\n  disk: 1gb\nweb:\n  port: 0\nupstream:\n  backoff-min: 20ms\n  backoff-max: 200ms\n`);
  let relay: RelayProcess = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const { servers: replicas, clients: rc } = await onlineReplicas(t, port, m, 2);
  const mBefore = await m.info('stats');
  const x0 = await RedisClient.connect(port);
  // The replicas' first syncs are full ones; after that, none.
  let fullSyncs = -stat(await x0.info('stats'), 'sync_full');
  await x0.close();

  const rand = seededRandom(7);
  // Paced 16 MB ahead of the replicas at most: they stand still while the relay restarts, so each restart stops the
  // load there instead of piling up stream for the relay and the replicas to catch up on afterwards.
  const load = pacedLoad(master.port, m, rc, 1000, 16_000_000);
  const lives: string[] = [];
  for (let k = 0; k < KILLS; k++) {
    // A crash at any instant, but not faster than the relay catches up: the master's backlog must cover its absence.
    const x = await RedisClient.connect(port);
    await waitFor(async () => stat(await m.info('replication'), 'master_repl_offset') - stat(await x.info('replication'), 'master_repl_offset') < 8_000_000 || undefined, { what: 'the relay caught up', timeoutMs: 60000 });
    const before = stat(await x.info('replication'), 'master_repl_offset');
    const step = rand(4_000_000);
    await waitFor(async () => stat(await x.info('replication'), 'master_repl_offset') >= before + step || undefined, { what: 'the relay took more stream', timeoutMs: 60000 });
    fullSyncs += stat(await x.info('stats'), 'sync_full');
    await x.close();
    await relay.stop('SIGKILL');
    lives.push(relay.logs());
    relay = await startRelayProcess(args);
  }
  await load.stop();
  await m.call('SET', 'after-storm', '1');
  // The oracle: an order-sensitive load gives equal digests only if no byte was lost, repeated or reordered.
  await waitConverged(m, rc, 'replicas converge after the storm', 120000);
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  fullSyncs += stat(await x.info('stats'), 'sync_full');
  lives.push(relay.logs());
  if (process.env.STORM_LOGS) writeFileSync(process.env.STORM_LOGS, lives.map((l, i) => `===== life ${i}\n${l}`).join('\n'));
  const mAfter = await m.info('stats');
  t.equal(stat(mAfter, 'sync_full'), stat(mBefore, 'sync_full'), 'the master made no full sync (no fork)');
  t.equal(stat(mAfter, 'sync_partial_ok') - stat(mBefore, 'sync_partial_ok'), KILLS, 'it continued the relay after every restart');
  t.equal(fullSyncs, 0, 'no replica needed a full sync from the relay');
  t.equal(stat(await x.info('replication'), 'master_repl_offset'), stat(await m.info('replication'), 'master_repl_offset'), 'relay offset equals the master');
  for (const s of replicas) await s.stop();
});
