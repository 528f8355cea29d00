/**
 * The shared replication log: the stream bytes after the snapshot, with offsets, held once and read by every
 * downstream replica through its own cursor (Redis 7's shared replBufBlock list). Large socket chunks are kept
 * as they arrived (no copy); small ones are packed into 16 KiB blocks so a slow trickle of tiny writes does not
 * cost an object per write. Bytes once appended never change, so a view handed to a socket stays valid.
 *
 * Offsets follow Redis: `endOffset` is master_repl_offset (the offset of the last byte held); the first byte
 * held has offset `firstOffset` (backlog_first_byte_offset). An empty log has firstOffset = endOffset + 1.
 */
import type { DiskLog } from './disk-log.js';

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
  #disk: DiskLog | null = null;

  constructor(limit: number, offset = 0) {
    this.#limit = limit;
    this.reset(offset);
  }

  /** The first byte held, in memory or on disk (backlog_first_byte_offset). */
  get firstOffset(): number {
    const d = this.#disk;
    return d && !d.empty ? Math.min(d.firstOffset, this.#firstOffset) : this.#firstOffset;
  }
  /** The first byte held in memory; bytes before it are read with readDisk(). */
  get memFirstOffset(): number {
    return this.#firstOffset;
  }
  get disk(): DiskLog | null {
    return this.#disk;
  }

  /**
   * Backs the log with segment files: bytes leave memory only once written to disk, and readers behind the
   * memory tail read from disk instead of holding memory.
   */
  attachDisk(disk: DiskLog): void {
    this.#disk = disk;
    disk.onWritten = () => {
      if (this.#size > this.#limit) this.trim();
    };
  }

  /** Starts a new history on disk too. */
  async resetHistory(offset: number): Promise<void> {
    await this.#disk?.reset(offset);
    this.reset(offset);
  }

  /** Reads bytes from `offset` that are no longer in memory (up to 1 MiB). */
  readDisk(offset: number): Promise<Buffer> {
    if (!this.#disk) return Promise.reject(new RangeError(`offset ${offset} is before the log start ${this.#firstOffset}`));
    return this.#disk.read(offset, Math.min(1024 * 1024, this.#firstOffset - offset));
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
    return offset >= this.firstOffset && offset <= this.#endOffset + 1;
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

  /** `boundary`: offset of the last whole command seen (for disk recovery); -1 when unknown. */
  append(chunk: Buffer, boundary = -1): void {
    const len = chunk.length;
    if (len === 0) return;
    this.#disk?.append(chunk, boundary);
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

  /**
   * Drops head blocks beyond the size limit that no reader still needs. With a disk log, readers do not hold
   * memory (they read behind the tail from disk); only bytes not yet written to disk stay.
   */
  trim(): void {
    let minNeeded = Infinity;
    if (this.#disk) minNeeded = this.#disk.writtenOffset + 1;
    else for (const r of this.#readers) if (r.offset + 1 < minNeeded) minNeeded = r.offset + 1;
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
