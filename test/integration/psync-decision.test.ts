/**
 * The relay answers PSYNC as a Redis 7.0 master does (syncCommand, masterTryPartialResynchronization), row by row,
 * next to a real Redis 7.0 in the same position: R, an intermediate replica that, like the relay X, followed master
 * M, kept a small backlog (its oldest bytes dropped) and then followed N, a replica of M promoted after a failover
 * (so both hold replid2 = M's id up to second_repl_offset). Each row is the rule applied to each one's own INFO
 * (replid, replid2, second_repl_offset, first backlog byte, master_repl_offset), and is checked on R first: a row
 * that Redis does not answer as written is a wrong row, not a relay bug.
 *
 *   accepted (+CONTINUE, then the bytes from the offset) when the replid is ours, or our replid2 with
 *   offset <= second_repl_offset, and first byte <= offset <= master_repl_offset + 1; otherwise +FULLRESYNC.
 *   +CONTINUE <replid> for a replica that announced capa psync2, else bare; stats: sync_partial_ok, or
 *   sync_full and (unless the replica asked "?") sync_partial_err.
 *
 * The relay's own additions (serving while upstream is down, ahead-wait, a log longer than Redis's backlog) are
 * tested elsewhere; here ahead-wait is 0 and the log is memory-only, as small as R's backlog.
 */
import t from 'tap';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { call, infoOf, num } from '../helpers/failover.js';
import { RedisClient } from '../helpers/redis-client.js';
import { encodeCommand } from '../../src/resp/writer.js';

t.teardown(stopAll);

const NO_PINGS = ['--repl-ping-replica-period', '3600'];
const m = await startRedis({ args: NO_PINGS });
const n = await startReplica(m.port, NO_PINGS);
const r = await startReplica(m.port, ['--repl-backlog-size', '16kb', ...NO_PINGS]);
const x = await startRelay({ upstream: { host: '127.0.0.1', port: m.port }, log: { memory: '16kb', disk: 0 }, replication: { 'ahead-wait': 0 } });
t.teardown(() => x.stop());

/** Writes `count` SETs of `size` bytes to the master on `port`. */
async function write(port: number, tag: string, count: number, size: number): Promise<void> {
  const c = await RedisClient.connect(port);
  await c.pipeline(Array.from({ length: count }, (_, i) => ['SET', `${tag}:${i}`, 'v'.repeat(size)]));
  await c.close();
}

/** Every port's master_repl_offset equals the master's, and each link is up. */
async function converged(master: number, ports: number[], what: string): Promise<void> {
  await waitFor(
    async () => {
      const want = num(await infoOf(master), 'master_repl_offset');
      for (const p of ports) {
        const i = await infoOf(p);
        if (i['master_link_status'] !== 'up' || num(i, 'master_repl_offset') !== want) return undefined;
      }
      return true;
    },
    { what, timeoutMs: 30_000 },
  );
}

// History M, long enough that R's 16 KB backlog and the relay's 16 KB log have dropped their oldest bytes.
await converged(m.port, [n.port, r.port, x.port], 'N, R and the relay follow M');
await write(m.port, 'before', 100, 1000);
await converged(m.port, [n.port, r.port, x.port], 'N, R and the relay hold M history');
// Failover: N is promoted, R and the relay follow it (continued through N's replid2).
await call(n.port, 'REPLICAOF', 'NO', 'ONE');
await call(r.port, 'REPLICAOF', '127.0.0.1', n.port);
await call(x.port, 'REPLICAOF', '127.0.0.1', n.port);
const nReplid = (await infoOf(n.port))['master_replid']!;
await waitFor(async () => (await infoOf(r.port))['master_replid'] === nReplid && (await infoOf(x.port))['master_replid'] === nReplid, {
  what: "R and the relay on N's replid",
});
await write(n.port, 'after', 5, 100); // a little past the failover, well inside both backlogs
await converged(n.port, [r.port, x.port], 'R and the relay follow N');

interface State {
  replid: string;
  replid2: string;
  second: number;
  first: number;
  end: number;
}
async function stateOf(port: number): Promise<State> {
  const i = await infoOf(port);
  return {
    replid: i['master_replid']!,
    replid2: i['master_replid2']!,
    second: num(i, 'second_repl_offset'),
    first: num(i, 'repl_backlog_first_byte_offset'),
    end: num(i, 'master_repl_offset'),
  };
}

interface Answer {
  /** The first reply line to PSYNC (keepalive newlines skipped). */
  line: string;
  /** Stream bytes received after +CONTINUE so far. */
  bytes(): Buffer;
  socket: Socket;
}

/** A raw replica: REPLCONF capa (unless psync2 is false), PSYNC, and whatever follows. */
async function psync(port: number, replid: string, offset: string, psync2 = true): Promise<Answer> {
  const socket = connect({ port, host: '127.0.0.1' });
  t.teardown(() => socket.destroy());
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  const capa = psync2 ? ['capa', 'eof', 'capa', 'psync2'] : ['capa', 'eof'];
  let buf = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => (buf = Buffer.concat([buf, d])));
  // As a replica does: PSYNC only once REPLCONF is answered (Redis refuses PSYNC "with pending output").
  socket.write(encodeCommand(['REPLCONF', ...capa]));
  await waitFor(() => buf.toString('latin1').startsWith('+OK\r\n'), { what: 'REPLCONF answered' });
  socket.write(encodeCommand(['PSYNC', replid, offset]));
  const head = await waitFor(
    () => {
      const m = /^\+OK\r\n\n*([+-][^\r]*)\r\n/.exec(buf.toString('latin1'));
      return m ? { line: m[1]!, at: m[0].length } : undefined;
    },
    { what: `the reply to PSYNC ${replid} ${offset}`, timeoutMs: 20_000 },
  );
  return { line: head.line, bytes: () => buf.subarray(head.at), socket };
}

type Kind = 'continue' | 'full' | 'error';
interface Row {
  what: string;
  replid: (s: State) => string;
  offset: (s: State) => string;
  expect: Kind;
  psync2?: boolean;
}

const UNKNOWN = 'f'.repeat(40);
const ROWS: Row[] = [
  { what: 'our replid at the first byte the backlog holds', replid: (s) => s.replid, offset: (s) => String(s.first), expect: 'continue' },
  { what: 'our replid at master_repl_offset + 1 (nothing to send yet)', replid: (s) => s.replid, offset: (s) => String(s.end + 1), expect: 'continue' },
  { what: 'our replid one byte before the backlog', replid: (s) => s.replid, offset: (s) => String(s.first - 1), expect: 'full' },
  { what: 'our replid one byte past master_repl_offset + 1', replid: (s) => s.replid, offset: (s) => String(s.end + 2), expect: 'full' },
  { what: 'replid2 at second_repl_offset', replid: (s) => s.replid2, offset: (s) => String(s.second), expect: 'continue' },
  { what: 'replid2 one past second_repl_offset', replid: (s) => s.replid2, offset: (s) => String(s.second + 1), expect: 'full' },
  { what: 'an unknown replid', replid: () => UNKNOWN, offset: (s) => String(s.end + 1), expect: 'full' },
  { what: 'PSYNC ? -1 (a full resync asked for)', replid: () => '?', offset: () => '-1', expect: 'full' },
  { what: 'no capa psync2: +CONTINUE without the replid', replid: (s) => s.replid, offset: (s) => String(s.end + 1), expect: 'continue', psync2: false },
  {
    what: 'our replid in upper case (Redis compares with strcasecmp)',
    replid: (s) => s.replid.toUpperCase(),
    offset: (s) => String(s.end + 1),
    expect: 'continue',
  },
  { what: 'an offset that is not a number', replid: (s) => s.replid, offset: () => '12abc', expect: 'error' },
  // Redis parses with string2ll: no hex, exponent, sign or empty string, no leading zero.
  ...['0x10', '1e1', '', '-0', '+5', '007'].map((o): Row => ({ what: `the offset ${JSON.stringify(o)}`, replid: (s) => s.replid, offset: () => o, expect: 'error' })),
];

const STATS = ['sync_full', 'sync_partial_ok', 'sync_partial_err'] as const;
async function stats(port: number): Promise<number[]> {
  const i = await infoOf(port, 'stats');
  return STATS.map((k) => num(i, k));
}

/** What the row's rule says: the reply, how many stream bytes follow, and the stats deltas. */
function expected(row: Row, s: State): { line: RegExp; bytes: number | null; stats: number[] } {
  const asked = row.replid(s);
  if (row.expect === 'continue') {
    const offset = Number(row.offset(s));
    return { line: row.psync2 === false ? /^\+CONTINUE$/ : new RegExp(`^\\+CONTINUE ${s.replid}$`), bytes: s.end - offset + 1, stats: [0, 1, 0] };
  }
  if (row.expect === 'full') return { line: new RegExp(`^\\+FULLRESYNC ${s.replid} \\d+$`), bytes: null, stats: [1, 0, asked === '?' ? 0 : 1] };
  return { line: /^-ERR value is not an integer or out of range$/, bytes: null, stats: [0, 0, 0] };
}

/** Continued connections, kept to check afterwards that nothing but the master's stream follows. */
const continued: Array<{ who: string; row: number; answer: Answer; end: number; offset: number }> = [];

for (const [who, port] of [['Redis 7.0 (R, the rule checked)', r.port], ['the relay (X)', x.port]] as const) {
  t.test(`PSYNC decisions: ${who}`, async (t) => {
    for (const [i, row] of ROWS.entries()) {
      const s = await stateOf(port);
      const want = expected(row, s);
      const before = await stats(port);
      const answer = await psync(port, row.replid(s), row.offset(s), row.psync2 ?? true);
      t.match(answer.line, want.line, `${i}. ${row.what}: ${row.expect}`);
      if (want.bytes !== null && answer.line.startsWith('+CONTINUE')) {
        const bytes = want.bytes;
        await waitFor(() => answer.bytes().length >= bytes, { what: `${bytes} backlog bytes` });
        continued.push({ who, row: i, answer, end: s.end, offset: Number(row.offset(s)) });
      } else if (answer.line.startsWith('+FULLRESYNC')) answer.socket.destroy();
      const after = await stats(port);
      t.same(
        after.map((v, k) => v - before[k]!),
        want.stats,
        `${i}. ${row.what}: ${STATS.join(', ')} deltas`,
      );
    }
  });
}

t.test('after +CONTINUE, exactly the stream from the offset asked, then the stream as it grows', async (t) => {
  // One more write on N: every continued replica must now hold exactly [offset, new end], nothing injected.
  await write(n.port, 'last', 1, 10);
  const ends = new Map<number, number>();
  for (const p of [r.port, x.port]) {
    await converged(n.port, [p], 'the last write reached R and the relay');
    ends.set(p, num(await infoOf(p), 'master_repl_offset'));
  }
  for (const c of continued) {
    const end = ends.get(c.who.startsWith('Redis') ? r.port : x.port)!;
    const want = end - c.offset + 1;
    await waitFor(() => c.answer.bytes().length >= want, { what: `${c.who} row ${c.row}: the last write` });
    t.equal(c.answer.bytes().length, want, `${c.who}, row ${c.row}: ${want} bytes, from offset ${c.offset} to ${end}`);
  }
  // R and the relay hold the same history byte for byte: the same offsets give the same bytes.
  for (const c of continued.filter((c) => c.who.startsWith('the relay'))) {
    const twin = continued.find((o) => o.who.startsWith('Redis') && o.row === c.row && o.offset === c.offset);
    if (twin) t.ok(c.answer.bytes().equals(twin.answer.bytes()), `row ${c.row}: the relay sent the bytes R sent from offset ${c.offset}`);
  }
});
