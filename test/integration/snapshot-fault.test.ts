/**
 * A snapshot file damaged behind the relay's back (removed, cut short, or one byte changed: bit rot): a replica
 * asking for a full sync must not be sent it, fail, and come back for the same file forever (or, for a wrong CRC-64,
 * exit: a Redis replica that loads an RDB with a wrong checksum terminates). The relay gives the snapshot up, says
 * so, fetches a fresh one, and the replica ends with the master's dataset.
 */
import t from 'tap';
import { readdirSync, rmSync, truncateSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { flipByte, rotUnderFilesystem } from '../helpers/damage.js';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { relayWithReplicas } from '../helpers/relay-setup.js';
import { relayArgs, startRelayProcess } from '../helpers/relay-process.js';
import { onlineReplicas, startReplica, waitConverged, stat } from '../helpers/replication.js';
import { smallFilesystem } from '../helpers/small-fs.js';
import { tempDir } from '../helpers/temp-dir.js';
import { RedisClient } from '../helpers/redis-client.js';

t.teardown(stopAll);

// The last: a master saving with `rdbchecksum no` sends RDBs with a zero trailer; the relay writes the CRC-64 of the
// bytes it received there, or the change would go unseen (a new replica was sent the damaged file and loaded it).
for (const damage of ['removed', 'cut short', 'with one byte changed', 'with one byte changed, from a master saving without checksums'] as const) {
  t.test(`a snapshot ${damage} behind the relay's back: the next full sync gets a fresh one, not the damaged file in a loop`, async (t) => {
    const master = await startRedis(damage.endsWith('without checksums') ? { args: ['--rdbchecksum', 'no'] } : {});
    const m = await master.client();
    t.teardown(() => m.close());
    await m.call('DEBUG', 'POPULATE', 20000, 'key', 100);
    const { relay, dir, port, x, replicas: [first], clients: [a] } = await relayWithReplicas(t, 'relay-snap-fault-', { port: master.port, client: m }, 'web:\n  port: 0\nreplication:\n  snapshot-refresh-min-interval: 1s\n', 1);

    const data = join(dir, 'data');
    const snap = readdirSync(data).find((n) => /^snapshot-.*\.rdb$/.test(n));
    t.ok(snap, `the relay holds a snapshot (${snap})`);
    if (damage === 'removed') rmSync(join(data, snap!));
    else if (damage === 'cut short') truncateSync(join(data, snap!), 100);
    else flipByte(join(data, snap!));
    await m.call('SET', 'after-the-damage', '1');

    const second = await startReplica(port);
    const b = await second.client();
    t.teardown(() => b.close());
    await waitConverged(m, [a!, b], 'the new replica ends with the master dataset', 60000);
    t.match(relay.logs(), damage.startsWith('with one byte changed') ? /snapshot damaged on disk/ : /snapshot .*unreadable/, 'the relay says the snapshot could not be used');
    t.ok(stat(await x.info('stats'), 'sync_full') <= 3, 'no loop of full syncs');
    t.equal(stat(await x.info('replication'), 'relay_snapshots_given_up'), 1, 'counted once (INFO, /metrics)');
    await Promise.all([first!.stop(), second.stop()]);
  });
}

t.test("a snapshot whose bytes change under its filesystem after a full sync checked it (same ctime: bit rot): the next one is cut short, no replica exits", async (t) => {
  const { dir: fs, image } = smallFilesystem(t, 'ext4', '128m');
  // No PINGs: with the stream still at the snapshot's offset, redis-cli --rdb below is served that very file.
  const master = await startRedis({ args: ['--repl-ping-replica-period', '3600'] });
  const m = await master.client();
  t.teardown(() => m.close());
  await m.call('DEBUG', 'POPULATE', 20000, 'key', 100);
  const { port, args } = await relayArgs('relay-snap-rot-', master.port, 'web:\n  port: 0\nreplication:\n  snapshot-refresh-min-interval: 1s\n');
  args[args.indexOf('--dir') + 1] = join(fs, 'data');
  const relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const { servers: [first], clients: [a] } = await onlineReplicas(t, port, m, 1);
  // A full sync from the file (redis-cli --rdb: rdb-only), which checks it against its CRC-64 trailer.
  const copy = join(tempDir('relay-snap-rot-rdb-'), 'dump.rdb');
  execFileSync('redis-cli', ['-p', String(port), '--rdb', copy]);
  const data = join(fs, 'data');
  const snap = readdirSync(data).find((n) => /^snapshot-.*\.rdb$/.test(n));
  t.ok(snap, `the relay holds a snapshot (${snap})`);
  t.notMatch(relay.logs(), /snapshot damaged/, 'it matched');

  rotUnderFilesystem(image, join(data, snap!));
  await m.call('SET', 'after-the-damage', '1');
  const second = await startReplica(port);
  const b = await second.client();
  t.teardown(() => b.close());
  await waitConverged(m, [a!, b], 'the new replica ends with the master dataset', 60000);
  t.match(relay.logs(), /snapshot damaged on disk/, 'the relay says the snapshot changed');
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  t.equal(stat(await x.info('replication'), 'relay_snapshots_given_up'), 1, 'counted once');
  await Promise.all([first!.stop(), second.stop()]);
});
