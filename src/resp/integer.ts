/** redis `string2ll`: optional `-`, no `+`, no leading zeros, fits a signed 64-bit integer. Parses line[start, end). */
export function string2ll(line: Buffer, start: number, end = line.length): number | null {
  const len = end - start;
  if (len <= 0 || len >= 21) return null;
  if (len === 1 && line[start] === 0x30) return 0;
  let i = start;
  const neg = line[i] === 0x2d;
  if (neg && ++i === end) return null;
  const first = line[i]!;
  if (first < 0x31 || first > 0x39) return null;
  let n = 0;
  for (; i < end; i++) {
    const d = line[i]! - 0x30;
    if (d < 0 || d > 9) return null;
    n = n * 10 + d;
  }
  // Past 2^53 the double is inexact: decide the 64-bit range exactly.
  if (n > Number.MAX_SAFE_INTEGER) {
    const big = BigInt(line.toString('latin1', start, end));
    if (big > 2n ** 63n - 1n || big < -(2n ** 63n)) return null;
  }
  return neg ? -n : n;
}
