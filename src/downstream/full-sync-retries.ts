/** The first held-back full sync waits this long; each further failed load doubles it, up to MAX_DELAY_MS. */
const BASE_DELAY_MS = 1000;
/**
 * What a Redis master makes every diskless full sync wait by default (repl-diskless-sync-delay 5): a held-back
 * replica never waits longer than a Redis master would have made it wait anyway.
 */
const MAX_DELAY_MS = 5000;
/** Failed loads this long ago are forgotten. */
const FORGET_MS = 10 * 60_000;
/** Replicas remembered at most (the oldest go first): a flood of distinct addresses costs bounded memory. */
const MAX_REMEMBERED = 4096;

/**
 * Replicas that take a whole snapshot and close their link without acknowledging any of the stream did not load it
 * (an RDB version they cannot read, a disk they cannot write it to): they ask again at once. A Redis master spaces
 * such retries with its fork and repl-diskless-sync-delay; a relay that serves its snapshot file at once sent one
 * after another as fast as the replica read them (a Valkey 8 master's RDB 11 to a Redis 7.0 replica: 154 full syncs
 * in 6 s). From a replica's second failed load in a row (by address and announced port), its next full sync waits
 * 1 s, then 2, 4, then 5 s each time, kept alive with newlines meanwhile; a snapshot it loads clears its count.
 */
export class FullSyncRetries {
  readonly #failed = new Map<string, { count: number; at: number }>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** When the next full sync of replica `key` may start: 0 when at once. */
  notBefore(key: string): number {
    const f = this.#failed.get(key);
    if (!f || f.count < 2 || this.#now() - f.at > FORGET_MS) return 0;
    return f.at + this.delayAfter(f.count);
  }

  /** How long a full sync waits after `count` failed loads in a row. */
  delayAfter(count: number): number {
    return count < 2 ? 0 : Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** (count - 2));
  }

  /** A full sync of `key` ended with its replica gone: `loaded` when it acknowledged the stream. Returns its failed loads in a row. */
  ended(key: string, loaded: boolean): number {
    const prev = this.#failed.get(key);
    this.#failed.delete(key);
    if (loaded) return 0;
    const now = this.#now();
    const count = prev && now - prev.at <= FORGET_MS ? prev.count + 1 : 1;
    this.#failed.set(key, { count, at: now }); // re-inserted: the Map's order is the order of the last failures
    if (this.#failed.size > MAX_REMEMBERED) this.#failed.delete(this.#failed.keys().next().value!);
    return count;
  }
}
