/**
 * Counts stream commands by lower-case name from the name's bytes: a string is made once per distinct name, never
 * per command (the stream scanner hands out names as scratch bytes). Names are hashed case-insensitively into a
 * small open table; a hit is confirmed byte by byte, and counted in its entry (no Map lookup per command).
 */
interface NameEntry {
  /** The name, lower case, as bytes and as the string counted under. */
  readonly bytes: Uint8Array;
  readonly name: string;
  readonly hash: number;
  count: number;
}

const TABLE_BITS = 8;

export class CommandCounter {
  /** Buckets by hash; a bucket holds every entry with that hash slot (a few at most in practice). */
  readonly #table: Array<NameEntry[] | undefined> = new Array<NameEntry[] | undefined>(1 << TABLE_BITS);
  /** Every entry, in the order names were first seen. */
  readonly #entries: NameEntry[] = [];

  /** Count one command named `name` (any case); an empty name is not counted. */
  count(name: Uint8Array): void {
    const n = name.length;
    if (n === 0) return;
    let h = 0x811c9dc5;
    for (let i = 0; i < n; i++) h = Math.imul(h ^ lower(name[i]!), 0x01000193);
    const bucket = this.#table[h & ((1 << TABLE_BITS) - 1)];
    if (bucket !== undefined) {
      for (let j = 0; j < bucket.length; j++) {
        const e = bucket[j]!;
        if (e.hash === h && sameName(e.bytes, name)) {
          e.count++;
          return;
        }
      }
    }
    this.#add(name, h).count++;
  }

  /** Name → count, as of now (INFO, /metrics and /status read it; a few dozen names at most in practice). */
  counts(): Map<string, number> {
    const m = new Map<string, number>();
    for (const e of this.#entries) m.set(e.name, e.count);
    return m;
  }

  #add(name: Uint8Array, hash: number): NameEntry {
    const bytes = new Uint8Array(name.length);
    for (let i = 0; i < name.length; i++) bytes[i] = lower(name[i]!);
    const e: NameEntry = { bytes, name: Buffer.from(bytes).toString('latin1'), hash, count: 0 };
    const slot = hash & ((1 << TABLE_BITS) - 1);
    (this.#table[slot] ??= []).push(e);
    this.#entries.push(e);
    return e;
  }
}

/** Lower case of one latin1 byte, as String.prototype.toLowerCase does it (A-Z, and À-Þ but ×). */
function lower(c: number): number {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0xc0 && c <= 0xde && c !== 0xd7) ? c | 0x20 : c;
}

/** `lowered` (already lower case) equals `name` ignoring ASCII case. */
function sameName(lowered: Uint8Array, name: Uint8Array): boolean {
  if (lowered.length !== name.length) return false;
  for (let i = 0; i < name.length; i++) if (lowered[i] !== lower(name[i]!)) return false;
  return true;
}

/** `buf` equals the upper-case ASCII word `word` ignoring case (REPLCONF, GETACK): no string made. */
export function isWord(buf: Uint8Array | undefined, word: string): boolean {
  if (buf === undefined || buf.length !== word.length) return false;
  for (let i = 0; i < word.length; i++) {
    const c = buf[i]!;
    if ((c >= 0x61 && c <= 0x7a ? c - 0x20 : c) !== word.charCodeAt(i)) return false;
  }
  return true;
}
