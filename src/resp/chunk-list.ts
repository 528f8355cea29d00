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

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#retained += chunk.length;
    this.#ahead += chunk.length;
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
      if (stopAtNul) {
        const nul = chunk.indexOf(0, pos);
        if (nul !== -1 && (at === -1 || nul < at)) {
          this.#scanBlocked = true;
          return -1;
        }
      }
      if (at !== -1) return dist + at - pos;
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
    if (!chunk || n === 0) return Buffer.alloc(0);
    let out: Buffer;
    if (chunk.length - this.#pos >= n) {
      out = chunk.subarray(this.#pos, this.#pos + n);
      this.#pos += n;
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        this.#normalize();
        const c = this.#chunks[this.#ci]!;
        const step = Math.min(n - filled, c.length - this.#pos);
        c.copy(out, filled, this.#pos, this.#pos + step);
        this.#pos += step;
        filled += step;
      }
    }
    this.#ahead -= n;
    this.#resetScan();
    return out;
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
