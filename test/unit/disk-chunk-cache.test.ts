import t from 'tap';
import { DiskChunkCache } from '../../src/backlog/disk-chunk-cache.js';
import type { LogHolder } from '../../src/backlog/block-pool.js';

const MiB = 1024 * 1024;
/** A disk holding offsets [first, last], byte at offset o = o & 0xff, in segments of `seg` bytes starting at `first`. */
function disk(first: number, last: number, seg = Infinity) {
  const reads: Array<[number, number]> = [];
  const read = async (offset: number, max: number): Promise<Buffer> => {
    reads.push([offset, max]);
    if (offset < first || offset > last) throw new RangeError(`offset ${offset} not on disk [${first}, ${last}]`);
    const segEnd = seg === Infinity ? last : first + Math.floor((offset - first) / seg) * seg + seg - 1;
    const n = Math.min(max, last - offset + 1, segEnd - offset + 1);
    return fill(Buffer.allocUnsafe(n), offset);
  };
  /** The same, into the buffer given (as the disk log reads). */
  const readInto = async (offset: number, max: number, into: Buffer): Promise<Buffer> => {
    const got = await read(offset, max);
    got.copy(into);
    return into.subarray(0, got.length);
  };
  return { read, readInto, reads };
}

/** `b` as the disk holds it from `offset` on (a plain loop: an array of a million numbers per read took seconds). */
function fill(b: Buffer, offset: number): Buffer {
  for (let i = 0; i < b.length; i++) b[i] = (offset + i) & 0xff;
  return b;
}

async function viewAt(cache: DiskChunkCache, at: number): Promise<Buffer> {
  for (;;) {
    const v = cache.view(at);
    if (Buffer.isBuffer(v)) return v;
    await v;
  }
}

t.test('readers at nearby offsets share one read, in flight and cached', async (t) => {
  const d = disk(1, 10 * MiB);
  // Nothing after the first chunk is worth reading ahead (memory holds it).
  const cache = new DiskChunkCache(d.read, () => 1, () => MiB);
  const [a, b] = await Promise.all([viewAt(cache, 100), viewAt(cache, 5000)]);
  t.equal(a[0], 100 & 0xff);
  t.equal(b[0], 5000 & 0xff);
  t.equal(d.reads.length, 1, 'one read for both');
  t.same(d.reads[0], [1, MiB], 'aligned on a MiB');
  await viewAt(cache, MiB);
  t.equal(d.reads.length, 1, 'still cached');
});

t.test('an aligned start before the first byte on disk reads from the first byte', async (t) => {
  const first = 4_253_423;
  const d = disk(first, first + 3 * MiB);
  const cache = new DiskChunkCache(d.read, () => first, () => first + 3 * MiB);
  const v = await viewAt(cache, first + 23);
  t.equal(v[0], (first + 23) & 0xff);
  t.equal(d.reads[0]![0], first);
});

t.test('a chunk cut short by a segment end is continued from the offset asked', async (t) => {
  const d = disk(1, 4 * MiB, 300_000);
  const cache = new DiskChunkCache(d.read, () => 1, () => 0);
  const v = await viewAt(cache, 400_000);
  t.equal(v[0], 400_000 & 0xff, 'the second segment, not a loop on the first');
  t.ok(d.reads.length <= 2);
});

t.test('clear() forgets a new history\'s stale chunks, and a failed read rejects', async (t) => {
  const d = disk(1, MiB);
  const cache = new DiskChunkCache(d.read, () => 1, () => MiB);
  await viewAt(cache, 10);
  cache.clear();
  await viewAt(cache, 10);
  t.equal(d.reads.length, 2);
  await t.rejects(viewAt(cache, 2 * MiB), RangeError);
});

t.test('a reader moving through the disk finds the next two chunks read ahead, never past the last offset worth reading', async (t) => {
  const d = disk(1, 10 * MiB);
  const cache = new DiskChunkCache(d.read, () => 1, () => 3 * MiB + 5);
  await viewAt(cache, 100);
  t.same(d.reads, [[1, MiB], [MiB + 1, MiB], [2 * MiB + 1, MiB]], 'its chunk, then the two after it');
  const v = await viewAt(cache, MiB + 10);
  t.equal(v[0], (MiB + 10) & 0xff);
  t.same(d.reads.slice(3), [[3 * MiB + 1, MiB]], 'no read for the chunk read ahead; the next one ahead starts');
  await viewAt(cache, 2 * MiB + 10);
  await viewAt(cache, 3 * MiB + 1);
  t.equal(d.reads.length, 4, 'nothing read past the last offset worth reading, nothing read twice');
});

t.test('a reader that may take megabytes next gets as many chunks read ahead, and no more than four', async (t) => {
  const d = disk(1, 10 * MiB);
  const cache = new DiskChunkCache(d.read, () => 1, () => 10 * MiB);
  await cache.view(100, 4 * MiB);
  t.same(d.reads, [[1, MiB], [MiB + 1, MiB], [2 * MiB + 1, MiB], [3 * MiB + 1, MiB], [4 * MiB + 1, MiB]], 'its chunk, then the four after it');
  await cache.view(MiB + 10, 9 * MiB);
  t.same(d.reads.slice(5), [[5 * MiB + 1, MiB]], 'at most four ahead, whatever is asked');
});

t.test('a read ahead that fails is no error until a reader needs its chunk', async (t) => {
  const d = disk(1, MiB + 100);
  // `last` claims more than the disk holds: the second read ahead fails.
  const cache = new DiskChunkCache(d.read, () => 1, () => 3 * MiB);
  await viewAt(cache, 10);
  t.same(d.reads, [[1, MiB], [MiB + 1, MiB], [2 * MiB + 1, MiB]], 'its chunk and two read ahead');
  const v = await viewAt(cache, MiB + 50);
  t.equal(v[0], (MiB + 50) & 0xff, 'the chunk read ahead serves');
  await viewAt(cache, 20);
  t.equal(d.reads.length, 3, 'the failed chunk is not read ahead again');
  await t.rejects(viewAt(cache, 2 * MiB + 1), RangeError, 'the reader of the failed chunk gets the error');
  t.equal(d.reads.length, 4, 'that reader read it itself');
});

/** Whether `v`, a view from offset `at`, still holds the disk's bytes there. */
const intact = (v: Buffer, at: number): boolean => v.every((byte, i) => byte === ((at + i) & 0xff));

t.test('chunk blocks are reused once dropped from the cache and no holder may read their offsets', async (t) => {
  const d = disk(1, 64 * MiB);
  const cache = new DiskChunkCache(d.readInto, () => 1, () => 64 * MiB);
  for (let c = 0; c < 48; c++) t.ok(intact(await viewAt(cache, c * MiB + 1), c * MiB + 1), `chunk ${c} read right`);
  const { allocated, reused } = cache.blockStats;
  t.ok(allocated <= 20, `48 chunks read into at most 20 blocks (${allocated})`);
  t.ok(reused >= 28, `the rest reused (${reused})`);
});

t.test('a chunk block a holder may still read is never overwritten, and is reused once it lets go', async (t) => {
  const d = disk(1, 64 * MiB);
  const holders = new Set<LogHolder>();
  const cache = new DiskChunkCache(d.readInto, () => 1, () => 64 * MiB, holders);
  const held = await viewAt(cache, 1000);
  // A replica socket with the chunk's bytes 1000..1999 still to write.
  const socket: LogHolder = { heldFrom: 1000, heldTo: 1999 };
  holders.add(socket);
  for (let c = 1; c < 48; c++) await viewAt(cache, c * MiB + 1);
  t.ok(intact(held, 1000), 'the held view still shows its bytes after 47 more chunks');
  const reusedHeld = cache.blockStats.reused;
  holders.delete(socket);
  for (let c = 0; c < 24; c++) await viewAt(cache, c * MiB + 1);
  t.ok(cache.blockStats.reused > reusedHeld, 'reading goes on reusing blocks once the holder let go');
  t.ok(cache.blockStats.allocated <= 21, `memory stays bounded: ${cache.blockStats.allocated} blocks in all`);
});
