/**
 * Crashes at any instant in a chain M → X1 → X2 → replicas: X1 and X2 are SIGKILLed in turn, again and again, while an
 * order-sensitive load runs. A restarted X1 may have less of the stream on disk than X2 already took from its memory
 * (X2 is then ahead of its master); a restarted X2 asks X1 for what its own log kept. Every replica must end with the
 * master's digest, and nothing may cost a full sync anywhere. CHAIN_KILLS and CHAIN_MEMORY (log.memory) make a longer
 * storm by hand.
 */
import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { relayArgs, startRelayProcess, type RelayProcess } from '../helpers/relay-process.js';
import { offsetsBeside, onlineReplicas, waitConverged, stat, statOf } from '../helpers/replication.js';
import { pacedLoad, seededRandom } from '../helpers/mixed-load.js';
import { waitFor } from '../helpers/wait.js';

t.teardown(stopAll);

const KILLS = Number(process.env.CHAIN_KILLS ?? 2);
const YAML = `log:\n  memory: ${process.env.CHAIN_MEMORY ?? '64mb'}\n  disk: 1gb\nweb:\n  port: 0\nupstream:\n  backoff-min: 20ms\n  backoff-max: 200ms\n`;

const offset = (port: number) => statOf(port, 'replication', 'master_repl_offset');
const fullSyncsServed = (port: number) => statOf(port, 'stats', 'sync_full');

t.test(`a chain M → X1 → X2 with either relay SIGKILLed ${KILLS} times under load: no full sync anywhere, equal digests`, async (t) => {
  const master = await startRedis({ args: ['--repl-backlog-size', '256mb'] });
  const m = await master.client();
  t.teardown(() => m.close());
  const a1 = await relayArgs('relay-chain-x1-', master.port, YAML);
  let x1: RelayProcess = await startRelayProcess(a1.args);
  t.teardown(() => x1.stop('SIGKILL'));
  const a2 = await relayArgs('relay-chain-x2-', a1.port, YAML);
  let x2: RelayProcess = await startRelayProcess(a2.args);
  t.teardown(() => x2.stop('SIGKILL'));
  const { servers: replicas, clients: rc } = await onlineReplicas(t, a2.port, m, 2);
  const mBefore = await m.info('stats');
  // The first syncs (X2 from X1, the replicas from X2) are full ones; after that, none.
  let full1 = -(await fullSyncsServed(a1.port));
  let full2 = -(await fullSyncsServed(a2.port));

  const rand = seededRandom(11);
  // Paced 16 MB ahead of the replicas at most: they stand still while X1 or X2 restarts, so each restart stops the
  // load there instead of piling up stream for the chain to catch up on afterwards.
  const load = pacedLoad(master.port, m, rc, 2000, 16_000_000);
  const killed = { x1: 0, x2: 0 };
  for (let k = 0; k < KILLS; k++) {
    // X1 and X2 in turn; each at a random point of the stream.
    const first = k % 2 === 0;
    const victim = first ? a1 : a2;
    // Not faster than the chain catches up: the master's backlog (and X1's log) must cover the absence.
    await waitFor(async () => stat(await m.info('replication'), 'master_repl_offset') - (await offset(a2.port)) < 8_000_000 || undefined, { what: 'the chain caught up', timeoutMs: 60000 });
    const before = await offset(victim.port);
    const step = rand(4_000_000);
    await waitFor(async () => (await offset(victim.port)) >= before + step || undefined, { what: 'the relay took more stream', timeoutMs: 60000 });
    if (first) {
      full1 += await fullSyncsServed(a1.port);
      await x1.stop('SIGKILL');
      x1 = await startRelayProcess(a1.args);
      killed.x1++;
    } else {
      full2 += await fullSyncsServed(a2.port);
      await x2.stop('SIGKILL');
      x2 = await startRelayProcess(a2.args);
      killed.x2++;
    }
  }
  await load.stop();
  await m.call('SET', 'after-storm', '1');
  await waitConverged(m, rc, 'replicas converge after the storm', 120000);
  full1 += await fullSyncsServed(a1.port);
  full2 += await fullSyncsServed(a2.port);
  const mAfter = await m.info('stats');
  t.equal(stat(mAfter, 'sync_full'), stat(mBefore, 'sync_full'), 'the master made no full sync (no fork)');
  t.equal(stat(mAfter, 'sync_partial_ok') - stat(mBefore, 'sync_partial_ok'), killed.x1, 'the master continued X1 after each of its restarts');
  t.equal(full1, 0, 'X1 gave X2 no full sync');
  t.equal(full2, 0, 'X2 gave its replicas no full sync');
  // Read together: the master's PINGs move its offset at any moment, and a relay may show one the master has too.
  const { master: end, others: [o1, o2] } = await offsetsBeside(master.port, [a1.port, a2.port]);
  t.equal(o1, end, 'X1 has the master offset');
  t.equal(o2, end, 'X2 has the master offset');
  for (const s of replicas) await s.stop();
});
