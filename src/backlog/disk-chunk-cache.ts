/** Bytes per disk read shared between readers. */
const CHUNK = 1024 * 1024;
/** Chunks kept (16 MiB). */
const MAX_CHUNKS = 16;

/**
 * Recently read chunks of the disk log, shared by every reader behind the memory tail: a hundred replicas draining
 * the same history cost one disk read per chunk, not a hundred. Reads start at chunk-aligned offsets so that
 * readers a few bytes apart ask for the same chunk; a read in flight is shared too. The bytes at an offset never
 * change within a history, so entries need clearing only when a new history starts.
 */
export class DiskChunkCache {
  #read: (offset: number, max: number) => Promise<Buffer>;
  #first: () => number;
  #entries: Array<{ start: number; buf: Buffer }> = [];
  #inflight = new Map<number, Promise<void>>();
  #gen = 0;
  readonly stats = { hits: 0, reads: 0, bytesRead: 0 };

  /** `first`: the first offset the disk holds (an aligned start before it cannot be read). */
  constructor(read: (offset: number, max: number) => Promise<Buffer>, first: () => number) {
    this.#read = read;
    this.#first = first;
  }

  /** A view from `at` when a chunk holding it is cached, else a promise that settles once one is (or the read failed). */
  view(at: number): Buffer | Promise<void> {
    const entries = this.#entries;
    for (let i = entries.length - 1; i >= 0; i--) {
      const e = entries[i]!;
      if (at >= e.start && at < e.start + e.buf.length) {
        this.stats.hits++;
        return e.buf.subarray(at - e.start);
      }
    }
    for (const [start, p] of this.#inflight) if (at >= start && at < start + CHUNK) return p;
    // Aligned, so that neighbours share (but not before the disk's first byte); a chunk cut short (a segment ends
    // inside it) is continued from `at`.
    let start = Math.max(Math.floor((at - 1) / CHUNK) * CHUNK + 1, Math.min(at, this.#first()));
    if (entries.some((e) => e.start === start)) start = at;
    const gen = this.#gen;
    this.stats.reads++;
    const p = this.#read(start, CHUNK - (start - 1) % CHUNK)
      .then((buf) => {
        if (gen !== this.#gen || buf.length === 0) return;
        this.stats.bytesRead += buf.length;
        this.#entries.push({ start, buf });
        if (this.#entries.length > MAX_CHUNKS) this.#entries.shift();
      })
      .finally(() => {
        if (this.#inflight.get(start) === p) this.#inflight.delete(start);
      });
    this.#inflight.set(start, p);
    return p;
  }

  /** A new history: offsets mean other bytes now. */
  clear(): void {
    this.#gen++;
    this.#entries = [];
    this.#inflight.clear();
  }
}
