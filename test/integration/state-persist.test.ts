/**
 * The state file (replid, replid2, second_repl_offset, epoch) names which snapshot files and log segments a restart
 * trusts. A write of it that fails (EPERM, ENOSPC, EIO) while the relay goes on in a new history must not cost that
 * history at the next restart: the relay keeps trying, and once the fault is gone a SIGKILL loses nothing.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { relayArgs, startRelayProcess } from '../helpers/relay-process.js';
import { startReplica, waitConverged, stat } from '../helpers/replication.js';
import { mixedLoad } from '../helpers/mixed-load.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';

t.teardown(stopAll);

t.test('a state file write that failed during a full sync from upstream is retried: a SIGKILL after the fault cleared keeps the new history', async (t) => {
  const master = await startRedis({ args: ['--repl-backlog-size', '64mb'] });
  const m = await master.client();
  t.teardown(() => m.close());
  await m.call('DEBUG', 'POPULATE', 2000, 'seed', 100);
  const { dir, port, args } = await relayArgs('relay-state-', master.port, 'log:\n  memory: 1mb\n  disk: 64mb\nweb:\n  port: 0\nupstream:\n  backoff-min: 50ms\n  backoff-max: 300ms\n');
  let relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const replica = await startReplica(port);
  const r = await replica.client();
  t.teardown(() => r.close());
  await waitConverged(m, [r], 'replica online');
  const x = await RedisClient.connect(port);
  await waitFor(async () => stat(await x.info('stats'), 'relay_upstream_full_syncs') === 1 || undefined, { what: 'first full sync' });

  // The state file cannot be replaced (as root: immutable; a full or failing disk does the same to its rename).
  const state = join(dir, 'data', 'state.json');
  const epochBefore = (JSON.parse(readFileSync(state, 'utf8')) as { epoch: number }).epoch;
  execFileSync('chattr', ['+i', state]);
  t.teardown(() => {
    try {
      execFileSync('chattr', ['-i', state]);
    } catch {
      // gone already
    }
  });
  // A new history from upstream: the master's backlog no longer holds the relay's offset.
  // (the relay is stopped meanwhile, so that it cannot reconnect before the backlog moved past it).
  await m.call('CONFIG', 'SET', 'repl-backlog-size', '16384');
  relay.proc.kill('SIGSTOP');
  await m.call('CLIENT', 'KILL', 'TYPE', 'replica');
  await mixedLoad(master.port, { commands: 300, seed: 9, bigValue: 2000 });
  relay.proc.kill('SIGCONT');
  await m.call('CONFIG', 'SET', 'repl-backlog-size', String(64 * 1024 * 1024));
  await waitFor(async () => stat(await x.info('stats'), 'relay_upstream_full_syncs') === 2 || undefined, { what: 'the full sync from upstream' });
  await waitFor(() => /could not persist replication state/.test(relay.logs()) || undefined, { what: 'the failed state write logged' });
  await waitConverged(m, [r], 'replica converged in the new history');

  // The fault goes away; the relay goes on; then it is killed.
  execFileSync('chattr', ['-i', state]);
  await mixedLoad(master.port, { commands: 500, seed: 10 });
  await waitConverged(m, [r], 'replica converged');
  await waitFor(() => (JSON.parse(readFileSync(state, 'utf8')) as { epoch: number }).epoch > epochBefore || undefined, {
    what: 'the state file names the new history once it can be written',
    timeoutMs: 10_000,
  });
  await x.close();
  await relay.stop('SIGKILL');
  const mBefore = await m.info('stats');

  relay = await startRelayProcess(args);
  await m.call('SET', 'after-restart', '1');
  await waitConverged(m, [r], 'replica converges after the restart');
  const mAfter = await m.info('stats');
  t.equal(stat(mAfter, 'sync_full'), stat(mBefore, 'sync_full'), 'the master made no full sync for the restarted relay');
  t.equal(stat(mAfter, 'total_forks'), stat(mBefore, 'total_forks'), 'the master did not fork');
  t.notMatch(relay.logs(), /full sync from upstream/, 'the restart kept its history');
  await replica.stop();
});
