/**
 * Ways to feed bytes to an incremental parser: whole, one byte at a time, and random splits
 * (node-redis decoder.spec, node-tar ByteStream). Chunks are copies, as a socket's would be.
 */

/** Small deterministic PRNG so a failing split is reproducible from its seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Cut `buf` at random points (chunks of 1 to ~len/2 bytes). */
export function randomSplit(buf: Buffer, rand: () => number): Buffer[] {
  const out: Buffer[] = [];
  const maxLen = Math.max(1, Math.ceil(buf.length / 2));
  for (let pos = 0; pos < buf.length; ) {
    const n = 1 + Math.floor(rand() * maxLen);
    out.push(Buffer.from(buf.subarray(pos, pos + n)));
    pos += n;
  }
  return out;
}

export function byteByByte(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i++) out.push(Buffer.from([buf[i]!]));
  return out;
}

/** [whole, byte by byte, ...`random` random splits]; name them with `splitName(i)`. */
export function splits(buf: Buffer, seed = 42, random = 3): Buffer[][] {
  const rand = mulberry32(seed);
  const ways = [[Buffer.from(buf)], byteByByte(buf)];
  for (let i = 0; i < random; i++) ways.push(randomSplit(buf, rand));
  return ways;
}

export function splitName(i: number): string {
  return i === 0 ? 'whole' : i === 1 ? 'byte by byte' : `random split ${i - 1}`;
}

/** `splits()` with names, for `for (const [name, chunks] of ways(buf)) t.test(name, ...)`. */
export function ways(input: Buffer | string, seed = 42, random = 3): Array<[name: string, chunks: Buffer[]]> {
  const buf = typeof input === 'string' ? Buffer.from(input, 'latin1') : input;
  return splits(buf, seed, random).map((chunks, i) => [splitName(i), chunks]);
}
