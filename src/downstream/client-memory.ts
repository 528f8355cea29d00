/** A client whose buffers count toward listen.max-clients-memory. */
export interface MemoryUser {
  /** Bytes held now: query buffer, queued MULTI commands, output buffer. */
  memoryUsage(): number;
  /** Close it for the cap, telling it why when it can. */
  evictForMemory(limit: number, used: number): void;
}

/**
 * listen.max-clients-memory, like Redis's maxmemory-clients: the query and output buffers of all clients together
 * stay under `limit`. Past it, the clients holding the most are closed, largest first, until the total fits again,
 * so one client that floods or never reads cannot take the memory every other client needs. A replica counts only
 * its input: what it has not read is the shared log (replication.replica-*-lag).
 */
export class ClientMemory {
  readonly limit: number;
  #total = 0;
  readonly #usage = new Map<MemoryUser, number>();
  #evicting = false;

  /** `limit` 0 = no cap (usage is then not even tracked). */
  constructor(limit: number) {
    this.limit = limit;
  }

  get total(): number {
    return this.#total;
  }

  /** `c` holds `bytes` now. */
  update(c: MemoryUser, bytes: number): void {
    if (this.limit === 0) return;
    this.#total += bytes - (this.#usage.get(c) ?? 0);
    this.#usage.set(c, bytes);
    if (this.#total > this.limit && !this.#evicting) this.#evict();
  }

  remove(c: MemoryUser): void {
    const had = this.#usage.get(c);
    if (had === undefined) return;
    this.#total -= had;
    this.#usage.delete(c);
  }

  #evict(): void {
    this.#evicting = true;
    try {
      // Figures are refreshed when written to; an output buffer may have drained since: measure everyone now.
      this.#total = 0;
      for (const c of this.#usage.keys()) {
        const bytes = c.memoryUsage();
        this.#usage.set(c, bytes);
        this.#total += bytes;
      }
      while (this.#total > this.limit && this.#usage.size > 0) {
        let biggest: MemoryUser | null = null;
        let most = -1;
        for (const [c, bytes] of this.#usage) {
          if (bytes > most) {
            biggest = c;
            most = bytes;
          }
        }
        this.remove(biggest!);
        biggest!.evictForMemory(this.limit, most);
      }
    } finally {
      this.#evicting = false;
    }
  }
}
