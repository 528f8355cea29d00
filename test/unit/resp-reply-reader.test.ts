import t from 'tap';
import fc from 'fast-check';
import { ReplyReader, RespErrorValue, type RespValue } from '../../src/resp/reply-reader.js';
import { arrayReply, bulkReply, errorReply, integerReply, nullArray, simpleString } from '../../src/resp/writer.js';
import { ProtocolError } from '../../src/errors.js';
import { deepStrictEqual, throws } from 'node:assert';
import { ways, randomSplit, mulberry32 } from '../helpers/chunks.js';
import { assertProperty } from '../helpers/property.js';

/** Push every chunk and drain after each push, as a socket 'data' handler would. */
function readAll(chunks: Buffer[], reader = new ReplyReader()): RespValue[] {
  const out: RespValue[] = [];
  for (const c of chunks) {
    reader.push(c);
    for (let v = reader.next(); v !== undefined; v = reader.next()) out.push(v);
  }
  return out;
}


const b = (s: string) => Buffer.from(s, 'latin1');

const cases: Array<[name: string, input: string, expected: RespValue[]]> = [
  ['reply reader reads simple strings', '+OK\r\n+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 42\r\n', ['OK', 'FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 42']],
  ['reply reader reads an empty simple string', '+\r\n', ['']],
  ['reply reader reads error replies without the leading dash', '-NOAUTH Authentication required.\r\n-ERR\r\n', [new RespErrorValue('NOAUTH Authentication required.'), new RespErrorValue('ERR')]],
  ['reply reader reads integers', ':0\r\n:1234567890\r\n:-42\r\n', [0, 1234567890, -42]],
  ['reply reader reads bulks, empty bulks and nil bulks', '$5\r\nhello\r\n$0\r\n\r\n$-1\r\n', [b('hello'), b(''), null]],
  ['reply reader reads a bulk whose payload contains CRLF', '$6\r\na\r\n\r\nb\r\n', [b('a\r\n\r\nb')]],
  ['reply reader reads nil and empty arrays', '*-1\r\n*0\r\n', [null, []]],
  ['reply reader reads nested arrays with every element type', '*5\r\n+OK\r\n-ERR x\r\n:7\r\n*2\r\n$1\r\na\r\n*0\r\n$-1\r\n+after\r\n',
    [['OK', new RespErrorValue('ERR x'), 7, [b('a'), []], null], 'after']],
  ['reply reader reads an array of nils', '*2\r\n$-1\r\n*-1\r\n', [[null, null]]],
  ['reply reader reads a Sentinel get-master-addr-by-name reply', '*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n', [[b('127.0.0.1'), b('6379')]]],
];

for (const [name, input, expected] of cases) {
  t.test(name, async (t) => {
    for (const [how, chunks] of ways(input)) {
      t.test(how, async (t) => {
        const reader = new ReplyReader();
        t.same(readAll(chunks, reader), expected);
        t.equal(reader.buffered, 0);
        t.equal(reader.next(), undefined);
      });
    }
  });
}

t.test('reply reader returns a bulk inside one chunk as a subarray of it', async (t) => {
  const chunk = b('$3\r\nfoo\r\n');
  const reader = new ReplyReader();
  reader.push(chunk);
  const v = reader.next() as Buffer;
  t.equal(v.toString(), 'foo');
  chunk.fill(0x2e);
  t.equal(v.toString(), '...', 'no copy: the value sees the chunk change');
});

t.test('reply reader copies a bulk that straddles chunks', async (t) => {
  const reader = new ReplyReader();
  reader.push(Buffer.alloc(0));
  const c1 = b('$6\r\nfoo');
  const c2 = b('bar\r\n');
  reader.push(c1);
  t.equal(reader.next(), undefined);
  reader.push(c2);
  const v = reader.next() as Buffer;
  c1.fill(0x2e);
  c2.fill(0x2e);
  t.equal(v.toString(), 'foobar');
});

t.test('reply reader counts buffered bytes until a value is complete', async (t) => {
  const reader = new ReplyReader();
  reader.push(b('*2\r\n$1\r\na\r\n'));
  t.equal(reader.next(), undefined);
  t.equal(reader.buffered, 11, 'the unfinished array holds its bytes');
  reader.push(b(':1\r\n+x'));
  t.same(reader.next(), [b('a'), 1]);
  t.equal(reader.buffered, 2);
});

t.test('reply reader takeRest hands over the bytes after a reply', async (t) => {
  for (const [how, chunks] of ways('+FULLRESYNC abc 0\r\n$5\r\nREDIS')) t.test(how, async (t) => {
    const reader = new ReplyReader();
    const values: RespValue[] = [];
    for (const c of chunks) {
      reader.push(c);
      if (values.length === 0) {
        const v = reader.next();
        if (v !== undefined) values.push(v);
      }
    }
    t.same(values, ['FULLRESYNC abc 0']);
    t.equal(reader.takeRest().toString('latin1'), '$5\r\nREDIS');
    t.equal(reader.buffered, 0);
    t.equal(reader.takeRest().length, 0);
  });
});

t.test('reply reader takeRest includes the header of a value next() already started', async (t) => {
  const reader = new ReplyReader();
  reader.push(b('+CONTINUE\r\n*2\r\n$3\r\nab'));
  t.equal(reader.next(), 'CONTINUE');
  t.equal(reader.next(), undefined);
  t.equal(reader.takeRest().toString('latin1'), '*2\r\n$3\r\nab');
  reader.push(b('+PONG\r\n'));
  t.equal(reader.next(), 'PONG', 'the reader starts afresh');
});

const bad: Array<[name: string, input: string, offset: number]> = [
  ['reply reader rejects an unknown type byte', '+OK\r\n?what\r\n', 5],
  ['reply reader rejects a line ending in a bare LF', '+OK\n', 0],
  ['reply reader rejects an empty line', '\r\n', 0],
  ['reply reader rejects a non-numeric integer', ':12a\r\n', 0],
  ['reply reader rejects an integer without digits', ':-\r\n', 0],
  ['reply reader rejects a bulk length below -1', '$-2\r\n', 0],
  ['reply reader rejects a non-numeric bulk length', '$\r\n', 0],
  ['reply reader rejects a multibulk length below -1', '*-3\r\n', 0],
  ['reply reader rejects a bulk not followed by CRLF', '$3\r\nfooXY', 7],
  ['reply reader rejects a garbled array element', '*2\r\n:1\r\nxx\r\n', 8],
];

for (const [name, input, offset] of bad) {
  t.test(name, async (t) => {
    for (const [how, chunks] of ways(input)) {
      t.test(how, async (t) => {
        const reader = new ReplyReader();
        t.throws(() => readAll(chunks, reader), { code: 'RELAY_ERR_PROTOCOL', offset });
        t.throws(() => reader.next(), { code: 'RELAY_ERR_PROTOCOL' }, 'stays failed');
      });
    }
  });
}

t.test('reply reader rejects a line longer than maxLineLength without waiting for its end', async (t) => {
  // The limit counts the type byte.
  const reader = new ReplyReader({ maxLineLength: 16 });
  reader.push(b('+' + 'x'.repeat(15) + '\r\n'));
  t.equal(reader.next(), 'x'.repeat(15), 'exactly the limit is fine');
  reader.push(b('+' + 'x'.repeat(17)));
  t.throws(() => reader.next(), { code: 'RELAY_ERR_PROTOCOL' });
  const r2 = new ReplyReader({ maxLineLength: 16 });
  r2.push(b('+' + 'x'.repeat(17) + '\r\n'));
  t.throws(() => r2.next(), { code: 'RELAY_ERR_PROTOCOL' });
  t.ok(r2.takeRest().length > 0, 'takeRest recovers a failed reader');
  r2.push(b(':1\r\n'));
  t.equal(r2.next(), 1);
});

// --- properties -------------------------------------------------------------------------------------

function encode(v: RespValue): Buffer {
  if (v === null) return bulkReply(null);
  if (typeof v === 'string') return simpleString(v);
  if (typeof v === 'number') return integerReply(v);
  if (v instanceof RespErrorValue) return errorReply(v.message);
  if (Buffer.isBuffer(v)) return bulkReply(v);
  return arrayReply(v.map(encode));
}

const line = fc.string({ unit: fc.constantFrom(...'abc XYZ:$*+-\t01'.split('')), maxLength: 12 });
const respValue = fc.letrec<{ value: RespValue }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    line,
    line.map((s) => new RespErrorValue(s)),
    fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
    fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 5 }),
  ),
})).value;

t.test('reply reader decodes random encoded replies split at random points', async (t) => {
  assertProperty(
    t,
    '2000 random reply sequences decoded',
    fc.property(fc.array(respValue, { minLength: 1, maxLength: 5 }), fc.integer(), (values, seed) => {
      const wire = Buffer.concat(values.map(encode));
      const rand = mulberry32(seed);
      deepStrictEqual(readAll(randomSplit(wire, rand)), values);
    }),
    { seed: 42, numRuns: 2000 },
  );
});

t.test('reply reader throws only ProtocolError on random garbage and never hangs', async (t) => {
  const garbage = fc.uint8Array({ maxLength: 200 }).chain((a) =>
    fc.constantFrom(Buffer.from(a), Buffer.concat([b('*3\r\n$2\r\n'), Buffer.from(a)]), Buffer.from(b(Buffer.from(a).toString('latin1').replace(/\n/g, '\r\n')))),
  );
  assertProperty(
    t,
    '2000 garbage inputs',
    fc.property(garbage, fc.integer(), (input, seed) => {
      const reader = new ReplyReader();
      try {
        for (const c of randomSplit(input, mulberry32(seed))) {
          reader.push(c);
          // Each next() consumes at least one line or returns: bounded by the input length.
          for (let i = 0; i <= input.length && reader.next() !== undefined; i++);
        }
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        // Failed for good: the same error on every later call, whatever arrives.
        reader.push(Buffer.from('+OK\r\n'));
        throws(() => reader.next(), (again: unknown) => again === err);
      }
    }),
    { seed: 42, numRuns: 2000 },
  );
});
