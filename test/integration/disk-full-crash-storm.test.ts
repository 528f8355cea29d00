/**
 * A disk that fills and empties while the relay is SIGKILLed: the faults of disk-full.test.ts and crash-storm.test.ts
 * together, as production sees them. The relay's data directory is on a small tmpfs, log.disk is far larger than the
 * filesystem (the disk runs out, not the limit), a write load runs on the master, and each round fills the
 * filesystem with a ballast file (to 100 %, or a few KB short), lets the stream run, SIGKILLs the relay at a seeded
 * moment (on the full disk, once its disk log failed, or just after space came back), restarts it (on the full disk
 * or after freeing it) and frees some or all of the ballast.
 *
 * The relay must never serve other bytes than the master's (its replicas end with the master's digest and offset and
 * never log a protocol error), never die by itself nor refuse to start on a full disk, never loop on full syncs (at
 * most one per replica per life of the relay), and once the disk is free again its disk log writes again, so that a
 * last restart costs no replica a full sync.
 *
 * DSTORM_SEED (default 1), DSTORM_ROUNDS (default 2), DSTORM_DIRECT (log.disk-direct, default true) and DSTORM_LOGS
 * (a file for every life's log and the replicas') make another or a longer storm by hand.
 */
import t from 'tap';
import { readdirSync, rmSync, truncateSync, statSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { relayArgs, startRelayProcess, type RelayProcess } from '../helpers/relay-process.js';
import { offsetsBeside, onlineReplicas, replicaSyncs, stat, statOf, waitConverged, REPLICA_BAD_STREAM_LINE } from '../helpers/replication.js';
import { benchmarkLoad } from '../helpers/load.js';
import { fillFilesystem, smallFilesystem } from '../helpers/small-fs.js';
import { mulberry32 } from '../helpers/chunks.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';

t.teardown(stopAll);

const SEED = Number(process.env.DSTORM_SEED ?? 1);
const ROUNDS = Number(process.env.DSTORM_ROUNDS ?? 2);
const DIRECT = (process.env.DSTORM_DIRECT ?? 'true') !== 'false';
/**
 * What a relay that failed by itself leaves in its output: a fatal line, an illegal state transition, or anything that
 * is not one of its JSON log lines (an uncaught exception's or unhandled rejection's stack, a Node warning).
 */
const relayFailure = (line: string): boolean => line !== '' && (!line.startsWith('{') || /illegal state transition|"level":60/.test(line));

t.test(`a disk that fills and empties while the relay is SIGKILLed, ${ROUNDS} rounds (seed ${SEED}, log.disk-direct ${DIRECT}): replicas end with the master's data, no full-sync loop, the disk log resumes`, async (t) => {
  t.comment(`DSTORM_SEED=${SEED} DSTORM_ROUNDS=${ROUNDS} DSTORM_DIRECT=${DIRECT}`);
  const r = mulberry32(SEED);
  const rand = (n: number): number => Math.floor(r() * n);
  const started = Date.now();

  const master = await startRedis({ args: ['--repl-backlog-size', '256mb'] });
  const m = await master.client();
  t.teardown(() => m.close());
  const { dir: fs } = smallFilesystem(t, 'tmpfs', '40m');
  const { port, args } = await relayArgs(
    'relay-dstorm-',
    master.port,
    `log:\n  memory: 4mb\n  disk: 1gb\n  disk-queue: 8mb\n  disk-direct: ${DIRECT}\nreplication:\n  snapshot-refresh-min-interval: 1s\n` +
      'web:\n  port: 0\nupstream:\n  backoff-min: 20ms\n  backoff-max: 200ms\n',
    join(fs, 'data'),
  );
  let relay: RelayProcess = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const { servers: replicas, clients: rc } = await onlineReplicas(t, port, m, 2);
  const lives: string[] = [];
  t.teardown(() => {
    // Also when the storm fails: every life's log (the one running too) and the replicas'.
    if (!process.env.DSTORM_LOGS) return;
    const text = [...lives.map((l, i) => `===== life ${i}\n${l}`), `===== last life\n${relay.logs()}`, ...replicas.map((s) => `===== replica ${s.port}\n${s.logs()}`)];
    writeFileSync(process.env.DSTORM_LOGS, text.join('\n'));
  });

  let loading = false;
  let batches = 0;
  let load: Promise<void> = Promise.resolve();
  const startLoad = (): void => {
    loading = true;
    load = (async () => {
      for (; loading; batches++) await benchmarkLoad(master.port, 20_000, 64, 10_000, 'set,incr,lpush');
    })();
  };
  /** Stops the load once its batch ends. */
  const stopLoad = async (): Promise<void> => {
    loading = false;
    await load;
  };
  startLoad();

  const counts = { relayFull: 0, relayPartial: 0, fetches: 0, upstreamFull: 0 };
  /** The counts of this life, read just before it ends (a sync decided in between is not counted). */
  const tally = async (): Promise<void> => {
    const s = await RedisClient.connect(port).then(async (x) => {
      try {
        return await x.info('stats');
      } finally {
        await x.close();
      }
    }).catch(() => null);
    if (!s) return;
    counts.relayFull += stat(s, 'sync_full');
    counts.relayPartial += stat(s, 'sync_partial_ok');
    counts.upstreamFull += stat(s, 'relay_upstream_full_syncs');
  };
  const kill = async (what: string): Promise<void> => {
    t.equal(relay.proc.exitCode ?? relay.proc.signalCode, null, `the relay was alive until our SIGKILL (${what})`);
    await tally();
    await relay.stop('SIGKILL');
    lives.push(relay.logs());
  };
  const ballast: string[] = [];
  const fill = (k: number | string, leave: number): number => {
    const file = join(fs, `ballast-${k}`);
    ballast.push(file);
    return fillFilesystem(file, leave);
  };
  /** Frees all of the ballast, or half of each file. */
  const free = (all: boolean): string => {
    for (const file of ballast.splice(0)) {
      if (all) rmSync(file, { force: true });
      else {
        truncateSync(file, Math.floor(statSync(file).size / 2));
        ballast.push(file);
      }
    }
    return all ? 'all freed' : 'half freed';
  };
  const offset = async (c: RedisClient): Promise<number> => stat(await c.info('replication'), 'master_repl_offset');
  const relayOffset = (): Promise<number> => statOf(port, 'replication', 'master_repl_offset');
  const diskState = async (): Promise<string> => (await RedisClient.connect(port).then(async (x) => {
    try {
      return await x.info('replication');
    } finally {
      await x.close();
    }
  }))['relay_log_disk_state']!;
  /** The master's stream moves on by up to `max` bytes (a random moment of the load). */
  const streamFor = async (max: number): Promise<void> => {
    const from = await offset(m);
    const step = rand(max);
    await waitFor(async () => (await offset(m)) >= from + step || undefined, { what: 'the load to move the stream on', timeoutMs: 60_000 });
  };

  for (let k = 0; k < ROUNDS; k++) {
    // Not faster than the relay catches up: the master's backlog must cover its absence. The load pauses meanwhile: on
    // a busy machine a relay and two replicas may not catch up with it at full speed, and the wait would last.
    await stopLoad();
    await waitFor(async () => (await offset(m)) - (await relayOffset()) < 8_000_000 || undefined, { what: 'the relay caught up', timeoutMs: 60_000 });
    startLoad();
    const leave = rand(2) === 0 ? 0 : 1024 * (1 + rand(16));
    const filled = fill(k, leave);
    const moment = rand(3);
    const steps = [`filled (${filled} bytes, ${leave} left)`];
    if (moment === 0) {
      // Killed at a random point of the stream while the disk is full.
      await streamFor(6_000_000);
      steps.push('SIGKILL on the full disk');
    } else if (moment === 1) {
      // Killed once the disk log says it cannot write (failing, or detached past log.disk-queue), a moment later. A log
      // at its limit (half the filesystem here) drops its oldest segment as it rolls and writes on in the space freed:
      // more ballast takes that space as it appears, until a write finds none.
      let topUps = 0;
      const seen = await waitFor(async () => {
        const s = await diskState();
        if (s !== 'ok') return s;
        const free = statfsSync(fs);
        if (free.bavail * free.bsize > leave) fill(`${k}-${++topUps}`, leave);
        return undefined;
      }, { what: 'the disk log to fail on the full disk', timeoutMs: 30_000 });
      await streamFor(2_000_000);
      steps.push(`disk log ${seen}, SIGKILL`);
    } else {
      // Killed just after space came back (the disk log may be resuming, cutting a segment, writing a state file).
      await streamFor(4_000_000);
      steps.push(free(rand(2) === 0), 'SIGKILL just after');
    }
    await kill(`round ${k}`);
    // Restarted on the full disk, or after freeing some or all of it.
    const onFull = ballast.length > 0 && rand(2) === 0;
    if (!onFull && ballast.length > 0) steps.push(free(rand(2) === 0));
    relay = await startRelayProcess(args);
    steps.push(onFull ? 'restarted with the ballast in place' : 'restarted');
    if (onFull) {
      await streamFor(3_000_000);
      steps.push(free(rand(2) === 0));
    }
    t.comment(`round ${k}: ${steps.join(', ')}`);
  }

  // The disk comes back for good; the load stops.
  free(true);
  await stopLoad();
  await m.call('SET', 'after-storm', '1');
  const end = await waitConverged(m, rc, 'replicas converge after the storm', 120_000);
  // Read together: the master's PINGs move its offset at any moment (end.offset may be behind both already).
  const together = await offsetsBeside(master.port, [port]);
  t.equal(together.others[0], together.master, 'the relay has the master offset');
  t.ok(end.digest !== '0000000000000000000000000000000000000000', 'the dataset is not empty');

  // Once space is back the disk log writes again, and holds the stream up to its end.
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  const resumed = await waitFor(async () => {
    const xi = await x.info('replication');
    if (xi['relay_log_disk_state'] === 'ok' && stat(xi, 'relay_log_disk_pending_bytes') === 0 && stat(xi, 'relay_log_disk_bytes') > 0) return xi;
    throw new Error(`disk log ${xi['relay_log_disk_state']} (${xi['relay_log_disk_problem'] ?? 'no problem said'}), ${xi['relay_log_disk_bytes']} bytes, ${xi['relay_log_disk_pending_bytes']} pending`);
  }, { what: 'the disk log writing again, caught up with the stream', timeoutMs: 30_000 });
  t.pass(`disk log writing again: ${resumed['relay_log_disk_bytes']} bytes in ${resumed['relay_log_disk_segments']} segments, detaches this life ${resumed['relay_log_disk_detaches']}`);

  // A last restart: both replicas continue (partial resyncs), none full-syncs.
  const before = replicas.map((s) => replicaSyncs(s.logs()));
  await x.close();
  await kill('the last restart');
  relay = await startRelayProcess(args);
  await m.call('SET', 'after-restart', '1');
  const last = await waitConverged(m, rc, 'replicas continue after the last restart', 60_000);
  await waitFor(async () => (await statOf(port, 'stats', 'sync_partial_ok')) >= replicas.length || undefined, { what: 'both replicas continued by the restarted relay' });
  t.equal(await statOf(port, 'stats', 'sync_full'), 0, 'the last restart cost no full sync');
  t.same(replicas.map((s, i) => replicaSyncs(s.logs()).full - before[i]!.full), [0, 0], 'no replica loaded an RDB after the last restart');
  t.same(replicas.map((s, i) => replicaSyncs(s.logs()).partial - before[i]!.partial), [1, 1], 'each replica continued once');
  const atLast = await offsetsBeside(master.port, [port]);
  t.equal(atLast.others[0], atLast.master, `the restarted relay has the master offset (the replicas had ${last.offset})`);

  await tally();
  const all = [...lives, relay.logs()].join('\n');
  const nLives = lives.length + 1;
  counts.fetches = all.split('\n').filter((l) => l.includes('no usable snapshot for a full sync: fetching a fresh one')).length;
  const syncs = replicas.map((s) => replicaSyncs(s.logs()));
  t.comment(
    `storm: ${ROUNDS} rounds, ${batches} load batches, ${end.offset} bytes of stream, ${((Date.now() - started) / 1000).toFixed(1)} s; ` +
      `relay served ${counts.relayFull} full / ${counts.relayPartial} partial syncs, took ${counts.upstreamFull} full syncs from upstream, ` +
      `fetched ${counts.fetches} snapshots; replicas' RDB loads ${syncs.map((s) => s.full).join('/')}, partial resyncs ${syncs.map((s) => s.partial).join('/')}; ` +
      `disk log detaches ${all.split('\n').filter((l) => l.includes('disk log detached')).length}, resumes ${all.split('\n').filter((l) => l.includes('disk log resumed')).length}`,
  );

  // Nothing but the master's bytes: no replica saw a protocol error, an unexpected reply or an RDB that did not load.
  for (const s of replicas) t.notMatch(s.logs(), REPLICA_BAD_STREAM_LINE, `replica ${s.port} never took a bad stream from the relay`);
  // The relay died only of our SIGKILLs.
  const failures = all.split('\n').filter(relayFailure);
  t.same(failures, [], 'the relay logged no crash, unhandled rejection or illegal state transition');
  // No full-sync loop: at most one RDB per replica per life of the relay (the first sync included).
  for (const [i, s] of syncs.entries()) t.ok(s.full <= nLives, `replica ${i} loaded ${s.full} RDBs over ${nLives} lives of the relay`);
  t.ok(counts.relayFull <= replicas.length * nLives, `the relay served ${counts.relayFull} full syncs over ${nLives} lives`);
  t.equal(readdirSync(fs).filter((n) => n.startsWith('ballast-')).length, 0, 'the ballast is gone');
  for (const s of replicas) await s.stop();
});
