import { performance } from 'node:perf_hooks';

/**
 * Time every client's commands together may take in one turn of the event loop. COMMANDS_PER_TURN bounds one
 * client's turn by count, not by cost: a replication-role client pipelining INFO (~100 us each) held the loop 13 ms a
 * turn, and the upstream stream, read at most its budget a turn, reached the replicas up to 632 ms late during a
 * burst. Once a turn's client work has run this long, every client yields (each runs at least one command a turn),
 * and the upstream link, the fan-out and the other clients run before them again.
 */
export class TurnBudget {
  readonly #ms: number;
  readonly #now: () => number;
  /** When this turn's first client command started; -1 = none yet this turn. */
  #start = -1;

  constructor(ms: number, now: () => number = () => performance.now()) {
    this.#ms = ms;
    this.#now = now;
  }

  /** A client is about to run commands: starts the turn's clock when it is the first this turn. */
  begin(): void {
    if (this.#start >= 0) return;
    this.#start = this.#now();
    // The next turn starts afresh (an immediate queued now runs before the clients that yield after it).
    setImmediate(() => {
      this.#start = -1;
    });
  }

  /** Whether this turn's clients have had their time. */
  spent(): boolean {
    return this.#start >= 0 && this.#now() - this.#start >= this.#ms;
  }
}

/** The one budget the RESP clients of this process share (5 ms a turn, Redis-like latency for everyone else). */
export const clientTurn = new TurnBudget(5);
