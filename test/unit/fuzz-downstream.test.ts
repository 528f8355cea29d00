/**
 * Bad input from downstream clients never crashes the relay or desynchronises a connection: random and mutated
 * RESP (multibulk and inline) goes through the real ClientConnection (request parser) and the real command table,
 * in process, over a fake socket. For every input:
 *  - no exception escapes the parser or any command handler;
 *  - fed whole, byte by byte or in random pieces, the same commands are dispatched, the same replies written and
 *    the connection ends in the same state;
 *  - everything written back is whole RESP2 replies, nothing left over;
 *  - the connection is closed exactly when it must be: a protocol error reply (then it is the last reply, and the
 *    only one), QUIT (then it is the last command dispatched) or CLIENT KILL; otherwise it stays open, and nothing
 *    is dispatched once it is closed.
 * That the parser frames requests (commands, protocol errors, their texts) as Redis does is checked against a real
 * redis-server in test/integration/request-framing.test.ts, with the same generators.
 * Seeded: a failure reports its seed and the shrunk input, and replays the same way.
 */
import t from 'tap';
import fc from 'fast-check';
import { deepStrictEqual, ok } from 'node:assert/strict';
import type { Socket } from 'node:net';
import { PubSub } from '../../src/downstream/pubsub.js';
import { ClientConnection } from '../../src/downstream/client.js';
import { dispatch, type CommandHost } from '../../src/downstream/commands.js';
import { createLogger } from '../../src/log.js';
import { Telemetry } from '../../src/observability/telemetry.js';
import { arrayReply, bulkReply, encodeCommand, integerReply } from '../../src/resp/writer.js';
import { byteByByte, mulberry32, randomSplit } from '../helpers/chunks.js';
import { FakeSocket, garbage, mutated, session, splitReplies, unlimitedTurn } from '../helpers/downstream-input.js';
import { assertProperty } from '../helpers/property.js';

const logger = createLogger('silent');

interface Run {
  /** Every command dispatched, as latin1 strings. */
  commands: string[][];
  /** Everything written to the socket, normalised (ages and idle times vary with the clock). */
  output: string;
  errors: unknown[];
  /** The relay ended or destroyed the connection. */
  closed: boolean;
  /** Commands dispatched after the connection was closed (must be none). */
  afterClose: number;
}

const TEST_LIMITS = { maxBulkLen: 100, maxQueryBuffer: 1 << 20 };

/** Feeds `chunks` to one connection and returns what it did. `auth`: the relay has a password and a named user. */
function runClient(chunks: Buffer[], auth: boolean, limits = TEST_LIMITS): Run {
  const socket = new FakeSocket();
  const commands: string[][] = [];
  const errors: unknown[] = [];
  let afterClose = 0;
  let client: ClientConnection;
  const host = {
    password: auth ? 'secret' : null,
    users: auth ? [{ name: 'repl', password: 'pw', role: 'replication' }] : [],
    pubsub: new PubSub(),
    pitr: null,
    info: (sections: string[]) => `# Replication\r\nrole:slave\r\nsections:${sections.join(',')}\r\n`,
    role: () => ({ host: '127.0.0.1', port: 6379, linkState: 'connected', offset: 1 }),
    startSync: (c: ClientConnection) => {
      // A replica: replies stop (they would corrupt its stream); ACKs update the session.
      c.becomeReplica({ ackOffset: 0, ackTime: 0, close: () => c.socket.destroy(), closed: () => undefined } as unknown as NonNullable<ClientConnection['replica']>);
    },
    replicaOf: () => null,
    clients: () => [client],
    configRewrite: () => null,
    shutdown: () => 'ERR not in this test',
    resetStats: () => {},
  } satisfies CommandHost;
  client = new ClientConnection(
    socket as unknown as Socket,
    logger,
    new Telemetry('test'),
    { ...limits, handshakeTimeoutMs: 0 },
    {
      dispatch: (c, args) => {
        if (socket.closed) afterClose++;
        commands.push(args.map((a) => a.toString('latin1')));
        try {
          dispatch(host, c, args);
        } catch (err) {
          errors.push(err);
        }
      },
      closed: () => undefined,
      turn: unlimitedTurn,
    },
    auth,
  );
  // Ids differ between runs; the replies that show them (CLIENT ID, HELLO, CLIENT LIST) must not.
  (client as { id: number }).id = 7;
  for (const chunk of chunks) {
    try {
      socket.emit('data', chunk);
    } catch (err) {
      errors.push(err);
    }
  }
  const output = Buffer.concat(socket.out)
    .toString('latin1')
    .replace(/age=\d+ idle=\d+/g, 'age=0 idle=0');
  return { commands, output: clientLinesNormalised(output), errors, closed: socket.closed, afterClose };
}

/**
 * CLIENT LIST and CLIENT INFO with what the client holds when asked set to 0 (the input not yet read depends on how
 * it was split), their bulk lengths made anew.
 */
function clientLinesNormalised(output: string): string {
  let out = '';
  let from = 0;
  for (let at = output.indexOf('\r\nid=', from); at !== -1; at = output.indexOf('\r\nid=', from)) {
    const head = output.lastIndexOf('$', at);
    const len = Number(output.slice(head + 1, at));
    const body = output.slice(at + 2, at + 2 + len).replace(/ (qbuf|argv-mem|tot-mem)=\d+/g, ' $1=0');
    out += `${output.slice(from, head)}$${body.length}\r\n${body}`;
    from = at + 2 + len;
  }
  return out + output.slice(from);
}

const lower = (s: string | undefined): string => (s ?? '').toLowerCase();

/**
 * What one connection did is consistent: whole RESP2 replies and nothing left over; a protocol error is the last
 * reply and closes the connection; QUIT closes it and is the last command; nothing else but CLIENT KILL closes
 * it; nothing is dispatched once it is closed. Returns the replies.
 */
function assertConsistent(run: Run, where: string): string[] {
  const { replies, rest } = splitReplies(run.output);
  deepStrictEqual(rest, '', `${where}: no unfinished reply bytes`);
  const notResp2 = replies.filter((r) => !'+-:$*'.includes(r[0]!));
  deepStrictEqual(notResp2, [], `${where}: RESP2 replies only`);
  const protocolErrors = replies.filter((r) => r.startsWith('-ERR Protocol error'));
  ok(protocolErrors.length <= 1, `${where}: at most one protocol error`);
  if (protocolErrors.length === 1) {
    deepStrictEqual(replies.at(-1), protocolErrors[0], `${where}: the protocol error is the last reply`);
    ok(run.closed, `${where}: a protocol error closes the connection`);
  }
  const quit = run.commands.findIndex((c) => lower(c[0]) === 'quit');
  if (quit !== -1) {
    ok(run.closed, `${where}: QUIT closes the connection`);
    deepStrictEqual(quit, run.commands.length - 1, `${where}: nothing is dispatched after QUIT`);
  }
  const kill = run.commands.some((c) => lower(c[0]) === 'client' && lower(c[1]) === 'kill');
  if (run.closed) ok(protocolErrors.length === 1 || quit !== -1 || kill, `${where}: closed only by a protocol error, QUIT or CLIENT KILL`);
  deepStrictEqual(run.afterClose, 0, `${where}: nothing dispatched once closed`);
  return replies;
}

/** The connection behaves the same whole, byte by byte and randomly split, and consistently each time. */
function check(input: Buffer, seed: number, auth: boolean): void {
  const whole = runClient([Buffer.from(input)], auth);
  deepStrictEqual(whole.errors, [], 'no exception, whole');
  assertConsistent(whole, 'whole');
  for (const [how, chunks] of [['byte by byte', byteByByte(input)], ['random split', randomSplit(input, mulberry32(seed))]] as const) {
    const other = runClient(chunks, auth);
    deepStrictEqual(other.errors, [], `no exception, ${how}`);
    deepStrictEqual(other.commands, whole.commands, `${how}: same commands dispatched`);
    deepStrictEqual(other.output, whole.output, `${how}: same replies`);
    deepStrictEqual(other.closed, whole.closed, `${how}: same connection state`);
    assertConsistent(other, how);
  }
}

// --- properties --------------------------------------------------------------------------------------

t.test('valid commands in random order: never throw, same result however split, consistent replies and closing', async (t) => {
  assertProperty(t, '4000 sessions', fc.property(session, fc.integer(), fc.boolean(), (input, seed, auth) => check(input, seed, auth)), {
    seed: 6001,
    numRuns: 4000,
  });
});

t.test('mutated commands: never throw, same result however split, consistent replies and closing', async (t) => {
  assertProperty(t, '3000 mutated sessions', fc.property(mutated, fc.integer(), fc.boolean(), (input, seed, auth) => check(input, seed, auth)), {
    seed: 6002,
    numRuns: 3000,
  });
});

t.test('random garbage: never throws, same result however split, consistent replies and closing', async (t) => {
  assertProperty(t, '2000 garbage inputs', fc.property(garbage, fc.integer(), fc.boolean(), (input, seed, auth) => check(input, seed, auth)), {
    seed: 6003,
    numRuns: 2000,
  });
});

t.test('tight limits: input past max-bulk-len or max-query-buffer closes the client with one error, never throws', async (t) => {
  const limits = { maxBulkLen: 16, maxQueryBuffer: 48 };
  assertProperty(
    t,
    '1500 inputs under tight limits',
    // How much arrives at once decides when the query buffer overflows (in Redis too): each way of feeding the
    // input is checked on its own, not against the others.
    fc.property(fc.oneof(session, mutated, garbage), fc.integer(), (input, seed) => {
      for (const chunks of [[input], randomSplit(input, mulberry32(seed))]) {
        const run = runClient(chunks, false, limits);
        deepStrictEqual(run.errors, [], 'no exception');
        assertConsistent(run, `${chunks.length} chunks`);
      }
    }),
    { seed: 6004, numRuns: 1500 },
  );
  // The limits themselves: a bulk one byte too long, and an unfinished command one byte over the buffer.
  const tooLong = runClient([Buffer.from('*2\r\n$4\r\necho\r\n$17\r\n')], false, limits);
  t.equal(tooLong.output, '-ERR Protocol error: invalid bulk length\r\n');
  t.ok(tooLong.closed, 'and the connection is closed');
  const fits = runClient([encodeCommand(['echo', 'x'.repeat(16)])], false, limits);
  t.equal(fits.output, `$16\r\n${'x'.repeat(16)}\r\n`);
  t.notOk(fits.closed, 'a bulk at the limit is fine');
  const overBuffer = runClient([Buffer.from('*3\r\n$4\r\necho\r\n$16\r\n' + 'y'.repeat(16) + '\r\n$16\r\n' + 'y'.repeat(8))], false, limits);
  t.equal(overBuffer.output, '-ERR Protocol error: query buffer limit exceeded\r\n');
  t.ok(overBuffer.closed, 'and the connection is closed');
});

t.test('error replies never carry CR or LF from the input', async (t) => {
  const run = runClient([encodeCommand(['no\r\nsuch', 'a\r\n+OK']), encodeCommand(['client', 'x\ny'])], false);
  const replies = assertConsistent(run, 'whole');
  t.same(replies, [
    "-ERR unknown command 'no  such', with args beginning with: 'a  +OK' \r\n",
    "-ERR unknown subcommand 'x y'. Try CLIENT HELP.\r\n",
  ]);
  t.notOk(run.closed, 'unknown commands do not close the connection');
});
