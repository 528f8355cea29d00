/**
 * A replica that reads a whole snapshot and closes its link without acknowledging the stream did not load it (an RDB
 * version it cannot read: a Valkey 8 master's RDB 11 behind the relay and a Redis 7.0 replica looped through 154 full
 * syncs in 6 s, each a whole snapshot read from disk and sent). From its second failed load in a row its next full
 * sync is held back (1 s, doubling to 5 s), kept alive with newlines; other replicas are served meanwhile, and a load it
 * acknowledges clears its count.
 */
import t, { type Test } from 'tap';
import { connect } from 'node:net';
import { once } from 'node:events';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startLoggedRelay, type LogLine } from '../helpers/logged-relay.js';
import { onlineReplicas, startReplica } from '../helpers/replication.js';
import { RedisClient } from '../helpers/redis-client.js';
import { waitFor } from '../helpers/wait.js';
import { encodeCommand } from '../../src/resp/writer.js';

t.teardown(stopAll);

/**
 * A raw replica announcing `port` (0: none): PSYNC ? -1, reads the +FULLRESYNC line and the whole `$<len>` payload, then
 * acknowledges the stream (`load`) or closes at once, as a replica that cannot load the RDB does. Returns once the
 * relay has its close.
 */
async function fullSync(relayPort: number, port: number, load: boolean): Promise<void> {
  const socket = connect({ port: relayPort, host: '127.0.0.1' });
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  let buf = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => (buf = Buffer.concat([buf, d])));
  // Port 0: none announced, as a tool speaking PSYNC (not a replica) does.
  if (port > 0) socket.write(encodeCommand(['REPLCONF', 'listening-port', String(port)]));
  socket.write(encodeCommand(['REPLCONF', 'capa', 'psync2']));
  const oks = port > 0 ? '+OK\r\n+OK\r\n' : '+OK\r\n';
  await waitFor(() => buf.toString('latin1') === oks, { what: 'REPLCONF answered' });
  buf = Buffer.alloc(0);
  socket.write(encodeCommand(['PSYNC', '?', '-1']));
  const got = await waitFor(
    () => {
      const m = /^\n*\+FULLRESYNC [0-9a-f]{40} (\d+)\r\n\n*\$(\d+)\r\n/.exec(buf.toString('latin1'));
      return m && buf.length >= m[0].length + Number(m[2]) ? { offset: m[1]! } : undefined;
    },
    { what: `the +FULLRESYNC and the whole snapshot (replica port ${port})`, timeoutMs: 20_000 },
  );
  if (load) socket.write(encodeCommand(['REPLCONF', 'ACK', got.offset]));
  socket.end();
  await once(socket, 'close');
}

/**
 * A master with 100 keys and a relay of it (`startLoggedRelay`), once the relay has committed its snapshot: the full
 * syncs are served from it. (One that joins the relay's own full sync gets the upstream's RDB as it arrives; a close
 * then, before the relay has checked and committed that RDB, is not counted: it may not be the replica's fault. On a
 * busy disk the commit came 200 ms after the close.)
 */
async function relayWithSnapshot(t: Test) {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  for (let i = 0; i < 100; i++) await m.call('SET', `k${i}`, `v${i}`);
  const relay = await startLoggedRelay(t, { upstream: { host: '127.0.0.1', port: master.port } });
  await waitFor(() => relay.lines.find((l) => l['msg'] === 'rdb received, snapshot committed'), { what: 'the relay has its snapshot' });
  return { m, relay };
}

t.test("a replica that does not load its snapshot has its next full syncs held back; others are served; a load clears it", async (t) => {
  const { m, relay } = await relayWithSnapshot(t);
  const failedLoads = () => relay.lines.filter((l) => l['failedLoads'] !== undefined && l['replica'] === '127.0.0.1:7777');
  const held = () => relay.lines.filter((l: LogLine) => /^full sync held back/.test(String(l['msg'])));

  // Two failed loads in a row: each logged, neither held back (a replica killed once while loading is common).
  for (const n of [1, 2]) {
    await fullSync(relay.port, 7777, false);
    const line = await waitFor(() => failedLoads()[n - 1], { what: `failed load ${n} logged` });
    t.equal(line['failedLoads'], n);
    t.equal(line['nextFullSyncDelayMs'], n === 1 ? 0 : 1000, 'the delay its next full sync will get');
    t.equal(line['level'], 40, 'a warning');
  }
  t.equal(held().length, 0, 'neither was held back');

  // The third waits , and a well-behaved replica is served meanwhile.
  const third = fullSync(relay.port, 7777, true);
  const h = await waitFor(() => held()[0], { what: 'the third full sync held back' });
  t.equal(h['replica'], '127.0.0.1:7777');
  t.ok(Number(h['delayMs']) > 0 && Number(h['delayMs']) <= 1000, `held for up to 1 s after the last failure (${String(h['delayMs'])} ms)`);
  await onlineReplicas(t, relay.port, m, 1);
  await third; // then it gets its snapshot, and loads it

  // It loaded that one (acknowledged the stream): its count is cleared, the next full sync starts at once.
  await fullSync(relay.port, 7777, false);
  t.equal(held().length, 1, 'after a load, the next full sync is not held back');
  t.equal((await waitFor(() => failedLoads()[2], { what: 'the next failed load logged' }))['failedLoads'], 1, 'counted afresh');

  // A client that announces no port is a tool, not a replica: never counted, never held back.
  for (let i = 0; i < 3; i++) await fullSync(relay.port, 0, false);
  await onlineReplicas(t, relay.port, m, 1); // a full sync after the last of them: its close has been counted
  t.equal(held().length, 1, 'three full syncs closed unloaded by a client without a port: none held back');
  t.notOk(relay.lines.some((l) => l['failedLoads'] !== undefined && l['replica'] !== '127.0.0.1:7777'), 'nor counted as failed loads');
});

t.test('a redis-server replica moved away at once after loading its snapshot is not counted as a failed load', async (t) => {
  // A replica acknowledges the stream once a second, and at once after an EOF-marked payload (Redis's readSyncBulkPayload,
  // which is why a master holds the stream until that ACK). Sent `$<len>`, a replica that loaded and was moved within
  // the second (REPLICAOF elsewhere, a Sentinel reconfiguration) looked like one that could not load the RDB.
  const { m, relay } = await relayWithSnapshot(t);
  const x = await RedisClient.connect(relay.port);
  t.teardown(() => x.close());
  const moved: string[] = [];
  for (let i = 0; i < 3; i++) {
    const replica = await startReplica(relay.port);
    const r = await replica.client();
    await waitFor(async () => /master_link_status:up/.test(await r.callString('INFO', 'replication')), { what: `replica ${i} loaded its snapshot`, intervalMs: 5 });
    t.equal(await r.call('DBSIZE'), 100, `replica ${i} has the dataset`);
    await r.call('REPLICAOF', 'NO', 'ONE');
    moved.push(`127.0.0.1:${replica.port}`);
    await waitFor(async () => /connected_slaves:0/.test(await x.callString('INFO', 'replication')), { what: `the relay saw replica ${i} go` });
    await r.close();
    await replica.stop();
  }
  const counted = relay.lines.filter((l) => l['failedLoads'] !== undefined && moved.includes(String(l['replica'])));
  t.same(counted.map((l) => l['replica']), [], 'none of the three is counted as a failed load');
});

t.test('one client churning full syncs it never loads cannot flood the log: the warnings are rate limited', async (t) => {
  const { m, relay } = await relayWithSnapshot(t);
  // A new announced port each time: none is held back, each is a failed load of its own.
  for (let i = 0; i < 30; i++) await fullSync(relay.port, 8000 + i, false);
  await onlineReplicas(t, relay.port, m, 1); // a full sync after the last of them: its close has been counted
  const warned = relay.lines.filter((l) => l['failedLoads'] !== undefined).length;
  t.equal(warned, 10, '30 failed loads, 10 warnings in the minute');
});
