import { createRequire } from 'node:module';
import { crc32 as zlibCrc32 } from 'node:zlib';

/**
 * CRC-32 (ISO-HDLC, zlib's) of the disk log's pieces and of snapshot transfers. The same function as `zlib.crc32`,
 * so checksums on disk are the same whichever one computed them; `@node-rs/crc32` (crc32fast, PCLMULQDQ on x86-64,
 * the ARMv8 CRC instructions on arm64) runs 2-3x faster than Node's table-driven zlib, and the checksums were 12% of
 * the relay's CPU at one replica. Where its native addon does not load (a platform it ships no binary for), zlib's
 * is used: slower, never different.
 */
type Crc32 = (data: Uint8Array, initial?: number) => number;

function loadNative(): Crc32 | undefined {
  try {
    const mod = createRequire(import.meta.url)('@node-rs/crc32') as { crc32: (input: Uint8Array, initial?: number | null) => number };
    // A binding that loads but disagrees with zlib (a broken build) must not write checksums nobody else can check.
    const probe = Buffer.from('123456789');
    if (mod.crc32(probe) >>> 0 !== 0xcbf43926 || mod.crc32(probe.subarray(5), mod.crc32(probe.subarray(0, 5))) >>> 0 !== 0xcbf43926) return undefined;
    return mod.crc32;
  } catch {
    return undefined;
  }
}

const native = loadNative();

/** Which implementation computes the checksums: logged at start, and asserted by a test on the platforms we ship. */
export const crc32Implementation: 'native' | 'zlib' = native ? 'native' : 'zlib';

/** The CRC-32 of `data`, continued from `initial` (the CRC of the bytes before it) when given; unsigned. */
export const crc32: Crc32 = native ? (data, initial = 0) => native(data, initial) >>> 0 : (data, initial = 0) => zlibCrc32(data, initial) >>> 0;
