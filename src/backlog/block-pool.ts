/**
 * Reuses the log's read blocks (the buffers the upstream socket reads into). A fresh 1 MiB buffer costs a page fault
 * per 4 KiB when the kernel first writes into it, and V8 answers the growth of external memory with major garbage
 * collections: at replication rates that was a third of the relay's CPU. A block the log has dropped is reused only
 * once nothing can still read it: every holder (a replica socket with writes in flight, the disk log's write in
 * flight) reports the first offset it may still read from memory, and a retired block waits until all of them are
 * past its last byte. Blocks are never reused across histories (offsets restart), and the pool holds at most `cap`
 * blocks, retired and free together: a holder stuck far behind makes the log allocate, never hold more memory.
 */

/** Something that may still read log memory it was handed after the call that handed it returned. */
export interface LogHolder {
  /** The first offset whose memory it may still read; Infinity when none. */
  readonly heldFrom: number;
}

interface Retired {
  readonly buf: Buffer;
  /** Offset of the block's last byte. */
  readonly end: number;
}

export class BlockPool {
  readonly size: number;
  readonly #cap: number;
  #free: Buffer[] = [];
  /** Dropped by the log, oldest first: reusable once every holder is past `end`. */
  #retired: Retired[] = [];
  readonly #holders = new Set<LogHolder>();
  readonly stats = { allocated: 0, reused: 0, discarded: 0 };

  constructor(size: number, cap: number) {
    this.size = size;
    this.#cap = Math.max(1, cap);
  }

  addHolder(h: LogHolder): void {
    this.#holders.add(h);
  }
  removeHolder(h: LogHolder): void {
    this.#holders.delete(h);
  }

  /** A block of `size` bytes whose contents nobody reads any more. */
  take(): Buffer {
    if (this.#free.length === 0) this.#release();
    const buf = this.#free.pop();
    if (buf !== undefined) {
      this.stats.reused++;
      return buf;
    }
    this.stats.allocated++;
    return Buffer.allocUnsafeSlow(this.size);
  }

  /** The log dropped `buf` (a block from take()), whose last byte has offset `end`. */
  retire(buf: Buffer, end: number): void {
    if (buf.length !== this.size) return;
    this.#retired.push({ buf, end });
    // Over the cap: the oldest retired block goes to the garbage collector instead.
    if (this.#retired.length + this.#free.length > this.#cap) {
      this.#retired.shift();
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
    let held = Infinity;
    for (const h of this.#holders) {
      const from = h.heldFrom;
      if (from < held) held = from;
    }
    let i = 0;
    while (i < this.#retired.length && this.#retired[i]!.end < held) this.#free.push(this.#retired[i++]!.buf);
    if (i > 0) this.#retired = this.#retired.slice(i);
  }
}
