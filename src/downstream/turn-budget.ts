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
  /** Clients waiting for time, oldest first, from their head: light ones, and heavy ones (see above). */
  #light: (() => void)[] = [];
  #lightHead = 0;
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

  /**
   * Whether a client with commands to run must go behind others: the time is spent, or others wait for it (any,
   * for a heavy client; light ones, for a light client).
   */
  mustWait(heavy = true): boolean {
    return this.spent() || this.#lightHead < this.#light.length || (heavy && this.#head < this.#line.length);
  }

  /** Runs `resume` at a later turn, after the clients that waited before it in its line, when that turn has time left. */
  wait(resume: () => void, heavy = true): void {
    if (heavy) this.#line.push(resume);
    else this.#light.push(resume);
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
    const lightEnd = this.#light.length;
    let first = true;
    while (this.#lightHead < lightEnd && (first || !this.spent())) {
      first = false;
      const resume = this.#light[this.#lightHead]!;
      this.#light[this.#lightHead++] = noop;
      resume();
    }
    const end = this.#line.length;
    first = true;
    while (this.#head < end && (first || !this.spent())) {
      first = false;
      const resume = this.#line[this.#head]!;
      this.#line[this.#head++] = noop;
      resume();
    }
    this.#lightHead = compact(this.#light, this.#lightHead, (l) => (this.#light = l));
    this.#head = compact(this.#line, this.#head, (l) => (this.#line = l));
    if (this.#lightHead >= this.#light.length && this.#head >= this.#line.length) {
      this.#scheduled = false;
      return;
    }
    setImmediate(() => this.#serve());
  }
}

/** A line's new head: emptied once all served, its served front cut once it is most of it. */
function compact(line: (() => void)[], head: number, set: (line: (() => void)[]) => void): number {
  if (head >= line.length) {
    set([]);
    return 0;
  }
  if (head > 1024 && head * 2 > line.length) {
    set(line.slice(head));
    return 0;
  }
  return head;
}

const noop = (): void => {};

/** The one budget the RESP clients of this process share (5 ms a turn, Redis-like latency for everyone else). */
export const clientTurn = new TurnBudget(5);
