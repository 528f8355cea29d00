/**
 * An upstream whose full-sync payload cannot be taken: a malformed payload header (an EOF mark that is not 40 bytes,
 * a negative or non-numeric length, a line that is no payload header at all) or an RDB that stops arriving. The
 * relay must refuse it, keep nothing of it, retry, and say what was wrong: its log line and its lastError name the
 * fault, not a generic "upstream closed the connection" (the relay closed it itself). A real replica behind it then
 * holds the good RDB's dataset and the master's offset.
 */
import t from 'tap';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { startFakeMaster } from '../helpers/fake-master.js';
import { replicaOf, datasetRdb, digest } from '../helpers/replication.js';
import { stopAll } from '../helpers/redis-server.js';
import { waitFor } from '../helpers/wait.js';
import { encodeCommand } from '../../src/resp/writer.js';

t.teardown(stopAll);

const A = '0123456789abcdef0123456789abcdef0123456a';
const FULL_AT = 100;
const AFTER = encodeCommand(['SET', 'after-rdb', 'yes']);

const CASES: Array<[what: string, first: (rdb: Buffer) => Buffer, error: RegExp]> = [
  ['an EOF mark of 3 bytes', (rdb) => Buffer.concat([Buffer.from('$EOF:abc\r\n'), rdb]), /bad EOF mark/],
  ['a negative payload length', (rdb) => Buffer.concat([Buffer.from('$-5\r\n'), rdb]), /bad RDB payload length/],
  ['a line that is no payload header', (rdb) => Buffer.concat([Buffer.from('+OK\r\n'), rdb]), /bad RDB payload header/],
  ['an RDB that stops arriving (upstream.timeout 1s)', (rdb) => Buffer.concat([Buffer.from(`$${rdb.length}\r\n`), rdb.subarray(0, 9)]), /timeout receiving the RDB/],
];

t.test('a payload the relay refuses is reported as what it is, and the retry serves a real replica', async (t) => {
  const { rdb, digest: want } = await datasetRdb(2000);
  for (const [what, first, error] of CASES) {
    await t.test(what, async (t) => {
      const master = await startFakeMaster((socket, attempt) => {
        socket.write(`+FULLRESYNC ${A} ${FULL_AT}\r\n`);
        // The bad attempt's connection stays open: only the relay may end it.
        if (attempt === 0) socket.write(first(rdb));
        else socket.write(Buffer.concat([Buffer.from(`$${rdb.length}\r\n`), rdb, AFTER]));
      });
      t.teardown(() => master.close());
      const relay = await startLoggedRelay(t, { upstream: { host: '127.0.0.1', port: master.port, timeout: 1, 'backoff-min': '50ms', 'backoff-max': '500ms' } });

      const failed = await waitFor(() => relay.lines.find((l) => l['msg'] === 'upstream link failed'), { what: 'the failure logged', timeoutMs: 10_000 });
      const err = failed['err'] as { message: string; code?: string };
      t.match(err.message, error, `logged: ${err.message}`);
      t.ok(err.code?.startsWith('RELAY_ERR_'), `a coded relay error: ${err.code}`);

      const end = String(FULL_AT + AFTER.length);
      const client = await relay.client();
      await waitFor(async () => (await client.info('replication'))['master_repl_offset'] === end, { what: `relay offset ${end}`, timeoutMs: 10_000 });
      t.match(relay.relay.status().upstream.lastError, error, 'lastError names the fault');
      t.equal(master.psyncs.length, 2, 'one retry');
      t.same(master.psyncs[1], ['PSYNC', '?', '-1'], 'the refused payload gave no history');

      const { replica, r } = await replicaOf(t, relay.port);
      await waitFor(async () => (await r.info('replication'))['master_repl_offset'] === end, { what: `replica offset ${end}`, timeoutMs: 15_000 });
      t.equal((await r.info('replication'))['master_replid'], A);
      t.equal(await digest(r), want, "the replica holds the good RDB's dataset and the command after it");
      await replica.stop();
    });
  }
});
