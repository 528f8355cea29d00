/**
 * The storage issue's edge cases, each against a scripted upstream (a real master cannot send a 600 MB bulk cheaply,
 * garbage on demand, or stall an RDB mid-way) and real relay code: bulk sizes beyond proto-max-bulk-len from the
 * master, an upstream whose continuation never parses, `redis-cli --replica` starting mid-command, replicas that
 * vanish during a full sync, and a snapshot fetch that would hold the log without bound.
 */
import t from 'tap';
import { connect, type Socket } from 'node:net';
import { readdirSync } from 'node:fs';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startRelayProcess } from '../helpers/relay-process.js';
import { startFakeMaster } from '../helpers/fake-master.js';
import { freePort } from '../helpers/ports.js';
import { startReplica, waitConverged, stat } from '../helpers/replication.js';
import { RedisClient } from '../helpers/redis-client.js';
import { waitFor } from '../helpers/wait.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { emptyRdb } from '../../src/backlog/snapshot-store.js';

t.teardown(stopAll);

const REPLID = 'a'.repeat(8) + '0123456789abcdef0123456789abcdef';
const RDB = emptyRdb(10);
const fullSync = (socket: Socket, offset: number): void => {
  socket.write(`+FULLRESYNC ${REPLID} ${offset}\r\n$${RDB.length}\r\n`);
  socket.write(RDB);
};

/** A raw downstream connection that records every byte it receives. */
async function rawReplica(port: number, commands: string[][]): Promise<{ socket: Socket; received: () => Buffer }> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => {});
  for (const c of commands) socket.write(encodeCommand(c));
  return { socket, received: () => Buffer.concat(chunks) };
}

t.test('a bulk from the master larger than 512 MiB (proto-max-bulk-len) is streamed, not taken for garbage', async (t) => {
  const head = Buffer.from('*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$600000000\r\n');
  const body = Buffer.alloc(1 << 20, 0x78);
  const fake = await startFakeMaster((socket) => {
    fullSync(socket, 0);
    socket.once('data', () => socket.write(Buffer.concat([head, body])));
  });
  t.teardown(() => fake.close());
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: fake.port }, log: { disk: 0 } });
  t.teardown(() => relay.stop());
  const x = await relay.client();
  t.teardown(() => x.close());
  await waitFor(async () => stat(await x.info('replication'), 'master_repl_offset') === head.length + body.length || undefined, {
    what: 'the first MiB of the big value held',
  });
  t.equal((await x.info('replication'))['master_link_status'], 'up', 'the link stays up');
  t.equal(fake.psyncs.length, 1, 'no reconnect');
});

t.test('an upstream whose stream after our offset never parses: two tries, then a full sync, not an endless loop', async (t) => {
  const cmds = Buffer.concat([encodeCommand(['SELECT', '0']), encodeCommand(['SET', 'a', '1'])]);
  const fake = await startFakeMaster((socket, attempt) => {
    if (attempt === 0) {
      fullSync(socket, 0);
      socket.once('data', () => {
        socket.write(cmds);
        setImmediate(() => socket.destroy());
      });
      return;
    }
    if (attempt <= 2) {
      // Accepts the PSYNC, then sends what cannot follow a command boundary.
      socket.write(`+CONTINUE ${REPLID}\r\nnot resp at all\r\n`);
      return;
    }
    fullSync(socket, 5000);
  });
  t.teardown(() => fake.close());
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: fake.port }, log: { disk: 0 } });
  t.teardown(() => relay.stop());
  await waitFor(() => fake.psyncs.length >= 4 || undefined, { what: 'four PSYNCs' });
  t.strictSame(fake.psyncs[1], ['PSYNC', REPLID, String(cmds.length + 1)], 'first it continues from its offset');
  t.strictSame(fake.psyncs[2], ['PSYNC', REPLID, String(cmds.length + 1)], 'once more');
  t.strictSame(fake.psyncs[3], ['PSYNC', '?', '-1'], 'then gives its position up and asks for a full sync');
  await waitFor(() => (relay.relay.status().upstream.state === 'connected' && relay.relay.status().masterReplOffset === 5000) || undefined, { what: 'the new history' });
});

t.test('redis-cli --replica (rdb-filter-only "") starts at a whole command even when the relay holds half of one', async (t) => {
  const ping = encodeCommand(['PING']);
  const set = encodeCommand(['SET', 'key', 'value']);
  let master: Socket | null = null;
  const fake = await startFakeMaster((socket) => {
    master = socket;
    fullSync(socket, 0);
    socket.once('data', () => socket.write(Buffer.concat([ping, set.subarray(0, 10)])));
  });
  t.teardown(() => fake.close());
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: fake.port } });
  t.teardown(() => relay.stop());
  await waitFor(() => relay.relay.status().masterReplOffset === ping.length + 10 || undefined, { what: 'half a SET held' });
  const r = await rawReplica(relay.port, [['REPLCONF', 'rdb-filter-only', ''], ['PSYNC', '?', '-1']]);
  t.teardown(() => r.socket.destroy());
  const header = `+FULLRESYNC ${REPLID} ${ping.length}\r\n`;
  const payload = Buffer.concat([Buffer.from(`+OK\r\n${header}$${RDB.length}\r\n`), RDB]);
  await waitFor(() => r.received().length >= payload.length || undefined, { what: 'the empty RDB' });
  t.equal(r.received().toString('latin1', 5, 5 + header.length), header, '+FULLRESYNC names the last whole command');
  master!.write(set.subarray(10));
  await waitFor(() => r.received().length >= payload.length + set.length || undefined, { what: 'the stream' });
  t.ok(r.received().equals(Buffer.concat([payload, set])), 'the stream starts with the whole SET');
});

t.test('replicas that vanish during their full sync leave no open file, no snapshot lease and no hung sync', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  await m.call('DEBUG', 'POPULATE', 50000, 'key', 200);
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
  t.teardown(() => relay.stop());
  const x = await relay.client();
  t.teardown(() => x.close());
  await waitFor(async () => stat(await x.info('replication'), 'relay_snapshot_usable') === 1 || undefined, { what: 'a snapshot' });
  const fds = (): number => readdirSync('/proc/self/fd').length;
  const before = fds();
  // Each one asks for a full sync and goes away at a different moment of it: before, during and after the open.
  for (let i = 0; i < 40; i++) {
    const r = await rawReplica(relay.port, [['REPLCONF', 'capa', 'eof'], ['PSYNC', '?', '-1']]);
    for (let k = 0; k < i % 8; k++) await new Promise((resolve) => setImmediate(resolve));
    r.socket.destroy();
  }
  await waitFor(() => (relay.relay.status().snapshotLeases === 0 && relay.relay.status().replicas.length === 0) || undefined, { what: 'every transfer ended' });
  await waitFor(() => fds() <= before + 2 || undefined, { what: `file descriptors back to ${before} (now ${fds()})` });
  // The full sync path still works.
  const replica = await startReplica(relay.port);
  const rc = await replica.client();
  t.teardown(() => rc.close());
  await waitConverged(m, [rc], 'a replica after them converges');
  t.equal(relay.relay.status().snapshotLeases, 0, 'no snapshot file held open');
  await replica.stop();
});

t.test('a snapshot fetch that would hold the log past log.refresh-hold is abandoned, logged with its key, and memory stays bounded', async (t) => {
  let streaming: NodeJS.Timeout | null = null;
  let offset = 0;
  const chunk = encodeCommand(['SET', 'k', 'v'.repeat(4000)]);
  const fake = await startFakeMaster((socket, attempt) => {
    if (attempt === 0) {
      fullSync(socket, 0);
      socket.once('data', () => {
        streaming = setInterval(() => {
          for (let i = 0; i < 8; i++) socket.write(chunk);
          offset += 8 * chunk.length;
        }, 5);
      });
      return;
    }
    // The snapshot fetch (rdb-only): an RDB that starts and never ends.
    socket.write(`+FULLRESYNC ${REPLID} ${offset}\r\n$1000000\r\nREDIS0010`);
  });
  t.teardown(() => {
    if (streaming) clearInterval(streaming);
    return fake.close();
  });
  const dir = t.testdir({
    'relay.yaml': 'log:\n  memory: 16kb\n  disk: 0\n  refresh-hold: 64kb\nreplication:\n  snapshot-refresh-min-interval: 1s\nweb:\n  port: 0\n',
  });
  const port = await freePort();
  const relay = await startRelayProcess(['--config', `${dir}/relay.yaml`, '--upstream', `127.0.0.1:${fake.port}`, '--port', String(port), '--dir', `${dir}/data`]);
  t.teardown(() => relay.stop('SIGKILL'));
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  await waitFor(async () => stat(await x.info('replication'), 'relay_log_memory_first_byte_offset') > 1 || undefined, { what: 'the log past the snapshot' });
  // A replica that needs a full sync: the snapshot's next byte is gone, so a fetch starts and stalls.
  const r = await rawReplica(port, [['PSYNC', '?', '-1']]);
  t.teardown(() => r.socket.destroy());
  await waitFor(() => /log\.refresh-hold/.test(relay.logs()) || undefined, { what: 'the fetch abandoned at log.refresh-hold' });
  t.match(relay.logs(), /"limit":"log.refresh-hold".*snapshot fetch abandoned/, 'logged with the key');
  await waitFor(async () => stat(await x.info('replication'), 'relay_log_memory_bytes') <= 16 * 1024 + 64 * 1024 || undefined, {
    what: 'memory back under log.memory plus one block',
  });
  await waitFor(() => fake.psyncs.length >= 3 || undefined, { what: 'the fetch retried after the minimum interval' });
  t.equal(stat(await x.info('replication'), 'relay_snapshot_refreshes') >= 2, true, 'each attempt counted');
});
