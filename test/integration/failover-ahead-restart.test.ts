/**
 * A relay restarts behind its replicas (its disk log holds less than they received) and, while it was down, its
 * upstream failed over: the relay, pointed at the promoted replica, must still continue every replica partially.
 */
import t from 'tap';
import { truncateSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { relayArgs, startRelayProcess } from '../helpers/relay-process.js';
import { onlineReplicas, stat, waitConverged } from '../helpers/replication.js';
import { benchmarkLoad } from '../helpers/load.js';
import { lastSegmentEnd } from '../helpers/damage.js';
import { QUIET_MASTER_ARGS, writeKeys } from '../helpers/failover.js';
import { RedisClient } from '../helpers/redis-client.js';
import { waitFor } from '../helpers/wait.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { freePort } from '../helpers/ports.js';

t.teardown(stopAll);

/** The offset the relay recovered at start (its `replication log recovered` line), from its JSON log. */
function recoveredOffset(logs: string): number | undefined {
  for (const line of logs.split('\n')) {
    if (!line.includes('"replication log recovered"')) continue;
    return (JSON.parse(line) as { offset: number }).offset;
  }
  return undefined;
}

/** The INFO `slaveN` line of the relay's replica listening on `replicaPort`, or ''. */
async function replicaLine(x: RedisClient, replicaPort: number): Promise<string> {
  const info = await x.info('replication');
  return Object.entries(info).find(([k, v]) => /^slave\d+$/.test(k) && v.includes(`port=${replicaPort},`))?.[1] ?? '';
}

t.test('replicas ahead of a restarted relay continue partially across an upstream failover', async (t) => {
  // M pings its replicas rarely: a PING on M after S's promotion would make M, then following S, full-sync it.
  const mServer = await startRedis({ args: ['--repl-backlog-size', '64mb', ...QUIET_MASTER_ARGS] });
  const m = await mServer.client();
  const sServer = await startRedis({ args: ['--repl-backlog-size', '64mb', '--replicaof', '127.0.0.1', String(mServer.port)] });
  const s = await sServer.client();
  t.teardown(async () => {
    await m.close();
    await s.close();
  });
  // ahead-wait far longer than the test: a replica is held until the relay has its offset, whatever the machine's pace.
  const { dir, port, args } = await relayArgs(
    'relay-failahead-',
    mServer.port,
    'log:\n  memory: 1mb\n  disk: 1gb\nreplication:\n  ahead-wait: 60s\nweb:\n  port: 0\nupstream:\n  backoff-min: 50ms\n  backoff-max: 200ms\n',
  );
  let relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const { servers: [r1, r2], clients: rc } = await onlineReplicas(t, port, m, 2);

  await benchmarkLoad(mServer.port, 20000, 200, 5000);
  const before = await waitConverged(m, [s, ...rc], "S and the relay's replicas hold the load");
  await relay.stop('SIGKILL');

  // What a disk behind the forwarded stream leaves after a SIGKILL, made certain: the last segment loses its second
  // half, so the relay recovers at an offset well behind its replicas (the bytes it forwarded but never wrote).
  const { path: last, end } = lastSegmentEnd(join(dir, 'data', 'log'));
  t.ok(end > 1_000_000, `the last segment holds ${end} stream bytes`);
  truncateSync(last, Math.floor(end / 2));
  // r2 comes back later, on cue: meanwhile it follows a port nobody listens on (it keeps its replid and offset).
  await rc[1]!.call('REPLICAOF', '127.0.0.1', String(await freePort()));

  // Failover while the relay is down: S promoted, M follows it.
  await s.call('REPLICAOF', 'NO', 'ONE');
  await m.call('REPLICAOF', '127.0.0.1', String(sServer.port));
  const sPromoted = await s.info('replication');
  t.equal(stat(sPromoted, 'second_repl_offset'), before.offset + 1, "S's replid2 covers everything the replicas hold");

  // The relay restarts pointed at S through a proxy that holds S's answers, so the order of events is certain.
  const proxy = await TcpProxy.start(sServer.port);
  t.teardown(() => proxy.close());
  proxy.hold();
  const restartArgs = args.map((a) => (a === `127.0.0.1:${mServer.port}` ? `127.0.0.1:${proxy.port}` : a));
  relay = await startRelayProcess(restartArgs);
  const recovered = await waitFor(() => recoveredOffset(relay.logs()), { what: 'the relay logs its recovered offset' });
  t.ok(recovered < before.offset - 100_000, `the relay recovered at ${recovered}, behind its replicas at ${before.offset}`);
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());

  // 1. r1 asks for its offset before the relay has heard from S: held, under the relay's old replid.
  await waitFor(async () => (await replicaLine(x, r1!.port)) || undefined, { what: 'r1 asks the relay' });
  t.match(await replicaLine(x, r1!.port), /state=wait_bgsave/, 'the relay holds r1');
  // 2. S's +CONTINUE <its new id> arrives, not yet the stream: the relay shifts its ids; r1 stays held.
  proxy.release('+CONTINUE');
  await waitFor(async () => (await x.info('replication'))['master_replid'] === sPromoted['master_replid'] || undefined, { what: "the relay takes S's replid" });
  const xr = await x.info('replication');
  t.equal(stat(xr, 'second_repl_offset'), stat(sPromoted, 'second_repl_offset'), "the relay's replid2 is valid as far as S's");
  t.ok(stat(xr, 'master_repl_offset') < before.offset, 'the relay is still behind its replicas');
  // 3. r2 asks now, with the relay's old id, now its replid2: held too.
  await rc[1]!.call('REPLICAOF', '127.0.0.1', String(port));
  await waitFor(async () => (await replicaLine(x, r2!.port)) || undefined, { what: 'r2 asks the relay' });
  t.match(await replicaLine(x, r2!.port), /state=wait_bgsave/, 'the relay holds r2');
  t.match(await replicaLine(x, r1!.port), /state=wait_bgsave/, 'r1 is still held after the id shift');
  t.equal(stat(await x.info('stats'), 'sync_full'), 0, 'no full sync so far');
  // 4. The stream flows: both are continued once the relay has their offsets.
  proxy.release();

  await writeKeys(sServer.port, 'after-failover');
  await waitConverged(s, rc, 'the replicas converge on S through the relay');
  await waitFor(async () => stat(await x.info('replication'), 'master_repl_offset') === stat(await s.info('replication'), 'master_repl_offset') || undefined, {
    what: "the relay holds S's offset",
  });

  const xs = await x.info('stats');
  t.equal(stat(xs, 'sync_full'), 0, 'no replica of the relay full-synced');
  t.equal(stat(xs, 'sync_partial_ok'), 2, 'both replicas continued partially');
  const ss = await s.info('stats');
  t.equal(stat(ss, 'sync_full'), 0, 'S made no full sync: it continued the relay (and M)');
  t.ok(stat(ss, 'sync_partial_ok') >= 1, 'S continued the relay partially');
  t.equal((await x.info('replication'))['master_replid'], sPromoted['master_replid'], "the relay follows S's history");
  t.match(
    relay.lines().find((l) => l['msg'] === 'upstream has a new replid, shifting ids'),
    { secondReplOffset: stat(sPromoted, 'second_repl_offset'), secondReplOffsetFrom: 'upstream' },
    "the shift took S's second_repl_offset, from its INFO",
  );
});
