/**
 * The shared replication log: the stream bytes after the snapshot, with offsets, held once and read by every
 * downstream replica through its own cursor (Redis 7's shared replBufBlock list). The upstream socket reads straight
 * into the tail block (reserve() / commit(): no allocation and no copy per read). Chunks appended from elsewhere
 * are kept as they arrived when large (no copy); small ones are packed into 16 KiB blocks so a slow trickle of tiny
 * writes does not cost an object per write. Bytes once appended never change while the log holds them. A dropped
 * read block is reused (BlockPool) only once no holder of views (addHolder) may still read it; other blocks go to
 * the garbage collector.
 *
 * Offsets follow Redis: `endOffset` is master_repl_offset (the offset of the last byte held); the first byte
 * held has offset `firstOffset` (backlog_first_byte_offset). An empty log has firstOffset = endOffset + 1.
 */
import type { DiskLog, DiskLogSource } from './disk-log.js';
import { DiskChunkCache } from './disk-chunk-cache.js';
import { BlockPool, type LogHolder } from './block-pool.js';
import { LogRangeError } from '../errors.js';

const PACK_BLOCK_SIZE = 16 * 1024;
const PACK_THRESHOLD = 4 * 1024;
/** Read blocks (reserve()): at most this big, and an eighth of the memory limit, but no smaller than a packed block. */
const READ_BLOCK_MAX = 1024 * 1024;

interface Block {
  buf: Buffer;
  /** Offset of buf[0]. */
  start: number;
  /** Bytes of buf in use; only the tail block can grow. */
  used: number;
  packed: boolean;
  /** A read block (reserve()): sockets read into its free space. */
  read: boolean;
  /** The offset of the last command boundary known inside this block (the last byte of a command), or -1. */
  boundary: number;
}

/** Anything that holds a position in the log: a replica's cursor, a snapshot being fetched. */
export interface LogReader {
  /** The offset of the last byte this reader has consumed. */
  readonly offset: number;
}

export class ReplLog implements DiskLogSource {
  #blocks: Block[] = [];
  #head = 0;
  #firstOffset = 1;
  #endOffset = 0;
  /** The last command boundary appended (offset of a command's last byte). */
  #boundary = 0;
  #size = 0;
  #limit: number;
  #readers = new Set<LogReader>();
  #onAppend: Array<(bytes: number) => void> = [];
  #disk: DiskLog | null = null;
  readonly #diskWritten = new Set<() => void>();
  #diskCache: DiskChunkCache | null = null;
  /** The space handed out by reserve(), until commit(), an append or a reset. */
  #reserved: Buffer | null = null;
  readonly #pool: BlockPool;
  /** Whoever may read views after the call that handed them out returned (addHolder): both pools answer to them. */
  readonly #holders = new Set<LogHolder>();

  constructor(limit: number, offset = 0) {
    this.#limit = limit;
    const readBlock = Math.max(PACK_BLOCK_SIZE, Math.min(READ_BLOCK_MAX, 2 ** Math.floor(Math.log2(Math.max(1, limit / 8)))));
    // Up to an eighth of the memory limit more (at least 4 blocks) waits for reuse.
    this.#pool = new BlockPool(readBlock, Math.max(4, Math.floor(limit / 8 / readBlock)), this.#holders);
    this.reset(offset);
  }

  /**
   * `h` may read views of log memory after the call that handed them out returned (a socket write in flight): the
   * log does not reuse the memory of offsets h.heldFrom..h.heldTo. Views read synchronously need no holder.
   */
  addHolder(h: LogHolder): void {
    this.#holders.add(h);
  }
  removeHolder(h: LogHolder): void {
    this.#holders.delete(h);
  }
  /** Read blocks allocated, reused, left to the garbage collector, and made by prefault(). */
  get blockStats(): { readonly allocated: number; readonly reused: number; readonly discarded: number; readonly prefaulted: number } {
    return this.#pool.stats;
  }

  /**
   * Backs the memory tail before the stream needs it (log.memory-prefault): makes read blocks with their pages
   * written until what the log holds and the blocks made reach the memory limit, or `max` bytes are made. The
   * memory is the same the tail takes after its first log.memory bytes; written here, the first stream does not
   * pay for it. Returns the blocks made.
   */
  prefault(max = Infinity): number {
    const pool = this.#pool;
    let made = 0;
    while (this.#size + pool.freeBytes + (made + 1) * pool.size <= this.#limit && (made + 1) * pool.size <= max) made++;
    pool.addPrefaulted(made);
    return made;
  }

  /** The first byte held, in memory or on disk (backlog_first_byte_offset). */
  get firstOffset(): number {
    const d = this.#disk;
    // The disk part and the memory part are contiguous: memory drops only bytes the disk holds (trim()).
    return d && d.active && !d.empty ? Math.min(d.firstOffset, this.#firstOffset) : this.#firstOffset;
  }
  /** The last command boundary held (a replica starting here starts at a whole command). */
  get lastBoundary(): number {
    return this.#boundary;
  }
  /** The first byte held in memory; bytes before it are read with readDisk(). */
  get memFirstOffset(): number {
    return this.#firstOffset;
  }
  get disk(): DiskLog | null {
    return this.#disk;
  }

  /** `fn` runs after each write of the disk log (its writtenOffset grew); returns its removal. */
  onDiskWritten(fn: () => void): () => void {
    this.#diskWritten.add(fn);
    return () => this.#diskWritten.delete(fn);
  }

  /**
   * Backs the log with segment files: bytes leave memory only once written to disk, and readers behind the
   * memory tail read from disk instead of holding memory.
   */
  attachDisk(disk: DiskLog): void {
    this.#disk = disk;
    this.addHolder(disk);
    disk.onWritten = () => {
      if (this.#size > this.#limit) this.trim();
      for (const fn of this.#diskWritten) fn();
    };
    this.#diskCache = new DiskChunkCache(
      (offset, max, into) => disk.read(offset, max, into),
      () => disk.firstOffset,
      () => Math.min(disk.writtenOffset, this.memFirstOffset - 1),
      this.#holders,
    );
    disk.attach(this);
  }

  /** Disk reads shared between readers, and the blocks they were read into (see DiskChunkCache). */
  get diskCacheStats(): { hits: number; reads: number; bytesRead: number; blocksAllocated: number; blocksReused: number } {
    const c = this.#diskCache;
    if (c === null) return { hits: 0, reads: 0, bytesRead: 0, blocksAllocated: 0, blocksReused: 0 };
    return { ...c.stats, blocksAllocated: c.blockStats.allocated, blocksReused: c.blockStats.reused };
  }

  /** Starts a new history (`epoch`), on disk too. */
  async resetHistory(offset: number, epoch: number): Promise<void> {
    this.reset(offset);
    await this.#disk?.reset(offset, epoch);
  }

  /**
   * Bytes from `offset`, which memory no longer holds: a view of a disk chunk another reader may already have read,
   * or a promise that settles once one is read (LogCursor.peek).
   */
  diskView(offset: number, want?: number): Buffer | Promise<void> {
    if (!this.#disk?.holds(offset) || !this.#diskCache) return Promise.reject(new LogRangeError(offset, `offset ${offset} is before the log start ${this.firstOffset}`));
    return this.#diskCache.view(offset, want);
  }

  /**
   * Whether a reader at `offset` is covered by the disk log (written, or queued for it): it then holds no memory,
   * since memory keeps only what the disk has not taken yet.
   */
  onDisk(offset: number): boolean {
    const d = this.#disk;
    return d !== null && d.active && offset >= d.firstOffset;
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
    this.#diskCache?.clear();
    // A read may still land in the reserved space (a socket that has not seen the reset): commit() then copies.
    this.#reserved = null;
    this.#pool.reset();
    this.#blocks = [];
    this.#head = 0;
    this.#size = 0;
    this.#endOffset = offset;
    this.#boundary = offset;
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

  /** Called after every append, with the bytes it added; listeners must be cheap (they schedule writes). */
  onAppend(fn: (bytes: number) => void): () => void {
    this.#onAppend.push(fn);
    return () => {
      this.#onAppend = this.#onAppend.filter((f) => f !== fn);
    };
  }

  /**
   * `boundary`: offset of the last whole command seen (for disk recovery); -1 when unknown. `chunk` is kept (large)
   * or copied (small): the caller must not change it afterwards.
   */
  append(chunk: Buffer, boundary = -1): void {
    const len = chunk.length;
    if (len === 0) return;
    const start = this.#endOffset + 1;
    const tail = this.#tail();
    // Reserved space may be written by a read in flight: an append never goes there, and voids the reservation.
    const room = tail && tail.packed && this.#reserved === null ? tail.buf.length - tail.used : 0;
    this.#reserved = null;
    let block: Block;
    let newBlock = true;
    if (len < PACK_THRESHOLD) {
      if (tail && room >= len) {
        chunk.copy(tail.buf, tail.used);
        tail.used += len;
        block = tail;
        newBlock = false;
      } else {
        const buf = Buffer.allocUnsafeSlow(PACK_BLOCK_SIZE);
        chunk.copy(buf, 0);
        block = { buf, start, used: len, packed: true, read: false, boundary: -1 };
        this.#blocks.push(block);
      }
    } else {
      block = { buf: chunk, start, used: len, packed: false, read: false, boundary: -1 };
      this.#blocks.push(block);
    }
    this.#appended(block, len, boundary, newBlock);
  }

  /**
   * Free space at the tail for a socket to read into, at least `min` bytes (a new read block when the tail has less)
   * and at most `max`. The bytes that arrive there become stream bytes with commit(); until then nothing else is
   * written there.
   */
  reserve(min = 64 * 1024, max = Infinity): Buffer {
    let tail = this.#tail();
    if (!tail || !tail.read || tail.buf.length - tail.used < Math.min(min, this.#pool.size)) {
      tail = { buf: this.#pool.take(), start: this.#endOffset + 1, used: 0, packed: true, read: true, boundary: -1 };
      this.#blocks.push(tail);
    }
    this.#reserved = tail.buf.subarray(tail.used, Math.min(tail.buf.length, tail.used + max));
    return this.#reserved;
  }

  /**
   * The first `n` bytes of `space` (from reserve()) are the next stream bytes. They stay where they are, unless
   * `space` is no longer reserved (something was appended, or the log was reset, meanwhile): then they are copied.
   */
  commit(space: Buffer, n: number, boundary = -1): void {
    if (n <= 0) return;
    if (space !== this.#reserved) {
      this.append(Buffer.from(space.subarray(0, n)), boundary);
      return;
    }
    this.#reserved = null;
    const tail = this.#tail()!;
    tail.used += n;
    this.#appended(tail, n, boundary, tail.used === n);
  }

  #appended(block: Block, len: number, boundary: number, newBlock: boolean): void {
    if (boundary >= block.start - 1 && boundary > block.boundary) block.boundary = boundary;
    if (boundary > this.#boundary) this.#boundary = boundary;
    this.#endOffset += len;
    this.#size += len;
    this.#disk?.notify();
    // Trimming scans the readers, so do it per new block, not per append.
    if (newBlock && this.#size > this.#limit) this.trim();
    for (const fn of this.#onAppend) fn(len);
  }

  #tail(): Block | undefined {
    return this.#blocks.length > this.#head ? this.#blocks[this.#blocks.length - 1] : undefined;
  }

  /** For the disk log: a view from `offset` and the last command boundary known in its block. */
  view(offset: number): { buf: Buffer; boundary: number } | null {
    if (offset > this.#endOffset || offset < this.#firstOffset) return null;
    const block = this.#find(offset);
    return { buf: block.buf.subarray(offset - block.start, block.used), boundary: block.boundary };
  }

  /** The first known command boundary at or after `offset` that memory holds the bytes after. */
  boundaryFrom(offset: number): number | null {
    if (this.#boundary < Math.max(offset, this.#firstOffset - 1)) return null;
    for (let i = offset < this.#firstOffset ? this.#head : this.#findIndex(offset); i < this.#blocks.length; i++) {
      const b = this.#blocks[i]!.boundary;
      if (b >= offset && b >= this.#firstOffset - 1) return b;
    }
    return this.#boundary;
  }

  /**
   * A view of held bytes starting at `offset`, at most up to the end of one block. Returns null when
   * offset > endOffset (nothing new). Throws RangeError when the log no longer holds `offset`.
   */
  read(offset: number): Buffer | null {
    if (offset > this.#endOffset) return null;
    if (offset < this.#firstOffset) throw new LogRangeError(offset, `offset ${offset} is before the log start ${this.#firstOffset}`);
    const block = this.#find(offset);
    return block.buf.subarray(offset - block.start, block.used);
  }

  /**
   * Trims when over the limit, for the owner's timer (once a second). Appends trim only as a block begins: readers that
   * were behind then, and have caught up since, would leave the log over its limit until the next block began, with a
   * quiet stream for good (a replica that lagged through a burst left 14 MB held under a 2 MB log.memory).
   */
  settle(): void {
    if (this.#size > this.#limit) this.trim();
  }

  /**
   * Drops head blocks beyond the size limit. A block goes when the disk log holds all of it (a reader behind the
   * memory tail then reads from disk), or when no reader still needs it (memory-only: a lagging reader pins memory,
   * and the replica lag limits bound that). Bytes the disk has not taken stay while the disk log is active.
   */
  trim(): void {
    let readersNeed = Infinity;
    for (const r of this.#readers) if (r.offset + 1 < readersNeed) readersNeed = r.offset + 1;
    const d = this.#disk;
    const diskActive = d !== null && d.active;
    const diskFirst = diskActive ? d.firstOffset : Infinity;
    const diskEnd = diskActive ? d.writtenOffset : Infinity;
    while (this.#head < this.#blocks.length - 1) {
      const block = this.#blocks[this.#head]!;
      if (this.#size - block.used < this.#limit) break;
      const end = block.start + block.used - 1;
      if (end > diskEnd) break;
      if (!(block.start >= diskFirst) && end >= readersNeed) break;
      this.#blocks[this.#head] = undefined as unknown as Block;
      this.#head++;
      this.#size -= block.used;
      this.#firstOffset = block.start + block.used;
      if (block.read) this.#pool.retire(block.buf, block.start, end);
    }
    // Compact the array now and then so dropped slots do not accumulate.
    if (this.#head > 1024 && this.#head * 2 > this.#blocks.length) {
      this.#blocks = this.#blocks.slice(this.#head);
      this.#head = 0;
    }
  }

  #find(offset: number): Block {
    return this.#blocks[this.#findIndex(offset)]!;
  }

  #findIndex(offset: number): number {
    let lo = this.#head;
    let hi = this.#blocks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.#blocks[mid]!.start <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}
