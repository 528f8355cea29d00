import t from 'tap';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica, digest, waitConverged, stat, statOf } from '../helpers/replication.js';
import { TcpProxy, afterPsyncReply, psyncReplyOf } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';
import { fetchSnapshot } from '../../src/upstream/snapshot-fetcher.js';
import { createLogger } from '../../src/log.js';
import { tempDir } from '../helpers/temp-dir.js';

t.teardown(stopAll);

const MARKED_FULL = /^\+FULLRESYNC [0-9a-f]{40} \d+ psync-relay-z1$/;
const PLAIN_FULL = /^\+FULLRESYNC [0-9a-f]{40} \d+$/;

/** JSON-like documents (compressible), a few random values (not), and counters. */
async function workload(c: RedisClient, tag: string, docs = 1500): Promise<void> {
  const cmds: (string | number | Buffer)[][] = [];
  for (let i = 0; i < docs; i++) {
    const doc = {
      id: i,
      user: { name: `user ${i % 97}`, email: `user${i % 97}@example.com`, city: ['Berlin', 'Lisbon', 'Osaka'][i % 3] },
      tags: ['new', 'vip', 'beta'].slice(0, i % 4),
      created: new Date(1.7e12 + i * 1000).toISOString(),
      orders: Array.from({ length: 1 + (i % 4) }, (_, k) => ({ sku: `SKU-${(i * 7 + k) % 5000}`, qty: 1 + k, status: 'paid' })),
    };
    cmds.push(['SET', `${tag}:doc:${i}`, JSON.stringify(doc)]);
    if (i % 50 === 0) cmds.push(['SET', `${tag}:rnd:${i}`, randomBytes(512)]);
    cmds.push(['INCR', `${tag}:counter:${i % 10}`]);
  }
  cmds.push(['SELECT', 5], ['SET', `${tag}:db5`, 'five'], ['SELECT', 0]);
  await c.pipeline(cmds);
}

const offsetOf = (port: number) => statOf(port, 'replication', 'master_repl_offset');

/**
 * Waits until the relay on `port` is at the master's offset. Compared with the master's offset of the moment, not
 * one read before: a relay that gets the writes together with the master's next PING never stops at the earlier one.
 */
async function reachesMaster(port: number, what: string, timeoutMs?: number): Promise<void> {
  await waitFor(async () => (await offsetOf(port)) === (await offsetOf(master.port)) || undefined, { what, timeoutMs });
}

// master (with data before the relays start, so the first RDB is a real one) → A → [proxy] → B → two replicas.
const master = await startRedis();
const m = await master.client();
await workload(m, 'pre', 2000);
await m.call('DEBUG', 'POPULATE', 20000, 'pop', 64);
const a = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
t.teardown(() => a.stop());
const link = await TcpProxy.start(a.port);
t.teardown(() => link.close());
const b = await startRelay({ upstream: { host: '127.0.0.1', port: link.port } });
t.teardown(() => b.stop());
const replicas = await Promise.all([0, 1].map(() => startReplica(b.port)));
const rc: RedisClient[] = await Promise.all(replicas.map((r) => r.client()));
const ac = await a.client();
const bc = await b.client();
// A connection that sends nothing is closed after listen.handshake-timeout (10 s): speak at once, since the tests
// below first use these after the replicas' syncs and a workload, which take longer than that on a loaded machine.
await Promise.all([ac.call('PING'), bc.call('PING')]);
t.teardown(async () => {
  for (const c of [m, ac, bc, ...rc]) await c.close().catch(() => {});
});

t.test('master → relay A → relay B → redis replicas: digests and offsets equal everywhere, and the A→B link carries compressed bytes', async (t) => {
  await workload(m, 'live');
  const { offset, digest: d } = await waitConverged(m, rc, "B's replicas converge with the master", 90_000);
  t.not(d, '0000000000000000000000000000000000000000', 'the dataset is not empty');
  const mi = await m.info('replication');
  for (const [name, c] of [['A', ac], ['B', bc], ['replica 1', rc[0]!], ['replica 2', rc[1]!]] as const) {
    const i = await c.info('replication');
    t.equal(stat(i, 'master_repl_offset'), offset, `${name} is at the master's offset`);
    t.equal(i['master_replid'], mi['master_replid'], `${name} has the master's replid`);
  }
  // The connection that got the full sync (B may have met A before A had its first snapshot).
  const conn = link.connections.find((c) => psyncReplyOf(c)?.startsWith('+FULLRESYNC'))!;
  t.match(conn.up.toString('latin1'), /psync-relay-z1:1\r\n/, 'B asked for compression in its REPLCONF capa');
  t.match(psyncReplyOf(conn), MARKED_FULL, 'A marked its +FULLRESYNC reply');
  t.notOk(afterPsyncReply(conn).subarray(0, 64).includes('REDIS'), 'no plain RDB header follows the reply');
  const snapshot = a.relay.status().snapshot!;
  const raw = snapshot.size + (offset - snapshot.offset);
  t.ok(link.bytesDown < raw * 0.5, `the A→B link carried ${link.bytesDown} bytes for ${raw} bytes of RDB and stream`);
  const counted = a.relay.status().stats;
  t.ok(counted.compressedWireBytes > 0 && counted.compressedWireBytes < counted.compressedRawBytes, 'A counts what it compressed');
  // B acknowledges in plain REPLCONF ACKs with the master's offsets: A lists B at the master's offset.
  await waitFor(async () => {
    const lines = Object.entries(await ac.info('replication')).filter(([k]) => /^slave\d+$/.test(k));
    return lines.some(([, v]) => v.includes(`port=${b.port},`) && v.includes(`offset=${offset},`));
  }, { what: "A's INFO lists B at the master's offset" });
});

t.test("B's replica partially resyncs from A directly, then from B again (REPLICAOF moves)", async (t) => {
  const aBefore = await ac.info('stats');
  await rc[0]!.call('REPLICAOF', '127.0.0.1', a.port);
  await workload(m, 'moved-to-a', 200);
  await waitConverged(m, rc, 'the moved replica converges on A');
  t.equal(stat((await rc[0]!.info('replication')), 'master_port'), a.port, 'the replica follows A');
  const aAfter = await ac.info('stats');
  t.equal(stat(aAfter, 'sync_partial_ok') - stat(aBefore, 'sync_partial_ok'), 1, 'A continued it');
  t.equal(stat(aAfter, 'sync_full'), stat(aBefore, 'sync_full'), 'A made no full sync');

  const bBefore = await bc.info('stats');
  await rc[0]!.call('REPLICAOF', '127.0.0.1', b.port);
  await workload(m, 'back-to-b', 200);
  await waitConverged(m, rc, 'the replica converges back on B');
  const bAfter = await bc.info('stats');
  t.equal(stat(bAfter, 'sync_partial_ok') - stat(bBefore, 'sync_partial_ok'), 1, 'B continued it');
  t.equal(stat(bAfter, 'sync_full'), stat(bBefore, 'sync_full'), 'B made no full sync');
});

t.test('a cut of the compressed A→B link resumes with a marked +CONTINUE and no full sync', async (t) => {
  const before = { a: await ac.info('stats'), b: await bc.info('stats') };
  const conns = link.connections.length;
  let writing = true;
  const writer = (async () => {
    for (let i = 0; writing; i++) await m.call('SET', `cut:${i % 500}`, JSON.stringify({ i, note: 'written while the link was cut' }));
  })();
  link.cut();
  await waitFor(() => link.connections.length > conns && psyncReplyOf(link.last!) !== null, { what: 'B reconnects to A' });
  writing = false;
  await writer;
  await waitConverged(m, rc, 'replicas converge after the cut');
  t.match(psyncReplyOf(link.last!), /^\+CONTINUE [0-9a-f]{40} psync-relay-z1$/, 'A continued B, compressed');
  const after = { a: await ac.info('stats'), b: await bc.info('stats') };
  t.equal(stat(after.a, 'sync_full'), stat(before.a, 'sync_full'), 'A made no full sync');
  t.equal(stat(after.b, 'relay_upstream_full_syncs'), stat(before.b, 'relay_upstream_full_syncs'), 'B did not full-sync from A');
  t.equal(stat(after.b, 'sync_full'), stat(before.b, 'sync_full'), "B's replicas made no full sync");
});

t.test('a plain redis-server replica of A gets the plain protocol', async (t) => {
  const tap = await TcpProxy.start(a.port);
  t.teardown(() => tap.close());
  const plain = await startReplica(tap.port);
  const pc = await plain.client();
  t.teardown(() => pc.close());
  await m.call('SET', 'plain-replica', 'yes');
  const { digest: d } = await waitConverged(m, [pc], 'the plain replica converges');
  t.equal(await digest(pc), d, "the plain replica has the master's dataset");
  const conn = tap.connections[0]!;
  t.notMatch(conn.up.toString('latin1'), /psync-relay/, 'redis-server did not ask for compression');
  t.match(psyncReplyOf(conn), PLAIN_FULL, 'an unmarked +FULLRESYNC');
  t.equal(afterPsyncReply(conn).subarray(0, 1).toString(), '$', 'followed by a plain $<len> payload header');
});

t.test('a relay whose upstream is a plain redis-server asks for compression, is ignored, and replicates unchanged', async (t) => {
  const m2 = await startRedis();
  const m2c = await m2.client();
  t.teardown(() => m2c.close());
  await workload(m2c, 'redis-upstream', 300);
  const tap = await TcpProxy.start(m2.port);
  t.teardown(() => tap.close());
  const c = await startRelay({ upstream: { host: '127.0.0.1', port: tap.port } });
  t.teardown(() => c.stop());
  const leaf = await startReplica(c.port);
  const lc = await leaf.client();
  t.teardown(() => lc.close());
  await workload(m2c, 'redis-upstream-live', 300);
  await waitConverged(m2c, [lc], "the relay's replica converges with the redis master");
  t.equal(await offsetOf(c.port), stat(await m2c.info('replication'), 'master_repl_offset'), 'the relay is at the master offset');
  const conn = tap.connections[0]!;
  t.match(conn.up.toString('latin1'), /capa\r\n\$\d+\r\npsync-relay-z1:1\r\n/, 'the relay announced the capa');
  const beforeReply = conn.down.toString('latin1').split('+FULLRESYNC')[0]!;
  t.notMatch(beforeReply, /^-/m, 'redis-server answered every handshake command without an error');
  t.match(psyncReplyOf(conn), PLAIN_FULL, 'an unmarked +FULLRESYNC');
});

t.test('upstream.compression off: the relay does not ask and gets a plain stream from A', async (t) => {
  const tap = await TcpProxy.start(a.port);
  t.teardown(() => tap.close());
  const d = await startRelay({ upstream: { host: '127.0.0.1', port: tap.port, compression: 'off' } });
  t.teardown(() => d.stop());
  await m.call('SET', 'compression-off', '1');
  await reachesMaster(d.port, 'D reaches the master offset');
  const conn = tap.connections[0]!;
  t.notMatch(conn.up.toString('latin1'), /psync-relay-z1/, 'no compression capa');
  t.match(psyncReplyOf(conn), PLAIN_FULL, 'an unmarked +FULLRESYNC');
  t.equal(afterPsyncReply(conn).subarray(0, 1).toString(), '$', 'a plain payload header');
});

t.test('replication.compression off on the upstream relay: a relay that asks gets a plain stream', async (t) => {
  const a2 = await startRelay({ upstream: { host: '127.0.0.1', port: master.port }, replication: { compression: 'off' } });
  t.teardown(() => a2.stop());
  const tap = await TcpProxy.start(a2.port);
  t.teardown(() => tap.close());
  const b2 = await startRelay({ upstream: { host: '127.0.0.1', port: tap.port } });
  t.teardown(() => b2.stop());
  await m.call('SET', 'upstream-off', '1');
  await reachesMaster(b2.port, 'B2 reaches the master offset', 60_000);
  const conn = tap.connections[0]!;
  t.match(conn.up.toString('latin1'), /psync-relay-z1/, 'B2 asked');
  t.match(psyncReplyOf(conn), PLAIN_FULL, 'A2 answered unmarked');
});

t.test("a snapshot fetched from a compressing relay (rdb-only connection) is byte for byte A's RDB", async (t) => {
  const dir = tempDir('psync-relay-fetch-');
  const tap = await TcpProxy.start(a.port);
  t.teardown(() => tap.close());
  const fetch = async (compression: number | null, file: string) =>
    fetchSnapshot(
      { host: '127.0.0.1', port: tap.port, user: null, password: null, listeningPort: 0, connectTimeoutMs: 5000, timeoutMs: 10_000, compression, log: createLogger('silent') },
      join(dir, file),
      () => undefined,
      { socket: null },
    );
  const zipped = await fetch(6, 'z.rdb');
  const plain = await fetch(null, 'p.rdb');
  t.same(zipped, plain, 'same replid and offset');
  t.ok(readFileSync(join(dir, 'z.rdb')).equals(readFileSync(join(dir, 'p.rdb'))), 'the same RDB bytes');
  t.ok(readFileSync(join(dir, 'p.rdb')).length > 100_000, 'a real RDB');
  t.match(psyncReplyOf(tap.connections[0]!), MARKED_FULL, 'the first fetch was compressed');
  t.ok(tap.connections[0]!.bytesDown < tap.connections[1]!.bytesDown / 2, 'and carried less than half the bytes');
});
