/**
 * The relay frames downstream requests as Redis 7.0 does: the same random, mutated and garbage inputs as the
 * in-process fuzz (test/unit/fuzz-downstream.test.ts) go to a real redis-server and to the relay's
 * ClientConnection (its request parser), and for every input both
 *  - parse the same number of commands, with the same names and arguments (as far as Redis shows them);
 *  - end in the same protocol error, word for word, or in none;
 *  - close the connection in the same cases (a protocol error or QUIT), or leave it open waiting for more.
 *
 * To make Redis show what it parsed without executing anything, its default user may run no command at all
 * (`-@all`): every command then gets exactly one reply, NOPERM for a known command, "unknown command '<name>',
 * with args beginning with: '<arg>' ..." for an unknown one, an arity error for a wrong argument count. AUTH and
 * HELLO, which -@all does not refuse, are renamed away, so they too are unknown commands that show their arguments.
 * (Run, a failed AUTH behind another command in the same read gets no reply at all from Redis 7.2 to 7.4 and Valkey
 * 8.0, redis/redis#15640, which would misalign every later reply.) Only RESET and QUIT still run; neither changes
 * how the next bytes are framed.
 */
import t from 'tap';
import fc from 'fast-check';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { ok, strictEqual } from 'node:assert/strict';
import { redisFlavor, startRedis, stopAll } from '../helpers/redis-server.js';
import { FakeSocket, garbage, mutated, session, splitReplies, unlimitedTurn } from '../helpers/downstream-input.js';
import { assertAsyncProperty } from '../helpers/property.js';
import { ClientConnection } from '../../src/downstream/client.js';
import { createLogger } from '../../src/log.js';
import { Telemetry } from '../../src/observability/telemetry.js';
import { closeOf } from '../helpers/raw.js';

t.teardown(stopAll);

/** Redis's defaults: proto-max-bulk-len 512mb, client-query-buffer-limit 1gb. */
const REDIS_LIMITS = { maxBulkLen: 512 * 1024 * 1024, maxQueryBuffer: 1024 * 1024 * 1024, handshakeTimeoutMs: 0 };
const logger = createLogger('silent');

const redis = await startRedis({ args: ['--rename-command', 'AUTH', '', '--rename-command', 'HELLO', ''] });
{
  const admin = await redis.client();
  await admin.call('ACL', 'SETUSER', 'default', '-@all');
  await admin.close();
}

/** Sends `input` on a new connection, then half-closes; resolves with everything Redis wrote before it closed. */
async function redisReplies(input: Buffer): Promise<string[]> {
  const s: Socket = connect(redis.port, '127.0.0.1');
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString('latin1')));
  const closed = closeOf(s);
  await once(s, 'connect');
  s.end(input);
  await closed;
  const { replies, rest } = splitReplies(got);
  strictEqual(rest, '', 'Redis wrote whole replies');
  return replies;
}

interface RelaySide {
  commands: Buffer[][];
  output: string;
  closed: boolean;
}

/** The relay's ClientConnection with a command table that records each command and only honours QUIT (as Redis does here). */
function relayParses(input: Buffer): RelaySide {
  const socket = new FakeSocket();
  const commands: Buffer[][] = [];
  new ClientConnection(
    socket as unknown as Socket,
    logger,
    new Telemetry('test'),
    REDIS_LIMITS,
    {
      dispatch: (c, args) => {
        commands.push(args.map((a) => Buffer.from(a)));
        if (args[0]!.toString('latin1').toLowerCase() === 'quit') c.closeAfterWrite();
      },
      closed: () => undefined,
      turn: unlimitedTurn,
    },
    false,
  );
  socket.emit('data', input);
  return { commands, output: Buffer.concat(socket.out).toString('latin1'), closed: socket.closed };
}

/** A C string: Redis prints arguments with %s, which stops at a NUL byte. */
const cstr = (b: Buffer): string => {
  const nul = b.indexOf(0);
  return (nul === -1 ? b : b.subarray(0, nul)).toString('latin1');
};

/** Redis 7.0 processCommand's reply to an unknown command (rejectCommandFormat: CR and LF become spaces). */
function unknownCommandReply(args: Buffer[]): string {
  let shown = '';
  for (let i = 1; i < args.length && shown.length < 128; i++) shown += `'${cstr(args[i]!).slice(0, 128 - shown.length)}' `;
  const text = `-ERR unknown command '${cstr(args[0]!).slice(0, 128)}', with args beginning with: ${shown}`;
  return text.replace(/[\r\n]/g, ' ') + '\r\n';
}

/** Checks what the reply Redis gave to a command shows of it against the command the relay parsed. */
function sameCommand(reply: string, args: Buffer[], i: number): void {
  const name = args[0]!.toString('latin1').toLowerCase();
  if (reply.startsWith('-ERR unknown command ')) {
    strictEqual(unknownCommandReply(args), reply, `command ${i}: same name and arguments`);
    return;
  }
  // A refused EXEC says EXECABORT first. Redis 7.0 says "NOPERM this user has...", 7.4 and Valkey 8 "NOPERM User <name> has...".
  const named = /^-(?:EXECABORT [^:]*: )?(?:NOPERM (?:this user|User \S+) has no permissions to run the|(?:ERR )?wrong number of arguments for) '([^'|]+)(?:\|[^']*)?' command/.exec(reply);
  if (named) {
    strictEqual(name, named[1], `command ${i}: same name`);
    return;
  }
  const sub = /^-ERR unknown subcommand '(.*)'\. Try (\S+) HELP\.\r\n$/s.exec(reply);
  if (sub) {
    strictEqual(name, sub[2]!.toLowerCase(), `command ${i}: same name`);
    strictEqual(cstr(args[1] ?? Buffer.alloc(0)).slice(0, 128).replace(/[\r\n]/g, ' '), sub[1], `command ${i}: same subcommand`);
    return;
  }
  // RESET and QUIT run; their replies show no argument.
  ok(['reset', 'quit'].includes(name), `command ${i}: ${JSON.stringify(name)} got ${JSON.stringify(reply.slice(0, 80))}`);
}

async function sameFraming(input: Buffer): Promise<void> {
  const replies = await redisReplies(input);
  const relay = relayParses(input);
  const last = replies.at(-1);
  const redisError = last?.startsWith('-ERR Protocol error') ? last : null;
  const perCommand = redisError ? replies.slice(0, -1) : replies;
  strictEqual(relay.commands.length, perCommand.length, 'as many commands as Redis parsed');
  perCommand.forEach((reply, i) => sameCommand(reply, relay.commands[i]!, i));
  // The recording command table writes nothing: the only thing the relay wrote is its protocol error, if any.
  strictEqual(relay.output === '' ? null : relay.output, redisError, 'the same protocol error, or none');
  const quit = relay.commands.some((c) => c[0]!.toString('latin1').toLowerCase() === 'quit');
  strictEqual(relay.closed, redisError !== null || quit, 'closed exactly when Redis closes (protocol error or QUIT)');
}

t.test('hand-picked framing cases', async (t) => {
  const cases: Array<[string, string]> = [
    ['*1\r\n$4\r\nPING\r\n', 'a multibulk command'],
    ['PING\r\nPING\n', 'inline commands, CRLF and LF'],
    ['\r\n\n*0\r\n*-1\r\n', 'empty lines and empty multibulks are no command'],
    ['   \r\n\t\n', 'lines of blanks are no command'],
    ['*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nfoo\r\n$-1\r\n', 'a negative bulk length after a good command'],
    ['*1\r\nx1\r\n', 'a bulk header that does not start with $'],
    ['*1\r\n\x01\r\n', 'an unprintable byte where $ belongs'],
    ['*1\r\n\x00\r\n', 'a NUL where $ belongs hides the CR (strchr): Redis waits'],
    ['*1\r\n$1\r\n\x00\r\n', 'a NUL argument'],
    ['*2\r\n$4\r\nfoo\x00\r\n$3\r\na\rb\r\n', 'NUL in a name, CR in an argument'],
    ['"a\r\n', 'unbalanced quotes'],
    ['*x\r\n', 'a non-numeric multibulk count'],
    ['*1\r\n$100000000000\r\n', 'a bulk length past proto-max-bulk-len'],
    ['*3\r\n$3\r\nSET\r\n$1\r\nk', 'an unfinished command waits'],
    ['QUIT\r\n*1\r\nx\r\n', 'nothing after QUIT is parsed'],
    ['*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n', 'the two bytes after a bulk are skipped unchecked'],
  ];
  for (const [input, what] of cases) {
    await t.resolves(sameFraming(Buffer.from(input, 'latin1')), what);
  }
});

t.test('after a line of blanks the next request is framed afresh: a multibulk stays a multibulk', async (t) => {
  const input = Buffer.from('   \r\n*1\r\n$4\r\nPING\r\n\t\n*2\r\n$4\r\nECHO\r\n$1\r\nx\r\n', 'latin1');
  const relay = relayParses(input);
  t.same(relay.commands.map((c) => c.map(String)), [['PING'], ['ECHO', 'x']], 'the relay parses PING and ECHO x');
  t.equal(relay.output, '', 'and no protocol error');
  const replies = await redisReplies(input);
  if (redisFlavor() === 'valkey' && replies[0]?.startsWith("-ERR unknown command '*1'")) {
    // Valkey 8.0 kept the inline request type after a request with no argument, and read the multibulk's lines as
    // inline commands (CVE-2026-27623, fixed by valkey-io/valkey#3250). Redis 7.0 and 7.4 frame as the relay does.
    t.equal(replies.length, 8, 'Valkey 8.0 (CVE-2026-27623): each of the 8 lines after a blank one is an inline command');
  } else {
    await t.resolves(sameFraming(input), 'the server frames it as the relay does');
  }
});

t.test('random, mutated and garbage requests are framed as Redis frames them', async (t) => {
  const inputs = fc.oneof({ weight: 2, arbitrary: session }, { weight: 3, arbitrary: mutated }, { weight: 2, arbitrary: garbage });
  await assertAsyncProperty(t, '1200 inputs', fc.asyncProperty(inputs, sameFraming), { seed: 6101, numRuns: 1200 });
});


t.test('a protocol error quotes a byte past 0x7f as the byte itself', async (t) => {
  const input = Buffer.from('*1\r\n\x80\r\n', 'latin1');
  const [reply] = await redisReplies(input);
  t.equal(reply, "-ERR Protocol error: expected '$', got '\x80'\r\n", 'what Redis 7.0 writes (bytes shown as latin1)');
  t.equal(relayParses(input).output, reply, 'the relay writes the same bytes');
});
