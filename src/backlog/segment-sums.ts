import { crc32 } from './crc32.js';

/**
 * Bytes per checksummed piece of a disk log segment. Pieces lie on a grid of stream offsets (piece k holds offsets
 * k * PIECE + 1 to (k + 1) * PIECE), the same grid as the shared disk chunks (DiskChunkCache, 1 MiB), so a chunk read
 * covers whole pieces; a segment's first and last pieces are cut by its ends.
 */
export const PIECE = 64 * 1024;

/** The first offset of the piece holding `offset`. */
export const pieceStart = (offset: number): number => Math.floor((offset - 1) / PIECE) * PIECE + 1;
/** The last offset of the piece holding `offset`. */
export const pieceEnd = (offset: number): number => pieceStart(offset) + PIECE - 1;

/**
 * The CRC-32 of every piece of one segment, so that a byte changed on disk (bit rot, a bad sector returning other
 * bytes, a file edited behind the relay's back) is never served to a replica: a read is checked against them before
 * anyone sees it. Kept in memory, and in a `.sum` file beside the segment (4 bytes per complete piece, little
 * endian, in order; while the segment is written, the last one is the CRC of its incomplete last piece so far) so
 * that a restart checks what an earlier run wrote.
 *
 * The last piece of the segment being written is incomplete: its CRC runs on as bytes are added, and a read of it
 * is checked against the value at the moment the read started (bytes at an offset never change).
 */
export class SegmentSums {
  readonly start: number;
  /** CRCs of the complete pieces, in order. */
  readonly #sums: number[] = [];
  /** The running CRC of the incomplete last piece (0 when none). */
  #tail = 0;
  /** Offset of the last byte summed (start - 1 when none). */
  #end: number;
  /** How many of #sums the `.sum` file holds. */
  persisted = 0;
  #sealed = false;

  constructor(start: number) {
    this.start = start;
    this.#end = start - 1;
  }

  /** Offset of the last byte summed. */
  get end(): number {
    return this.#end;
  }
  /** Complete pieces. */
  get count(): number {
    return this.#sums.length;
  }
  /** The index of the piece holding `offset` within this segment. */
  index(offset: number): number {
    return (pieceStart(offset) - pieceStart(this.start)) / PIECE;
  }

  /** Adds the bytes that follow `end` (what a write just took). */
  add(buf: Buffer): void {
    if (this.#sealed) throw new RangeError('bytes added to a sealed segment');
    for (let i = 0; i < buf.length; ) {
      const stop = pieceEnd(this.#end + 1);
      const take = Math.min(buf.length - i, stop - this.#end);
      this.#tail = crc32(take === buf.length ? buf : buf.subarray(i, i + take), this.#tail);
      this.#end += take;
      i += take;
      if (this.#end === stop) this.#complete();
    }
  }

  /** The segment ends here (closed, or cut at recovery): its incomplete last piece counts as complete. */
  seal(): void {
    // Once: a close that failed after sealing (ENOSPC on the .sum write) is retried.
    if (this.#sealed) return;
    this.#sealed = true;
    if (this.#end >= this.start && this.#end !== pieceEnd(this.#end)) this.#complete();
  }

  #complete(): void {
    this.#sums.push(this.#tail >>> 0);
    this.#tail = 0;
  }

  /**
   * The sums of a segment from `start` to `end` whose every piece's CRC is known (`crcs`: one per piece, the last
   * one cut by `end`). `sealed`: the segment is complete; else a last piece cut by `end` runs on as its tail.
   */
  static restore(start: number, end: number, crcs: readonly number[], sealed: boolean): SegmentSums {
    const s = new SegmentSums(start);
    const n = end < start ? 0 : s.index(end) + 1;
    if (crcs.length !== n) throw new RangeError(`${crcs.length} checksums for ${n} pieces`);
    const open = !sealed && n > 0 && end !== pieceEnd(end);
    for (let i = 0; i < n - (open ? 1 : 0); i++) s.#sums.push(crcs[i]! >>> 0);
    if (open) s.#tail = crcs[n - 1]!;
    s.#end = end;
    s.#sealed = sealed;
    return s;
  }

  /** Takes stored CRCs of complete pieces (a `.sum` file read at recovery), to check the data against. */
  static stored(file: Buffer): number[] {
    const out: number[] = [];
    for (let o = 0; o + 4 <= file.length; o += 4) out.push(file.readUInt32LE(o));
    return out;
  }

  /**
   * The CRCs from `from` (an index) on, as the `.sum` file holds them. `tail`: and, after them, the running CRC of
   * the incomplete last piece (of its bytes so far), when it has any: recovery checks the end of the segment being
   * written against it, instead of trusting bytes no CRC on disk covers.
   */
  encode(from: number, tail = false): Buffer {
    const open = tail && !this.#sealed && this.#end >= this.start && this.#end !== pieceEnd(this.#end);
    const out = Buffer.allocUnsafe((this.#sums.length - from + (open ? 1 : 0)) * 4);
    for (let i = from; i < this.#sums.length; i++) out.writeUInt32LE(this.#sums[i]!, (i - from) * 4);
    if (open) out.writeUInt32LE(this.#tail >>> 0, (this.#sums.length - from) * 4);
    return out;
  }

  /**
   * What a read from `offset` to `to` (inclusive, at most `end`) must cover to be checked, and the CRCs it must match,
   * as of now: from the start of the piece holding `offset` (not before the segment) to the end of the piece holding
   * `to` (not past `end`).
   */
  expect(offset: number, to: number): Expectation {
    const from = Math.max(this.start, pieceStart(offset));
    const last = Math.min(this.#end, pieceEnd(to));
    const first = this.index(from);
    const n = this.index(last) - first + 1;
    const crcs: number[] = [];
    for (let k = 0; k < n; k++) crcs.push(first + k < this.#sums.length ? this.#sums[first + k]! : this.#tail >>> 0);
    return { from, to: last, crcs };
  }
}

/** A checked read: the offsets it covers (whole pieces, or to the end summed so far) and each piece's CRC. */
export interface Expectation {
  readonly from: number;
  readonly to: number;
  readonly crcs: readonly number[];
}

/**
 * Checks `buf` (the bytes of `e.from` to `e.to`) piece by piece; returns the first offset of the first piece that
 * does not match, or -1.
 */
export function mismatch(e: Expectation, buf: Buffer): number {
  let o = e.from;
  for (const want of e.crcs) {
    const stop = Math.min(e.to, pieceEnd(o));
    if (crc32(buf.subarray(o - e.from, stop - e.from + 1)) >>> 0 !== want) return o;
    o = stop + 1;
  }
  return -1;
}
