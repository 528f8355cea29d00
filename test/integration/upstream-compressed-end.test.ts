/**
 * A compressed relay-to-relay link (psync-relay-z1) is one raw DEFLATE stream until the connection closes: the sender
 * only ever flushes (Z_SYNC_FLUSH), it never finishes. An upstream that finishes it (a final block) while the
 * connection stays open is broken: what it sends next is not inflated. The relay must fail the link at once, saying
 * so, not sit "connected" dropping every byte until upstream.timeout (60 s) calls it silent. A real replica behind
 * the relay then gets the retry's stream.
 */
import t from 'tap';
import { constants, deflateRawSync } from 'node:zlib';
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
const payload = (...cmds: string[][]): Buffer => Buffer.concat([Buffer.from(`$${RDB.length}\r\n`), RDB, ...cmds.map((c) => encodeCommand(c))]);
const GOOD = encodeCommand(['SET', 'good', '1']);
const RETRY_AT = 200;

t.test('an upstream relay that finishes its compressed stream on an open connection: the link fails at once, and says why', async (t) => {
  const master = await startFakeMaster((socket, attempt) => {
    if (attempt === 0) {
      // Finished (a final block), then more bytes, the connection left open.
      socket.write(Buffer.concat([Buffer.from(`+FULLRESYNC ${A} 100 psync-relay-z1\r\n`), deflateRawSync(payload(['SET', 'a', '1']))]));
      socket.write(deflateRawSync(encodeCommand(['SET', 'lost', '1']), { finishFlush: constants.Z_SYNC_FLUSH }));
    } else {
      socket.write(Buffer.concat([Buffer.from(`+FULLRESYNC ${A} ${RETRY_AT} psync-relay-z1\r\n`), deflateRawSync(payload(['SET', 'good', '1']), { finishFlush: constants.Z_SYNC_FLUSH })]));
    }
  });
  t.teardown(() => master.close());
  const relay = await startLoggedRelay(t, { upstream: { host: '127.0.0.1', port: master.port, timeout: 60 } });

  const failed = await waitFor(() => relay.lines.find((l) => l['msg'] === 'upstream link failed'), { what: 'the link to fail', timeoutMs: 10_000 });
  const err = failed['err'] as { message: string; code: string };
  t.match(err.message, /ended its compressed stream/, `logged: ${err.message}`);
  t.equal(err.code, 'RELAY_ERR_PROTOCOL');

  const end = String(RETRY_AT + GOOD.length);
  const client = await relay.client();
  await waitFor(async () => (await client.info('replication'))['master_repl_offset'] === end, { what: `relay offset ${end}`, timeoutMs: 10_000 });
  const { replica, r } = await replicaOf(t, relay.port);
  await waitFor(async () => (await r.info('replication'))['master_repl_offset'] === end, { what: `replica offset ${end}`, timeoutMs: 15_000 });
  t.equal(await r.callString('GET', 'good'), '1');
  t.equal(await r.call('EXISTS', 'lost'), 0);
  t.equal((await r.info('replication'))['master_replid'], A);
  await replica.stop();
});
