import type { LogReader, ReplLog } from './repl-log.js';

/**
 * One reader's position in the replication log, for every kind of reader (downstream replicas, /stream
 * subscribers). `peek()` hands out the bytes after the position without copying: a view of memory, or of a disk
 * chunk that readers at nearby offsets share (one disk read serves them all). A pinning cursor is registered with
 * the log, which then keeps what it has not read in memory when no disk log covers it.
 */
export class LogCursor implements LogReader {
  #log: ReplLog;
  #offset: number;
  #pinned: boolean;
  #closed = false;

  /** `offset`: the last byte already consumed (the next one read is offset + 1). */
  constructor(log: ReplLog, offset: number, opts: { pin?: boolean } = {}) {
    this.#log = log;
    this.#offset = offset;
    this.#pinned = opts.pin ?? false;
    if (this.#pinned) log.addReader(this);
  }

  /** The last byte consumed. */
  get offset(): number {
    return this.#offset;
  }
  /** Bytes held after the position. */
  get behind(): number {
    return this.#log.endOffset - this.#offset;
  }
  /** The log no longer holds the next byte: this reader cannot continue. */
  get lost(): boolean {
    return this.#offset + 1 < this.#log.firstOffset;
  }
  /** The next byte is on disk only (a read is needed, or was shared by another reader). */
  get onDisk(): boolean {
    return this.#offset + 1 < this.#log.memFirstOffset;
  }

  /** Moves the position (a replica's offset after a full sync, a subscriber's seek). */
  seek(offset: number): void {
    this.#offset = offset;
  }

  /**
   * The bytes after the position: a view (at most one block or disk chunk), or null when there is nothing new, or
   * a promise when they must be read from disk first (peek again once it settles; it rejects when the read failed).
   * The caller checks `lost` first. `want`: the disk-log bytes the caller may take next (DiskChunkCache reads ahead
   * as far).
   */
  peek(want?: number): Buffer | Promise<void> | null {
    const at = this.#offset + 1;
    if (at > this.#log.endOffset) return null;
    if (at >= this.#log.memFirstOffset) return this.#log.read(at);
    return this.#log.diskView(at, want);
  }

  /** Consumes `n` bytes. */
  advance(n: number): void {
    this.#offset += n;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#pinned) this.#log.removeReader(this);
  }
}
