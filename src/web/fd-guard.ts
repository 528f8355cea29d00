import { readdirSync } from 'node:fs';
import type { Logger } from '../log.js';

/**
 * How often the open descriptors are counted near the limit (past half of it), and below. A readdir of /proc/self/fd
 * costs the loop about 1.3 ms at 1,100 descriptors (the relay at N = 1,000 replicas), so it runs once a second
 * while far from the limit; a burst that takes every descriptor meanwhile is caught by the next count (EMFILE).
 */
export const FD_GUARD_NEAR_MS = 250;
export const FD_GUARD_FAR_MS = 1000;

export interface FdGuardOptions {
  /** The open files limit (fd-limit.ts openFilesLimit); null: no guard. */
  readonly limit: number | null;
  /** Descriptors the relay keeps for its own files and links (fd-limit.ts RESERVED_FDS). */
  readonly reserve: number;
  readonly logger: Logger;
  /** Stop accepting web connections (close the listening socket). */
  pause(): void;
  /** Accept them again; false when listening failed (tried again at the next count). */
  resume(): boolean;
  /** Open descriptors now; null when they cannot be counted (no /proc). */
  count?: () => number | null;
}

/** Open descriptors; Infinity when none is left to count them with (EMFILE, ENFILE); null without /proc. */
function openFds(): number | null {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EMFILE' || code === 'ENFILE' ? Infinity : null;
  }
}

/**
 * The web port may not take the descriptors the relay keeps for itself. uWS.js 20.30 accepts every HTTP connection
 * and tells its owner of none (no count, no close hook) until a request arrives, so 400 connections sending half a
 * header, reopened as uWS closes them, took every descriptor under a limit of 256: the upstream link could not
 * reconnect (EMFILE), the disk log could not open a segment and dropped its history, and no fresh snapshot could be
 * fetched. listen.max-clients already keeps the RESP port within the limit less the reserve (fd-limit.ts); this
 * counts the process's descriptors (every 250 ms past half the limit, every second below) and, once half the
 * reserve is gone (or none is left to count with), closes the web port's listening socket until they are back
 * under the limit less the whole reserve: connections already open stay (uWS closes one that sends no whole request
 * within 10 s; it offers no way to close them sooner), new ones are refused meanwhile. So a burst that takes every
 * descriptor between two counts holds them for at most a count and those 10 s, instead of for as long as it is
 * reopened. The relay's own work goes first.
 */
export class FdGuard {
  readonly #opts: FdGuardOptions;
  readonly #count: () => number | null;
  #timer: NodeJS.Timeout | null = null;
  #paused = false;

  constructor(opts: FdGuardOptions) {
    this.#opts = opts;
    this.#count = opts.count ?? openFds;
  }

  /** Whether the web port is closed to new connections now. */
  get paused(): boolean {
    return this.#paused;
  }

  start(): void {
    if (this.#opts.limit === null || this.#timer) return;
    this.#schedule(FD_GUARD_NEAR_MS);
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #schedule(ms: number): void {
    this.#timer = setTimeout(() => {
      const open = this.check();
      if (open === null) this.#timer = null;
      else this.#schedule(open < this.#opts.limit! / 2 && !this.#paused ? FD_GUARD_FAR_MS : FD_GUARD_NEAR_MS);
    }, ms);
    this.#timer.unref();
  }

  /** One count, and what it calls for; returns the count (null: none can be taken here). */
  check(): number | null {
    const { limit, reserve, logger } = this.#opts;
    if (limit === null) return null;
    const open = this.#count();
    if (open === null) return null;
    const high = limit - Math.ceil(reserve / 2);
    const low = limit - reserve;
    if (!this.#paused && open >= high) {
      this.#paused = true;
      this.#opts.pause();
      logger.warn(
        { openFds: open, openFilesLimit: limit, reserved: reserve },
        'web port stops accepting connections: its connections are taking the descriptors the relay keeps for its files and links; it accepts again once they are back under the reserve (raise the limit: ulimit -n, systemd LimitNOFILE=)',
      );
    } else if (this.#paused && open <= low && this.#opts.resume()) {
      this.#paused = false;
      logger.info({ openFds: open, openFilesLimit: limit }, 'web port accepts connections again');
    }
    return open;
  }
}
