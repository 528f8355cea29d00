/**
 * A disk log segment the relay cannot read back (a bad sector's EIO, a file removed or cut behind the relay's
 * back) or that reads back other bytes than were written (one byte changed: bit rot): the replica that needs it must
 * neither be continued from it again and again nor be sent the changed bytes (its data would silently differ from
 * the master's). The relay gives the damaged range up, says so, and the replica full-syncs and ends with the
 * master's dataset.
 */
import t, { type Test } from 'tap';
import { readdirSync, rmSync, truncateSync } from 'node:fs';
import { flipByte } from '../helpers/damage.js';
import { join } from 'node:path';
import { startRedis, stopAll, type RedisServer } from '../helpers/redis-server.js';
import { relayWithReplicas } from '../helpers/relay-setup.js';
import { diskLogCaughtUp, waitConverged, stat } from '../helpers/replication.js';
import { benchmarkLoad } from '../helpers/load.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';
import { startRelayProcess } from '../helpers/relay-process.js';

t.teardown(stopAll);

/**
 * The replica stopped (SIGSTOP, continued when `t` ends), ~30 MB of stream on the master, until the relay and its
 * disk log hold all of it: the replica will need segments read from disk.
 */
async function loadWhileStopped(t: Test, replica: RedisServer, masterPort: number, m: RedisClient, x: RedisClient): Promise<void> {
  replica.proc.kill('SIGSTOP');
  t.teardown(() => replica.proc.kill('SIGCONT'));
  await benchmarkLoad(masterPort, 28000, 1024, 20000);
  const masterOffset = stat(await m.info('replication'), 'master_repl_offset');
  await waitFor(async () => stat(await x.info('replication'), 'master_repl_offset') === masterOffset || undefined, { what: 'the relay has the stream' });
  await diskLogCaughtUp(x, 'the disk has it too');
}

for (const damage of ['removed', 'cut short', 'with one byte changed'] as const) {
  t.test(`a segment ${damage} behind the relay's back: the replica that needs it full-syncs once, it is not continued from it in a loop`, async (t) => {
    const master = await startRedis();
    const m = await master.client();
    t.teardown(() => m.close());
    // log.disk 64mb: segments of 8 MiB, so the stream below (~30 MB) spans four: the second is past what the stopped
    // replica's socket buffers can hold, so the replica needs it read from disk.
    const { relay, dir, x, replicas: [replica], clients: [r] } = await relayWithReplicas(t, 'relay-read-fault-', { port: master.port, client: m }, 'log:\n  memory: 1mb\n  disk: 64mb\nweb:\n  port: 0\n', 1);

    await loadWhileStopped(t, replica!, master.port, m, x);
    const logDir = join(dir, 'data', 'log');
    const segs = readdirSync(logDir).filter((n) => n.startsWith('seg-') && n.endsWith('.log')).sort();
    t.ok(segs.length >= 4, `the stream spans ${segs.length} segments`);
    // The second segment: the replica reads the first one whole, then needs this one.
    const victim = join(logDir, segs[1]!);
    if (damage === 'removed') rmSync(victim);
    else if (damage === 'cut short') truncateSync(victim, 4096);
    else flipByte(victim);
    const before = await x.info('stats');

    replica!.proc.kill('SIGCONT');
    await m.call('SET', 'after-the-damage', '1');
    await waitConverged(m, [r!], 'the replica ends with the master dataset', 60000);
    const after = await x.info('stats');
    t.equal(stat(after, 'sync_full') - stat(before, 'sync_full'), 1, 'one full sync');
    t.ok(stat(after, 'sync_partial_ok') - stat(before, 'sync_partial_ok') <= 1, `not continued from the damaged range again and again (${stat(after, 'sync_partial_ok') - stat(before, 'sync_partial_ok')} partial resyncs)`);
    t.match(relay.logs(), damage === 'with one byte changed' ? /do not match their checksum/ : /disk log segment unreadable/, 'the relay says which segment it could not use');
    const xr = await x.info('replication');
    t.ok(stat(xr, 'repl_backlog_first_byte_offset') > 16_000_000, 'the log now starts after the damaged segment');
    t.equal(stat(xr, 'relay_log_disk_read_errors'), 1, 'one read error counted');
    await replica!.stop();
  });
}

t.test("an older segment's checksum file cut short while the relay was down, a byte changed past what it still covers: the segment is given up at start and the replica that needed it full-syncs", async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const { relay, dir, args, x, replicas: [replica], clients: [r] } = await relayWithReplicas(t, 'relay-short-sum-', { port: master.port, client: m }, 'log:\n  memory: 1mb\n  disk: 64mb\nweb:\n  port: 0\nupstream:\n  backoff-min: 50ms\n  backoff-max: 500ms\n', 1);
  await loadWhileStopped(t, replica!, master.port, m, x);
  await relay.stop('SIGKILL');
  const logDir = join(dir, 'data', 'log');
  const segs = readdirSync(logDir).filter((n) => n.startsWith('seg-') && n.endsWith('.log')).sort();
  t.ok(segs.length >= 4, `the stream spans ${segs.length} segments`);
  // The second segment: its checksums now cover its first piece only, and a byte inside a value past it changes
  // (the stream still parses: served, the replica would hold another value than the master, in silence).
  const victim = join(logDir, segs[1]!);
  truncateSync(victim.replace(/\.log$/, '.sum'), 4);
  flipByte(victim);

  const again = await startRelayProcess(args);
  t.teardown(() => again.stop('SIGKILL'));
  const y = await RedisClient.connect(x.port);
  t.teardown(() => y.close());
  replica!.proc.kill('SIGCONT');
  await m.call('SET', 'after-the-damage', '1');
  await waitConverged(m, [r!], 'the replica ends with the master dataset', 60000);
  t.equal(stat(await y.info('stats'), 'sync_full'), 1, 'the replica full-synced once');
  t.match(again.logs(), /log segment checksums missing/, 'the relay says which segment it gave up');
  t.ok(stat(await y.info('replication'), 'repl_backlog_first_byte_offset') > 16_000_000, 'the log now starts after that segment');
  await replica!.stop();
});
