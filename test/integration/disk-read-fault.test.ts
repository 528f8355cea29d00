/**
 * A disk log segment the relay cannot read back (a bad sector's EIO, a file removed or cut behind the relay's
 * back): the replica that needs it must not be continued from it again and again. The relay gives the unreadable
 * range up, says so, and the replica full-syncs and ends with the master's dataset.
 */
import t from 'tap';
import { readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelayProcess } from '../helpers/relay-process.js';
import { freePort } from '../helpers/ports.js';
import { startReplica, waitConverged, stat } from '../helpers/replication.js';
import { benchmarkLoad } from '../helpers/load.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';
import { tempDir } from '../helpers/temp-dir.js';

t.teardown(stopAll);

for (const damage of ['removed', 'cut short'] as const) {
  t.test(`a segment ${damage} behind the relay's back: the replica that needs it full-syncs once, it is not continued from it in a loop`, async (t) => {
    const master = await startRedis();
    const m = await master.client();
    t.teardown(() => m.close());
    const dir = tempDir('relay-read-fault-');
    const conf = join(dir, 'relay.yaml');
    // log.disk 64mb: segments of 8 MiB, so the stream below spans several.
    writeFileSync(conf, 'log:\n  memory: 1mb\n  disk: 64mb\nweb:\n  port: 0\n');
    const port = await freePort();
    const relay = await startRelayProcess(['--config', conf, '--upstream', `127.0.0.1:${master.port}`, '--port', String(port), '--dir', join(dir, 'data')]);
    t.teardown(() => relay.stop('SIGKILL'));
    const x = await RedisClient.connect(port);
    t.teardown(() => x.close());
    const replica = await startReplica(port);
    const r = await replica.client();
    t.teardown(() => r.close());
    await benchmarkLoad(master.port, 1000, 512, 1000);
    await waitConverged(m, [r], 'replica online');

    replica.proc.kill('SIGSTOP');
    t.teardown(() => replica.proc.kill('SIGCONT'));
    await benchmarkLoad(master.port, 40000, 1024, 20000);
    const masterOffset = stat(await m.info('replication'), 'master_repl_offset');
    await waitFor(async () => stat(await x.info('replication'), 'master_repl_offset') === masterOffset || undefined, { what: 'the relay has the stream' });
    const logDir = join(dir, 'data', 'log');
    const segs = readdirSync(logDir).filter((n) => n.startsWith('seg-')).sort();
    t.ok(segs.length >= 4, `the stream spans ${segs.length} segments`);
    // The second segment: the replica reads the first one whole, then needs this one.
    const victim = join(logDir, segs[1]!);
    if (damage === 'removed') rmSync(victim);
    else truncateSync(victim, 4096);
    const before = await x.info('stats');

    replica.proc.kill('SIGCONT');
    await m.call('SET', 'after-the-damage', '1');
    await waitConverged(m, [r], 'the replica ends with the master dataset', 60000);
    const after = await x.info('stats');
    t.equal(stat(after, 'sync_full') - stat(before, 'sync_full'), 1, 'one full sync');
    t.ok(stat(after, 'sync_partial_ok') - stat(before, 'sync_partial_ok') <= 1, `not continued from the damaged range again and again (${stat(after, 'sync_partial_ok') - stat(before, 'sync_partial_ok')} partial resyncs)`);
    t.match(relay.logs(), /disk log segment unreadable/, 'the relay says which segment it could not read');
    const xr = await x.info('replication');
    t.ok(stat(xr, 'repl_backlog_first_byte_offset') > 16_000_000, 'the log now starts after the damaged segment');
    t.equal(stat(xr, 'relay_log_disk_read_errors'), 1, 'one read error counted');
    await replica.stop();
  });
}
