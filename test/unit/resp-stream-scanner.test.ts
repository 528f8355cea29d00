import t from 'tap';
import fc from 'fast-check';
import { deepStrictEqual, ok } from 'node:assert';
import { StreamScanner, type ScannedCommand, type StreamScannerOptions } from '../../src/resp/stream-scanner.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { ways, randomSplit, mulberry32 } from '../helpers/chunks.js';
import { assertProperty } from '../helpers/property.js';

interface Scanned {
  commands: Array<{ start: number; end: number; argc: number; args: string[] }>;
  validBytes: number;
  error: string | null;
  offset: number;
  boundary: number;
}

/** Scan `chunks` from offset `from`; commands are copied, since the scanner reuses its object. */
function scanAll(chunks: Buffer[], opts: { from?: number; decodeArgs?: boolean } & StreamScannerOptions = {}): Scanned {
  const commands: Scanned['commands'] = [];
  const scanner = new StreamScanner(
    (c: ScannedCommand) => commands.push({ start: c.start, end: c.end, argc: c.argc, args: c.args.map((a) => a.toString('latin1')) }),
    opts,
  );
  scanner.reset(opts.from ?? 0);
  scanner.decodeArgs = opts.decodeArgs ?? false;
  let validBytes = 0;
  let error: string | null = null;
  for (const c of chunks) {
    const r = scanner.scan(c);
    ok(r.validBytes <= c.length);
    validBytes += r.validBytes;
    if (r.error !== null) {
      error = r.error;
      break;
    }
    ok(r.validBytes === c.length);
  }
  return { commands, validBytes, error, offset: scanner.offset, boundary: scanner.boundary };
}

const b = (s: string) => Buffer.from(s, 'latin1');
const enc = (...args: string[]) => encodeCommand(args).toString('latin1');

t.test('stream scanner reports start and end offsets of each command', async (t) => {
  const input = enc('PING') + enc('SET', 'k', 'v') + enc('REPLCONF', 'GETACK', '*');
  for (const [how, chunks] of ways(input)) {
    t.test(how, async (t) => {
      const r = scanAll(chunks);
      t.same(r.commands, [
        { start: 1, end: 14, argc: 1, args: ['PING'] },
        { start: 15, end: 41, argc: 3, args: ['SET', 'k'] },
        { start: 42, end: 78, argc: 3, args: ['REPLCONF', 'GETACK'] },
      ]);
      t.same([r.validBytes, r.error, r.offset, r.boundary], [78, null, 78, 78]);
    });
  }
});

t.test('stream scanner counts offsets from the offset given to reset', async (t) => {
  const r = scanAll([b(enc('PING'))], { from: 1000 });
  t.same(r.commands.map((c) => [c.start, c.end]), [[1001, 1014]]);
  t.equal(r.offset, 1014);
});

t.test('stream scanner counts empty lines between commands as bytes and emits nothing', async (t) => {
  for (const [how, chunks] of ways('\n\r\n' + enc('PING') + '\r\n\n' + enc('PING'))) {
    t.test(how, async (t) => {
      const r = scanAll(chunks);
      t.same(r.commands.map((c) => [c.start, c.end]), [[4, 17], [21, 34]]);
      t.same([r.offset, r.boundary, r.error], [34, 34, null]);
    });
  }
});

t.test('stream scanner treats *0 and *-1 as no command', async (t) => {
  for (const [how, chunks] of ways('*0\r\n*-1\r\n' + enc('PING'))) {
    t.test(how, async (t) => {
      const r = scanAll(chunks);
      t.same(r.commands.map((c) => [c.start, c.end, c.args]), [[10, 23, ['PING']]]);
    });
  }
});

t.test('stream scanner decodes only small first and second args by default', async (t) => {
  const big = 'x'.repeat(65);
  const small = 'y'.repeat(64);
  const input = enc('SELECT', '0') + enc(big, 'a') + enc('SET', big, 'v') + enc(small, small, small) + enc('MULTI') + enc('SET', '', 'v');
  for (const [how, chunks] of ways(input)) {
    t.test(how, async (t) => {
      t.same(scanAll(chunks).commands.map((c) => c.args), [['SELECT', '0'], [], ['SET'], [small, small], ['MULTI'], ['SET', '']]);
    });
  }
});

t.test('stream scanner decodes a second arg only for the commands secondArg names', async (t) => {
  const input = enc('SET', 'key:1', 'v') + enc('REPLCONF', 'GETACK', '*') + enc('SELECT', '3') + enc('PING') + enc('REPLCONF', 'x'.repeat(65));
  const asked: string[] = [];
  const secondArg = (name: Buffer) => {
    asked.push(name.toString('latin1'));
    return name.toString('latin1') === 'REPLCONF';
  };
  for (const [how, chunks] of ways(input)) {
    t.test(how, async (t) => {
      asked.length = 0;
      t.same(scanAll(chunks, { secondArg }).commands.map((c) => c.args), [['SET'], ['REPLCONF', 'GETACK'], ['SELECT'], ['PING'], ['REPLCONF']]);
      t.same(asked, ['SET', 'REPLCONF', 'SELECT', 'PING', 'REPLCONF'], 'asked once per command, with its name');
      t.same(scanAll(chunks, { secondArg, decodeArgs: true }).commands[0]!.args, ['SET', 'key:1', 'v'], 'decodeArgs decodes everything still');
    });
  }
});

t.test('stream scanner decodes every arg when decodeArgs is set', async (t) => {
  const big = 'z'.repeat(1000);
  for (const [how, chunks] of ways(enc('SET', big, 'a\r\nb') + enc('DEL', 'k1', 'k2', ''))) {
    t.test(how, async (t) => {
      t.same(scanAll(chunks, { decodeArgs: true }).commands.map((c) => c.args), [['SET', big, 'a\r\nb'], ['DEL', 'k1', 'k2', '']]);
    });
  }
});

t.test('stream scanner applies a decodeArgs change from the next command', async (t) => {
  const seen: string[][] = [];
  const scanner = new StreamScanner((c) => seen.push(c.args.map(String)));
  scanner.reset(0);
  const wire = b(enc('A', 'b', 'c') + enc('D', 'e', 'f'));
  scanner.scan(wire.subarray(0, 20));
  scanner.decodeArgs = true; // mid-command: not for A b c
  t.same(scanner.scan(wire.subarray(20)), { validBytes: wire.length - 20, error: null });
  t.same(seen, [['A', 'b'], ['D', 'e', 'f']]);
});

t.test('stream scanner hands each command its own args when decodeArgs goes on and off between commands', async (t) => {
  const input = b(enc('SET', 'k1', 'v1') + enc('DEL', 'a', 'b', 'c') + enc('PING') + enc('MSET', 'x', '1', 'y', '2') + enc('SET', 'k2', 'v2') + enc('EXEC'));
  // decodeArgs for each command, set from inside the callback for the next one (it applies from the next command).
  const plan = [false, true, false, true, false, false];
  for (const [how, chunks] of ways(input.toString('latin1'))) {
    t.test(how, async (t) => {
      const seen: string[][] = [];
      const scanner = new StreamScanner((c) => {
        seen.push(c.args.map(String));
        scanner.decodeArgs = plan[seen.length] ?? false;
      });
      scanner.reset(0);
      scanner.decodeArgs = plan[0]!;
      for (const c of chunks) scanner.scan(c);
      t.same(seen, [['SET', 'k1'], ['DEL', 'a', 'b', 'c'], ['PING'], ['MSET', 'x', '1', 'y', '2'], ['SET', 'k2'], ['EXEC']]);
    });
  }
});

t.test('stream scanner returns args inside one chunk as subarrays, and copies straddling ones and those of a command that continues in the next chunk', async (t) => {
  const wire = encodeCommand(['SET', 'key', 'value']);
  let args: Buffer[] = [];
  const scanner = new StreamScanner((c) => (args = [...c.args]));
  scanner.reset(0);
  scanner.decodeArgs = true;
  scanner.scan(wire);
  wire.fill(0x2e); // '.'
  t.same(args.map(String), ['...', '.....'.slice(0, 3), '.....'], 'no copy: the args see the chunk change');
  const fresh = encodeCommand(['SET', 'key', 'value']);
  const cut = fresh.indexOf('value') + 2;
  const a = Buffer.from(fresh.subarray(0, cut));
  const bb = Buffer.from(fresh.subarray(cut));
  scanner.scan(a);
  scanner.scan(bb);
  a.fill(0x2e);
  bb.fill(0x2e);
  t.same(args.map(String), ['SET', 'key', 'value'], 'no arg is a view of a chunk scanned before the command ended');
});

t.test('stream scanner holds no view of a chunk once scan() returns, however a decoded command is split', async (t) => {
  // The log reuses a block's memory once it dropped it: a view kept across scan() calls would read newer bytes.
  const wire = encodeCommand(['MSET', 'k1', 'v1', 'k2', 'a value long enough', 'k3', 'v3']);
  for (let cut = 1; cut < wire.length; cut++) {
    let args: string[] = [];
    const scanner = new StreamScanner((c) => (args = c.args.map(String)));
    scanner.reset(0);
    scanner.decodeArgs = true;
    const first = Buffer.from(wire.subarray(0, cut));
    scanner.scan(first);
    first.fill(0x21); // reused memory: '!'
    scanner.scan(Buffer.from(wire.subarray(cut)));
    t.same(args, ['MSET', 'k1', 'v1', 'k2', 'a value long enough', 'k3', 'v3'], `split after byte ${cut}`);
  }
});

t.test('stream scanner skips a large payload split over many chunks', async (t) => {
  const payload = Buffer.alloc(8 * 1024 * 1024, 0x0d);
  const wire = Buffer.concat([b('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$' + payload.length + '\r\n'), payload, b('\r\n'), encodeCommand(['PING'])]);
  const chunks: Buffer[] = [];
  for (let i = 0; i < wire.length; i += 65536) chunks.push(wire.subarray(i, i + 65536));
  const r = scanAll(chunks);
  t.same(r.commands.map((c) => [c.end, c.args]), [[wire.length - 14, ['SET', 'k']], [wire.length, ['PING']]]);
});

const bad: Array<[name: string, input: string, validBytes: number, error: string, opts?: StreamScannerOptions]> = [
  ['stream scanner rejects inline protocol from the master', enc('PING') + 'PING\r\n', 14, 'Protocol error: Master using the inline protocol. Desync?'],
  ['stream scanner rejects a CR not followed by LF between commands', '\r\r\n', 1, 'Protocol error: Master using the inline protocol. Desync?'],
  ['stream scanner rejects a non-numeric multibulk length', '*1x\r\n', 2, 'Protocol error: invalid multibulk length'],
  ['stream scanner rejects an empty multibulk length', '*\r\n', 1, 'Protocol error: invalid multibulk length'],
  ['stream scanner rejects a multibulk length with a leading zero', '*01\r\n', 3, 'Protocol error: invalid multibulk length'],
  ['stream scanner rejects a multibulk length of -0', '*-0\r\n', 3, 'Protocol error: invalid multibulk length'],
  ['stream scanner rejects a multibulk length above INT_MAX', '*2147483648\r\n', 10, 'Protocol error: invalid multibulk length'],
  ['stream scanner rejects a multibulk header whose CR lacks an LF', '*1\rx', 3, 'Protocol error: invalid multibulk length'],
  ['stream scanner rejects a bulk header without a dollar', '*1\r\n:1\r\n', 4, "Protocol error: expected '$', got ':'"],
  ['stream scanner shows a CR in place of a dollar as a space', '*1\r\n\r\n', 4, "Protocol error: expected '$', got ' '"],
  ['stream scanner rejects an empty bulk length', '*1\r\n$\r\n', 5, 'Protocol error: invalid bulk length'],
  ['stream scanner rejects a negative bulk length', '*1\r\n$-1\r\n', 5, 'Protocol error: invalid bulk length'],
  ['stream scanner rejects a bulk header whose CR lacks an LF', '*1\r\n$1\r\r\n', 7, 'Protocol error: invalid bulk length'],
  ['stream scanner rejects a bulk longer than maxBulkLen', '*1\r\n$101\r\n', 7, 'Protocol error: invalid bulk length', { maxBulkLen: 100 }],
  ['stream scanner rejects a bulk not followed by CRLF', '*1\r\n$4\r\nPINGX\n', 12, 'Protocol error: bulk not terminated by CRLF'],
  ['stream scanner rejects a bulk followed by CR and not LF', '*2\r\n$4\r\nPING\r\r', 13, 'Protocol error: bulk not terminated by CRLF'],
];

for (const [name, input, validBytes, error, opts] of bad) {
  t.test(name, async (t) => {
    for (const [how, chunks] of ways(input)) {
      t.test(how, async (t) => {
        const r = scanAll(chunks, { from: 100, ...opts });
        t.same([r.validBytes, r.error, r.offset], [validBytes, error, 100 + validBytes]);
      });
    }
  });
}

t.test('stream scanner stays failed until reset', async (t) => {
  const commands: number[] = [];
  const scanner = new StreamScanner((c) => commands.push(c.end));
  scanner.reset(0);
  t.same(scanner.scan(b('*1\r\n$4\r\nPING\r\n+OK\r\n')), { validBytes: 14, error: 'Protocol error: Master using the inline protocol. Desync?' });
  t.same(scanner.scan(b(enc('PING'))), { validBytes: 0, error: 'Protocol error: Master using the inline protocol. Desync?' });
  t.equal(scanner.offset, 14);
  t.equal(scanner.boundary, 14);
  scanner.reset(500);
  t.same(scanner.scan(b(enc('PING'))), { validBytes: 14, error: null });
  t.same(commands, [14, 514]);
});

t.test('stream scanner reset drops a partially scanned command', async (t) => {
  const ends: number[] = [];
  const scanner = new StreamScanner((c) => ends.push(c.end));
  scanner.reset(0);
  scanner.scan(b('*1\r\n$4\r\nPI'));
  t.equal(scanner.offset, 10);
  t.equal(scanner.boundary, 0, 'the boundary stays before the unfinished command');
  scanner.reset(10);
  scanner.scan(b(enc('PING')));
  t.same(ends, [24]);
});

// --- properties -------------------------------------------------------------------------------------

const arg = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 80 }).map((a) => Buffer.from(a)) },
  { weight: 1, arbitrary: fc.constantFrom(...['PING', 'REPLCONF', 'GETACK', '*', 'SELECT', '\r\n', '$1\r\n'].map((s) => Buffer.from(s))) },
);
const command = fc.array(arg, { minLength: 1, maxLength: 5 });

t.test('stream scanner end offsets equal the cumulative encoded lengths', async (t) => {
  assertProperty(
    t,
    '2000 random streams scanned',
    fc.property(fc.array(command, { minLength: 1, maxLength: 8 }), fc.nat(), fc.integer(), fc.boolean(), fc.boolean(), (commands, from, seed, decodeArgs, picky) => {
      const encoded = commands.map((c) => encodeCommand(c));
      const wire = Buffer.concat(encoded);
      const got: Array<{ start: number; end: number; argc: number; args: Buffer[] }> = [];
      // Picky: args[1] only for names of even length (secondArg).
      const wantsSecond = (name: Buffer) => !picky || name.length % 2 === 0;
      // Args are copied: without decodeArgs they are the scanner's scratch views, overwritten by the next command.
      const scanner = new StreamScanner((c) => got.push({ ...c, args: c.args.map((a) => Buffer.from(a)) }), picky ? { secondArg: wantsSecond } : {});
      scanner.reset(from);
      scanner.decodeArgs = decodeArgs;
      for (const chunk of randomSplit(wire, mulberry32(seed))) {
        deepStrictEqual(scanner.scan(chunk), { validBytes: chunk.length, error: null });
      }
      let pos = from;
      const want = commands.map((args, i) => {
        const start = pos + 1;
        pos += encoded[i]!.length;
        let decoded: Buffer[] = args;
        if (!decodeArgs) {
          decoded = [];
          for (const a of args.slice(0, 2)) {
            if (a.length > 64 || (decoded.length === 1 && !wantsSecond(decoded[0]!))) break;
            decoded.push(a);
          }
        }
        return { start, end: pos, argc: args.length, args: decoded };
      });
      deepStrictEqual(got, want);
      deepStrictEqual([scanner.offset, scanner.boundary], [pos, pos]);
    }),
    { seed: 42, numRuns: 2000 },
  );
});

t.test('stream scanner never throws on random garbage and fails for good', async (t) => {
  const alphabet = fc.constantFrom(0x2a, 0x24, 0x0d, 0x0a, 0x2d, 0x30, 0x31, 0x32, 0x39, 0x41);
  const garbage = fc.oneof(
    fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
    fc.array(alphabet, { maxLength: 200 }).map((a) => Buffer.from(a)),
    fc.tuple(command, fc.array(alphabet, { maxLength: 20 })).map(([c, g]) => Buffer.concat([encodeCommand(c), Buffer.from(g)])),
  );
  assertProperty(
    t,
    '2000 garbage inputs',
    fc.property(garbage, fc.integer(), (input, seed) => {
      const scanner = new StreamScanner(() => {}, { maxBulkLen: 100 });
      scanner.reset(0);
      let error: string | null = null;
      let valid = 0;
      for (const chunk of randomSplit(input, mulberry32(seed))) {
        const r = scanner.scan(chunk);
        ok(r.validBytes >= 0 && r.validBytes <= chunk.length);
        if (error !== null) deepStrictEqual(r, { validBytes: 0, error });
        else if (r.error === null) ok(r.validBytes === chunk.length);
        error = r.error;
        valid += r.validBytes;
      }
      deepStrictEqual(scanner.offset, valid);
      // The same input whole (fast paths) and byte by byte (slow paths) gives the same verdict.
      for (const chunks of [[input], [...input].map((x) => Buffer.from([x]))]) {
        const other = new StreamScanner(() => {}, { maxBulkLen: 100 });
        other.reset(0);
        let v = 0;
        let e: string | null = null;
        for (const c of chunks) {
          const r = other.scan(c);
          v += r.validBytes;
          e = r.error;
          if (e !== null) break;
        }
        deepStrictEqual([v, e], [valid, error]);
      }
    }),
    { seed: 42, numRuns: 2000 },
  );
});

t.test('stream scanner without decodeArgs hands small args as scratch views, overwritten by the next command', async (t) => {
  const held: Buffer[] = [];
  const seen: string[][] = [];
  const scanner = new StreamScanner((c) => {
    seen.push(c.args.map(String));
    held.push(...c.args);
  });
  scanner.reset(0);
  const wire = b(enc('SET', 'key1', 'v') + enc('DEL', 'k2'));
  // Split inside the second command's name and key: the scratch copy is assembled across chunks.
  const cut = wire.length - 6;
  scanner.scan(wire.subarray(0, cut));
  scanner.scan(wire.subarray(cut));
  t.same(seen, [['SET', 'key1'], ['DEL', 'k2']]);
  t.equal(held[0]!.buffer, held[2]!.buffer, 'args[0] of both commands share the scratch space');
  t.equal(held[0]!.toString(), 'DEL', 'an arg kept past its command shows the next one');
});
