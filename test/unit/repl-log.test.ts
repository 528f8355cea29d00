import t from 'tap';
import fc from 'fast-check';
import { assertProperty } from '../helpers/property.js';
import { bytesRead } from '../helpers/proc-io.js';
import { LogRangeError } from '../../src/errors.js';
import { ReplLog, type LogReader } from '../../src/backlog/repl-log.js';

const PACK_THRESHOLD = 4 * 1024;
const PACK_BLOCK_SIZE = 16 * 1024;

/** The byte the test stream holds at `offset`: a hash, so a read from the wrong offset shows. */
function byteAt(offset: number): number {
  let x = Math.imul(offset ^ (offset >>> 16), 0x45d9f3b);
  x = Math.imul(x ^ (x >>> 16), 0x45d9f3b);
  return (x ^ (x >>> 16)) & 0xff;
}

/** The stream bytes for offsets first..last inclusive. */
function expected(first: number, last: number): Buffer {
  const out = Buffer.alloc(Math.max(0, last - first + 1));
  for (let i = 0; i < out.length; i++) out[i] = byteAt(first + i);
  return out;
}

/** Appends `size` stream bytes, continuing at log.endOffset + 1. */
function appendStream(log: ReplLog, size: number): Buffer {
  const chunk = expected(log.endOffset + 1, log.endOffset + size);
  log.append(chunk);
  return chunk;
}

/** Reads from `offset` until null, as a replica cursor would. */
function readAll(log: ReplLog, offset: number): Buffer {
  const parts: Buffer[] = [];
  for (;;) {
    const b = log.read(offset);
    if (b === null) break;
    if (b.length === 0) throw new Error(`empty view at ${offset}`);
    parts.push(Buffer.from(b));
    offset += b.length;
  }
  return Buffer.concat(parts);
}

class Reader implements LogReader {
  constructor(public offset: number) {}
}

t.test('a new log is empty at its start offset', async (t) => {
  const log = new ReplLog(1000);
  t.same([log.firstOffset, log.endOffset, log.size, log.limit], [1, 0, 0, 1000]);
  t.equal(log.read(1), null);
  const at = new ReplLog(1000, 500);
  t.same([at.firstOffset, at.endOffset, at.size], [501, 500, 0]);
  t.equal(at.read(501), null);
  t.ok(at.holds(501), 'endOffset + 1 is held: nothing to send yet');
  t.notOk(at.holds(500));
  t.notOk(at.holds(502));
});

t.test('offsets advance by each appended size, below and above the pack threshold', async (t) => {
  const log = new ReplLog(1 << 30, 100);
  const sizes = [1, 10, PACK_THRESHOLD - 1, PACK_THRESHOLD, PACK_THRESHOLD + 1, 3, 20_000, 7, PACK_BLOCK_SIZE, 1];
  let end = 100;
  for (const n of sizes) {
    appendStream(log, n);
    end += n;
    t.equal(log.endOffset, end, `after ${n} bytes`);
    t.equal(log.firstOffset, 101);
    t.equal(log.size, end - 100);
  }
  t.ok(readAll(log, 101).equals(expected(101, end)), 'reassembled bytes equal the concatenation');
  for (const off of [101, 102, 112, 111 + PACK_THRESHOLD, end - 1, end]) {
    t.ok(readAll(log, off).equals(expected(off, end)), `read from ${off}`);
  }
  t.equal(log.read(end + 1), null, 'nothing after endOffset');
  t.equal(log.read(end + 100), null);
});

t.test('appending an empty chunk changes nothing and calls no listener', async (t) => {
  const log = new ReplLog(100);
  let calls = 0;
  log.onAppend(() => calls++);
  log.append(Buffer.alloc(0));
  t.same([log.firstOffset, log.endOffset, log.size, calls], [1, 0, 0, 0]);
});

t.test('small chunks are packed into one block, large chunks are kept as they are', async (t) => {
  const log = new ReplLog(1 << 30);
  appendStream(log, 100);
  appendStream(log, 200);
  appendStream(log, PACK_THRESHOLD - 1);
  t.equal(log.read(1)?.length, 300 + PACK_THRESHOLD - 1, 'one view covers the packed chunks');
  t.equal(log.read(51)?.length, 250 + PACK_THRESHOLD - 1, 'a view starts at the offset asked');

  const bigStart = log.endOffset + 1;
  const big = appendStream(log, PACK_THRESHOLD);
  const view = log.read(bigStart)!;
  t.equal(view.length, PACK_THRESHOLD);
  t.equal(view.buffer, big.buffer, 'a large chunk is not copied');
  t.equal(log.read(bigStart + 10)?.length, PACK_THRESHOLD - 10);

  const smallStart = log.endOffset + 1;
  appendStream(log, 5);
  t.equal(log.read(smallStart)?.length, 5, 'a small chunk after a large one starts a new packed block');
  appendStream(log, 6);
  t.equal(log.read(smallStart)?.length, 11);
});

t.test('a packed block that cannot take the next chunk is followed by a new one', async (t) => {
  const log = new ReplLog(1 << 30);
  for (let i = 0; i < 5; i++) appendStream(log, 4000);
  t.equal(log.read(1)?.length, 16_000, 'four chunks fit in 16 KiB');
  t.equal(log.read(16_001)?.length, 4000, 'the fifth went into a new block');
  t.ok(readAll(log, 1).equals(expected(1, 20_000)));
});

t.test('a packed block is filled to exactly 16 KiB before a new one starts', async (t) => {
  const log = new ReplLog(1 << 30);
  for (let i = 0; i < 4; i++) appendStream(log, PACK_THRESHOLD - 1);
  appendStream(log, 4);
  t.equal(log.read(1)?.length, PACK_BLOCK_SIZE, 'the last 4 bytes fill the block');
  appendStream(log, 1);
  t.equal(log.read(1)?.length, PACK_BLOCK_SIZE);
  t.equal(log.read(PACK_BLOCK_SIZE + 1)?.length, 1, 'the next byte starts a new block');
  t.ok(readAll(log, 1).equals(expected(1, PACK_BLOCK_SIZE + 1)));
});

t.test('a view handed out stays valid after later appends', async (t) => {
  const log = new ReplLog(1 << 30);
  appendStream(log, 10);
  const view = log.read(1)!;
  const copy = Buffer.from(view);
  appendStream(log, 10);
  appendStream(log, 5000);
  t.ok(view.equals(copy));
  t.equal(view.length, 10, 'the view does not grow with the block');
});

t.test('a small chunk is copied: changing it after append does not change the log', async (t) => {
  const log = new ReplLog(1 << 30);
  const chunk = Buffer.from('hello');
  log.append(chunk);
  chunk.fill(0x21);
  t.equal(log.read(1)?.toString(), 'hello');
});

t.test('holds() covers firstOffset..endOffset+1', async (t) => {
  const log = new ReplLog(10_000, 1000);
  appendStream(log, 5000);
  appendStream(log, 5000);
  appendStream(log, 5000);
  t.same([log.firstOffset, log.endOffset], [6001, 16_000]);
  t.notOk(log.holds(6000));
  t.ok(log.holds(6001));
  t.ok(log.holds(12_345));
  t.ok(log.holds(16_000));
  t.ok(log.holds(16_001));
  t.notOk(log.holds(16_002));
  t.notOk(log.holds(0));
});

t.test('trimming keeps at least limit bytes', async (t) => {
  const log = new ReplLog(10_000);
  appendStream(log, 5000);
  appendStream(log, 5000);
  t.same([log.firstOffset, log.size], [1, 10_000], 'at the limit nothing is dropped');
  appendStream(log, 5000);
  t.same([log.firstOffset, log.endOffset, log.size], [5001, 15_000, 10_000]);
  appendStream(log, 5000);
  t.same([log.firstOffset, log.endOffset, log.size], [10_001, 20_000, 10_000]);
  appendStream(log, 6000);
  t.same([log.firstOffset, log.size], [15_001, 11_000], 'one more block goes; dropping the next would leave less than limit');
  t.ok(readAll(log, log.firstOffset).equals(expected(15_001, 26_000)));
});

t.test('trimming never drops the tail block even over the limit', async (t) => {
  const log = new ReplLog(100);
  appendStream(log, 50_000);
  t.same([log.firstOffset, log.size], [1, 50_000]);
  appendStream(log, 50_000);
  t.same([log.firstOffset, log.size], [50_001, 50_000]);
});

t.test('a limit of 0 drops every block but the tail', async (t) => {
  const log = new ReplLog(0);
  appendStream(log, 10);
  appendStream(log, 5000);
  appendStream(log, 5000);
  t.same([log.firstOffset, log.size], [5011, 5000]);
});

t.test('trimming never drops bytes a registered reader still needs', async (t) => {
  const setup = (readerOffset: number) => {
    const log = new ReplLog(5000);
    const reader = new Reader(readerOffset);
    log.addReader(reader);
    appendStream(log, 5000); // 1..5000
    appendStream(log, 5000); // 5001..10000
    appendStream(log, 5000); // 10001..15000
    return { log, reader };
  };

  t.test('a reader that consumed nothing keeps everything', async (t) => {
    const { log } = setup(0);
    t.same([log.firstOffset, log.size], [1, 15_000]);
  });
  t.test('a reader one byte short of a block end keeps that block', async (t) => {
    const { log } = setup(4999);
    t.equal(log.firstOffset, 1);
    t.ok(readAll(log, 5000).equals(expected(5000, 15_000)));
  });
  t.test('a reader that consumed a whole block lets it go', async (t) => {
    const { log } = setup(5000);
    t.equal(log.firstOffset, 5001);
    t.ok(log.holds(5001));
  });
  t.test('a reader past two blocks still leaves limit bytes', async (t) => {
    const { log } = setup(15_000);
    t.same([log.firstOffset, log.size], [10_001, 5000]);
  });
  t.test('the slowest of several readers counts', async (t) => {
    const log = new ReplLog(0);
    const fast = new Reader(0);
    const slow = new Reader(0);
    log.addReader(fast);
    log.addReader(slow);
    for (let i = 0; i < 4; i++) appendStream(log, 5000);
    fast.offset = 20_000;
    slow.offset = 7000;
    log.trim();
    t.equal(log.firstOffset, 5001, 'the block holding 7001 stays');
    t.same([...log.readers], [fast, slow]);
    log.removeReader(slow);
    log.trim();
    t.equal(log.firstOffset, 15_001, 'without it, all but the tail goes');
    t.ok(readAll(log, 15_001).equals(expected(15_001, 20_000)));
  });
  t.test('removing the reader and trimming drops the blocks', async (t) => {
    const { log, reader } = setup(0);
    log.removeReader(reader);
    log.trim();
    t.same([log.firstOffset, log.size], [10_001, 5000]);
  });
});

t.test('reading a trimmed offset throws LogRangeError', async (t) => {
  const log = new ReplLog(1000);
  appendStream(log, 5000);
  appendStream(log, 5000);
  t.equal(log.firstOffset, 5001);
  t.throws(() => log.read(5000), LogRangeError);
  t.throws(() => log.read(1), LogRangeError);
  t.ok(readAll(log, 5001).equals(expected(5001, 10_000)));
});

t.test('reset() starts a new history at the given offset', async (t) => {
  const log = new ReplLog(1000);
  appendStream(log, 3000);
  appendStream(log, 20);
  log.reset(777);
  t.same([log.firstOffset, log.endOffset, log.size], [778, 777, 0]);
  t.equal(log.read(778), null);
  t.throws(() => log.read(777), LogRangeError);
  t.ok(log.holds(778));
  t.notOk(log.holds(1));
  appendStream(log, 10);
  t.same([log.firstOffset, log.endOffset, log.size], [778, 787, 10]);
  t.ok(readAll(log, 778).equals(expected(778, 787)));
  t.throws(() => log.read(1), LogRangeError, 'offsets of the old history are not held');
});

t.test('onAppend listeners are called after every append and can unsubscribe', async (t) => {
  const log = new ReplLog(1 << 20);
  const seen: number[] = [];
  const other: number[] = [];
  const off = log.onAppend(() => seen.push(log.endOffset));
  log.onAppend(() => other.push(log.endOffset));
  appendStream(log, 10);
  appendStream(log, 5000);
  off();
  appendStream(log, 1);
  t.same(seen, [10, 5010], 'the listener sees the appended bytes');
  t.same(other, [10, 5010, 5011]);
});

t.test('property: reads from any held offset return the stream bytes; offsets stay consistent', async (t) => {
  const sizeArb = fc.oneof(
    fc.integer({ min: 1, max: 64 }),
    fc.integer({ min: PACK_THRESHOLD - 200, max: PACK_THRESHOLD + 200 }),
    fc.integer({ min: 1, max: 3 * PACK_BLOCK_SIZE }),
  );
  const stepArb = fc.record({
    size: sizeArb,
    // Which reader to move (index modulo the number of readers), and where to (a fraction of what is unread).
    move: fc.option(fc.tuple(fc.nat(), fc.double({ min: 0, max: 1, noNaN: true }))),
    probe: fc.double({ min: 0, max: 1, noNaN: true }),
  });
  assertProperty(
    t,
    '500 runs of appends, reads and reader moves',
    fc.property(
      fc.integer({ min: 0, max: 80_000 }),
      fc.integer({ min: 0, max: 1_000_000 }),
      fc.integer({ min: 0, max: 3 }),
      fc.array(stepArb, { minLength: 1, maxLength: 25 }),
      (limit, start, nReaders, steps) => {
        const log = new ReplLog(limit, start);
        const readers = Array.from({ length: nReaders }, () => new Reader(start));
        for (const r of readers) log.addReader(r);
        let total = 0;
        let maxChunk = 0;
        for (const s of steps) {
          const firstBefore = log.firstOffset;
          appendStream(log, s.size);
          total += s.size;
          maxChunk = Math.max(maxChunk, s.size);

          if (log.endOffset !== start + total) return false;
          if (log.size !== log.endOffset - log.firstOffset + 1) return false;
          if (log.firstOffset < firstBefore) return false;
          if (log.size < Math.min(total, limit)) return false;
          for (const r of readers) if (log.firstOffset > r.offset + 1) return false;
          if (nReaders === 0 && log.size > limit + 2 * Math.max(PACK_BLOCK_SIZE, maxChunk)) return false;

          if (!log.holds(log.firstOffset) || !log.holds(log.endOffset + 1)) return false;
          if (log.holds(log.endOffset + 2) || log.holds(log.firstOffset - 1)) return false;
          if (log.read(log.endOffset + 1) !== null) return false;
          if (log.firstOffset > start + 1) {
            try {
              log.read(log.firstOffset - 1);
              return false;
            } catch (err) {
              if (!(err instanceof LogRangeError)) return false;
            }
          }

          const probe = log.firstOffset + Math.floor(s.probe * log.size);
          for (const off of [log.firstOffset, probe, log.endOffset, ...readers.map((r) => r.offset + 1)]) {
            if (!readAll(log, off).equals(expected(off, log.endOffset))) return false;
          }

          if (s.move && readers.length > 0) {
            const [which, frac] = s.move;
            const r = readers[which % readers.length]!;
            r.offset += Math.floor(frac * (log.endOffset - r.offset));
          }
        }
        return true;
      },
    ),
    { seed: 20240611, numRuns: 500 },
  );
});

// --- reads into the log (reserve / commit) ------------------------------------------------------------------------

/** Reads `size` stream bytes straight into the log, as the upstream socket does (in pieces that fit the space). */
function readInto(log: ReplLog, size: number, min = 1024): Buffer[] {
  const spaces: Buffer[] = [];
  while (size > 0) {
    const space = log.reserve(min);
    const n = Math.min(size, space.length);
    expected(log.endOffset + 1, log.endOffset + n).copy(space);
    log.commit(space, n);
    spaces.push(space);
    size -= n;
  }
  return spaces;
}

t.test('bytes read into reserved space are committed where they are: no copy', async (t) => {
  const log = new ReplLog(64 << 20, 10);
  const space = log.reserve(64 * 1024);
  t.ok(space.length >= 64 * 1024, 'at least the room asked for');
  expected(11, 110).copy(space);
  log.commit(space, 100);
  t.same([log.endOffset, log.size], [110, 100]);
  const view = log.read(11)!;
  t.equal(view.buffer, space.buffer, 'the log holds the read buffer itself');
  t.equal(view.byteOffset, space.byteOffset);
  t.ok(view.equals(expected(11, 110)));
  // The next reserve continues in the same block, after the committed bytes.
  const next = log.reserve(1024);
  t.equal(next.buffer, space.buffer);
  t.equal(next.byteOffset, space.byteOffset + 100);
  t.not(log.reserve(next.length + 1).buffer, space.buffer, 'more room than the block has left: a new block');
});

t.test('an append while space is reserved goes elsewhere; a commit of that space then copies', async (t) => {
  const log = new ReplLog(64 << 20);
  readInto(log, 50);
  const space = log.reserve(1024);
  const before = Buffer.from(space.subarray(0, 200));
  // A chunk from elsewhere (the 'data' path) arrives while a read into `space` is under way.
  appendStream(log, 30);
  t.ok(space.subarray(0, 200).equals(before), 'the append did not write into the reserved space');
  expected(81, 120).copy(space);
  log.commit(space, 40);
  t.equal(log.endOffset, 120);
  t.ok(readAll(log, 1).equals(expected(1, 120)), 'the late read is appended after the chunk, as a copy');
  t.not(log.read(81)!.buffer, space.buffer, 'copied: the space may be read into again');
});

t.test('a read that lands in space reserved before a reset is copied into the new history', async (t) => {
  const log = new ReplLog(16 * 1024);
  readInto(log, 40 * 1024);
  const space = log.reserve(1024);
  log.reset(1_000_000);
  expected(1_000_001, 1_000_010).copy(space);
  log.commit(space, 10);
  t.same([log.firstOffset, log.endOffset], [1_000_001, 1_000_010]);
  t.ok(readAll(log, 1_000_001).equals(expected(1_000_001, 1_000_010)));
  t.not(log.read(1_000_001)!.buffer, space.buffer);
});

t.test('property: reads into the log, appends, reservations, trims and block reuse keep every byte and every held view', async (t) => {
  const stepArb = fc.record({
    kind: fc.constantFrom('read', 'read', 'append', 'view', 'reserve-only', 'release'),
    size: fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 40_000 })),
    at: fc.double({ min: 0, max: 1, noNaN: true }),
  });
  assertProperty(
    t,
    '300 runs of reads, appends and views',
    fc.property(fc.integer({ min: 0, max: 200_000 }), fc.array(stepArb, { minLength: 1, maxLength: 40 }), (limit, steps) => {
      const log = new ReplLog(limit);
      const held: Array<{ view: Buffer; copy: Buffer; holder: { heldFrom: number; heldTo: number } }> = [];
      for (const s of steps) {
        if (s.kind === 'read') readInto(log, s.size);
        else if (s.kind === 'append') appendStream(log, s.size);
        else if (s.kind === 'reserve-only') log.reserve(s.size);
        else if (s.kind === 'view' && log.size > 0) {
          // A socket takes a view and has not written it yet: while it holds it, its bytes must never change.
          const at = log.firstOffset + Math.min(log.size - 1, Math.floor(s.at * log.size));
          const view = log.read(at)!;
          const holder = { heldFrom: at, heldTo: at + view.length - 1 };
          log.addHolder(holder);
          held.push({ view, copy: Buffer.from(view), holder });
        } else if (s.kind === 'release' && held.length > 0) {
          // The write finished: the oldest view is let go, and its memory may be reused from now on.
          log.removeHolder(held.shift()!.holder);
        }
        if (log.size !== log.endOffset - log.firstOffset + 1) return false;
        if (!readAll(log, log.firstOffset).equals(expected(log.firstOffset, log.endOffset))) return false;
        for (const x of held) if (!x.view.equals(x.copy)) return false;
      }
      return true;
    }),
    { seed: 7, numRuns: 300 },
  );
});

t.test('a dropped read block is reused only once no holder may still read it', async (t) => {
  const log = new ReplLog(64 * 1024); // 16 KiB read blocks; at most 4 wait for reuse
  readInto(log, 16 * 1024);
  const first = log.read(1)!;
  t.equal(first.length, 16 * 1024, 'the first read block, whole');
  // A socket still writing the first block, and one holding everything after it.
  const socket = { heldFrom: 1, heldTo: first.length };
  const wide = { heldFrom: first.length + 1, heldTo: Infinity };
  log.addHolder(socket);
  log.addHolder(wide);
  readInto(log, 16 * 1024 * 20);
  t.ok(log.memFirstOffset > 16 * 1024, 'the first block was dropped');
  t.ok(first.equals(expected(1, 16 * 1024)), 'its bytes are untouched');
  t.equal(log.blockStats.reused, 0, 'no block reused while holders cover them all');
  t.ok(log.blockStats.discarded > 0, 'blocks past the pool cap went to the garbage collector');

  log.removeHolder(wide);
  const before = log.blockStats.allocated;
  readInto(log, 16 * 1024 * 20);
  t.ok(first.equals(expected(1, 16 * 1024)), 'the block the socket still writes is still untouched');
  t.ok(log.blockStats.reused >= 15, `blocks no holder covers are reused (${log.blockStats.reused})`);
  t.ok(log.blockStats.allocated - before <= 5, 'and hardly any new one is allocated');
  t.ok(readAll(log, log.memFirstOffset).equals(expected(log.memFirstOffset, log.endOffset)), 'the log holds the stream');

  log.removeHolder(socket);
  log.reset(log.endOffset);
  const reused = log.blockStats.reused;
  readInto(log, 16 * 1024 * 2);
  t.ok(log.blockStats.reused - reused <= 4, 'a new history reuses only blocks released before it (never ones retired with older offsets)');
});

t.test('prefault() makes the memory tail ahead of the stream: its first log.memory bytes allocate no block', async (t) => {
  const MiB = 1024 * 1024;
  const log = new ReplLog(8 * MiB); // 1 MiB read blocks
  const read = bytesRead();
  t.equal(log.prefault(), 8, 'eight blocks: the memory limit');
  // On a VM the kernel's first copy into a page traps even after user space wrote it (util/prefault.ts).
  t.ok(bytesRead() - read >= 8 * MiB, 'the kernel wrote the blocks too (a read of /dev/zero into them)');
  t.equal(log.blockStats.prefaulted, 8);
  readInto(log, 8 * MiB, 64 * 1024);
  t.equal(log.blockStats.allocated, 0, 'the stream went into the prefaulted blocks');
  t.equal(log.blockStats.reused, 0, 'and they are not counted as reused');
  t.ok(readAll(log, log.memFirstOffset).equals(expected(log.memFirstOffset, log.endOffset)), 'the log holds the stream');
  readInto(log, 4 * MiB, 64 * 1024);
  t.ok(log.blockStats.allocated + log.blockStats.reused >= 3, 'past the limit, blocks come from the pool as before');

  const held = new ReplLog(8 * MiB);
  readInto(held, 5 * MiB, 64 * 1024);
  t.equal(held.prefault(), 3, 'what the log already holds counts: 5 MiB held, 3 blocks made, the limit reached');
  t.equal(held.prefault(), 0, 'and a second call makes nothing');
  t.equal(new ReplLog(8 * MiB).prefault(3 * MiB), 3, 'at most max bytes');
});
