/**
 * CRC-64/Jones as Redis computes it for RDB trailers (crc64.c: reflected, polynomial 0xad93d23594c935a9,
 * init 0, no final xor). 64-bit state kept as two uint32 halves so the hot loop stays in small integers.
 */
const POLY_HI = 0x95ac9329; // reflected polynomial 0x95ac9329ac4bc9b5
const POLY_LO = 0xac4bc9b5;
// Slicing-by-8: table k advances the CRC over a byte followed by k zero bytes.
const TABLE_HI = new Uint32Array(256 * 8);
const TABLE_LO = new Uint32Array(256 * 8);
for (let i = 0; i < 256; i++) {
  let hi = 0;
  let lo = i;
  for (let k = 0; k < 8; k++) {
    const lsb = lo & 1;
    lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
    hi = hi >>> 1;
    if (lsb) {
      hi = (hi ^ POLY_HI) >>> 0;
      lo = (lo ^ POLY_LO) >>> 0;
    }
  }
  TABLE_HI[i] = hi;
  TABLE_LO[i] = lo;
}
for (let t = 1; t < 8; t++) {
  for (let i = 0; i < 256; i++) {
    const phi = TABLE_HI[(t - 1) * 256 + i]!;
    const plo = TABLE_LO[(t - 1) * 256 + i]!;
    const idx = plo & 0xff;
    TABLE_LO[t * 256 + i] = (TABLE_LO[idx]! ^ ((plo >>> 8) | (phi << 24))) >>> 0;
    TABLE_HI[t * 256 + i] = (TABLE_HI[idx]! ^ (phi >>> 8)) >>> 0;
  }
}

/** Incremental CRC-64/Jones. */
export class Crc64 {
  #hi = 0;
  #lo = 0;

  update(buf: Uint8Array, start = 0, end = buf.length): this {
    let hi = this.#hi;
    let lo = this.#lo;
    let i = start;
    const TH = TABLE_HI;
    const TL = TABLE_LO;
    for (; i + 8 <= end; i += 8) {
      const xl = (lo ^ (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24))) >>> 0;
      const xh = (hi ^ (buf[i + 4]! | (buf[i + 5]! << 8) | (buf[i + 6]! << 16) | (buf[i + 7]! << 24))) >>> 0;
      const a = 7 * 256 + (xl & 0xff), b = 6 * 256 + ((xl >>> 8) & 0xff), c = 5 * 256 + ((xl >>> 16) & 0xff), d = 4 * 256 + (xl >>> 24);
      const e = 3 * 256 + (xh & 0xff), f = 2 * 256 + ((xh >>> 8) & 0xff), g = 256 + ((xh >>> 16) & 0xff), h = xh >>> 24;
      lo = (TL[a]! ^ TL[b]! ^ TL[c]! ^ TL[d]! ^ TL[e]! ^ TL[f]! ^ TL[g]! ^ TL[h]!) >>> 0;
      hi = (TH[a]! ^ TH[b]! ^ TH[c]! ^ TH[d]! ^ TH[e]! ^ TH[f]! ^ TH[g]! ^ TH[h]!) >>> 0;
    }
    for (; i < end; i++) {
      const idx = (lo ^ buf[i]!) & 0xff;
      lo = (TL[idx]! ^ ((lo >>> 8) | (hi << 24))) >>> 0;
      hi = (TH[idx]! ^ (hi >>> 8)) >>> 0;
    }
    this.#hi = hi;
    this.#lo = lo;
    return this;
  }

  /** The CRC as the 8 little-endian bytes Redis appends to an RDB. */
  digestLE(): Buffer {
    const out = Buffer.alloc(8);
    out.writeUInt32LE(this.#lo, 0);
    out.writeUInt32LE(this.#hi, 4);
    return out;
  }
}

export function crc64(buf: Uint8Array): Buffer {
  return new Crc64().update(buf).digestLE();
}
