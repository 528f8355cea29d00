/**
 * replication.ack-policy: with `min`, the relay acknowledges upstream only what its downstream replicas hold, so
 * WAIT on the master means "held by the replicas behind the relay". With `self` (the default) it acknowledges
 * what it holds itself, like a Redis replica.
 */
import t, { type Test } from 'tap';
import { connect } from 'node:net';
import { once } from 'node:events';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica, waitConverged } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { freezeIntervals } from '../helpers/clock.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { encodeCommand } from '../../src/resp/writer.js';

t.teardown(stopAll);

const master = await startRedis();
const m = await master.client();
t.teardown(() => m.close());

/** The offset the master has from the relay's ACKs (INFO replication slave0 offset=). */
async function relayAckOnMaster(): Promise<number> {
  const line = (await m.info('replication'))['slave0'] ?? '';
  return Number(/offset=(\d+)/.exec(line)?.[1] ?? -1);
}

t.test('ack-policy min: WAIT on the master counts the relay only once its replica holds the write, passed on as it arrives', async (t) => {
  // The relay's periodic ACK (every second) never fires in this test: whatever the master learns from the relay
  // comes from its answers to GETACK and from passing its replica's ACKs on as they arrive.
  const intervals = freezeIntervals(t);
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port }, replication: { 'ack-policy': 'min' } });
  t.teardown(() => relay.stop());
  const replica = await startReplica(relay.port);
  const r = await replica.client();
  t.teardown(() => r.close());

  await m.call('SET', 'a', '1');
  await waitConverged(m, [r], 'replica online');
  t.equal(await m.call('WAIT', 1, 2000), 1, 'the replica holds the write: WAIT returns 1');

  replica.proc.kill('SIGSTOP');
  try {
    await m.call('SET', 'b', '2');
    t.equal(await m.call('WAIT', 1, 1000), 0, 'replica frozen: WAIT times out with 0');
    const masterOffset = Number((await m.info('replication'))['master_repl_offset']);
    t.ok((await relayAckOnMaster()) < masterOffset, 'the relay acknowledges less than the master sent');
    const relayHeld = relay.relay.status().masterReplOffset;
    t.equal(relayHeld, masterOffset, 'though the relay itself holds everything');
  } finally {
    replica.proc.kill('SIGCONT');
  }
  t.equal(await m.call('WAIT', 1, 5000), 1, 'replica resumed: WAIT returns 1 without any periodic ACK from the relay');
  t.ok(intervals.count > 0, 'the relay did set its periodic timers (frozen)');
  t.equal(await r.callString('GET', 'b'), '2');
});

t.test('ack-policy min with no replica connected acknowledges nothing new', async (t) => {
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port }, replication: { 'ack-policy': 'min' } });
  t.teardown(() => relay.stop());
  await m.call('SET', 'c', '3');
  await waitFor(
    async () => {
      const s = relay.relay.status();
      return (s.upstream.linkUp && s.masterReplOffset === Number((await m.info('replication'))['master_repl_offset'])) || undefined;
    },
    { what: 'relay streaming, caught up' },
  );
  t.equal(await m.call('WAIT', 1, 500), 0, 'no replica behind the relay: WAIT returns 0');
  t.ok((await relayAckOnMaster()) < Number((await m.info('replication'))['master_repl_offset']));
});

t.test('ack-policy self (default): the relay acknowledges what it holds, even with its replica frozen', async (t) => {
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
  t.teardown(() => relay.stop());
  const replica = await startReplica(relay.port);
  const r = await replica.client();
  t.teardown(() => r.close());
  await m.call('SET', 'd', '4');
  await waitConverged(m, [r], 'replica online');
  replica.proc.kill('SIGSTOP');
  try {
    await m.call('SET', 'e', '5');
    t.equal(await m.call('WAIT', 1, 2000), 1, 'WAIT returns 1: the relay holds the write');
  } finally {
    replica.proc.kill('SIGCONT');
  }
});

/**
 * A replica that speaks PSYNC to `port` as a Redis 7.2+ replica with an AOF does: after its EOF-marked snapshot it
 * acknowledges `REPLCONF ACK <offset> FACK <aof offset>`; ack(offset, aof) sends another. Resolves with the snapshot's offset.
 */
async function aofReplica(t: Test, port: number, aofBehind: number): Promise<{ offset: number; ack(offset: number | string, aof: number): void; received(): number }> {
  const socket = connect({ port, host: '127.0.0.1' });
  socket.on('error', () => undefined);
  t.teardown(() => socket.destroy());
  await once(socket, 'connect');
  let buf = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => (buf = Buffer.concat([buf, d])));
  socket.write(Buffer.concat([encodeCommand(['REPLCONF', 'listening-port', '4242']), encodeCommand(['REPLCONF', 'capa', 'eof', 'capa', 'psync2']), encodeCommand(['PSYNC', '?', '-1'])]));
  const got = await waitFor(
    () => {
      const text = buf.toString('latin1');
      const m = /\+FULLRESYNC [0-9a-f]{40} (\d+)\r\n\n*\$EOF:([0-9a-f]{40})\r\n/.exec(text);
      return m && text.indexOf(m[2]!, m.index + m[0].length) > 0 ? { offset: Number(m[1]), end: text.indexOf(m[2]!, m.index + m[0].length) + 40 } : undefined;
    },
    { what: 'the +FULLRESYNC and the whole EOF-marked snapshot' },
  );
  const ack = (offset: number | string, aof: number): void => void socket.write(encodeCommand(['REPLCONF', 'ACK', String(offset), 'FACK', String(aof)]));
  ack(got.offset, Math.max(0, got.offset - aofBehind));
  return { offset: got.offset, ack, received: () => got.offset + buf.length - got.end };
}

/** The FACK values the relay sent upstream through `proxy`, in order. */
function facks(proxy: TcpProxy): number[] {
  const up = proxy.last?.up.toString('latin1') ?? '';
  return [...up.matchAll(/\$4\r\nFACK\r\n\$\d+\r\n(\d+)\r\n/g)].map((x) => Number(x[1]));
}

/**
 * A relay with `replication` following the master through a proxy that keeps what it sends upstream, an AOF replica
 * of it, and a write the replica has received (`end`: the master's offset after it).
 */
async function fackSetup(t: Test, replication: Record<string, unknown>) {
  const proxy = await TcpProxy.start(master.port);
  t.teardown(() => proxy.close());
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: proxy.port }, replication });
  t.teardown(() => relay.stop());
  await waitFor(() => relay.relay.status().upstream.linkUp || undefined, { what: 'relay streaming' });
  const r = await aofReplica(t, relay.port, 0);
  await m.call('SET', 'fack', String(Date.now()));
  const end = Number((await m.info('replication'))['master_repl_offset']);
  await waitFor(() => r.received() >= end - r.offset || undefined, { what: 'the write reaches the replica' });
  return { proxy, relay, r, end };
}

t.test('ack-policy min passes on what its replicas fsynced to their AOF (FACK, for WAITAOF); none while one of them never said', async (t) => {
  const { proxy, relay, r, end } = await fackSetup(t, { 'ack-policy': 'min' });
  // It holds the write but fsynced only up to 10 bytes before it.
  r.ack(end, end - 10);
  await waitFor(() => facks(proxy).at(-1) === end - 10 || undefined, { what: `FACK ${end - 10} sent upstream (sent: ${facks(proxy).join(', ')})` });

  // A replica without an AOF (redis-server 7.0 sends no FACK) joins: min cannot say more than before.
  const plain = await startReplica(relay.port);
  const p = await plain.client();
  t.teardown(() => p.close());
  await waitConverged(m, [p], 'the replica without an AOF online');
  await m.call('SET', 'fack', '2');
  const next = Number((await m.info('replication'))['master_repl_offset']);
  await waitFor(() => r.received() >= next - r.offset || undefined, { what: 'the second write reaches the AOF replica' });
  r.ack(next, next);
  await waitFor(async () => (await relayAckOnMaster()) === next || undefined, { what: 'both replicas acknowledged the second write, passed upstream' });
  t.equal(Math.max(...facks(proxy)), end - 10, 'FACK stays where it was: one replica never said what it fsynced');
  await plain.stop();
  // Only the AOF replica again: what it said counts.
  await waitFor(() => facks(proxy).at(-1) === next || undefined, { what: `FACK ${next} once the replica without an AOF left (sent: ${facks(proxy).join(', ')})` });
});

t.test('ack-policy self sends no FACK: the relay keeps no AOF', async (t) => {
  const { proxy, r, end } = await fackSetup(t, {});
  r.ack(end, end);
  await waitFor(async () => (await relayAckOnMaster()) === end || undefined, { what: 'the relay acknowledged the write' });
  t.match(proxy.last?.up.toString('latin1') ?? '', /REPLCONF\r\n\$3\r\nACK\r\n/, 'it acknowledges');
  t.same(facks(proxy), [], 'with no FACK');
});

t.test('an ACK offset past 2^53 is ignored, as one that is not a number: it was kept inexact and shown past int64 in INFO', async (t) => {
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
  t.teardown(() => relay.stop());
  await waitFor(() => relay.relay.status().upstream.linkUp || undefined, { what: 'relay streaming' });
  const r = await aofReplica(t, relay.port, 0);
  const x = await relay.client();
  t.teardown(() => x.close());
  r.ack('9223372036854775807', 0);
  r.ack('9007199254740993', 0);
  await m.call('SET', 'past-2^53', '1');
  const next = Number((await m.info('replication'))['master_repl_offset']);
  await waitFor(() => r.received() >= next - r.offset || undefined, { what: 'the write reaches the replica' });
  r.ack(next, 0);
  // Acknowledged offsets only grow: had either been taken, the replica's offset would never come back to `next`.
  const line = await waitFor(
    async () => {
      const l = Object.entries(await x.info('replication')).find(([k, v]) => /^slave\d+$/.test(k) && v.includes('port=4242,'))?.[1];
      return l?.includes(`offset=${next},`) ? l : undefined;
    },
    { what: `the replica's line in INFO at offset=${next}` },
  );
  t.match(line, /state=online/);
});
