import { spawn } from 'node:child_process';
import { once } from 'node:events';

/**
 * A pipelined load from redis-benchmark: `n` of each command of `tests` (its -t: `set`, or e.g. `set,incr,lpush`,
 * whose counters and list make DEBUG DIGEST depend on every write), `size`-byte values over `keys` keys.
 * Resolves when it finishes; rejects when it fails.
 */
export async function benchmarkLoad(port: number, n: number, size = 1024, keys = 100000, tests = 'set'): Promise<void> {
  const p = spawn('redis-benchmark', ['-p', String(port), '-t', tests, '-d', String(size), '-n', String(n), '-P', '32', '-r', String(keys), '-q'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  p.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const [code] = (await once(p, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`redis-benchmark exited ${code}: ${err}`);
}
