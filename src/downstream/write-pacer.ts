import { performance } from 'node:perf_hooks';

/**
 * Spreads the chunk writes of snapshot transfers over turns of the event loop. A thousand replicas full-syncing at
 * once wake together (one shared snapshot read completes, or their sockets drain in one poll phase); written where
 * they wake, their chunks took the loop 100-170 ms at a time, and PING waited that long. Queued here, the writes run
 * from an immediate, in arrival order, until `budgetMs` of the turn is spent; the rest go first in the next turn,
 * after the loop has read its sockets and answered clients (as the fan-out does for the stream, fanout.ts).
 */
export class WritePacer {
  readonly #budgetMs: number;
  #queue: Array<() => void> = [];
  #head = 0;
  #scheduled = false;
  readonly stats = { runs: 0, yields: 0 };

  constructor(budgetMs = 5) {
    this.#budgetMs = budgetMs;
  }

  /** Runs `write` in a turn with budget left; resolves with what it returned (or rejects with what it threw). */
  run<T>(write: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push(() => {
        try {
          resolve(write());
        } catch (err) {
          reject(err as Error);
        }
      });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.#drain());
  }

  #drain(): void {
    this.#scheduled = false;
    this.stats.runs++;
    const deadline = performance.now() + this.#budgetMs;
    // What the continuations of these writes queue comes after this callback, so in the next turn.
    while (this.#head < this.#queue.length) {
      this.#queue[this.#head++]!();
      if (performance.now() >= deadline) break;
    }
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
      return;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    this.stats.yields++;
    this.#schedule();
  }
}
