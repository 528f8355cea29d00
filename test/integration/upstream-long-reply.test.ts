/**
 * An upstream whose reply line in the handshake is huge (up to the 64 KiB a line may take before the relay gives up on
 * it, plus the read that ends it). The relay quotes the reply in its log lines and its lastError: an excerpt, not a
 * copy, or each retry writes the upstream's garbage into the log, twice (the message and the error's reply field).
 */
import t from 'tap';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { startFakeMaster } from '../helpers/fake-master.js';
import { waitFor } from '../helpers/wait.js';
import { emptyRdb } from '../../src/backlog/snapshot-store.js';

const A = '0123456789abcdef0123456789abcdef0123456a';
const RDB = emptyRdb(10);
const LONG = 'x'.repeat(60_000);
/** Generous for a log line with a stack trace and a quoted excerpt. */
const MAX_LINE = 4096;

const CASES: Array<[what: string, reply: string]> = [
  ['an unexpected reply to PSYNC', `+${LONG}`],
  ['an error reply to PSYNC (the relay falls back to SYNC)', `-ERR ${LONG}`],
];

for (const [what, reply] of CASES) {
  t.test(`${what} of 60 KB is quoted, not copied, in the log and lastError`, async (t) => {
    const master = await startFakeMaster((socket, attempt) => {
      if (attempt === 0) socket.write(`${reply}\r\n`);
      // The payload of the SYNC that follows an error reply; on a retry, a full sync.
      if (attempt === 0 && reply.startsWith('-')) socket.write(Buffer.concat([Buffer.from(`$${RDB.length}\r\n`), RDB]));
      else if (attempt > 0) socket.write(Buffer.concat([Buffer.from(`+FULLRESYNC ${A} 0\r\n$${RDB.length}\r\n`), RDB]));
    });
    t.teardown(() => master.close());
    const relay = await startLoggedRelay(t, { upstream: { host: '127.0.0.1', port: master.port } });
    const quoting = (l: Record<string, unknown>): boolean => JSON.stringify(l).includes('x'.repeat(64));
    const line = await waitFor(() => relay.lines.find(quoting), { what: 'a log line quoting the reply', timeoutMs: 10_000 });
    // Past the first: the link must have gone on (a retry, or the SYNC's payload).
    await waitFor(() => relay.relay.status().upstream.state === 'connected', { what: 'the link up', timeoutMs: 10_000 });
    const size = JSON.stringify(line).length;
    t.ok(size < MAX_LINE, `the log line quoting it is ${size} bytes (< ${MAX_LINE})`);
    t.ok(relay.lines.every((l) => JSON.stringify(l).length < MAX_LINE), 'so is every log line');
    t.ok(relay.relay.status().upstream.lastError.length < 1024, `lastError is ${relay.relay.status().upstream.lastError.length} bytes`);
    t.ok(relay.lines.some((l) => JSON.stringify(l).includes('60001 bytes') || JSON.stringify(l).includes('60005 bytes')), 'the excerpt says how long the reply was');
  });
}
