import { BlockPool, type LogHolder } from './block-pool.js';

/** Bytes per disk read shared between readers. */
const CHUNK = 1024 * 1024;
/** Chunks kept (16 MiB). */
const MAX_CHUNKS = 16;
/**
 * Chunks read ahead of the one a reader is in: AHEAD, or as many as the bytes it may take next (up to MAX_AHEAD).
 * The disk log is written past the page cache (O_DIRECT), so a read behind the memory tail goes to the device:
 * reading ahead lets the device work while the sockets send. A reader handed megabytes a flush (fanout.ts
 * DISK_FLUSH_MAX: few replicas on the disk) with two chunks ahead waited for a read every 3 MiB, and took less than
 * 1 MiB a turn coming in. Not four for all: a hundred replicas reading far apart evicted each other's chunks.
 */
const AHEAD = 2;
const MAX_AHEAD = 4;

/** The first offset of the aligned chunk that holds `at`. */
const chunkStart = (at: number): number => Math.floor((at - 1) / CHUNK) * CHUNK + 1;

/**
 * Recently read chunks of the disk log, shared by every reader behind the memory tail: a hundred replicas draining
 * the same history cost one disk read per chunk, not a hundred. Reads start at chunk-aligned offsets so that
 * readers a few bytes apart ask for the same chunk; a read in flight is shared too, and the next chunks are read
 * ahead. The bytes at an offset never change within a history, so entries need clearing only when a new history
 * starts.
 *
 * Chunks are read into blocks that are reused (a BlockPool answering to the log's holders): a dropped chunk's block
 * takes a later chunk once no holder (a replica socket with writes in flight) may still read its offsets. A fresh
 * 1 MiB buffer per read cost ~1 ms of page faults (a VM traps on each page's first touch): ten times the read.
 */
export class DiskChunkCache {
  #read: (offset: number, max: number, into: Buffer) => Promise<Buffer>;
  #first: () => number;
  #last: () => number;
  /** `buf`: what was read, a view of `block` (the pool's). */
  #entries: Array<{ start: number; buf: Buffer; block: Buffer }> = [];
  readonly #pool: BlockPool;
  #inflight = new Map<number, Promise<void>>();
  /** Chunks whose read ahead failed: not read ahead again in this history (only a reader that needs one reads it). */
  #aheadFailed = new Set<number>();
  #gen = 0;
  readonly stats = { hits: 0, reads: 0, bytesRead: 0 };

  /**
   * `read(offset, max, into)`: up to `max` bytes from `offset` into `into`, a view of them returned. `first`: the
   * first offset the disk holds (an aligned start before it cannot be read); `last`: the last offset worth reading
   * ahead (on disk, and not in memory: readers take those from memory). `holders`: who may still read views handed
   * out (LogHolder), by offset.
   */
  constructor(
    read: (offset: number, max: number, into: Buffer) => Promise<Buffer>,
    first: () => number,
    last: () => number,
    holders: ReadonlySet<LogHolder> = new Set(),
  ) {
    this.#read = read;
    this.#first = first;
    this.#last = last;
    // As many blocks again as are cached and read ahead may wait for their holders or a next chunk (20 MiB, kept
    // once a drain is over); past that, dropped blocks go to the garbage collector.
    this.#pool = new BlockPool(CHUNK, MAX_CHUNKS + MAX_AHEAD, holders);
  }

  /** Chunk blocks allocated, reused and left to the garbage collector. */
  get blockStats(): { readonly allocated: number; readonly reused: number; readonly discarded: number } {
    return this.#pool.stats;
  }

  /**
   * A view from `at` when a chunk holding it is cached, else a promise that settles once one is (or the read failed);
   * the chunks after it are read ahead, as many as `want` bytes fill (AHEAD at least, MAX_AHEAD at most).
   */
  view(at: number, want = 0): Buffer | Promise<void> {
    const hit = this.#cached(at);
    if (hit !== null) this.stats.hits++;
    const got = hit ?? this.#inflightAt(at) ?? this.#fetch(at);
    this.#readAhead(at, Math.min(MAX_AHEAD, Math.max(AHEAD, Math.ceil(want / CHUNK))));
    return got;
  }

  /** A new history: offsets mean other bytes now. */
  clear(): void {
    this.#gen++;
    // Retired blocks hold the old history's offsets, which holders can no longer be matched against.
    this.#pool.reset();
    this.#entries = [];
    this.#inflight.clear();
    this.#aheadFailed.clear();
  }

  #cached(at: number): Buffer | null {
    const entries = this.#entries;
    for (let i = entries.length - 1; i >= 0; i--) {
      const e = entries[i]!;
      if (at >= e.start && at < e.start + e.buf.length) return e.buf.subarray(at - e.start);
    }
    return null;
  }

  #inflightAt(at: number): Promise<void> | null {
    for (const [start, p] of this.#inflight) if (at >= start && at < start + CHUNK) return p;
    return null;
  }

  /** Reads the chunk holding `at`; `ahead`: for no reader yet (a failure is remembered, see #aheadFailed). */
  #fetch(at: number, ahead = false): Promise<void> {
    // Aligned, so that neighbours share (but not before the disk's first byte); a chunk cut short (a segment ends
    // inside it) is continued from `at`.
    let start = Math.max(chunkStart(at), Math.min(at, this.#first()));
    if (this.#entries.some((e) => e.start === start)) start = at;
    const gen = this.#gen;
    this.stats.reads++;
    const block = this.#pool.take();
    const p = this.#read(start, CHUNK - ((start - 1) % CHUNK), block)
      .then(
        (buf) => {
          // A block no reader got a view of is simply dropped (the garbage collector takes it).
          if (gen !== this.#gen || buf.length === 0) return;
          this.stats.bytesRead += buf.length;
          this.#entries.push({ start, buf, block });
          if (this.#entries.length > MAX_CHUNKS) {
            const old = this.#entries.shift()!;
            this.#pool.retire(old.block, old.start, old.start + old.buf.length - 1);
          }
        },
        (err: unknown) => {
          // Before the read leaves #inflight: no view in between may start it again.
          if (ahead && gen === this.#gen) this.#aheadFailed.add(start);
          throw err;
        },
      )
      .finally(() => {
        if (this.#inflight.get(start) === p) this.#inflight.delete(start);
      });
    this.#inflight.set(start, p);
    return p;
  }

  /** Starts reading the `ahead` chunks after the one holding `at` that are neither cached nor being read. */
  #readAhead(at: number, ahead: number): void {
    const last = this.#last();
    for (let next = chunkStart(at) + CHUNK, k = 0; k < ahead && next <= last; next += CHUNK, k++) {
      if (next < this.#first() || this.#aheadFailed.has(next) || this.#cached(next) !== null || this.#inflightAt(next) !== null) continue;
      // A failed read ahead is no error: the reader that needs the chunk reads it again and gets the error.
      this.#fetch(next, true).catch(() => {});
    }
  }
}
