/**
 * A failover that loses writes, while the relay is down and restarts behind its replicas: the old master wrote past
 * the promotion (bytes the new master never had), the relay forwarded them to one replica and was SIGKILLed before
 * its disk held them nor much before. Restarted on the new master it continues (its log ends before the new
 * master's second_repl_offset), but the replica holding the lost bytes must full-sync (continuing it would keep
 * them: its digest would differ from the master's forever), while a replica that stopped at the promotion continues.
 */
import t from 'tap';
import { truncateSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { relayArgs, startRelayProcess } from '../helpers/relay-process.js';
import { startReplica } from '../helpers/replication.js';
import { call, convergedPorts, digestOf, infoOf, num, writeKeys } from '../helpers/failover.js';
import { lastSegmentEnd } from '../helpers/damage.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';

t.teardown(stopAll);

const FULL_SYNC_LINE = /<-> REPLICA sync: Finished with success/g;

function recoveredOffset(logs: string): number | undefined {
  for (const line of logs.split('\n')) {
    if (line.includes('"replication log recovered"')) return (JSON.parse(line) as { offset: number }).offset;
  }
  return undefined;
}

t.test('after a failover that lost writes, a replica holding them full-syncs through the restarted relay; one without them continues', async (t) => {
  const args = ['--repl-backlog-size', '64mb', '--repl-ping-replica-period', '3600'];
  const m = await startRedis({ args });
  const r = await startRedis({ args: [...args, '--replicaof', '127.0.0.1', String(m.port)] });
  const x = await relayArgs('relay-lost-', m.port, 'log:\n  memory: 8mb\n  disk: 1gb\nreplication:\n  ahead-wait: 60s\nweb:\n  port: 0\nupstream:\n  backoff-min: 20ms\n  backoff-max: 200ms\n');
  let relay = await startRelayProcess(x.args);
  t.teardown(() => relay.stop('SIGKILL'));
  const [r1, r2] = [await startReplica(x.port, ['--repl-timeout', '600']), await startReplica(x.port, ['--repl-timeout', '600'])];
  // Enough stream before the promotion that half of the log segment ends well before it.
  for (let i = 0; i < 10; i++) await writeKeys(m.port, `before-${i}`, 1000);
  await convergedPorts(m.port, [r.port, r1.port, r2.port], 'first syncs');

  // r2 stops here (it follows a port nobody listens on, keeping its replid and offset); R is promoted here.
  await call(r2.port, 'REPLICAOF', '127.0.0.1', String(await freePort()));
  await call(r.port, 'REPLICAOF', 'NO', 'ONE');
  const second = num(await infoOf(r.port), 'second_repl_offset');
  t.equal(num(await infoOf(r2.port), 'master_repl_offset') + 1, second, 'r2 stopped at the promotion');
  // The old master goes on writing: R never gets this; r1 does, through the relay.
  await writeKeys(m.port, 'lost', 200);
  const lostEnd = await convergedPorts(m.port, [r1.port], 'r1 holds the lost writes');
  t.ok(lostEnd.offset >= second, 'the old master wrote past the promotion');
  await relay.stop('SIGKILL');

  // What a disk behind the forwarded stream leaves: the last segment keeps only its first half.
  const { path, end } = lastSegmentEnd(join(x.dir, 'data', 'log'));
  truncateSync(path, Math.floor(end / 2));
  await call(m.port, 'REPLICAOF', '127.0.0.1', String(r.port));
  relay = await startRelayProcess(x.args.map((a) => (a === `127.0.0.1:${m.port}` ? `127.0.0.1:${r.port}` : a)));
  const recovered = await waitFor(() => recoveredOffset(relay.logs()), { what: 'the relay logs its recovered offset' });
  t.ok(recovered + 1 < second, `the relay recovered at ${recovered}, before the promotion (${second - 1})`);
  await call(r2.port, 'REPLICAOF', '127.0.0.1', String(x.port));

  await writeKeys(r.port, 'after', 100);
  const final = await convergedPorts(r.port, [m.port, r1.port, r2.port], 'everyone converges on R', 60_000);
  t.equal(await digestOf(r1.port), final.digest, "r1 has R's digest: the lost writes are gone");
  t.equal(await call(r1.port, 'EXISTS', 'lost:0'), 0, 'r1 no longer has a lost key');
  t.equal((r1.logs().match(FULL_SYNC_LINE) ?? []).length, 2, 'r1 full-synced: it held bytes the new master never had');
  t.equal((r2.logs().match(FULL_SYNC_LINE) ?? []).length, 1, 'r2 continued: it stopped at the promotion');
  const rs = await infoOf(r.port, 'stats');
  t.equal(num(rs, 'sync_full'), 1, 'R full-synced only the old master (it wrote past the promotion), not the relay');
  const xs = await infoOf(x.port, 'stats');
  t.equal(num(xs, 'sync_full'), 1, 'the relay full-synced r1 only');
  t.equal(num(xs, 'sync_partial_ok'), 1, 'and continued r2');
});
