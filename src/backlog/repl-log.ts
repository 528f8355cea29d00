/**
 * The shared replication log: the stream bytes after the snapshot, with offsets, held once and read by every
 * downstream replica through its own cursor (Redis 7's shared replBufBlock list). Large socket chunks are kept
 * as they arrived (no copy); small ones are packed into 16 KiB blocks so a slow trickle of tiny writes does not
 * cost an object per write. Bytes once appended never change, so a view handed to a socket stays valid.
 *
 * Offsets follow Redis: `endOffset` is master_repl_offset (the offset of the last byte held); the first byte
 * held has offset `firstOffset` (backlog_first_byte_offset). An empty log has firstOffset = endOffset + 1.
 */
const PACK_BLOCK_SIZE = 16 * 1024;
const PACK_THRESHOLD = 4 * 1024;

interface Block {
  buf: Buffer;
  /** Offset of buf[0]. */
  start: number;
  /** Bytes of buf in use; only the tail block can grow. */
  used: number;
  packed: boolean;
}

/** Anything that holds a position in the log: a replica's cursor, a snapshot being fetched. */
export interface LogReader {
  /** The offset of the last byte this reader has consumed. */
  readonly offset: number;
}

export class ReplLog {
  #blocks: Block[] = [];
  #head = 0;
  #firstOffset = 1;
  #endOffset = 0;
  #size = 0;
  #limit: number;
  #readers = new Set<LogReader>();
  #onAppend: Array<() => void> = [];

  constructor(limit: number, offset = 0) {
    this.#limit = limit;
    this.reset(offset);
  }

  get firstOffset(): number {
    return this.#firstOffset;
  }
  get endOffset(): number {
    return this.#endOffset;
  }
  /** Bytes held (backlog_histlen). */
  get size(): number {
    return this.#size;
  }
  get limit(): number {
    return this.#limit;
  }
  get readers(): ReadonlySet<LogReader> {
    return this.#readers;
  }

  /** Start a new history: the next appended byte has offset `offset + 1`. */
  reset(offset: number): void {
    this.#blocks = [];
    this.#head = 0;
    this.#size = 0;
    this.#endOffset = offset;
    this.#firstOffset = offset + 1;
  }

  /** Does the log hold every byte from `offset` on (offset may be endOffset + 1: nothing to send yet)? */
  holds(offset: number): boolean {
    return offset >= this.#firstOffset && offset <= this.#endOffset + 1;
  }

  addReader(reader: LogReader): void {
    this.#readers.add(reader);
  }
  removeReader(reader: LogReader): void {
    this.#readers.delete(reader);
  }

  /** Called after every append; listeners must be cheap (they schedule writes). */
  onAppend(fn: () => void): () => void {
    this.#onAppend.push(fn);
    return () => {
      this.#onAppend = this.#onAppend.filter((f) => f !== fn);
    };
  }

  append(chunk: Buffer): void {
    const len = chunk.length;
    if (len === 0) return;
    const tail = this.#blocks.length > this.#head ? this.#blocks[this.#blocks.length - 1] : undefined;
    let newBlock = true;
    if (len < PACK_THRESHOLD) {
      if (tail && tail.packed && tail.buf.length - tail.used >= len) {
        chunk.copy(tail.buf, tail.used);
        tail.used += len;
        newBlock = false;
      } else {
        const buf = Buffer.allocUnsafeSlow(PACK_BLOCK_SIZE);
        chunk.copy(buf, 0);
        this.#blocks.push({ buf, start: this.#endOffset + 1, used: len, packed: true });
      }
    } else {
      this.#blocks.push({ buf: chunk, start: this.#endOffset + 1, used: len, packed: false });
    }
    this.#endOffset += len;
    this.#size += len;
    // Trimming scans the readers, so do it per new block, not per append.
    if (newBlock && this.#size > this.#limit) this.trim();
    for (const fn of this.#onAppend) fn();
  }

  /**
   * A view of held bytes starting at `offset`, at most up to the end of one block. Returns null when
   * offset > endOffset (nothing new). Throws RangeError when the log no longer holds `offset`.
   */
  read(offset: number): Buffer | null {
    if (offset > this.#endOffset) return null;
    if (offset < this.#firstOffset) throw new RangeError(`offset ${offset} is before the log start ${this.#firstOffset}`);
    const block = this.#find(offset);
    return block.buf.subarray(offset - block.start, block.used);
  }

  /** Drops head blocks beyond the size limit that no reader still needs. */
  trim(): void {
    let minNeeded = Infinity;
    for (const r of this.#readers) if (r.offset + 1 < minNeeded) minNeeded = r.offset + 1;
    while (this.#head < this.#blocks.length - 1) {
      const block = this.#blocks[this.#head]!;
      if (this.#size - block.used < this.#limit) break;
      if (block.start + block.used > minNeeded) break;
      this.#blocks[this.#head] = undefined as unknown as Block;
      this.#head++;
      this.#size -= block.used;
      this.#firstOffset = block.start + block.used;
    }
    // Compact the array now and then so dropped slots do not accumulate.
    if (this.#head > 1024 && this.#head * 2 > this.#blocks.length) {
      this.#blocks = this.#blocks.slice(this.#head);
      this.#head = 0;
    }
  }

  #find(offset: number): Block {
    let lo = this.#head;
    let hi = this.#blocks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.#blocks[mid]!.start <= offset) lo = mid;
      else hi = mid - 1;
    }
    return this.#blocks[lo]!;
  }
}
