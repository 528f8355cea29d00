/**
 * Bad input from downstream clients never crashes the relay or desynchronises a connection: random and mutated
 * RESP (multibulk and inline) goes through the real ClientConnection (request parser) and the real command table,
 * in process, over a fake socket. For every input:
 *  - no exception escapes the parser or any command handler;
 *  - fed whole, byte by byte or in random pieces, the same commands are dispatched and the same replies written;
 *  - everything written back is valid RESP2, nothing left over.
 * Seeded: a failure reports its seed and the shrunk input, and replays the same way.
 */
import t from 'tap';
import fc from 'fast-check';
import { EventEmitter } from 'node:events';
import { deepStrictEqual, ok } from 'node:assert/strict';
import type { Socket } from 'node:net';
import { ClientConnection } from '../../src/downstream/client.js';
import { dispatch, type CommandHost } from '../../src/downstream/commands.js';
import { createLogger } from '../../src/log.js';
import { RelayStats } from '../../src/observability/stats.js';
import { ReplyReader } from '../../src/resp/reply-reader.js';
import { arrayReply, bulkReply, encodeCommand, integerReply } from '../../src/resp/writer.js';
import { byteByByte, mulberry32, randomSplit } from '../helpers/chunks.js';

const logger = createLogger('silent');

/** Enough of a net.Socket for ClientConnection: records what is written, never blocks. */
class FakeSocket extends EventEmitter {
  readonly remoteAddress = '127.0.0.1';
  readonly remotePort = 50000;
  readonly localAddress = '127.0.0.1';
  readonly localPort = 6380;
  readonly writableLength = 0;
  destroyed = false;
  ended = false;
  readonly out: Buffer[] = [];
  setNoDelay(): void {}
  write(buf: Buffer | string): boolean {
    if (!this.destroyed && !this.ended) this.out.push(Buffer.from(buf));
    return true;
  }
  end(buf?: Buffer | string): void {
    if (buf !== undefined) this.write(buf);
    this.ended = true;
  }
  destroy(): void {
    this.destroyed = true;
  }
}

interface Run {
  /** Every command dispatched, as latin1 strings. */
  commands: string[][];
  /** Everything written to the socket, normalised (ages and idle times vary with the clock). */
  output: string;
  errors: unknown[];
}

/** Feeds `chunks` to one connection and returns what it did. `auth`: the relay has a password and a named user. */
function runClient(chunks: Buffer[], auth: boolean, limits = { maxBulkLen: 100, maxQueryBuffer: 1 << 20 }): Run {
  const socket = new FakeSocket();
  const commands: string[][] = [];
  const errors: unknown[] = [];
  let client: ClientConnection;
  const host = {
    password: auth ? 'secret' : null,
    users: auth ? [{ name: 'repl', password: 'pw', role: 'replication' }] : [],
    info: (sections: string[]) => `# Replication\r\nrole:slave\r\nsections:${sections.join(',')}\r\n`,
    role: () => arrayReply([bulkReply('slave'), bulkReply('127.0.0.1'), integerReply(6379), bulkReply('connected'), integerReply(1)]),
    startSync: (c: ClientConnection) => {
      // A replica: replies stop (they would corrupt its stream); ACKs update the session.
      c.replica = { ackOffset: 0, ackTime: 0, close: () => c.socket.destroy(), closed: () => undefined } as unknown as ClientConnection['replica'];
    },
    replicaOf: () => null,
    clients: () => [client],
    configRewrite: () => null,
  } as unknown as CommandHost;
  client = new ClientConnection(
    socket as unknown as Socket,
    logger,
    new RelayStats(),
    { ...limits, handshakeTimeoutMs: 0 },
    {
      dispatch: (c, args) => {
        commands.push(args.map((a) => a.toString('latin1')));
        try {
          dispatch(host, c, args);
        } catch (err) {
          errors.push(err);
        }
      },
      closed: () => undefined,
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
  return { commands, output, errors };
}

/** Every byte written parses as RESP2 replies, nothing left over. */
function assertValidResp(output: string): void {
  const reader = new ReplyReader();
  reader.push(Buffer.from(output, 'latin1'));
  while (reader.next() !== undefined);
  deepStrictEqual(reader.buffered, 0, `unparsed reply bytes: ${JSON.stringify(output.slice(-200))}`);
}

function check(input: Buffer, seed: number, auth: boolean): void {
  const whole = runClient([Buffer.from(input)], auth);
  deepStrictEqual(whole.errors, [], 'no exception, whole');
  assertValidResp(whole.output);
  for (const chunks of [byteByByte(input), randomSplit(input, mulberry32(seed))]) {
    const other = runClient(chunks, auth);
    deepStrictEqual(other.errors, [], 'no exception, split');
    deepStrictEqual(other.commands, whole.commands, 'same commands dispatched');
    deepStrictEqual(other.output, whole.output, 'same replies');
  }
}

// --- generators --------------------------------------------------------------------------------------

const NAMES = [
  'ping', 'echo', 'quit', 'auth', 'hello', 'select', 'replconf', 'psync', 'sync', 'info', 'role', 'command', 'client',
  'replicaof', 'slaveof', 'config', 'multi', 'discard', 'exec', 'subscribe', 'unsubscribe', 'psubscribe', 'punsubscribe',
  'publish', 'pubsub', 'reset', 'set', 'del', 'get', 'flushall', 'debug', 'shutdown', 'wait', 'nosuch',
];
const WORDS = [
  'list', 'kill', 'id', 'type', 'replica', 'slave', 'normal', 'pubsub', 'master', 'addr', '127.0.0.1:50000', 'skipme',
  'no', 'yes', 'one', 'setname', 'getname', 'info', 'setinfo', 'ack', 'fack', 'getack', 'capa', 'eof', 'psync2',
  'listening-port', 'ip-address', 'rdb-only', 'rdb-filter-only', 'version', '', '*', '?', '0', '1', '2', '3', '-1',
  '65536', '99999999999999999999', '1e3', 'default', 'repl', 'secret', 'pw', 'auth', 'rewrite', 'get', 'set',
  'resetstat', 'channels', 'numsub', 'numpat', 'ch', 'h*', 'h?llo', '[a-z]', '\\', 'docs', 'count', 'replication',
  'all', 'a b', 'x\r\ny', '\x00', 'ü',
];

const word = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...WORDS) },
  { weight: 1, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 12 }).map((a) => Buffer.from(a).toString('latin1')) },
);
const name = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...NAMES) },
  { weight: 2, arbitrary: fc.constantFrom(...NAMES).map((n) => n.toUpperCase()) },
  { weight: 1, arbitrary: word },
);
const command = fc.tuple(name, fc.array(word, { maxLength: 6 })).map(([n, args]) => [n, ...args]);

/** Inline form: words joined by blanks, some quoted (sdssplitargs syntax), some quotes left open. */
const inline = fc.tuple(command, fc.constantFrom('\r\n', '\n', ''), fc.boolean()).map(([cmd, end, quote]) => {
  const parts = cmd.map((w, i) => (quote && i % 2 === 1 ? `"${w.replace(/"/g, '\\"')}"` : w));
  return Buffer.from(parts.join(' ') + end, 'latin1');
});
const multibulk = command.map((cmd) => encodeCommand(cmd.map((w) => Buffer.from(w, 'latin1'))));
const request = fc.oneof({ weight: 4, arbitrary: multibulk }, { weight: 1, arbitrary: inline });
const session = fc.array(request, { minLength: 1, maxLength: 8 }).map((r) => Buffer.concat(r));

/** A valid session with a few bytes flipped, dropped, inserted or duplicated, or cut short. */
const mutation = fc.tuple(fc.nat(), fc.constantFrom('flip', 'drop', 'insert', 'dup', 'cut'), fc.integer({ min: 0, max: 255 }));
const mutated = fc.tuple(session, fc.array(mutation, { minLength: 1, maxLength: 4 })).map(([buf, muts]) => {
  let b = Buffer.from(buf);
  for (const [at, kind, byte] of muts) {
    if (b.length === 0) break;
    const i = at % b.length;
    if (kind === 'flip') b[i] = byte;
    else if (kind === 'drop') b = Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]);
    else if (kind === 'insert') b = Buffer.concat([b.subarray(0, i), Buffer.from([byte]), b.subarray(i)]);
    else if (kind === 'dup') b = Buffer.concat([b.subarray(0, i), b.subarray(i, i + 8), b.subarray(i)]);
    else b = b.subarray(0, i);
  }
  return b;
});

const RESPISH = [0x2a, 0x24, 0x0d, 0x0a, 0x20, 0x22, 0x27, 0x5c, 0x78, 0x2d, 0x30, 0x31, 0x32, 0x39, 0x41, 0x00, 0xff];
const garbage = fc.oneof(
  fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
  fc.array(fc.constantFrom(...RESPISH), { maxLength: 200 }).map((a) => Buffer.from(a)),
);

// --- properties --------------------------------------------------------------------------------------

t.test('valid commands in random order: never throw, same result however split, valid RESP replies', async (t) => {
  fc.assert(
    fc.property(session, fc.integer(), fc.boolean(), (input, seed, auth) => check(input, seed, auth)),
    { seed: 6001, numRuns: 4000 },
  );
  t.pass('4000 sessions');
});

t.test('mutated commands: never throw, same result however split, valid RESP replies', async (t) => {
  fc.assert(
    fc.property(mutated, fc.integer(), fc.boolean(), (input, seed, auth) => check(input, seed, auth)),
    { seed: 6002, numRuns: 3000 },
  );
  t.pass('3000 mutated sessions');
});

t.test('random garbage: never throws, same result however split, valid RESP replies', async (t) => {
  fc.assert(
    fc.property(garbage, fc.integer(), fc.boolean(), (input, seed, auth) => check(input, seed, auth)),
    { seed: 6003, numRuns: 2000 },
  );
  t.pass('2000 garbage inputs');
});

t.test('tight limits: input past max-bulk-len or max-query-buffer closes the client with one error, never throws', async (t) => {
  const limits = { maxBulkLen: 16, maxQueryBuffer: 48 };
  fc.assert(
    fc.property(fc.oneof(session, mutated, garbage), fc.integer(), (input, seed) => {
      for (const chunks of [[input], randomSplit(input, mulberry32(seed))]) {
        const run = runClient(chunks, false, limits);
        deepStrictEqual(run.errors, []);
        assertValidResp(run.output);
      }
    }),
    { seed: 6004, numRuns: 1500 },
  );
  // The limits themselves: a bulk one byte too long, and an unfinished command one byte over the buffer.
  const tooLong = runClient([Buffer.from('*2\r\n$4\r\necho\r\n$17\r\n')], false, limits);
  t.match(tooLong.output, /^-ERR Protocol error: invalid bulk length\r\n$/);
  const fits = runClient([encodeCommand(['echo', 'x'.repeat(16)])], false, limits);
  t.equal(fits.output, `$16\r\n${'x'.repeat(16)}\r\n`);
  const overBuffer = runClient([Buffer.from('*3\r\n$4\r\necho\r\n$16\r\n' + 'y'.repeat(16) + '\r\n$16\r\n' + 'y'.repeat(8))], false, limits);
  t.match(overBuffer.output, /^-ERR Protocol error: query buffer limit exceeded\r\n$/);
});

t.test('error replies never carry CR or LF from the input', async (t) => {
  const run = runClient([encodeCommand(['no\r\nsuch', 'a\r\n+OK']), encodeCommand(['client', 'x\ny'])], false);
  assertValidResp(run.output);
  t.equal(run.output.split('\r\n').length, 3, 'two error lines');
  t.match(run.output, /^-ERR unknown command 'no {2}such', with args beginning with: 'a {2}\+OK' \r\n-ERR unknown subcommand 'x y'/);
  ok(true);
});
