import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../log.js';

/**
 * How often the open descriptors are counted. Cheaply (0.1 ms) from the size of the descriptor table while that is
 * under the count that matters; a readdir of /proc/self/fd costs the loop 1.3 ms at 1,100 descriptors and 13 ms at
 * 10,000 (listen.max-clients' default), so it is done only near the limit.
 */
export const FD_GUARD_INTERVAL_MS = 250;
/**
 * How often while the port has been closed in the last FAST_FOR_MS: connections reopened in a loop took the
 * descriptors back within one 250 ms interval of the port listening again. At most a tenth of the loop's time: a
 * count that lists the descriptors (1.3 ms at 1,100 of them, 13 ms at 10,000) spaces the next ten times its cost.
 */
export const FD_GUARD_FAST_MS = 25;
const FAST_FOR_MS = 10_000;

export interface FdGuardOptions {
  /** The open files limit (fd-limit.ts openFilesLimit); null: no guard. */
  readonly limit: number | null;
  /** Descriptors the relay keeps for its own files and links (fd-limit.ts RESERVED_FDS). */
  readonly reserve: number;
  /**
   * Descriptors promised to others and not open yet: the RESP port's free listen.max-clients slots. The web port's
   * connections may not take them.
   */
  promised?: () => number;
  readonly logger: Logger;
  /** Stop accepting web connections (close the listening socket). */
  pause(): void;
  /** Accept them again; false when listening failed (tried again at the next count). */
  resume(): boolean;
  /**
   * Open descriptors now, or a bound above them when that is under `below` (the exact number does not matter then);
   * null when they cannot be counted (no /proc).
   */
  count?: (below: number) => number | null;
  /** Opens a spare descriptor (default: /dev/null), null when none can be had; and closes one. */
  openSpare?: () => number | null;
  closeSpare?: (fd: number) => void;
}

/**
 * Open descriptors, or the size of the descriptor table (FDSize: every open descriptor is below it) when that is under
 * `below`; Infinity when none is left to count them with (EMFILE, ENFILE); null without /proc.
 */
export function openFds(below: number): number | null {
  try {
    const table = Number(/^FDSize:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'latin1'))?.[1] ?? NaN);
    if (table < below) return table;
    return readdirSync('/proc/self/fd').length;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EMFILE' || code === 'ENFILE' ? Infinity : null;
  }
}

function openDevNull(): number | null {
  try {
    return openSync('/dev/null', 'r');
  } catch {
    return null;
  }
}

/**
 * The web port may not take the descriptors the relay keeps for itself. uWS.js 20.30 accepts every connection and
 * tells its owner of none (no count, no close hook, no way to close one) until a whole request arrives, so 400
 * connections sending half a header, reopened as uWS closed them or kept open with a byte every few seconds, took
 * every descriptor under a limit of 256: the upstream link could not reconnect (EMFILE), the disk log could not open
 * a segment and dropped its history, and no fresh snapshot could be fetched.
 *
 * listen.max-clients keeps the RESP port within the limit less the reserve (fd-limit.ts). For the web port, half the
 * reserve is held as spare descriptors (/dev/null). The process's descriptors are counted every 250 ms; once they
 * reach into the reserve's other half, or none is left to count with, the web port's listening socket is closed
 * first (nothing can accept the freed numbers) and then the spares: the relay's files and links have them, however
 * long the connections already open stay. Once there is room under the limit less the whole reserve for the spares
 * too, they are taken again and the port listens again.
 */
export class FdGuard {
  readonly #opts: FdGuardOptions;
  readonly #count: (below: number) => number | null;
  readonly #openSpare: () => number | null;
  readonly #closeSpare: (fd: number) => void;
  #spares: number[] = [];
  #timer: NodeJS.Timeout | null = null;
  /** Counts come every FD_GUARD_FAST_MS until then (ms since the epoch): the port was closed lately. */
  #fastUntil = 0;
  /** How long the last count took (ms). */
  #countMs = 0;
  #paused = false;

  constructor(opts: FdGuardOptions) {
    this.#opts = opts;
    this.#count = opts.count ?? openFds;
    this.#openSpare = opts.openSpare ?? openDevNull;
    this.#closeSpare = opts.closeSpare ?? closeSync;
  }

  /** Whether the web port is closed to new connections now. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Spare descriptors held now. */
  get spares(): number {
    return this.#spares.length;
  }

  start(): void {
    if (this.#opts.limit === null || this.#timer) return;
    this.#takeSpares();
    this.#schedule();
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#releaseSpares();
  }

  /** One count, and what it calls for. */
  check(): void {
    const { limit, reserve, logger } = this.#opts;
    if (limit === null) return;
    const high = limit - Math.ceil(reserve / 2);
    const low = limit - reserve;
    // The RESP port's free slots count as taken, up to a small margin (the spares, freed at the pause, are the
    // relay's room then): slow web connections under an open files limit of 1024 took the descriptors of 535 of 600
    // RESP clients listen.max-clients (796 there) had let in, closed at accept with no error.
    const promised = this.#opts.promised?.() ?? 0;
    const promisedHigh = limit - Math.ceil(reserve / 8) - promised;
    const started = performance.now();
    const open = this.#count(Math.min(high, promisedHigh));
    this.#countMs = performance.now() - started;
    if (open === null) return this.stop();
    if (!this.#paused && (open >= high || open >= promisedHigh)) {
      this.#paused = true;
      this.#opts.pause();
      const freed = this.#releaseSpares();
      logger.warn(
        { openFds: Number.isFinite(open) ? open : 'all', openFilesLimit: limit, reserved: reserve, promisedToClients: promised, freed },
        'web port stops accepting connections: its connections are taking the descriptors the relay keeps for its files, links and RESP clients (spares freed for them); it accepts again once they are back under the reserve (raise the limit: ulimit -n, systemd LimitNOFILE=)',
      );
    } else if (this.#paused && open + this.#want() - this.#spares.length <= Math.min(low, promisedHigh - Math.floor(reserve / 2))) {
      this.#takeSpares();
      if (!this.#opts.resume()) return;
      this.#paused = false;
      logger.info({ openFds: open, openFilesLimit: limit }, 'web port accepts connections again');
    }
  }

  #schedule(): void {
    if (this.#paused) this.#fastUntil = Date.now() + FAST_FOR_MS;
    const fast = Math.min(FD_GUARD_INTERVAL_MS, Math.max(FD_GUARD_FAST_MS, 10 * this.#countMs));
    const ms = Date.now() < this.#fastUntil ? fast : FD_GUARD_INTERVAL_MS;
    this.#timer = setTimeout(() => {
      this.check();
      if (this.#timer) this.#schedule();
    }, ms);
    this.#timer.unref();
  }

  #want(): number {
    return Math.floor(this.#opts.reserve / 2);
  }

  #takeSpares(): void {
    while (this.#spares.length < this.#want()) {
      const fd = this.#openSpare();
      if (fd === null) return;
      this.#spares.push(fd);
    }
  }

  #releaseSpares(): number {
    const n = this.#spares.length;
    for (const fd of this.#spares) this.#closeSpare(fd);
    this.#spares = [];
    return n;
  }
}
