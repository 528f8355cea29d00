/**
 * Reuses the log's read blocks (the buffers the upstream socket reads into). A fresh 1 MiB buffer costs a page fault
 * per 4 KiB when the kernel first writes into it, and V8 answers the growth of external memory with major garbage
 * collections: at replication rates that was a third of the relay's CPU. A block the log has dropped is reused only
 * once nothing can still read it: every holder (a replica socket with writes in flight, the disk log's write in
 * flight) reports the range of offsets it may still read from memory, and a retired block waits until it lies
 * outside all of them (a replica stopped at its socket holds the views it was handed last, not what came after).
 * Blocks are never reused across histories (offsets restart), and the pool holds at most `cap` blocks, retired and
 * free together: a holder stuck behind makes the log allocate, never hold more memory. Blocks made ahead of the
 * stream (addPrefaulted(), up to the log's memory limit) are taken first and are not counted against the cap.
 */
import { prefault } from '../util/prefault.js';

/** Something that may still read log memory it was handed after the call that handed it returned. */
export interface LogHolder {
  /** The first offset whose memory it may still read; Infinity when none. */
  readonly heldFrom: number;
  /** The last offset whose memory it may still read (it was handed nothing past it). */
  readonly heldTo: number;
}

interface Retired {
  readonly buf: Buffer;
  /** Offsets of the block's first and last bytes. */
  readonly start: number;
  readonly end: number;
}

export class BlockPool {
  readonly size: number;
  readonly #cap: number;
  #free: Buffer[] = [];
  /** Made by addPrefaulted(), never used: taken first, outside the cap (they count in the log's limit instead). */
  #prefaulted: Buffer[] = [];
  /** Dropped by the log, oldest first: reusable once no holder's range covers start..end. */
  #retired: Retired[] = [];
  /** The owner's holders (the log's: every pool of log memory answers to the same ones). */
  readonly #holders: ReadonlySet<LogHolder>;
  readonly stats = { allocated: 0, reused: 0, discarded: 0, prefaulted: 0 };

  constructor(size: number, cap: number, holders: ReadonlySet<LogHolder>) {
    this.size = size;
    this.#cap = Math.max(1, cap);
    this.#holders = holders;
  }

  /** Bytes of the blocks ready for take(). */
  get freeBytes(): number {
    return (this.#free.length + this.#prefaulted.length) * this.size;
  }

  /**
   * `count` more free blocks, their pages backed now for user space and for the kernel (util/prefault.ts): the
   * socket's reads into a fresh block and the scanner's reads of it would otherwise pay a trap per page on the hot
   * path.
   */
  addPrefaulted(count: number): void {
    const bufs: Buffer[] = [];
    for (let i = 0; i < count; i++) bufs.push(Buffer.allocUnsafeSlow(this.size));
    prefault(bufs);
    for (const buf of bufs) this.#prefaulted.push(buf);
    this.stats.prefaulted += count;
  }

  /** A block of `size` bytes whose contents nobody reads any more. */
  take(): Buffer {
    const fresh = this.#prefaulted.pop();
    if (fresh !== undefined) return fresh;
    if (this.#free.length === 0) this.#release();
    const buf = this.#free.pop();
    if (buf !== undefined) {
      this.stats.reused++;
      return buf;
    }
    this.stats.allocated++;
    return Buffer.allocUnsafeSlow(this.size);
  }

  /** The log dropped `buf` (a block from take()), which held offsets start..end. */
  retire(buf: Buffer, start: number, end: number): void {
    if (buf.length !== this.size) return;
    this.#retired.push({ buf, start, end });
    if (this.#retired.length + this.#free.length <= this.#cap) return;
    // Over the cap: what is held longest goes to the garbage collector instead, else a free block.
    this.#release();
    while (this.#retired.length + this.#free.length > this.#cap) {
      if (this.#retired.length > 0) this.#retired.shift();
      else this.#free.pop();
      this.stats.discarded++;
    }
  }

  /** A new history starts (offsets restart): retired blocks are left to the garbage collector. */
  reset(): void {
    this.stats.discarded += this.#retired.length;
    this.#retired = [];
  }

  /** Moves the retired blocks no holder can still read to the free list. */
  #release(): void {
    if (this.#retired.length === 0) return;
    const ranges: number[] = [];
    for (const h of this.#holders) {
      const from = h.heldFrom;
      if (from !== Infinity) ranges.push(from, h.heldTo);
    }
    const kept: Retired[] = [];
    for (const r of this.#retired) {
      let held = false;
      for (let i = 0; i < ranges.length && !held; i += 2) held = r.start <= ranges[i + 1]! && r.end >= ranges[i]!;
      if (held) kept.push(r);
      else this.#free.push(r.buf);
    }
    this.#retired = kept;
  }
}
