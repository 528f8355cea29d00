/** One-shot timers owned by a connection object, all cancelled at once when it tears down. */
export class TimerSet {
  #timers = new Set<NodeJS.Timeout>();

  set(ms: number, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn();
    }, ms);
    this.#timers.add(t);
    return t;
  }

  cancel(t: NodeJS.Timeout): void {
    clearTimeout(t);
    this.#timers.delete(t);
  }

  clear(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }
}
