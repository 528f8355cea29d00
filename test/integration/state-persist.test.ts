/**
 * The state file (replid, replid2, second_repl_offset, epoch) names which snapshot files and log segments a restart
 * trusts. A write of it that fails (EPERM, ENOSPC, EIO) while the relay goes on in a new history must not cost that
 * history at the next restart: the relay keeps trying, and once the fault is gone a SIGKILL loses nothing.
 */
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { relayArgs, startRelayProcess } from '../helpers/relay-process.js';
import { replicaOf, waitConverged, stat } from '../helpers/replication.js';
import { mixedLoad } from '../helpers/mixed-load.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';

t.teardown(stopAll);

/** A master holding 2,000 keys (closed at the end of `t`) and the arguments of a relay of it: a small log, quick reconnects. */
async function masterAndRelayArgs(t: Test) {
  const master = await startRedis({ args: ['--repl-backlog-size', '64mb'] });
  const m = await master.client();
  t.teardown(() => m.close());
  await m.call('DEBUG', 'POPULATE', 2000, 'seed', 100);
  const relay = await relayArgs('relay-state-', master.port, 'log:\n  memory: 1mb\n  disk: 64mb\nweb:\n  port: 0\nupstream:\n  backoff-min: 50ms\n  backoff-max: 300ms\n');
  return { master, m, ...relay };
}

/**
 * `restart` starts the relay again; a write on the master `m` must reach the replica `r` through it, and the master
 * must make no full sync and no fork for it. Returns the master's stats before and after.
 */
async function convergesWithoutFork(t: Test, m: RedisClient, r: RedisClient, restart: () => Promise<unknown>) {
  const mBefore = await m.info('stats');
  await restart();
  await m.call('SET', 'after-restart', '1');
  await waitConverged(m, [r], 'replica converges after the restart');
  const mAfter = await m.info('stats');
  t.equal(stat(mAfter, 'sync_full'), stat(mBefore, 'sync_full'), 'the master made no full sync for the restarted relay');
  t.equal(stat(mAfter, 'total_forks'), stat(mBefore, 'total_forks'), 'the master did not fork');
  return { mBefore, mAfter };
}

t.test('a state file write that failed during a full sync from upstream is retried: a SIGKILL after the fault cleared keeps the new history', async (t) => {
  const { master, m, dir, port, args } = await masterAndRelayArgs(t);
  let relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const { replica, r } = await replicaOf(t, port);
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
  await convergesWithoutFork(t, m, r, () => startRelayProcess(args).then((p) => (relay = p)));
  t.notMatch(relay.logs(), /full sync from upstream/, 'the restart kept its history');
  await replica.stop();
});

t.test('a relay killed between publishing a new history\'s snapshot and writing the state file restarts in that history, without a second full sync', async (t) => {
  const { master, m, dir, port, args } = await masterAndRelayArgs(t);
  let relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const { replica, r } = await replicaOf(t, port);
  await mixedLoad(master.port, { commands: 500, seed: 1 });
  await waitConverged(m, [r], 'replica online');
  await relay.stop('SIGKILL');

  // Started again to die just before its second exclusive create of a temp file: the first is the last segment's
  // checksums rewritten at recovery, the second the state file's temp file, after the snapshot of the new history
  // was renamed into place.
  relay = await startRelayProcess(args, { env: { ...process.env, PSYNC_RELAY_FAILPOINT: 'open:wx@2' } });
  await m.call('CONFIG', 'SET', 'repl-backlog-size', '16384');
  relay.proc.kill('SIGSTOP');
  await m.call('CLIENT', 'KILL', 'TYPE', 'replica');
  await mixedLoad(master.port, { commands: 300, seed: 9, bigValue: 2000 });
  relay.proc.kill('SIGCONT');
  // A full sync (the master forks) and a snapshot written: on a disk shared with another writer, over 20 s once.
  await waitFor(() => relay.proc.signalCode === 'SIGKILL' || undefined, { what: 'the relay killed by its failpoint', timeoutMs: 60_000 });
  await m.call('CONFIG', 'SET', 'repl-backlog-size', String(64 * 1024 * 1024));
  t.match(relay.logs(), /failpoint: SIGKILL before open:wx/);
  const data = join(dir, 'data');
  const state = JSON.parse(readFileSync(join(data, 'state.json'), 'utf8')) as { epoch: number };
  const newer = readdirSync(data).filter((n) => new RegExp(`^snapshot-${String(state.epoch + 1).padStart(10, '0')}-`).test(n));
  t.equal(newer.length, 1, `the new history's snapshot is published (${newer.join(', ')}) while state.json still names epoch ${state.epoch}`);
  const { mBefore, mAfter } = await convergesWithoutFork(t, m, r, () => startRelayProcess(args).then((p) => (relay = p)));
  t.equal(stat(mAfter, 'sync_partial_ok') - stat(mBefore, 'sync_partial_ok'), 1, 'the master continued the relay');
  t.match(relay.logs(), /state file names an older history than the newest snapshot/, 'the repair is logged');
  const now = JSON.parse(readFileSync(join(data, 'state.json'), 'utf8')) as { epoch: number; replid: string };
  t.equal(now.epoch, state.epoch + 1, 'state.json now names the new history');
  t.equal(now.replid, (await m.info('replication'))['master_replid'], "with the master's replid");
  await replica.stop();
});

t.test("the relay's files (snapshot, log segments, checksums, state, time marks) are readable by its own user only", async (t) => {
  const { m, dir, port, args } = await masterAndRelayArgs(t);
  const relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const { replica, r } = await replicaOf(t, port);
  await m.call('SET', 'k', 'v');
  await waitConverged(m, [r], 'replica online');
  const data = join(dir, 'data');
  const files = (): string[] => readdirSync(data, { recursive: true, encoding: 'utf8' });
  await waitFor(() => (files().some((n) => n.startsWith('marks-')) && files().some((n) => n.endsWith('.sum'))) || undefined, { what: 'a time marks file and a .sum file' });
  const open = files()
    .filter((n) => statSync(join(data, n)).isFile() && (statSync(join(data, n)).mode & 0o077) !== 0)
    .map((n) => `${n} ${(statSync(join(data, n)).mode & 0o777).toString(8)}`);
  t.same(open, [], 'no file of the data directory is readable by group or others (an RDB is the whole dataset)');
  for (const d of [data, join(data, 'log')]) t.equal(statSync(d).mode & 0o077, 0, `${d}, made by the relay, is its own user's only`);
  await replica.stop();
});
