import t from 'tap';
import fc from 'fast-check';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { crc32, crc32Implementation } from '../../src/backlog/crc32.js';

t.test('the native CRC-32 addon (@node-rs/crc32) is the one loaded on this platform, not the zlib fallback', async (t) => {
  t.equal(crc32Implementation, 'native');
});

t.test('its CRCs are zlib.crc32 of the same bytes, whole or continued across any split, so checksums on disk agree', async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 200_000 }), fc.nat(), fc.nat(), (data, cut, initial) => {
      const bytes = Buffer.from(data.buffer, data.byteOffset, data.length);
      const at = cut % (bytes.length + 1); // either piece may be empty
      const seed = initial >>> 0;
      const want = zlibCrc32(bytes, seed) >>> 0;
      return crc32(bytes, seed) === want && crc32(bytes.subarray(at), crc32(bytes.subarray(0, at), seed)) === want;
    }),
    { numRuns: 300 },
  );
  t.equal(crc32(Buffer.from('123456789')), 0xcbf43926, 'the check value of CRC-32/ISO-HDLC');
  // zlib answers 0 for an empty buffer with no memory behind it whatever the seed (crc32_z's Z_NULL case); ours
  // continues the seed, which is what a CRC over no bytes is.
  t.equal(crc32(Buffer.alloc(0), 0x1234), 0x1234, 'no bytes leave the CRC as it was');
});
