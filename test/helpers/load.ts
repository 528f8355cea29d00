import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';

/**
 * The redis-benchmark processes still running. A test file that ends early (a failed check, a timeout) leaves its
 * load running against a master that is gone, and redis-benchmark then retries at full speed: found spinning at 40 %
 * of a core each, 20 minutes after their test failed. They go with this process.
 */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

/**
 * A pipelined load from redis-benchmark: `n` of each command of `tests` (its -t: `set`, or e.g. `set,incr,lpush`,
 * whose counters and list make DEBUG DIGEST depend on every write), `size`-byte values over `keys` keys.
 * Resolves when it finishes; rejects when it fails.
 */
export async function benchmarkLoad(port: number, n: number, size = 1024, keys = 100000, tests = 'set'): Promise<void> {
  const p = spawn('redis-benchmark', ['-p', String(port), '-t', tests, '-d', String(size), '-n', String(n), '-P', '32', '-r', String(keys), '-q'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  running.add(p);
  p.once('exit', () => running.delete(p));
  let err = '';
  p.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const [code] = (await once(p, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`redis-benchmark exited ${code}: ${err}`);
}
