/**
 * How much upstream stream the relay reads in one turn of the event loop. Reading pauses until the next turn once
 * `max` bytes came in during one turn (a busy socket delivers up to 32 reads per turn). With `max` at what the
 * fan-out pass hands each replica per turn, the relay reads no faster than it fans out (the rest waits in the
 * upstream's output buffer, as it does for a Redis replica), lag limits are checked often enough to hold, and
 * upstream reads never hold the loop.
 */
export class ReadBudget {
  readonly #max: number;
  #sinceYield = 0;

  constructor(max: number) {
    this.#max = max;
  }

  /**
   * `n` bytes were read. `drained`: the read left room in its buffer, so the socket had nothing more (libuv then
   * reads it no more this turn). Returns whether to pause reading until the next turn.
   */
  spend(n: number, drained: boolean): boolean {
    // A drained socket ends the turn by itself: pausing it as well would only cost two epoll_ctl calls and a turn.
    if (drained) {
      this.#sinceYield = 0;
      return false;
    }
    this.#sinceYield += n;
    if (this.#sinceYield < this.#max) return false;
    this.#sinceYield = 0;
    return true;
  }
}
