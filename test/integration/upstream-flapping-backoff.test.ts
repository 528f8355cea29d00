/**
 * An upstream that accepts the relay's PSYNC and fails it at once, again and again: it closes right after
 * `+CONTINUE`, or sends a full sync whose stream is garbage from its first byte. Each connection gets as far as
 * streaming, for an instant. The reconnect delay must still grow towards upstream.backoff-max, as for any other
 * failure: a link that was up for no time has not proven the upstream healthy. Otherwise the relay reconnects (and
 * full-syncs, and drops its replicas) every backoff-min, forever, with log lines to match.
 *
 * The delays are the ones the relay logs ("reconnect scheduled", delayMs), not measured: backoff-min is 10ms, so every
 * delay of a backoff that never grows is ≤ 10ms, and one that grows to backoff-max (400ms, full jitter) exceeds 10ms in
 * each of the later attempts but with a chance of ~1%.
 */
import t from 'tap';
import type { Socket } from 'node:net';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { startFakeMaster } from '../helpers/fake-master.js';
import { waitFor } from '../helpers/wait.js';
import { emptyRdb } from '../../src/backlog/snapshot-store.js';

const A = '0123456789abcdef0123456789abcdef0123456a';
const RDB = emptyRdb(10);
const FULL_AT = 100;
const MIN_MS = 10;
const RECONNECTS = 10;

function full(socket: Socket, then: Buffer): void {
  socket.write(Buffer.concat([Buffer.from(`+FULLRESYNC ${A} ${FULL_AT}\r\n$${RDB.length}\r\n`), RDB, then]));
}

const SCRIPTS: Array<[what: string, script: (socket: Socket, attempt: number) => void]> = [
  [
    'an upstream that closes right after +CONTINUE',
    (socket, attempt) => {
      if (attempt === 0) {
        full(socket, Buffer.alloc(0));
        // Once streaming, the first connection ends; every later one is continued and closed at once.
        socket.once('data', () => socket.end());
      } else socket.end(`+CONTINUE ${A}\r\n`);
    },
  ],
  ['an upstream whose stream is garbage right after each full sync', (socket) => full(socket, Buffer.from('garbage\r\n'))],
];

for (const [what, script] of SCRIPTS) {
  t.test(`${what}: the reconnect delay still grows`, async (t) => {
    const master = await startFakeMaster(script);
    t.teardown(() => master.close());
    const relay = await startLoggedRelay(t, { upstream: { host: '127.0.0.1', port: master.port, 'backoff-min': `${MIN_MS}ms`, 'backoff-max': '400ms' } });
    const delays = (): number[] => relay.lines.filter((l) => l['reason'] === 'reconnect scheduled').map((l) => l['delayMs'] as number);
    await waitFor(() => delays().length >= RECONNECTS, { what: `${RECONNECTS} reconnects`, timeoutMs: 15_000 });

    const later = delays().slice(RECONNECTS - 4, RECONNECTS);
    t.ok(later.some((d) => d > MIN_MS), `reconnects ${RECONNECTS - 3}-${RECONNECTS} wait longer than backoff-min (${MIN_MS}ms): ${later.join(', ')}ms`);
    t.ok(master.psyncs.slice(1).every((p) => p[0] === 'PSYNC'), 'each reconnect is a PSYNC');
    const failures = relay.lines.filter((l) => l['msg'] === 'upstream link failed');
    t.ok(failures.length >= RECONNECTS - 1, 'each failure is logged');
    t.ok(failures.every((l) => typeof (l['err'] as { message?: unknown })?.message === 'string'), 'with the error that caused it');
  });
}
