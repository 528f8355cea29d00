/**
 * PSYNC replies a relay cannot build a history on. A hostile or broken upstream answers the first-contact
 * `PSYNC ? -1` with `+CONTINUE` (there is nothing to continue: the bytes after it have no known offset), or
 * `+FULLRESYNC` with an offset a master cannot have (negative; -1 is the relay's "no snapshot"), or past 2^53 (where
 * a JS number stops counting bytes: offset + n === offset). Each time the relay must refuse the reply, keep no
 * byte of what followed, reconnect, and take the next sane full sync; a real replica behind it then has the master's
 * offset and data, nothing of the bogus connection's.
 */
import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startFakeMaster } from '../helpers/fake-master.js';
import { waitFor } from '../helpers/wait.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { emptyRdb } from '../../src/backlog/snapshot-store.js';

t.teardown(stopAll);

const A = '0123456789abcdef0123456789abcdef0123456a';
const RDB = emptyRdb(10);
const FULL_AT = 100;
const GOOD = encodeCommand(['SET', 'good', '1']);
const BOGUS = encodeCommand(['SET', 'bogus', '1']);

const BAD_REPLIES: Array<[what: string, line: string]> = [
  ['+CONTINUE <id> to the first-contact PSYNC ? -1', `+CONTINUE ${A}`],
  ['+CONTINUE (no id) to the first-contact PSYNC ? -1', '+CONTINUE'],
  ['+FULLRESYNC with an offset past 2^53', `+FULLRESYNC ${A} 99999999999999999999`],
  ['+FULLRESYNC with a negative offset', `+FULLRESYNC ${A} -50`],
];

for (const [what, line] of BAD_REPLIES) {
  t.test(`${what} is refused: the relay reconnects, full-syncs, and a real replica has the master's offset`, async (t) => {
    const master = await startFakeMaster((socket, attempt) => {
      // The bogus connection stays open, as a hostile upstream's would: only the relay may end it.
      if (attempt === 0) socket.write(Buffer.concat([Buffer.from(`${line}\r\n`), ...(line.startsWith('+FULLRESYNC') ? [Buffer.from(`$${RDB.length}\r\n`), RDB] : []), BOGUS]));
      else socket.write(Buffer.concat([Buffer.from(`+FULLRESYNC ${A} ${FULL_AT}\r\n$${RDB.length}\r\n`), RDB, GOOD]));
    });
    t.teardown(() => master.close());
    const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
    t.teardown(() => relay.stop());
    const client = await relay.client();
    t.teardown(() => client.close());

    const end = String(FULL_AT + GOOD.length);
    await waitFor(() => master.psyncs.length >= 2, { what: 'the relay to drop the bogus reply and PSYNC again', timeoutMs: 10_000 });
    t.same(master.psyncs[1], ['PSYNC', '?', '-1'], 'it asks again from nothing: no history was taken from the bogus reply');
    const info = await waitFor(async () => {
      const i = await client.info('replication');
      return i['master_link_status'] === 'up' && i['master_repl_offset'] === end && i;
    }, { what: `relay master_repl_offset ${end}`, timeoutMs: 10_000 });
    t.equal(info['master_replid'], A);
    t.equal(info['relay_snapshot_offset'], String(FULL_AT));

    const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(relay.port)] });
    const rc = await replica.client();
    t.teardown(() => rc.close());
    await waitFor(async () => (await rc.info('replication'))['master_repl_offset'] === end, { what: `replica offset ${end}`, timeoutMs: 15_000 });
    t.equal(await rc.callString('GET', 'good'), '1');
    t.equal(await rc.call('EXISTS', 'bogus'), 0, 'nothing of the bogus connection reached the replica');
    await replica.stop();
  });
}
