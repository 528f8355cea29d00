import { connect } from 'node:net';
import { encodeCommand } from '../../src/resp/writer.js';
import type { RedisClient } from './redis-client.js';
import { stat } from './replication.js';
import { waitFor } from './wait.js';

/**
 * A pipelined load of commands whose result depends on order and on every earlier write (INCR, APPEND, LPUSH, HSET,
 * EXPIRE, big values, MULTI/EXEC blocks): a replica that misses, repeats or reorders one byte of the stream ends
 * with a different DEBUG DIGEST. Resolves once the master has answered all of them.
 */
export async function mixedLoad(port: number, opts: { commands: number; seed: number; keys?: number; bigValue?: number }): Promise<void> {
  let x = opts.seed >>> 0 || 1;
  const rand = (n: number): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
  const keys = opts.keys ?? 200;
  const parts: Buffer[] = [];
  for (let i = 0; i < opts.commands; i++) {
    const k = rand(keys);
    switch (rand(8)) {
      case 0:
        parts.push(encodeCommand(['INCR', `counter:${k}`]));
        break;
      case 1:
        parts.push(encodeCommand(['APPEND', `text:${k}`, `-${i}`]));
        break;
      case 2:
        parts.push(encodeCommand(['LPUSH', `list:${k}`, String(i)]));
        break;
      case 3:
        parts.push(encodeCommand(['HSET', `hash:${k}`, `f${rand(20)}`, String(i)]));
        break;
      case 4:
        parts.push(encodeCommand(['EXPIRE', `text:${k}`, String(100_000 + rand(1000))]));
        break;
      case 5:
        parts.push(encodeCommand(['SET', `big:${k}`, Buffer.alloc(rand(opts.bigValue ?? 20_000), 97 + (i % 26))]));
        break;
      case 6:
        parts.push(encodeCommand(['MULTI']), encodeCommand(['INCR', `counter:${k}`]), encodeCommand(['LPUSH', `list:${k}`, `m${i}`]), encodeCommand(['EXEC']));
        break;
      default:
        parts.push(encodeCommand(['INCRBY', `counter:${k}`, String(rand(1000))]));
    }
  }
  const token = `mixed-load-done-${opts.seed}-${Date.now()}`;
  parts.push(encodeCommand(['ECHO', token]));
  const tail = Buffer.from(`${token}\r\n`);
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    let seen = Buffer.alloc(0);
    socket.on('error', reject);
    socket.on('data', (c: Buffer) => {
      // Only the end of the replies matters: keep the last bytes.
      seen = Buffer.concat([seen, c]).subarray(-tail.length);
      if (seen.equals(tail)) {
        socket.end();
        resolve();
      }
    });
    socket.on('close', () => reject(new Error('master closed the connection during the load')));
    socket.write(Buffer.concat(parts));
  });
}

/** A repeatable random integer below `n` from a seed (an LCG): where a storm crashes, the same in every run. */
export function seededRandom(seed: number): (n: number) => number {
  let state = seed;
  return (n) => {
    state = (state * 1103515245 + 12345) >>> 0;
    return state % n;
  };
}

/**
 * mixedLoad() batches of 5,000 commands on `masterPort` (seeds from `seed`) until stop(), each paced by `replicas`:
 * none may fall more than `maxLag` bytes (default 64 MB) behind the master `m` (they are offline while a relay
 * restarts, and must not fall past its log).
 */
export function pacedLoad(masterPort: number, m: RedisClient, replicas: readonly RedisClient[], seed: number, maxLag = 64_000_000): { stop(): Promise<void> } {
  let loading = true;
  const load = (async () => {
    for (let i = 0; loading; i++) {
      await mixedLoad(masterPort, { commands: 5000, seed: seed + i, bigValue: 20_000 });
      const end = stat(await m.info('replication'), 'master_repl_offset');
      await waitFor(async () => {
        for (const c of replicas) if (end - stat(await c.info('replication'), 'master_repl_offset') > maxLag) return undefined;
        return true;
      }, { what: `replicas within ${maxLag} bytes of the master`, timeoutMs: 60000 });
    }
  })();
  return {
    stop: () => {
      loading = false;
      return load;
    },
  };
}
