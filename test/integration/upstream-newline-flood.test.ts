/**
 * An upstream that sends bare newlines during the handshake. A Redis master sends one a second after PSYNC while it
 * prepares a full sync (a keepalive); a broken or hostile one may send nothing else, and as fast as it can.
 * - Before PSYNC no master sends them: they are no reply, and they must not keep the handshake alive past
 *   upstream.connect-timeout (here 1s of an upstream.timeout of 60s).
 * - After PSYNC they are keepalives: a stream of them keeps the one connection, and the full sync that follows is
 *   taken. (What a flood cost, a string, a regex and a timer per newline, ~2.5 MB/s with the event loop held ~1 s a
 *   turn, is in the CHANGELOG; speed is not asserted here.)
 * A real replica behind the relay then has the master's offset and data.
 */
import t from 'tap';
import { createServer, type Socket } from 'node:net';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { startFakeMaster } from '../helpers/fake-master.js';
import { replicaOf } from '../helpers/replication.js';
import { stopAll } from '../helpers/redis-server.js';
import { waitFor } from '../helpers/wait.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { emptyRdb } from '../../src/backlog/snapshot-store.js';

t.teardown(stopAll);

const A = '0123456789abcdef0123456789abcdef0123456a';
const RDB = emptyRdb(10);
const GOOD = encodeCommand(['SET', 'good', '1']);
const NEWLINES = Buffer.alloc(1 << 20, 0x0a);

/** Writes `mib` MiB of newlines (or, with Infinity, until the socket closes), then calls `then`. */
function flood(socket: Socket, mib: number, then: () => void = () => undefined): void {
  let sent = 0;
  const pump = (): void => {
    while (!socket.destroyed && sent < mib) {
      sent++;
      if (!socket.write(NEWLINES)) return void socket.once('drain', pump);
    }
    if (!socket.destroyed) then();
  };
  pump();
}

t.test('newlines instead of +PONG do not keep the handshake alive past connect-timeout', async (t) => {
  const connections: Socket[] = [];
  const server = createServer((s) => {
    connections.push(s);
    s.on('error', () => {});
    flood(s, Infinity);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => (connections.forEach((s) => s.destroy()), server.close(() => resolve()))));
  const port = (server.address() as { port: number }).port;
  const relay = await startLoggedRelay(t, { upstream: { host: '127.0.0.1', port, 'connect-timeout': 1, timeout: 60 } });

  const failed = await waitFor(() => relay.lines.find((l) => l['msg'] === 'upstream link failed'), { what: 'the handshake to time out', timeoutMs: 10_000 });
  const err = failed['err'] as { message: string; code: string };
  t.equal(err.code, 'RELAY_ERR_TIMEOUT');
  t.match(err.message, /timeout in receive-pong/);
  await waitFor(() => connections.length >= 2, { what: 'a reconnect', timeoutMs: 10_000 });
  const client = await relay.client();
  t.equal(await client.callString('PING'), 'PONG', 'the relay answers PING');
});

t.test('keepalive newlines after PSYNC keep the one connection, then the full sync is taken', async (t) => {
  const MIB = 4;
  const master = await startFakeMaster((socket) =>
    flood(socket, MIB, () => socket.write(Buffer.concat([Buffer.from(`+FULLRESYNC ${A} 0\r\n$${RDB.length}\r\n`), RDB, GOOD]))),
  );
  t.teardown(() => master.close());
  const relay = await startLoggedRelay(t, { upstream: { host: '127.0.0.1', port: master.port } });
  const client = await relay.client();
  const end = String(GOOD.length);
  await waitFor(async () => (await client.info('replication'))['master_repl_offset'] === end, { what: `${MIB} MiB of newlines, then the full sync` });
  t.equal(master.psyncs.length, 1, 'the newlines kept the one connection alive');

  const { replica, r } = await replicaOf(t, relay.port);
  await waitFor(async () => (await r.info('replication'))['master_repl_offset'] === end, { what: `replica offset ${end}`, timeoutMs: 15_000 });
  t.equal(await r.callString('GET', 'good'), '1');
  t.equal((await r.info('replication'))['master_replid'], A);
  await replica.stop();
});
