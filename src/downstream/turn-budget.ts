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
 *
 * Two lines: a client the budget cut off last time, with input left (heavy: a pipelined flood), waits behind the
 * others; one that ran to the end of its input (light: a PING now and then, a pipeline of a few commands) runs while
 * the turn has time, before the heavy ones, and waits in a line of its own served first. With one line, a client
 * pipelining a PING every 20 ms behind 32 clients flooding INFO got one read's worth of commands per round of the
 * line and fell seconds behind.
 */
export class TurnBudget {
  readonly #ms: number;
  readonly #now: () => number;
  /** When this turn's first client command started; -1 = none yet this turn. */
  #start = -1;
  /** Clients waiting for time: light ones, and heavy ones (see above). */
  readonly #light = new Line();
  readonly #heavy = new Line();
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

  /**
   * Whether a client with commands to run must go behind others: the time is spent, or others wait for it (any,
   * for a heavy client; light ones, for a light client).
   */
  mustWait(heavy = true): boolean {
    return this.spent() || this.#light.waiting || (heavy && this.#heavy.waiting);
  }

  /** Runs `resume` at a later turn, after the clients that waited before it in its line, when that turn has time left. */
  wait(resume: () => void, heavy = true): void {
    (heavy ? this.#heavy : this.#light).push(resume);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.#serve());
  }

  #serve(): void {
    // Stays scheduled while it serves: a client that runs out of time again goes to the end of a line.
    this.#start = -1;
    this.begin();
    // Light clients first, then heavy ones. The first of each line runs whatever the time: both lines move at every
    // turn. One that runs out again (time, or its own count of commands) joins the end of one, for a later turn.
    this.#light.serve(() => this.spent());
    this.#heavy.serve(() => this.spent());
    if (!this.#light.waiting && !this.#heavy.waiting) {
      this.#scheduled = false;
      return;
    }
    setImmediate(() => this.#serve());
  }
}

const noop = (): void => {};

/** Waiting clients, oldest first. */
class Line {
  #items: (() => void)[] = [];
  #head = 0;

  get waiting(): boolean {
    return this.#head < this.#items.length;
  }

  push(resume: () => void): void {
    this.#items.push(resume);
  }

  /** Resumes those waiting now, in order, the first whatever the time, the others until `spent`; then compacts. */
  serve(spent: () => boolean): void {
    const end = this.#items.length;
    let first = true;
    while (this.#head < end && (first || !spent())) {
      first = false;
      const resume = this.#items[this.#head]!;
      this.#items[this.#head++] = noop;
      resume();
    }
    if (this.#head >= this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
  }
}

/** The one budget the RESP clients of this process share (5 ms a turn, Redis-like latency for everyone else). */
export const clientTurn = new TurnBudget(5);
