/**
 * Restarts with another storage configuration than the run before: what a relay finds in its data directory from
 * an earlier run must never be served as the stream of a history it has moved on in since.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { relayArgs, startRelayProcess } from '../helpers/relay-process.js';
import { startReplica, waitConverged, stat } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';

t.teardown(stopAll);

const yaml = (disk: string): string => `log:\n  memory: 1mb\n  disk: ${disk}\nweb:\n  port: 0\nupstream:\n  backoff-min: 50ms\n  backoff-max: 300ms\n`;

/** Waits until the relay on `port` holds `master`'s offset. */
async function caughtUp(port: number, master: RedisClient, what: string): Promise<void> {
  const x = await RedisClient.connect(port);
  try {
    await waitFor(async () => {
      const mo = stat(await master.info('replication'), 'master_repl_offset');
      const xi = await x.info('replication');
      return (xi['master_link_status'] === 'up' && stat(xi, 'master_repl_offset') === mo) || undefined;
    }, { what });
  } finally {
    await x.close();
  }
}

/**
 * `n` SETs of one length each (key `prefix:NNNNNN`, a 100-byte value), the first one 23 bytes longer: as long in the
 * stream as a promoted master's first `SELECT 0` (23 bytes) and as many SETs, so that both streams have a command
 * boundary at the same offset.
 */
async function sets(c: RedisClient, prefix: string, n: number, first23 = false): Promise<void> {
  const cmds = [];
  for (let i = 0; i < n; i++) cmds.push(['SET', `${prefix}:${String(i).padStart(6, '0')}`, (i === 0 && first23 ? 'y'.repeat(123) : 'x'.repeat(100))]);
  await c.pipeline(cmds);
}

t.test('log segments left by a run before one with log.disk 0 are not served after the upstream failed over in between', async (t) => {
  // m1 the master, m2 its replica: m2 is promoted while m1 goes on taking writes the relay receives and m2 never does.
  const noPing = ['--repl-backlog-size', '64mb', '--repl-ping-replica-period', '3600'];
  const m1s = await startRedis({ args: noPing });
  const m1 = await m1s.client();
  t.teardown(() => m1.close());
  await m1.call('DEBUG', 'POPULATE', 2000, 'seed', 100);
  const m2s = await startReplica(m1s.port, noPing);
  const m2 = await m2s.client();
  t.teardown(() => m2.close());
  await waitConverged(m1, [m2], 'm2 replicates m1');

  const { dir, port, args } = await relayArgs('relay-cfg-', m1s.port, yaml('64mb'));
  const conf = join(dir, 'relay.yaml');
  let relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  await sets(m1, 'a', 500);
  await waitConverged(m1, [m2], 'm2 caught up');
  await caughtUp(port, m1, 'relay caught up with m1');

  // m2 promoted at F; m1 writes on (F..A): the relay's disk log holds m1's bytes there, which m2's history never has.
  await m2.call('REPLICAOF', 'NO', 'ONE');
  await sets(m1, 'b', 300, true);
  await caughtUp(port, m1, 'relay holds m1 past the promotion');
  t.equal(await relay.stop('SIGTERM'), 0, 'first run stopped cleanly, its disk log complete');

  // Second run: memory only, following m2, which continues the relay (+CONTINUE with its new id) from the snapshot.
  writeFileSync(conf, yaml('0'));
  const args2 = args.map((a) => (a === `127.0.0.1:${m1s.port}` ? `127.0.0.1:${m2s.port}` : a));
  relay = await startRelayProcess(args2);
  await sets(m2, 'c', 600);
  await caughtUp(port, m2, 'relay follows m2');
  t.equal(await relay.stop('SIGTERM'), 0, 'second run stopped cleanly');
  t.match(relay.logs(), /log\.disk is 0: the disk log an earlier run left is removed/, 'the memory-only run says what it did with the disk log');

  // Third run: the disk log on again. Whatever it serves must be m2's history.
  writeFileSync(conf, yaml('64mb'));
  relay = await startRelayProcess(args2);
  await m2.call('SET', 'third-run', '1');
  await caughtUp(port, m2, 'relay follows m2 again');
  const replica = await startReplica(port);
  const r = await replica.client();
  t.teardown(() => r.close());
  const mo = stat(await m2.info('replication'), 'master_repl_offset');
  await waitFor(async () => {
    const ri = await r.info('replication');
    return (ri['master_link_status'] === 'up' && stat(ri, 'master_repl_offset') === mo) || undefined;
  }, { what: "a new replica of the relay at m2's offset" });
  t.equal(await r.callString('DEBUG', 'DIGEST'), await m2.callString('DEBUG', 'DIGEST'), "the replica holds m2's dataset");
  t.equal(await r.call('EXISTS', 'b:000001'), 0, "no key m1 wrote after m2's promotion");
  await replica.stop();
});
