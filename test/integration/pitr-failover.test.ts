/**
 * A point-in-time listener after an upstream failover answers PSYNC as the relay's main port does: with the ids of
 * the history it holds. It was given the snapshot's id alone, so a replica of the old master past the failover
 * (split brain: writes the new master never had) was continued over the new master's stream, and ended with a
 * dataset of neither (the PITR audit).
 */
import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelayWithClient } from '../helpers/relay.js';
import { startReplica, stat } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { rawConnect } from '../helpers/raw.js';

t.teardown(stopAll);

t.test("after a failover a point-in-time listener continues the old master's replicas only up to second_repl_offset", async (t) => {
  const old = await startRedis();
  const a = await old.client();
  t.teardown(() => a.close());
  const promoted = await startReplica(old.port, ['--repl-backlog-size', '64mb']);
  const b = await promoted.client();
  t.teardown(() => b.close());
  // One snapshot (of the old id) for the whole test: the listener's snapshot is the old master's.
  const { x } = await startRelayWithClient(t, { upstream: { host: '127.0.0.1', port: old.port }, log: { memory: '1mb', disk: '64mb' } });
  const offsetOf = async (c: typeof a) => stat(await c.info('replication'), 'master_repl_offset');
  for (let i = 0; i < 100; i++) await a.call('SET', `k${i}`, 'old');
  await waitFor(async () => ((await offsetOf(x)) === (await offsetOf(a)) && (await offsetOf(b)) === (await offsetOf(a))) || undefined, { what: 'the relay and the replica holding the stream' });
  const oldId = (await a.info('replication'))['master_replid']!;

  // The replica is promoted and the relay follows it; the old master goes on taking writes (split brain).
  await b.call('REPLICAOF', 'NO', 'ONE');
  await x.call('REPLICAOF', '127.0.0.1', promoted.port);
  const newId = (await b.info('replication'))['master_replid']!;
  await waitFor(async () => (await x.info('replication'))['master_replid'] === newId || undefined, { what: 'the relay continued under the new id' });
  const second = stat(await x.info('replication'), 'second_repl_offset');
  for (let i = 0; i < 50; i++) await a.call('SET', `split${i}`, 'never on the new master');
  for (let i = 0; i < 50; i++) await b.call('SET', `k${i}`, 'new');
  await waitFor(async () => (await offsetOf(x)) === (await offsetOf(b)) || undefined, { what: "the relay holding the new master's writes" });

  const [port] = (await x.call('RELAY', 'PITR', 'OFFSET', await offsetOf(b))) as [number];
  t.teardown(() => x.call('RELAY', 'PITR', 'CLOSE', port).catch(() => undefined));
  const psync = async (replid: string, offset: number): Promise<string> => {
    const c = await rawConnect(port, '127.0.0.1', { send: `PSYNC ${replid} ${offset}\r\n` });
    t.teardown(() => c.socket.destroy());
    return waitFor(() => /^[^\r]*\r\n/.exec(c.received())?.[0], { what: `the answer to PSYNC ${offset}` });
  };
  t.match(await psync(oldId, second + 1), /^\+FULLRESYNC /, "the old master's id past second_repl_offset: a full sync, as on the main port");
  t.match(await psync(oldId, second), /^\+CONTINUE\r\n$/, 'at second_repl_offset: continued');
  t.match(await psync(newId, second + 1), /^\+CONTINUE\r\n$/, "the new master's own id: continued");
});
