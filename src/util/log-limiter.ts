import type { Logger } from '../log.js';

interface Window {
  start: number;
  logged: number;
  suppressed: number;
}

/**
 * Rate limits warnings that clients can trigger at will (failed AUTH, protocol errors, limits hit): per message, at
 * most `burst` lines per `intervalMs`; the first line of the next window carries `suppressed`, the count dropped.
 * Keys are the fixed message texts, so the map stays small.
 */
export class LogLimiter {
  readonly #burst: number;
  readonly #intervalMs: number;
  readonly #windows = new Map<string, Window>();
  readonly #now: () => number;

  constructor(opts: { burst?: number; intervalMs?: number; now?: () => number } = {}) {
    this.#burst = opts.burst ?? 10;
    this.#intervalMs = opts.intervalMs ?? 60_000;
    this.#now = opts.now ?? Date.now;
  }

  /** Logs `msg` at warn on `log` unless this message was logged `burst` times in the current window. `burst` overrides the default. */
  warn(log: Logger, obj: Record<string, unknown>, msg: string, burst = this.#burst): void {
    this.#log(log, 'warn', obj, msg, burst);
  }

  /** The same at info (lines a client's connections make, such as replica state changes, with a larger `burst`). */
  info(log: Logger, obj: Record<string, unknown>, msg: string, burst = this.#burst): void {
    this.#log(log, 'info', obj, msg, burst);
  }

  #log(log: Logger, level: 'warn' | 'info', obj: Record<string, unknown>, msg: string, burst: number): void {
    const now = this.#now();
    let w = this.#windows.get(msg);
    if (!w || now - w.start >= this.#intervalMs) {
      const suppressed = w?.suppressed ?? 0;
      w = { start: now, logged: 0, suppressed: 0 };
      this.#windows.set(msg, w);
      if (suppressed > 0) obj = { ...obj, suppressed };
    }
    if (w.logged >= burst) {
      w.suppressed++;
      return;
    }
    w.logged++;
    log[level](obj, msg);
  }
}
