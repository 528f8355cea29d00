import { performance } from 'node:perf_hooks';

/**
 * Time every client's commands together may take in one turn of the event loop. COMMANDS_PER_TURN bounds one
 * client's turn by count, not by cost: a replication-role client pipelining INFO (~100 us each) held the loop 13 ms a
 * turn, and the upstream stream, read at most its budget a turn, reached the replicas up to 632 ms late during a
 * burst. Once a turn's client work has run this long, a client with commands to run waits in line (wait()) and
 * the upstream link, the fan-out and the web port run before it. Clients that waited run at a later turn in the
 * order they came, the first of them at least one command, so the line always moves; one that reads while others
 * wait goes behind them. Ten thousand clients sending a command at the same moment used to run one command each in
 * one turn (half a second and more, the stream held all that time).
 */
export class TurnBudget {
  readonly #ms: number;
  readonly #now: () => number;
  /** When this turn's first client command started; -1 = none yet this turn. */
  #start = -1;
  /** Clients waiting for time, oldest first, from #head. */
  #line: (() => void)[] = [];
  #head = 0;
  #scheduled = false;

  constructor(ms: number, now: () => number = () => performance.now()) {
    this.#ms = ms;
    this.#now = now;
  }

  /** A client is about to run commands: starts the turn's clock when it is the first this turn. */
  begin(): void {
    if (this.#start >= 0) return;
    this.#start = this.#now();
    // The next turn starts afresh (an immediate queued now runs before the clients that wait after it).
    setImmediate(() => {
      this.#start = -1;
    });
  }

  /** Whether this turn's clients have had their time. */
  spent(): boolean {
    return this.#start >= 0 && this.#now() - this.#start >= this.#ms;
  }

  /** Whether a client with commands to run must go behind others: the time is spent, or others wait for it. */
  mustWait(): boolean {
    return this.#head < this.#line.length || this.spent();
  }

  /** Runs `resume` at a later turn, after the clients that waited before it, when that turn has time left. */
  wait(resume: () => void): void {
    this.#line.push(resume);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.#serve());
  }

  #serve(): void {
    // Stays scheduled while it serves: a client that runs out of time again goes to the end of the line.
    this.#start = -1;
    this.begin();
    // The first in line runs whatever the time: the line moves at every turn. One that runs out again (time, or
    // its own count of commands) joins the end, for a later turn.
    const end = this.#line.length;
    let first = true;
    while (this.#head < end && (first || !this.spent())) {
      first = false;
      const resume = this.#line[this.#head]!;
      this.#line[this.#head++] = noop;
      resume();
    }
    if (this.#head >= this.#line.length) {
      this.#line = [];
      this.#head = 0;
      this.#scheduled = false;
      return;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#line.length) {
      this.#line = this.#line.slice(this.#head);
      this.#head = 0;
    }
    setImmediate(() => this.#serve());
  }
}

const noop = (): void => {};

/** The one budget the RESP clients of this process share (5 ms a turn, Redis-like latency for everyone else). */
export const clientTurn = new TurnBudget(5);
