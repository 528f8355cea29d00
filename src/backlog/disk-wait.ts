/** The longest one burst holds the upstream reads back for the disk (ms). */
const DISK_WAIT_MAX_MS = 5000;
/** A write outstanding this long is not waited for: the disk may be hung (DiskLogOptions.hungMs then says so). */
const DISK_WAIT_HUNG_MS = 1000;

export interface DiskWaitOptions {
  /** Bytes the disk may be behind before the reads wait (half of log.disk-queue). */
  readonly from: number;
  readonly maxWaitMs?: number;
  readonly hungMs?: number;
  /** A burst that made the reads wait is over: how long it was over the mark (ms). */
  readonly onWaited?: (ms: number) => void;
}

/**
 * Decides when the relay's upstream reads wait for its disk log. A relay catching up on its master (after a pause,
 * a restart, a full sync) receives the stream as fast as the network carries it, faster than a disk writes; past
 * log.disk-queue the disk log would take that burst for a failed disk and drop its history, which replicas behind
 * the memory tail need for a partial resync. So while a healthy disk is more than `from` bytes behind, the reads
 * wait for it and the master's output buffer holds the rest, as it does for any replica that reads slowly.
 *
 * Never for long: a burst waits only within `maxWaitMs` of its first wait (a disk slower than the stream for longer
 * is given up past log.disk-queue as before, so that the relay keeps up with its master instead of being dropped by
 * it), and not at all while a write has been out for `hungMs`, nor for a failing disk.
 */
export class DiskWait {
  readonly #from: number;
  readonly #maxWaitMs: number;
  readonly #hungMs: number;
  /** When the current burst began waiting (ms since the epoch); 0: none. */
  #since = 0;
  #release: (() => void) | null = null;
  #promise: Promise<void> | null = null;
  #timer: NodeJS.Timeout | null = null;
  readonly #onWaited: ((ms: number) => void) | undefined;

  constructor(opts: DiskWaitOptions) {
    this.#from = opts.from;
    this.#onWaited = opts.onWaited;
    this.#maxWaitMs = opts.maxWaitMs ?? DISK_WAIT_MAX_MS;
    this.#hungMs = opts.hungMs ?? DISK_WAIT_HUNG_MS;
  }

  /**
   * Asked after a read: `pending` bytes wait for the disk, which is `healthy` (writing without errors), with a
   * write out since `inflightSince` (0: none). Returns a promise that resolves when reading may go on, or null.
   */
  check(pending: number, healthy: boolean, inflightSince: number): Promise<void> | null {
    if (pending <= this.#from) {
      this.#endBurst();
      return null;
    }
    const now = Date.now();
    if (!healthy || (inflightSince !== 0 && now - inflightSince >= this.#hungMs)) return null;
    if (this.#since === 0) this.#since = now;
    const left = this.#since + this.#maxWaitMs - now;
    if (left <= 0) return null;
    if (this.#promise === null) {
      this.#promise = new Promise<void>((resolve) => (this.#release = resolve));
      // Wakes the reader to ask again: the burst's time is up, or a write may have hung meanwhile.
      this.#timer = setTimeout(() => this.release(), Math.min(left, this.#hungMs));
    }
    return this.#promise;
  }

  /** The disk took bytes: a waiting reader goes on once it is back under the mark. */
  progressed(pending: number): void {
    if (pending <= this.#from) this.#endBurst();
  }

  /** Lets a waiting reader go (the disk log changed state, or was replaced): it asks again after its next read. */
  release(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    const r = this.#release;
    this.#release = null;
    this.#promise = null;
    r?.();
  }

  #endBurst(): void {
    const since = this.#since;
    this.#since = 0;
    this.release();
    if (since !== 0) this.#onWaited?.(Date.now() - since);
  }
}
