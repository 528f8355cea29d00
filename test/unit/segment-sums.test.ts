import t from 'tap';
import { crc32 } from 'node:zlib';
import { PIECE, SegmentSums, mismatch, pieceStart } from '../../src/backlog/segment-sums.js';

/** Bytes standing for stream offsets start..start+n-1 (byte at offset o: o & 0xff). */
const bytes = (start: number, n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (start + i) & 0xff));

t.test('pieces lie on the grid of stream offsets, cut by the segment ends; any split of the bytes gives the same CRCs', async (t) => {
  const start = PIECE - 99; // the first piece holds 100 bytes
  const data = bytes(start, 3 * PIECE);
  const whole = new SegmentSums(start);
  whole.add(data);
  const split = new SegmentSums(start);
  for (let o = 0; o < data.length; o += 7777) split.add(data.subarray(o, Math.min(data.length, o + 7777)));
  t.equal(whole.count, 3, 'three complete pieces (100 bytes, then two whole ones); the rest runs on');
  t.same(split.encode(0), whole.encode(0));
  t.equal(SegmentSums.stored(whole.encode(0))[0], crc32(data.subarray(0, 100)) >>> 0, 'the first piece ends on the grid');
  t.equal(whole.end, start + data.length - 1);
});

t.test('expect() covers whole pieces around a read, as of now, and mismatch() finds a changed byte', async (t) => {
  const start = 1;
  const data = bytes(start, 2 * PIECE + 500);
  const s = new SegmentSums(start);
  s.add(data);
  const e = s.expect(PIECE + 10, PIECE + 20);
  t.same([e.from, e.to, e.crcs.length], [PIECE + 1, 2 * PIECE, 1], 'one whole piece');
  const tail = s.expect(2 * PIECE + 5, 2 * PIECE + 6);
  t.same([tail.from, tail.to], [2 * PIECE + 1, 2 * PIECE + 500], 'the growing piece up to the last byte summed');
  const all = s.expect(1, s.end);
  t.equal(mismatch(all, data), -1);
  const bad = Buffer.from(data);
  bad[PIECE + 1234]! ^= 4;
  t.equal(mismatch(all, bad), pieceStart(PIECE + 1235), 'the first offset of the piece that changed');
});

t.test('seal() completes the last piece once, however often a close is retried; a sealed segment takes no bytes', async (t) => {
  const s = new SegmentSums(1);
  s.add(bytes(1, PIECE + 10));
  s.seal();
  s.seal();
  t.equal(s.count, 2);
  t.throws(() => s.add(Buffer.from('x')), /sealed/);
});

t.test('restore() gives back what add() built, open or sealed', async (t) => {
  const start = 500;
  const data = bytes(start, PIECE + 1000);
  const built = new SegmentSums(start);
  built.add(data);
  const crcs = [...SegmentSums.stored(built.encode(0)), crc32(data.subarray(PIECE - start + 1)) >>> 0];
  const open = SegmentSums.restore(start, start + data.length - 1, crcs, false);
  t.same(open.expect(start, open.end), built.expect(start, built.end));
  open.add(Buffer.from('more'));
  built.add(Buffer.from('more'));
  t.same(open.expect(start, open.end), built.expect(start, built.end), 'and runs on alike');
  t.throws(() => SegmentSums.restore(start, start + data.length - 1, crcs.slice(1), true), RangeError);
  const sealed = SegmentSums.restore(start, start + data.length - 1, crcs, true);
  sealed.seal();
  t.equal(sealed.count, crcs.length, 'a segment restored sealed is not sealed again');
  t.throws(() => sealed.add(Buffer.from('x')), /sealed/);
});
