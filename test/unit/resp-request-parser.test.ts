import t from 'tap';
import fc from 'fast-check';
import { deepStrictEqual, throws } from 'node:assert';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ARG_OVERHEAD, droppedArgs, RequestParser, splitArgs, type RequestParserOptions } from '../../src/resp/request-parser.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { ProtocolError } from '../../src/errors.js';
import { ways, randomSplit, mulberry32 } from '../helpers/chunks.js';
import { assertProperty } from '../helpers/property.js';

const OPTS: RequestParserOptions = { maxBulkLen: 512 * 1024 * 1024, maxQueryBuffer: 1024 * 1024 * 1024 };

/** Push every chunk and drain after each push; args as latin1 strings for readable diffs. */
function parseAll(chunks: Buffer[], parser = new RequestParser(OPTS)): string[][] {
  const out: string[][] = [];
  for (const c of chunks) {
    parser.push(c);
    for (let args = parser.next(); args !== undefined; args = parser.next()) out.push(args.map((a) => a.toString('latin1')));
  }
  return out;
}

const good: Array<[name: string, input: string, expected: string[][]]> = [
  ['request parser reads multibulk commands', '*1\r\n$4\r\nPING\r\n*3\r\n$8\r\nREPLCONF\r\n$14\r\nlistening-port\r\n$4\r\n6380\r\n',
    [['PING'], ['REPLCONF', 'listening-port', '6380']]],
  ['request parser reads binary bulks containing CRLF and NUL', '*2\r\n$3\r\nGET\r\n$4\r\n\r\n\x00\xff\r\n', [['GET', '\r\n\x00\xff']]],
  ['request parser reads empty bulks', '*2\r\n$4\r\nECHO\r\n$0\r\n\r\n', [['ECHO', '']]],
  ['request parser skips *0 and *-1 and negative multibulk counts', '*0\r\n*-1\r\n*-5\r\n*1\r\n$4\r\nPING\r\n', [['PING']]],
  ['request parser reads inline commands ending in CRLF or LF', 'PING\r\nPSYNC ? -1\nAUTH  user\tpass \r\n', [['PING'], ['PSYNC', '?', '-1'], ['AUTH', 'user', 'pass']]],
  ['request parser skips empty and blank inline lines', '\r\n\n   \r\n\t\nPING\n', [['PING']]],
  ['request parser mixes inline and multibulk commands', 'PING\r\n*1\r\n$4\r\nPING\r\nECHO x\n', [['PING'], ['PING'], ['ECHO', 'x']]],
  ['request parser applies double-quote escapes in inline commands', 'SET "a b" "\\n\\r\\t\\b\\a\\\\\\"\\x41\\x7a\\q"\r\n', [['SET', 'a b', '\n\r\t\b\x07\\"Azq']]],
  ['request parser applies the single-quote escape in inline commands', "SET 'it\\'s' 'a\\nb' ''\r\n", [['SET', "it's", 'a\\nb', '']]],
  ['request parser joins an unquoted prefix with a quoted part', 'SET a"b c" x\n', [['SET', 'ab c', 'x']]],
  ['request parser keeps an incomplete \\x escape literal', 'ECHO "\\x4g"\n', [['ECHO', 'x4g']]],
  ['request parser keeps a CR inside an inline line as a separator', 'ECHO a\rb\n', [['ECHO', 'a', 'b']]],
  ['request parser does not check the bytes after a bulk, like Redis', '*1\r\n$4\r\nPINGxy*1\r\n$4\r\nPING\r\n', [['PING'], ['PING']]],
];

for (const [name, input, expected] of good) {
  t.test(name, async (t) => {
    for (const [how, chunks] of ways(input)) {
      t.test(how, async (t) => {
        const parser = new RequestParser(OPTS);
        t.same(parseAll(chunks, parser), expected);
        t.equal(parser.buffered, 0);
      });
    }
  });
}

const bad: Array<[name: string, input: string, message: string, opts?: Partial<RequestParserOptions>]> = [
  ['request parser rejects a non-numeric multibulk length', '*x\r\n', 'Protocol error: invalid multibulk length'],
  ['request parser rejects a multibulk length with a plus sign', '*+1\r\n', 'Protocol error: invalid multibulk length'],
  ['request parser rejects a multibulk length with a leading zero', '*01\r\n', 'Protocol error: invalid multibulk length'],
  ['request parser rejects an empty multibulk length', '*\r\n', 'Protocol error: invalid multibulk length'],
  ['request parser rejects a multibulk length of a lone minus', '*-\r\n', 'Protocol error: invalid multibulk length'],
  ['request parser rejects a multibulk count above maxMultibulkLen', '*11\r\n', 'Protocol error: invalid multibulk length', { maxMultibulkLen: 10 }],
  ['request parser rejects a multibulk count beyond 64 bits', '*-9223372036854775809\r\n', 'Protocol error: invalid multibulk length'],
  ['request parser rejects a bulk header without a dollar', '*1\r\n:4\r\nPING\r\n', "Protocol error: expected '$', got ':'"],
  ['request parser shows a CR or LF in place of a dollar as a space', '*1\r\n\n\r\n', "Protocol error: expected '$', got ' '"],
  ['request parser rejects a negative bulk length', '*1\r\n$-1\r\n', 'Protocol error: invalid bulk length'],
  ['request parser rejects a non-numeric bulk length', '*1\r\n$4x\r\nPING\r\n', 'Protocol error: invalid bulk length'],
  ['request parser rejects a bulk longer than maxBulkLen', '*1\r\n$11\r\n', 'Protocol error: invalid bulk length', { maxBulkLen: 10 }],
  ['request parser rejects unbalanced double quotes', 'SET "a b\r\n', 'Protocol error: unbalanced quotes in request'],
  ['request parser rejects unbalanced single quotes', "SET 'a\r\n", 'Protocol error: unbalanced quotes in request'],
  ['request parser rejects a closing quote followed by a non-blank', 'SET "a"b\r\n', 'Protocol error: unbalanced quotes in request'],
  ['request parser rejects a trailing backslash in quotes', 'SET "a\\\r\n', 'Protocol error: unbalanced quotes in request'],
];

for (const [name, input, message, opts] of bad) {
  t.test(name, async (t) => {
    for (const [how, chunks] of ways(input)) {
      t.test(how, async (t) => {
        const parser = new RequestParser({ ...OPTS, ...opts });
        const err = t.throws(() => parseAll(chunks, parser), { code: 'RELAY_ERR_PROTOCOL', message });
        t.type(err, ProtocolError);
        t.throws(() => parser.next(), { message }, 'stays failed');
      });
    }
  });
}

t.test('request parser reports the offset of the offending line', async (t) => {
  const parser = new RequestParser(OPTS);
  parser.push(Buffer.from('PING\r\n*1\r\n$4\r\nPING\r\n*1\r\n$x\r\n'));
  t.same(parser.next(), [Buffer.from('PING')]);
  t.same(parser.next(), [Buffer.from('PING')]);
  t.throws(() => parser.next(), { code: 'RELAY_ERR_PROTOCOL', offset: 24 });
});

t.test('request parser rejects an inline line longer than 64 KiB without a newline', async (t) => {
  const parser = new RequestParser(OPTS);
  parser.push(Buffer.alloc(64 * 1024, 'a'));
  t.equal(parser.next(), undefined, 'exactly 64 KiB still waits');
  parser.push(Buffer.from('a'));
  t.throws(() => parser.next(), { message: 'Protocol error: too big inline request' });
});

t.test('request parser does not see a newline after a NUL byte, like Redis strchr', async (t) => {
  for (const input of ['PING\x00\n', '*1\x00\r\n', '*1\r\n$4\x00\r\nPING\r\n']) {
    const parser = new RequestParser(OPTS);
    parser.push(Buffer.from(input, 'latin1'));
    t.equal(parser.next(), undefined, JSON.stringify(input));
    parser.push(Buffer.alloc(64 * 1024, 'a'));
    t.throws(() => parser.next(), { code: 'RELAY_ERR_PROTOCOL' }, 'until 64 KiB pile up');
  }
});

t.test('request parser waits for the byte after a header CR', async (t) => {
  const parser = new RequestParser(OPTS);
  parser.push(Buffer.from('*' + '0'.repeat(65535) + '\r'));
  t.equal(parser.next(), undefined);
  parser.push(Buffer.from('\n'));
  t.throws(() => parser.next(), { message: 'Protocol error: invalid multibulk length' });
});

t.test('request parser rejects a multibulk count string longer than 64 KiB', async (t) => {
  const parser = new RequestParser(OPTS);
  parser.push(Buffer.from('*' + '1'.repeat(64 * 1024)));
  t.throws(() => parser.next(), { message: 'Protocol error: too big mbulk count string' });
});

t.test('request parser rejects a bulk count string longer than 64 KiB', async (t) => {
  const parser = new RequestParser(OPTS);
  parser.push(Buffer.from('*1\r\n$' + '1'.repeat(64 * 1024)));
  t.throws(() => parser.next(), { message: 'Protocol error: too big bulk count string' });
});

t.test('request parser rejects an unfinished command over maxQueryBuffer', async (t) => {
  const parser = new RequestParser({ ...OPTS, maxQueryBuffer: 100 });
  parser.push(encodeCommand(['SET', 'k', 'v'.repeat(200)]));
  t.same(parser.next()?.[0], Buffer.from('SET'), 'a complete command passes whatever its size');
  parser.push(Buffer.from('*2\r\n$3\r\nSET\r\n$200\r\n' + 'v'.repeat(50)));
  t.equal(parser.next(), undefined);
  t.equal(parser.buffered, 69);
  parser.push(Buffer.from('v'.repeat(31)));
  t.equal(parser.next(), undefined, 'at the limit it waits');
  parser.push(Buffer.from('v'));
  t.throws(() => parser.next(), { code: 'RELAY_ERR_PROTOCOL', message: 'Protocol error: query buffer limit exceeded' });
});

t.test('request parser returns a bulk inside one chunk as a subarray of it', async (t) => {
  const chunk = encodeCommand(['SET', 'key', 'value']);
  const parser = new RequestParser(OPTS);
  parser.push(chunk);
  const args = parser.next()!;
  chunk.fill(0x2e);
  t.same(args.map(String), ['...', '...', '.....'], 'the args see the chunk change');
});

t.test('request parser holds a request trickled one byte per read in about its own size', async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const used = () => {
    const m = process.memoryUsage();
    return m.heapUsed + m.external;
  };
  const n = 200_000;
  for (const [what, head, byte] of [['a bulk', '*2\r\n$4\r\nECHO\r\n$1000000\r\n', 0x78], ['an inline line', 'ECHO ', 0x79]] as const) {
    const parser = new RequestParser(OPTS);
    parser.push(Buffer.from(head));
    t.equal(parser.next(), undefined);
    gc();
    const before = used();
    for (let i = 0; i < n; i++) {
      // A socket read is a Buffer with memory of its own (not a slice of a shared pool), as this one.
      const read = Buffer.allocUnsafeSlow(1);
      read[0] = i % 100 === 99 && what === 'an inline line' ? 0x20 : byte;
      parser.push(read);
      if (parser.next() !== undefined) throw new Error('no command yet');
      if (what === 'an inline line' && i === 60_000) break; // under the 64 KiB an inline line may wait for
    }
    gc();
    const held = used() - before;
    const bytes = parser.buffered;
    // A bulk of 32 KiB or more is gathered into a buffer of its announced length, counted from its header.
    const counted = what === 'a bulk' ? 1_000_000 : bytes;
    t.ok(held < 2 * counted, `${what}: ${bytes} one-byte reads hold ${held} bytes`);
    t.ok(parser.memory >= held - 64 * 1024, `${what}: and that is what it counts (${parser.memory})`);
    parser.push(Buffer.from(what === 'a bulk' ? 'x'.repeat(1_000_000 - n) + '\r\n' : '\n'));
    const args = parser.next();
    t.equal(args?.length, what === 'a bulk' ? 2 : 1 + 601, `${what}: the command is whole once it ends`); // ECHO and 601 words
  }
});

t.test('request parser keeps the arguments argsKept asks for and drops the rest, multibulk and inline', async (t) => {
  const asked: string[] = [];
  const parser = new RequestParser({ ...OPTS, argsKept: (name) => (asked.push(name.toString()), name.toString() === 'PING' ? 2 : 4) });
  const words = Array.from({ length: 100 }, (_, i) => `a${i}`);
  parser.push(Buffer.concat([encodeCommand(['PING', ...words]), Buffer.from(`ECHO ${words.join(' ')}\r\n`), encodeCommand(['INFO', 'a', 'b'])]));
  const ping = parser.next()!;
  t.same(ping.map(String), ['PING', 'a0'], 'the first two of 101 kept');
  t.equal(droppedArgs(ping), 99, 'and 99 dropped');
  const echo = parser.next()!;
  t.same(echo.map(String), ['ECHO', 'a0', 'a1', 'a2'], 'an inline command too');
  t.equal(droppedArgs(echo), 97);
  const info = parser.next()!;
  t.same(info.map(String), ['INFO', 'a', 'b'], 'the command after them is read whole');
  t.equal(droppedArgs(info), 0);
  t.same(asked, ['PING', 'ECHO'], 'asked only of commands with more than a few arguments');
});

t.test('request parser: an unfinished command of a million arguments past argsKept counts its bytes, not a Buffer each', async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const n = 1_000_000;
  const parser = new RequestParser({ ...OPTS, argsKept: () => 2 });
  gc();
  const before = process.memoryUsage().heapUsed;
  const sent = Buffer.from(`*${n + 1}\r\n$4\r\nPING\r\n` + '$0\r\n\r\n'.repeat(n - 1));
  for (let i = 0; i < sent.length; i += 65536) {
    parser.push(Buffer.from(sent.subarray(i, i + 65536)));
    if (parser.next() !== undefined) throw new Error('no command yet');
  }
  gc();
  const heap = process.memoryUsage().heapUsed - before;
  // Kept as Buffers, a million arguments were 185 MB of heap (and counted as 200 MB).
  t.ok(heap < 16 * 1024 * 1024, `${n - 1} empty arguments hold ${(heap / 1048576).toFixed(1)} MB of heap`);
  t.ok(parser.memory < sent.length * 1.1, `counted ${parser.memory} bytes for ${sent.length} received`);
  t.ok(parser.memory >= sent.length, 'no less than it received');
  parser.push(Buffer.from('$0\r\n\r\n'));
  const args = parser.next()!;
  t.equal(args.length, 2);
  t.equal(droppedArgs(args), n - 1);
  t.equal(parser.argvMemory, 0, 'the next command has no arguments yet');
});

t.test('request parser counts ARG_OVERHEAD for each argument of an unfinished command it keeps', async (t) => {
  const parser = new RequestParser(OPTS);
  parser.push(Buffer.from('*3\r\n$4\r\nECHO\r\n$1\r\na\r\n$5\r\n'));
  t.equal(parser.next(), undefined);
  t.equal(parser.argvMemory, 2 * ARG_OVERHEAD);
});

t.test('request parser counts the bytes of an unfinished command as buffered', async (t) => {
  const parser = new RequestParser(OPTS);
  parser.push(Buffer.from('*2\r\n$3\r\nGET\r\n$1\r\n'));
  t.equal(parser.next(), undefined);
  t.equal(parser.buffered, 17);
  parser.push(Buffer.from('k\r\nPI'));
  t.same(parser.next(), [Buffer.from('GET'), Buffer.from('k')]);
  t.equal(parser.buffered, 2);
});

t.test('splitArgs matches sdssplitargs on edge cases', async (t) => {
  const s = (line: string) => splitArgs(Buffer.from(line, 'latin1'))?.map((a) => a.toString('latin1')) ?? null;
  t.same(s(''), []);
  t.same(s(' \v\f '), []);
  t.same(s('a\vb'), ['a\vb'], '\\v does not end an unquoted token');
  t.same(s('"a"\v'), ['a'], 'but it may follow a closing quote');
  t.same(s('"\\xFf\\x0a"'), ['\xff\n']);
  t.same(s('""'), ['']);
  t.same(s("'\\x41'"), ['\\x41'], 'no escapes in single quotes but \\\'');
  t.same(s('"a" "b"'), ['a', 'b']);
  t.equal(s('"a'), null);
  t.equal(s('"\\x'), null);
  t.equal(s('"\\x4'), null);
  t.same(s('a\x00b c'), ['a'], 'a NUL ends the line, as in C');
  t.equal(s("'a'b"), null);
});

// --- properties -------------------------------------------------------------------------------------

const arg = fc.oneof(
  fc.uint8Array({ maxLength: 30 }).map((a) => Buffer.from(a)),
  fc.string({ maxLength: 10 }).map((s) => Buffer.from(s)),
);
const command = fc.array(arg, { minLength: 1, maxLength: 6 });

t.test('request parser parses random encoded commands split at random points', async (t) => {
  assertProperty(
    t,
    '2000 random command sequences parsed',
    fc.property(fc.array(command, { minLength: 1, maxLength: 6 }), fc.integer(), (commands, seed) => {
      const wire = Buffer.concat(commands.map((c) => encodeCommand(c)));
      const parser = new RequestParser(OPTS);
      const got: Buffer[][] = [];
      for (const c of randomSplit(wire, mulberry32(seed))) {
        parser.push(c);
        for (let args = parser.next(); args; args = parser.next()) got.push(args);
      }
      deepStrictEqual(got, commands);
      deepStrictEqual(parser.buffered, 0);
    }),
    { seed: 42, numRuns: 2000 },
  );
});

t.test('big arguments (32 KiB and more) split at random points parse whole; buffered counts every byte not yet returned', async (t) => {
  const big = fc.integer({ min: 32 * 1024 - 2, max: 200 * 1024 }).chain((n) => fc.integer({ min: 0, max: 255 }).map((b) => Buffer.alloc(n, b)));
  const bigCommand = fc.array(fc.oneof(arg, big), { minLength: 1, maxLength: 4 });
  assertProperty(
    t,
    '200 random sequences of commands with big arguments',
    fc.property(fc.array(bigCommand, { minLength: 1, maxLength: 3 }), fc.integer(), (commands, seed) => {
      const encoded = commands.map((c) => encodeCommand(c));
      const parser = new RequestParser(OPTS);
      const got: Buffer[][] = [];
      let pushed = 0;
      let returned = 0;
      for (const c of randomSplit(Buffer.concat(encoded), mulberry32(seed))) {
        parser.push(c);
        pushed += c.length;
        for (let args = parser.next(); args; args = parser.next()) returned += encoded[got.push(args) - 1]!.length;
        deepStrictEqual(parser.buffered, pushed - returned);
      }
      deepStrictEqual(got, commands);
    }),
    { seed: 42, numRuns: 200 },
  );
});

t.test('a big argument is gathered as it arrives: the reads it came in are let go before it is whole, and its length is counted from its header', async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const parser = new RequestParser(OPTS);
  const size = 4 * 1024 * 1024;
  parser.push(Buffer.from(`*2\r\n$4\r\nECHO\r\n$${size}\r\n`));
  t.equal(parser.next(), undefined);
  t.ok(parser.memory >= size, `the announced ${size} bytes counted at once (memory ${parser.memory}), as Redis's query buffer grows to them`);
  const reads: WeakRef<Buffer>[] = [];
  // Reads of 64 KiB, as a socket delivers them; all but the last byte and the CRLF.
  for (let sent = 0; sent < size - 1; ) {
    const n = Math.min(64 * 1024, size - 1 - sent);
    const read = Buffer.alloc(n, 0x61);
    reads.push(new WeakRef(read));
    parser.push(read);
    sent += n;
    t.equal(parser.next(), undefined);
  }
  t.equal(parser.buffered, size - 1 + 17 + String(size).length, 'buffered counts the unfinished command');
  // A WeakRef's target lives at least until the job that made it ends.
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  const alive = reads.filter((r) => r.deref() !== undefined).length;
  t.ok(alive <= 1, `${alive} of the ${reads.length} reads still held: each is copied into the argument and let go`);
  parser.push(Buffer.from('a\r\n'));
  const args = parser.next();
  t.equal(args?.[1]?.length, size);
  t.ok(args?.[1]?.every((b) => b === 0x61), 'the argument is whole');
  t.equal(parser.buffered, 0);
});

t.test('a big argument is counted at its header and its buffer made at the next read: a client the count evicts never costs the buffer', async (t) => {
  const parser = new RequestParser(OPTS);
  const size = 100 * 1024 * 1024;
  const before = process.memoryUsage().arrayBuffers;
  parser.push(Buffer.from(`*2\r\n$4\r\nECHO\r\n$${size}\r\n${'a'.repeat(1000)}`));
  t.equal(parser.next(), undefined);
  t.ok(parser.memory >= size, `counted at its header (${parser.memory})`);
  t.ok(process.memoryUsage().arrayBuffers - before < size / 2, 'no buffer of its length made yet');
  parser.push(Buffer.from('a'.repeat(1000)));
  t.equal(parser.next(), undefined);
  t.ok(process.memoryUsage().arrayBuffers - before >= size, 'made at the next read');
  t.ok(parser.memory >= size && parser.memory < size + 64 * 1024, `and counted once (${parser.memory})`);
  parser.push(Buffer.alloc(size - 2000, 0x61));
  parser.push(Buffer.from('\r\n'));
  t.equal(parser.next()?.[1]?.length, size);
});

t.test('request parser throws only ProtocolError on random garbage and never hangs', async (t) => {
  const alphabet = fc.constantFrom(...[0x2a, 0x24, 0x0d, 0x0a, 0x20, 0x22, 0x27, 0x5c, 0x78, 0x2d, 0x30, 0x31, 0x39, 0x41, 0x00, 0xff]);
  const garbage = fc.oneof(
    fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
    fc.array(alphabet, { maxLength: 200 }).map((a) => Buffer.from(a)),
  );
  assertProperty(
    t,
    '2000 garbage inputs',
    fc.property(garbage, fc.integer(), (input, seed) => {
      const parser = new RequestParser({ maxBulkLen: 100, maxQueryBuffer: 150, maxMultibulkLen: 50 });
      try {
        for (const c of randomSplit(input, mulberry32(seed))) {
          parser.push(c);
          // Each command returned consumes at least one byte: bounded by the input length.
          for (let i = 0; i <= input.length && parser.next() !== undefined; i++);
        }
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        // Failed for good: the same error on every later call, whatever arrives.
        parser.push(Buffer.from('*1\r\n$4\r\nPING\r\n'));
        throws(() => parser.next(), (again: unknown) => again === err);
      }
    }),
    { seed: 42, numRuns: 2000 },
  );
});
