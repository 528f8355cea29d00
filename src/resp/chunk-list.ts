import { string2ll } from './integer.js';

/** A pushed chunk this small is copied onto the tail when bytes are already waiting (see push). */
const SMALL_CHUNK = 1024;
/**
 * Sizes of the buffer small chunks are gathered in: as large as the bytes waiting, from 256 bytes up to 16 KiB (Redis
 * reads a client's input 16 KiB at a time, PROTO_IOBUF_LEN), so a few bytes never hold a large buffer.
 */
const TAIL_MIN = 256;
const TAIL_MAX = 16 * 1024;
/** What take(0) returns: one shared empty Buffer, not one each (an empty Buffer has an ArrayBuffer of its own: ~280 bytes). */
const EMPTY = Buffer.alloc(0);
/** Heap bytes a pushed chunk costs besides its payload (its Buffer, ArrayBuffer and backing store: about 80 on Node 20). */
export const CHUNK_OVERHEAD = 96;

/**
 * Whether chunk[from, to) holds a NUL. Only there: searched to the chunk's end, each header of a pipeline scanned all
 * the commands after it, and 64 KiB of one-byte arguments took 30 ms to parse (12 MB/s).
 */
function hasNul(chunk: Buffer, from: number, to: number): boolean {
  if (to - from > 64) return chunk.subarray(from, to).indexOf(0) !== -1;
  for (let i = from; i < to; i++) if (chunk[i] === 0) return true;
  return false;
}

/**
 * The pushed chunks of one connection with a read cursor (undici `consume(n)`, node-redis decoder):
 * `take(n)` returns a subarray when the bytes lie in one chunk and copies only when they straddle chunks.
 *
 * Bytes stay retained from the "mark" (the start of the value being parsed) so a parser can report how
 * much an unfinished value holds and hand back everything not yet returned; `mark()` releases them.
 * Internal to `resp/`.
 */
export class ChunkList {
  #chunks: Buffer[] = [];
  /** stream offset of chunks[0][0] */
  #base = 0;
  /** the mark, inside chunks[0] */
  #markPos = 0;
  /** the cursor */
  #ci = 0;
  #pos = 0;
  /** bytes from the mark / from the cursor to the end */
  #retained = 0;
  #ahead = 0;
  // A failed indexOf() resumes here, so a line trickling in byte by byte is scanned once, not once per byte.
  #scanKey = -1;
  #scanBlocked = false;
  #scanCi = 0;
  #scanPos = 0;
  #scanDist = 0;
  /** The buffer small chunks are copied into, its first free byte, and the entry of #chunks that views it. */
  #tail: Buffer | null = null;
  #tailFill = 0;
  #tailStart = 0;
  #tailView: Buffer | null = null;

  /**
   * Appends a chunk. A small one arriving behind bytes still waiting (an unfinished request trickled in a few bytes
   * per read) is copied onto the tail instead of kept: every read is a Buffer of its own costing ~80 bytes besides
   * its payload, so a request sent one byte per packet held 80 times its size, uncounted.
   */
  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#retained += chunk.length;
    this.#ahead += chunk.length;
    if (chunk.length > SMALL_CHUNK || this.#chunks.length === 0) {
      this.#chunks.push(chunk);
      return;
    }
    for (let from = 0; from < chunk.length; ) {
      let grow = this.#tailView !== null && this.#chunks[this.#chunks.length - 1] === this.#tailView;
      if (this.#tail === null || this.#tailFill === this.#tail.length) {
        this.#tail = Buffer.allocUnsafeSlow(Math.min(TAIL_MAX, Math.max(TAIL_MIN, this.#retained)));
        this.#tailFill = 0;
        grow = false;
      }
      // A new entry starts in the free room: the bytes before it may still be viewed by arguments returned, and are
      // never written again. A growing entry covers the same bytes plus the new ones: offsets into it stay valid.
      if (!grow) this.#tailStart = this.#tailFill;
      const n = chunk.copy(this.#tail, this.#tailFill, from);
      this.#tailFill += n;
      from += n;
      this.#tailView = this.#tail.subarray(this.#tailStart, this.#tailFill);
      if (grow) this.#chunks[this.#chunks.length - 1] = this.#tailView;
      else this.#chunks.push(this.#tailView);
    }
  }

  /** Memory held: the bytes after the mark, each chunk's own cost, and the tail's free room. */
  get held(): number {
    const room = this.#tail !== null && this.#chunks[this.#chunks.length - 1] === this.#tailView ? this.#tail.length - this.#tailFill : 0;
    return this.#retained + this.#chunks.length * CHUNK_OVERHEAD + room;
  }

  /** Bytes after the cursor. */
  get ahead(): number {
    return this.#ahead;
  }

  /** Bytes after the mark. */
  get retained(): number {
    return this.#retained;
  }

  /** Stream offset of the cursor (bytes consumed since creation). */
  get offset(): number {
    let off = this.#base + this.#pos;
    for (let i = 0; i < this.#ci; i++) off += this.#chunks[i]!.length;
    return off;
  }

  /**
   * Distance from the cursor to the first `byte`, or -1 if it has not arrived. With `stopAtNul`, a NUL
   * before it also gives -1 for as long as the cursor stays put, like C `strchr` on a NUL-terminated buffer.
   */
  indexOf(byte: number, stopAtNul = false): number {
    const key = stopAtNul ? byte | 0x100 : byte;
    if (this.#scanKey !== key) {
      this.#scanKey = key;
      this.#resetScan();
    }
    if (this.#scanBlocked) return -1;
    let ci = this.#scanCi;
    let pos = this.#scanPos;
    let dist = this.#scanDist;
    for (;;) {
      const chunk = this.#chunks[ci];
      if (!chunk) {
        this.#scanCi = ci;
        this.#scanPos = 0;
        this.#scanDist = dist;
        return -1;
      }
      const at = chunk.indexOf(byte, pos);
      if (stopAtNul && hasNul(chunk, pos, at === -1 ? chunk.length : at)) {
        this.#scanBlocked = true;
        return -1;
      }
      if (at !== -1) return dist + at - pos;
      if (ci === this.#chunks.length - 1) {
        // Resume at the end of the last chunk: it may grow (push) rather than be followed by another.
        this.#scanCi = ci;
        this.#scanPos = chunk.length;
        this.#scanDist = dist + chunk.length - pos;
        return -1;
      }
      dist += chunk.length - pos;
      ci++;
      pos = 0;
    }
  }

  /** The byte `i` bytes after the cursor; the caller checked `i < ahead`. */
  peek(i = 0): number {
    let ci = this.#ci;
    let pos = this.#pos + i;
    while (pos >= this.#chunks[ci]!.length) {
      pos -= this.#chunks[ci]!.length;
      ci++;
    }
    return this.#chunks[ci]![pos]!;
  }

  /** Consume n bytes (the caller checked `n <= ahead`): a subarray when they lie in one chunk, else a copy. */
  take(n: number): Buffer {
    this.#normalize();
    const chunk = this.#chunks[this.#ci];
    if (!chunk || n === 0) return EMPTY;
    if (chunk.length - this.#pos < n) {
      const out = Buffer.allocUnsafe(n);
      this.copyTo(out, 0, n);
      return out;
    }
    const out = chunk.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    this.#ahead -= n;
    this.#resetScan();
    return out;
  }

  /** Consume n bytes (the caller checked `n <= ahead`), copying them into `target` at `at`. */
  copyTo(target: Buffer, at: number, n: number): void {
    for (let filled = 0; filled < n; ) {
      this.#normalize();
      const c = this.#chunks[this.#ci]!;
      const step = Math.min(n - filled, c.length - this.#pos);
      c.copy(target, at + filled, this.#pos, this.#pos + step);
      this.#pos += step;
      filled += step;
    }
    this.#ahead -= n;
    this.#resetScan();
  }

  /**
   * Consume n bytes (n <= ahead) and read them, after their first byte, as a Redis integer (a `*` or `$` header's):
   * null when they are none. No Buffer is made when they lie in one chunk.
   */
  takeInteger(n: number): number | null {
    this.#normalize();
    const chunk = this.#chunks[this.#ci];
    if (chunk === undefined || chunk.length - this.#pos < n) return string2ll(this.take(n), 1);
    const value = string2ll(chunk, this.#pos + 1, this.#pos + n);
    this.#pos += n;
    this.#ahead -= n;
    this.#resetScan();
    return value;
  }

  /** Consume n bytes without reading them (n <= ahead). */
  skip(n: number): void {
    this.#ahead -= n;
    while (n > 0) {
      this.#normalize();
      const step = Math.min(n, this.#chunks[this.#ci]!.length - this.#pos);
      this.#pos += step;
      n -= step;
    }
    this.#resetScan();
  }

  /** Move the mark to the cursor and release the chunks wholly before it. */
  mark(): void {
    if (this.#ci > 0) {
      for (let i = 0; i < this.#ci; i++) this.#base += this.#chunks[i]!.length;
      this.#chunks.splice(0, this.#ci);
      this.#ci = 0;
    }
    const first = this.#chunks[0];
    if (first && this.#pos === first.length) {
      this.#base += this.#pos;
      this.#chunks.shift();
      this.#pos = 0;
    }
    this.#markPos = this.#pos;
    this.#retained = this.#ahead;
    this.#resetScan();
    if (this.#chunks.length === 0) this.#dropTail();
  }

  /** Nothing waits: the tail buffer goes too (an idle connection holds no buffer; the next read is kept as it is). */
  #dropTail(): void {
    this.#tail = null;
    this.#tailView = null;
  }

  /** Return and remove every byte after the mark; the list is then empty. */
  takeRest(): Buffer {
    let rest: Buffer;
    if (this.#chunks.length === 0) rest = Buffer.alloc(0);
    else if (this.#chunks.length === 1) rest = this.#chunks[0]!.subarray(this.#markPos);
    else {
      this.#chunks[0] = this.#chunks[0]!.subarray(this.#markPos);
      rest = Buffer.concat(this.#chunks, this.#retained);
    }
    this.#base += this.#markPos + rest.length;
    this.#chunks = [];
    this.#markPos = this.#ci = this.#pos = 0;
    this.#retained = this.#ahead = 0;
    this.#resetScan();
    this.#dropTail();
    return rest;
  }

  /** Step the cursor off the end of a chunk onto the next one. */
  #normalize(): void {
    while (this.#ci + 1 < this.#chunks.length && this.#pos === this.#chunks[this.#ci]!.length) {
      this.#ci++;
      this.#pos = 0;
    }
  }

  #resetScan(): void {
    this.#scanCi = this.#ci;
    this.#scanPos = this.#pos;
    this.#scanDist = 0;
    this.#scanBlocked = false;
  }
}
