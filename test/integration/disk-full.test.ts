/**
 * A real disk that fills: the relay's data directory on a small tmpfs, and on ext4 on a loop device (mounted here as
 * root), filled up under load while one replica is held behind the memory tail (SIGSTOP). The relay must keep
 * forwarding from memory, say so, drop only the replica it can no longer serve, resume disk logging by itself once
 * space returns, and every replica must end with the master's dataset.
 */
import t, { type Test } from 'tap';
import { rmSync, writeFileSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { logsOnFailure, startRelayProcess } from '../helpers/relay-process.js';
import { freePort } from '../helpers/ports.js';
import { startReplica, waitConverged, stat, replicaSyncs, REPLICA_BAD_STREAM_LINE } from '../helpers/replication.js';
import { benchmarkLoad } from '../helpers/load.js';
import { masterUpstreamAndSource, promoteBehind } from '../helpers/ahead-failover.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';
import { tempDir } from '../helpers/temp-dir.js';
import { fillFilesystem, smallFilesystem } from '../helpers/small-fs.js';

t.teardown(stopAll);

/** The relay as a process with `yaml` as its config, following the master on `masterPort`, `dir` its data directory; a client of it. */
async function relayProcess(t: Test, yaml: string, masterPort: number, dir: string) {
  const conf = join(tempDir('relay-conf-'), 'relay.yaml');
  writeFileSync(conf, yaml);
  const port = await freePort();
  const relay = await startRelayProcess(['--config', conf, '--upstream', `127.0.0.1:${masterPort}`, '--port', String(port), '--dir', dir]);
  t.teardown(() => relay.stop('SIGKILL'));
  logsOnFailure(t, relay);
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  return { port, relay, x };
}

for (const kind of ['tmpfs', 'ext4'] as const) {
  t.test(`a disk that fills under load (${kind}): forwarding goes on from memory, nothing wrong is served, logging resumes by itself`, async (t) => {
    const master = await startRedis({ args: ['--repl-backlog-size', '256mb'] });
    const m = await master.client();
    t.teardown(() => m.close());
    await m.call('DEBUG', 'POPULATE', 5000, 'seed', 100);

    const { dir: fs } = smallFilesystem(t, kind, '48m');
    const webPort = await freePort();
    const { port, relay, x } = await relayProcess(
      t,
      'log:\n  memory: 1mb\n  disk: 1gb\n  disk-queue: 4mb\nreplication:\n  snapshot-refresh-min-interval: 1s\n' +
        `web:\n  port: ${webPort}\n` +
        'upstream:\n  backoff-min: 50ms\n  backoff-max: 500ms\n',
      master.port,
      join(fs, 'data'),
    );

    const online = await startReplica(port);
    const held = await startReplica(port);
    const a = await online.client();
    const b = await held.client();
    t.teardown(() => a.close());
    t.teardown(() => b.close());
    await benchmarkLoad(master.port, 5000, 512, 5000);
    await waitConverged(m, [a, b], 'both replicas online');
    t.equal((await x.info('replication'))['relay_log_disk_state'], 'ok');

    // Hold one replica behind: it stops reading, and the stream goes on without it.
    held.proc.kill('SIGSTOP');
    t.teardown(() => held.proc.kill('SIGCONT'));
    const filler = join(fs, 'filler');
    const filled = fillFilesystem(filler);
    t.ok(filled > 0, `filesystem filled (${filled} bytes of filler)`);

    const states = new Set<string>();
    const readyNotes = new Set<string>();
    const problems = new Set<string>();
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const xi = await x.info('replication');
        states.add(xi['relay_log_disk_state']!);
        if (xi['relay_log_disk_problem']) problems.add(xi['relay_log_disk_problem']);
        const ready = (await (await fetch(`http://127.0.0.1:${webPort}/readyz`, { headers: { connection: 'close' } })).json()) as { notes: string[] };
        for (const n of ready.notes) readyNotes.add(n);
        if ((await x.callString('PING')) !== 'PONG') throw new Error('the relay stopped answering');
      }
    })();
    await benchmarkLoad(master.port, 40000, 512, 5000);
    await waitConverged(m, [a], 'the online replica keeps up while the disk is full', 60000);
    await waitFor(() => states.has('detached') || undefined, { what: 'the disk log given up past log.disk-queue' });
    t.ok(states.has('failing') || states.has('detached'), `disk states seen: ${[...states].join(', ')}`);
    // A slow device can also fall behind log.disk-queue between failures: some of the problems name ENOSPC.
    t.ok([...problems].some((p) => /ENOSPC/.test(p)), `INFO names the cause: ${[...problems].join('; ')}`);
    t.ok([...readyNotes].some((n) => /ENOSPC/.test(n)), `/readyz notes it: ${[...readyNotes].join('; ')}`);
    t.match(relay.logs(), /disk log write failed: forwarding from memory, retrying/, 'the failure is logged');
    t.match(relay.logs(), /"code":"ENOSPC"/);

    // Space comes back: disk logging resumes on its own, as a new history on disk.
    rmSync(filler);
    await waitFor(async () => (await x.info('replication'))['relay_log_disk_state'] === 'ok' || undefined, { what: 'disk logging resumed' });
    t.match(relay.logs(), /disk log resumed: a new history on disk/);
    polling = false;
    await poller;

    // The held replica comes back: the relay can no longer serve its offset from what it holds (its disk history was
    // dropped), so it full-syncs, from a snapshot fetched now that the disk takes writes again.
    held.proc.kill('SIGCONT');
    await m.call('SET', 'after-the-storm', '1');
    await waitConverged(m, [a, b], 'every replica ends with the master dataset', 90000);
    t.equal(relay.proc.exitCode, null, 'the relay is alive');
    const xi = await x.info('replication');
    t.equal(xi['relay_log_disk_state'], 'ok');
    t.ok(stat(xi, 'relay_log_disk_detaches') >= 1);
    await Promise.all([online.stop(), held.stop()]);
  });
}

t.test('an RDB from upstream larger than the space left fails its transfer, is never committed cut short, is not asked again (no fork on the master) until there is more room, and is taken whole then', async (t) => {
  const master = await startRedis({ args: ['--rdbcompression', 'no', '--repl-diskless-sync-delay', '0'] });
  const m = await master.client();
  t.teardown(() => m.close());
  await m.call('DEBUG', 'POPULATE', 20000, 'big', 100);
  const { dir: fs } = smallFilesystem(t, 'tmpfs', '1m');
  const conf = join(tempDir('relay-conf-'), 'relay.yaml');
  writeFileSync(conf, 'log:\n  disk: 0\nweb:\n  port: 0\nupstream:\n  backoff-min: 50ms\n  backoff-max: 200ms\n');
  const port = await freePort();
  const relay = await startRelayProcess(['--config', conf, '--upstream', `127.0.0.1:${master.port}`, '--port', String(port), '--dir', join(fs, 'data')]);
  t.teardown(() => relay.stop('SIGKILL'));
  const failures = () => relay.logs().split('\n').filter((l) => l.includes('"upstream link failed"') && l.includes('"code":"ENOSPC"')).length;
  // At once (not after repl-timeout: a failed file never drains).
  await waitFor(() => failures() >= 1 || undefined, { what: 'the transfer failing on the full disk', timeoutMs: 10_000 });
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  const fullSyncs = stat(await m.info('stats'), 'sync_full');
  // Three seconds of watching (INFO, polled): the link used to full-sync again every backoff (200 ms here), a fork on
  // the master each time.
  let most = fullSyncs;
  for (const until = Date.now() + 3000; Date.now() < until; ) most = Math.max(most, stat(await m.info('stats'), 'sync_full'));
  t.equal(most, fullSyncs, 'no full sync is asked of the master while the disk has no more room');
  t.equal(failures(), 1, 'one transfer failed');
  t.ok(Number((await x.info('replication'))['relay_snapshot_waiting_for_room']) > 0, 'INFO names the room it waits for');
  t.match(relay.logs(), /full sync from upstream waits for room on the disk/, 'and the log');
  t.notMatch(relay.logs(), /rdb received, snapshot committed/, 'no RDB cut short is committed');

  // Killed and started again, the relay still waits: it used to ask the master at once, a fork per restart.
  await relay.stop('SIGKILL');
  const again = await startRelayProcess(['--config', conf, '--upstream', `127.0.0.1:${master.port}`, '--port', String(port), '--dir', join(fs, 'data')]);
  t.teardown(() => again.stop('SIGKILL'));
  logsOnFailure(t, again);
  await waitFor(() => /full sync from upstream waits for room on the disk/.test(again.logs()) || undefined, { what: 'the restarted relay to wait for room', signal: again.exited });
  const restarted = stat(await m.info('stats'), 'sync_full');
  let afterRestart = restarted;
  for (const until = Date.now() + 3000; Date.now() < until; ) afterRestart = Math.max(afterRestart, stat(await m.info('stats'), 'sync_full'));
  t.equal(afterRestart, restarted, 'after a restart, no full sync is asked of the master while the disk has no more room');
  t.equal(restarted, fullSyncs, 'nor while it started');

  execFileSync('mount', ['-o', 'remount,size=64m', fs]);
  const replica = await startReplica(port);
  const r = await replica.client();
  t.teardown(() => r.close());
  await waitConverged(m, [r], 'the replica full-syncs the whole dataset once space returns');
  await replica.stop();
});

/** Snapshot fetches the relay (`x`) starts and forks on the master (`m`) over three seconds of watching (the relay's INFO, polled). */
async function watchFetches(m: RedisClient, x: RedisClient): Promise<{ started: number; forked: number }> {
  const forks = stat(await m.info('stats'), 'total_forks');
  const refreshes = Number((await x.info('replication'))['relay_snapshot_refreshes']);
  let seen = refreshes;
  for (const until = Date.now() + 3000; Date.now() < until; ) seen = Math.max(seen, Number((await x.info('replication'))['relay_snapshot_refreshes']));
  return { started: seen - refreshes, forked: stat(await m.info('stats'), 'total_forks') - forks };
}

/**
 * A master with a 3 MB dataset, the relay on a 48 MB tmpfs (1 MB memory tail, fetches at most once a second; `yaml`
 * adds to its replication and upstream sections) with one replica online, then another program filling every free
 * byte, and 20 MB of stream that leaves the relay's snapshot behind: the next replica needs a fresh snapshot.
 */
async function fullDisk(t: Test, opts: { replication: string; source?: boolean; diskLog?: boolean; history?: string }) {
  // A backlog the load cannot outrun: a snapshot source that drops its link under a busy machine continues, and the
  // master forks only for the relay.
  const master = await startRedis({ args: ['--repl-backlog-size', '64mb'] });
  const m = await master.client();
  t.teardown(() => m.close());
  await m.call('DEBUG', 'POPULATE', 30000, 'seed', 100);
  // A replica of the master the relay fetches its snapshots from (it forks, the master does not).
  const source = opts.source ? await startRedis({ args: ['--replicaof', '127.0.0.1', String(master.port)] }) : null;
  if (source) {
    const sc = await source.client();
    t.teardown(() => sc.close());
    await waitConverged(m, [sc], 'the snapshot source');
  }
  const { dir: fs } = smallFilesystem(t, 'tmpfs', '48m');
  const { port, relay, x } = await relayProcess(
    t,
    `log:\n  memory: 1mb\n  disk-queue: 4mb\n${opts.diskLog === false ? '  disk: 0\n' : ''}` +
      `replication:\n  snapshot-refresh-min-interval: 1s\n${opts.replication}${opts.history ? `history:\n${opts.history}` : ''}web:\n  port: 0\n` +
      `upstream:\n  backoff-min: 50ms\n  backoff-max: 500ms\n` +
      (source ? `  snapshot-source:\n    host: 127.0.0.1\n    port: ${source.port}\n` : ''),
    master.port,
    join(fs, 'data'),
  );
  const online = await startReplica(port);
  const a = await online.client();
  t.teardown(() => a.close());
  await waitConverged(m, [a], 'the first replica');
  const filler = join(fs, 'filler');
  t.ok(fillFilesystem(filler) > 0, 'filesystem filled by another program');
  await benchmarkLoad(master.port, 40000, 512, 5000);
  await waitConverged(m, [a], 'the online replica keeps up', 60000);
  return { m, port, relay, x, online, a, filler, source };
}

for (const [withSource, diskLog] of [
  [false, true],
  [true, true],
  [false, false],
] as const) {
  t.test(`a disk full of other files${withSource ? ', snapshots from a snapshot source' : ''}${diskLog ? '' : ', no disk log'}: a snapshot fetch that ran out of room is not retried (no fork${withSource ? ', and no fallback to the master' : ' on the master'}) until the disk has more room than it took; then the waiting replica syncs`, async (t) => {
    // A 1 s minimum interval: without the wait for room the master forked for a fetch every second. No fetch into
    // memory (the next test): the replica waits for room.
    const { m, port, relay, x, online, a, filler, source } = await fullDisk(t, { replication: '  full-sync-memory: 0\n', source: withSource, diskLog });
    const fresh = await startReplica(port);
    const b = await fresh.client();
    t.teardown(() => b.close());
    await waitFor(() => relay.logs().split('\n').find((l) => l.includes('"snapshot fetch failed"') && l.includes('ENOSPC')), {
      what: 'a snapshot fetch for it running out of room',
      timeoutMs: 20_000,
    });
    // Each second used to start another fetch, and fork the master for it.
    const { started, forked } = await watchFetches(m, x);
    t.equal(started, 0, 'no fetch starts while the disk has no room');
    t.equal(forked, 0, 'the master forks no more for it');
    // (The master's own fork count may move for the source replica itself, which follows it on its own.)
    if (source) t.notMatch(relay.logs(), /fetching from the master instead/, 'the source\'s fetch ran out of room: no fallback to the master, whose RDB would not fit either');
    t.ok(Number((await x.info('replication'))['relay_snapshot_waiting_for_room']) > 0, 'INFO names the room it waits for');
    // A backup (redis-cli --rdb) is owed the data as of now, which only a fetch could give: told why, not kept waiting.
    const cli = spawnSync('redis-cli', ['-p', String(port), '--rdb', join(tempDir('rdb-'), 'dump.rdb')], { encoding: 'utf8', timeout: 20_000 });
    t.equal(cli.status, 1, 'redis-cli --rdb exits 1');
    t.match(cli.stdout + cli.stderr, /no room on the relay's disk for a snapshot \(it needs more than \d+ bytes\)/, 'naming the disk');
    const waiting = relay.logs().split('\n').find((l) => l.includes('snapshot fetch waits for room on the disk')) ?? '';
    t.match(waiting, /"needBytes":\d+/, 'the log names how much room the last fetch took');
    t.match(waiting, /"freeBytes":\d+/, 'and how much is free');

    rmSync(filler);
    await waitConverged(m, [a, b], 'room again: the waiting replica full-syncs at once', 20_000);
    t.equal((await x.info('replication'))['relay_snapshot_waiting_for_room'], '0', 'and INFO clears it');
    t.match(relay.logs(), /room on the disk for the snapshot fetch again: fetching it/, 'and logs that it fetches again');
    await Promise.all([online.stop(), fresh.stop()]);
  });
}

t.test('a disk full of other files: the snapshot a waiting replica needs is fetched into memory and served from there, the disk still full', async (t) => {
  const { m, port, relay, x, online, a } = await fullDisk(t, { replication: '  full-sync-memory: 64mb\n' });
  const forks = stat(await m.info('stats'), 'total_forks');

  const fresh = await startReplica(port);
  const b = await fresh.client();
  t.teardown(() => b.close());
  await m.call('SET', 'written-while-it-waits', '1');
  await waitConverged(m, [a, b], 'the new replica full-syncs from memory, the disk still full', 30_000);
  t.match(relay.logs(), /fresh snapshot held in memory \(no room on the disk\)/, 'logged');
  t.equal(await b.callString('GET', 'written-while-it-waits'), '1', 'with what the master wrote meanwhile');
  // One fetch that ran out of room, one into memory: two forks, then none while it serves.
  t.equal(stat(await m.info('stats'), 'total_forks') - forks, 2, 'two forks on the master: the fetch that found no room, and the one into memory');

  // A replica that comes back later is served from the same memory snapshot while the log still holds its next byte.
  await fresh.stop();
  const again = await startReplica(port);
  const c = await again.client();
  t.teardown(() => c.close());
  await waitConverged(m, [a, c], 'another new replica, from the same memory snapshot');
  t.equal(stat(await m.info('stats'), 'total_forks') - forks, 2, 'no fork more for it');
  // Sent EOF-marked, each acknowledged at once after loading: stopped right after, it is no failed load.
  t.notMatch(relay.logs(), /without acknowledging the stream/, 'the replica stopped after loading its snapshot is not counted as a failed load');
  await Promise.all([online.stop(), again.stop()]);
});

t.test('a disk full of other files: history.snapshot-interval fetches no snapshot into memory (a fork on the master) while no replica waits for one', async (t) => {
  // The interval asks every second here (every 10 s by default) whether the newest snapshot on disk is old enough to
  // refresh. With none there (pruned, no room for another), each ask went on to fetch one into memory: on CI's
  // default config, a fork on the master every 10 s for a snapshot nobody took. A point-in-time snapshot only the
  // disk can hold: it waits for room.
  const { m, port, online } = await fullDisk(t, { replication: '  full-sync-memory: 64mb\n', history: '  snapshot-interval: 1s\n' });
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  await waitFor(async () => Number((await x.info('replication'))['relay_snapshot_waiting_for_room']) > 0 || undefined, {
    what: 'a periodic fetch that ran out of room',
    timeoutMs: 20_000,
  });
  // Three of its asks.
  const { started, forked } = await watchFetches(m, x);
  t.equal(started, 0, 'no fetch starts');
  t.equal(forked, 0, 'the master forks no more');
  await online.stop();
});

t.test('a disk full of other files: a snapshot fetched into memory ahead of the stream is never served under a new id whose history left it behind', async (t) => {
  // The memory branch of the replication audit's finding F1 (the file branch: snapshot-source.test.ts). The relay's
  // upstream U stalls at O while the snapshot source S goes on to X; a replica waiting for a full sync, the disk full,
  // makes the relay fetch a snapshot from S into memory, at X: ahead of the stream, held until the log reaches X. The
  // master dies and U is promoted at O < X with a new id B. Once B's stream passes X, that snapshot holds the dead
  // master's writes between O and X, which B never had.
  const a = await masterUpstreamAndSource(t);
  const { master, m, upstream, source, s } = a;
  const { dir: fs } = smallFilesystem(t, 'tmpfs', '48m');
  // A 4 MB memory log and no disk log: the stream after the relay's first snapshot soon leaves it unusable.
  const { port, relay, x } = await relayProcess(
    t,
    'log:\n  memory: 4mb\n  disk: 0\nreplication:\n  snapshot-refresh-min-interval: 0s\n  full-sync-memory: 64mb\nweb:\n  port: 0\n' +
      `upstream:\n  backoff-min: 50ms\n  backoff-max: 500ms\n  snapshot-source:\n    host: 127.0.0.1\n    port: ${source.port}\n`,
    upstream.port,
    join(fs, 'data'),
  );
  const early = await startReplica(port);
  const e = await early.client();
  t.teardown(() => e.close());
  await waitConverged(m, [e], 'a replica of the relay online');
  await benchmarkLoad(master.port, 60_000, 100, 100_000);
  await waitConverged(m, [e], 'the stream leaves the first snapshot behind the log');
  // Within a second of the replica catching up (ReplLog.settle): a replica behind when the last block began held it.
  await waitFor(async () => stat(await x.info('replication'), 'repl_backlog_first_byte_offset') > 1 || undefined, {
    what: "the log no longer holding the first snapshot's next byte",
    timeoutMs: 5000,
  });
  t.ok(fillFilesystem(join(fs, 'filler')) > 0, 'filesystem filled by another program');

  upstream.proc.kill('SIGSTOP');
  await benchmarkLoad(master.port, 200_000, 100, 100_000);
  await waitConverged(m, [s], 'the source has what the master wrote; the stalled upstream and the relay do not');
  const X = stat(await s.info('replication'), 'master_repl_offset');
  const late = await startReplica(port);
  const l = await late.client();
  t.teardown(() => l.close());
  const held = await waitFor(() => relay.logs().split('\n').find((line) => line.includes('fresh snapshot held in memory')), {
    what: 'a snapshot fetched into memory from the source for the waiting replica',
  });
  t.match(held, new RegExp(`"offset":${X}\\b`), `fetched at the source's offset ${X}`);
  const O = stat(await x.info('replication'), 'master_repl_offset');
  t.ok(O < X, `the snapshot (at ${X}) is ahead of the relay's stream (at ${O})`);

  // Into the window where the old snapshot's next byte is held (the log passed X by less than its 4 MB), in steps of
  // about 0.3 MB: a second or more there, across the relay's ticks that serve waiting replicas.
  const promoted = await promoteBehind(t, a, x, X, { step: 2_000, past: 0 });
  await a.u.call('SET', 'after', '1');
  await waitConverged(a.u, [e, l], "both replicas hold the new master's dataset", 60_000);
  t.notMatch(late.logs(), REPLICA_BAD_STREAM_LINE, 'the new replica read a whole stream');
  t.equal(replicaSyncs(late.logs()).full, 1, 'one full sync');
  t.match(relay.logs(), /snapshot fetch from the snapshot source failed: fetching from the master instead/, 'the source could not serve one (no link to its master): the master supplied it');
  const fetchedB = relay.logs().split('\n').filter((line) => line.includes('fresh snapshot held in memory') && line.includes(`"replid":"${promoted['master_replid']}"`));
  t.equal(fetchedB.length, 1, 'it was served from a snapshot of the new id, fetched into memory');
  t.equal(replicaSyncs(early.logs()).full, 1, 'the early replica went through the failover without another full sync');
  await Promise.all([early.stop(), late.stop()]);
});

t.test('a disk full of other files, snapshots from a snapshot source: a snapshot larger than full-sync-memory is not fetched into memory from the master instead (it would not fit either)', async (t) => {
  const { m, port, relay, online } = await fullDisk(t, { replication: '  full-sync-memory: 1mb\n', source: true });
  const forks = stat(await m.info('stats'), 'total_forks');
  const fresh = await startReplica(port);
  t.teardown(() => fresh.stop());
  await waitFor(() => relay.logs().split('\n').find((l) => l.includes('"snapshot fetch failed"') && l.includes('larger than replication.full-sync-memory')), {
    what: "the source's snapshot refused past the memory cap",
    timeoutMs: 20_000,
  });
  let seen = forks;
  for (const until = Date.now() + 3000; Date.now() < until; ) seen = Math.max(seen, stat(await m.info('stats'), 'total_forks'));
  t.equal(seen, forks, 'the master does not fork for a fetch that would not fit');
  t.notMatch(relay.logs(), /fetching from the master instead/, 'no fallback to the master');
  await online.stop();
});
