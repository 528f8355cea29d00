const KiB = 1024;
/** Per turn without a disk log: what a fan-out pass hands each replica. */
export const TURN_READ_MEMORY = 256 * KiB;

/**
 * How much upstream stream the relay reads in one turn of the event loop. Reading pauses until the next turn once
 * that much came in during one turn (a busy socket delivers up to 32 reads per turn), so upstream reads never hold
 * the loop. How much, see turnRead().
 */
export class ReadBudget {
  readonly #max: () => number;
  #sinceYield = 0;

  /** `max`: the limit, asked per read (it follows the disk log's state). */
  constructor(max: () => number) {
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
    if (this.#sinceYield < this.#max()) return false;
    this.#sinceYield = 0;
    return true;
  }
}

/**
 * The stream read per turn for a relay with this log, its disk log active (ok or failing) or not. What the relay
 * has not read waits in the master's output buffer for it, where the master's client-output-buffer-limit (Redis's
 * default for replicas: 64mb for 60 s) drops the relay, and every replica behind it, into a full sync; what it has
 * read waits in its own log.
 * - With a disk log, replicas behind the memory tail read the disk and hold no memory, so the relay reads ahead of
 *   them: 1/16 of log.disk-queue per turn, between 256 KiB and 2 MiB (2 MiB from the default 128mb). A fan-out pass
 *   to many replicas takes ~5 ms a turn, so 2 MiB a turn is ~400 MB/s, more than a master's stream; and a disk write
 *   that stalls for a few turns (a retry's timer) does not overflow the queue at once.
 * - Without one, or once it was given up past log.disk-queue (the log is memory-only until the disk works again), a
 *   replica behind holds memory up to replica-max-lag and is then dropped: the relay reads no more per turn than a
 *   pass hands each replica (256 KiB), so it reads no faster than it fans out and slow turns hold the stream back
 *   in the master, as they do a Redis replica, instead of bringing its replicas to their limits.
 */
export function turnRead(log: { readonly disk: number; readonly diskQueue: number }, diskActive: boolean): number {
  if (log.disk <= 0 || !diskActive) return TURN_READ_MEMORY;
  return Math.min(2048 * KiB, Math.max(TURN_READ_MEMORY, Math.floor(log.diskQueue / 16)));
}
