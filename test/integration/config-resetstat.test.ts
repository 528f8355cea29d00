/**
 * CONFIG RESETSTAT, as harnesses and operators use it on Redis: reset, act, then read `sync_full`. It used to
 * answer OK and reset nothing, so a relay seemed to have made the full syncs of before the reset.
 */
import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica, stat, waitConverged } from '../helpers/replication.js';
import { call, infoOf, writeKeys } from '../helpers/failover.js';

t.teardown(stopAll);

t.test("CONFIG RESETSTAT starts INFO's stats from 0, as Redis's; /status and /metrics keep counting", async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const x = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
  t.teardown(() => x.stop());
  const first = await startReplica(x.port);
  const r1 = await first.client();
  t.teardown(() => r1.close());
  await writeKeys(master.port, 'a');
  await waitConverged(m, [r1], 'the first replica online');
  const before = await infoOf(x.port, 'stats');
  t.equal(stat(before, 'sync_full'), 1);
  t.equal(stat(before, 'relay_upstream_full_syncs'), 1);
  t.ok(stat(before, 'total_net_repl_output_bytes') > 0);

  // What Redis itself does, for the record: the same command on the master zeroes its sync_full.
  t.equal(await m.call('CONFIG', 'RESETSTAT'), 'OK');
  t.equal(stat(await m.info('stats'), 'sync_full'), 0, 'a Redis master: sync_full 0 after RESETSTAT');

  t.equal(await call(x.port, 'CONFIG', 'RESETSTAT'), 'OK');
  const after = await infoOf(x.port, 'stats');
  t.equal(stat(after, 'sync_full'), 0, 'the relay: sync_full 0 after RESETSTAT');
  t.equal(stat(after, 'sync_partial_ok'), 0);
  t.equal(stat(after, 'relay_upstream_full_syncs'), 0);
  t.ok(stat(after, 'total_net_repl_output_bytes') < stat(before, 'total_net_repl_output_bytes'));

  const second = await startReplica(x.port);
  const r2 = await second.client();
  t.teardown(() => r2.close());
  await writeKeys(master.port, 'b');
  await waitConverged(m, [r1, r2], 'both replicas online');
  t.equal(stat(await infoOf(x.port, 'stats'), 'sync_full'), 1, 'counts the full sync after the reset');
  t.equal(x.relay.status().stats.syncFull, 2, '/status (and /metrics) still count from the start');
});
