// Shared by the microbenchmarks: a realistic replication stream, timing, and the CLI convention
// (`--json` prints one JSON line for bench/run.js; `--quick` runs fewer rounds on less data).
import { performance } from 'node:perf_hooks';

export const QUICK = process.argv.includes('--quick');
export const JSON_OUT = process.argv.includes('--json');

/**
 * The stream a master sends for `redis-benchmark -t set -d <valueSize> -r 100000`: SELECT 0, then
 * `SET key:<12 digits> <value>` commands, plus a `PING` every 10,000 commands (a master's in-stream PING).
 */
export function setStream(totalBytes, valueSize) {
  const value = 'x'.repeat(valueSize);
  const parts = ['*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n'];
  let size = parts[0].length;
  let x = 12345;
  for (let i = 0; size < totalBytes; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    const key = `key:${String(x % 100000).padStart(12, '0')}`;
    const cmd = i % 10000 === 9999 ? '*1\r\n$4\r\nPING\r\n' : `*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$${value.length}\r\n${value}\r\n`;
    parts.push(cmd);
    size += cmd.length;
  }
  return Buffer.from(parts.join(''), 'latin1');
}

/** Views of `buf` of `size` bytes each (as socket reads hand them over). */
export function chunksOf(buf, size) {
  const out = [];
  for (let p = 0; p < buf.length; p += size) out.push(buf.subarray(p, Math.min(buf.length, p + size)));
  return out;
}

/** Runs fn() `rounds` times (after warming up for at least one call and 0.3 s) and returns the median duration in seconds. */
export async function medianSeconds(rounds, fn) {
  const warm = performance.now();
  for (let i = 0; i < 1 || performance.now() - warm < 300; i++) await fn();
  const times = [];
  for (let i = 0; i < rounds; i++) {
    const t = performance.now();
    await fn();
    times.push((performance.now() - t) / 1000);
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1];
}

/** Prints results: one JSON line (for bench/run.js) or a small table. */
export function report(name, results) {
  if (JSON_OUT) {
    process.stdout.write(`${JSON.stringify({ name, results })}\n`);
    return;
  }
  console.log(name);
  for (const r of results) {
    const ops = r.opsPerSec ? `  ${(r.opsPerSec / 1e6).toFixed(2)} M ops/s` : '';
    console.log(`  ${r.case.padEnd(48)} ${r.mbps.toFixed(0).padStart(7)} MB/s${ops}${r.note ? `  (${r.note})` : ''}`);
  }
}
