import { RelayError } from '../errors.js';
import { LogCursor } from '../backlog/log-cursor.js';
import type { ReplLog } from '../backlog/repl-log.js';
import type { SnapshotMeta } from '../backlog/snapshot-store.js';
import { commandKeys } from '../resp/command-keys.js';
import { StreamScanner, type ScannedCommand } from '../resp/stream-scanner.js';
import { globBytes, globMatch } from '../util/glob.js';
import { clip } from '../util/text.js';
import type { TimeMarks } from './time-marks.js';

/** A point-in-time request: an offset, a time (unix ms), or just before the last occurrence of a command. */
export type PitrTarget =
  | { readonly kind: 'offset'; readonly offset: number }
  | { readonly kind: 'time'; readonly ms: number }
  | { readonly kind: 'before'; readonly command: string; readonly pattern: string | null };

/** What a point-in-time replica is served: this snapshot, then the stream up to `offset` (a command boundary). */
export interface PitrPlan {
  readonly snapshot: SnapshotMeta;
  readonly offset: number;
  /** When the relay received the stream up to `offset` (null: unknown). */
  readonly ms: number | null;
}

/** The window a point in time can be chosen in. */
export interface PitrWindow {
  readonly firstOffset: number;
  readonly lastOffset: number;
  readonly firstMs: number | null;
  readonly lastMs: number | null;
  readonly snapshots: readonly SnapshotMeta[];
}

/** The latest instant a Date holds (ECMAScript: 8.64e15 ms); past it toISOString() throws a RangeError. */
const MAX_DATE_MS = 8.64e15;

/** `ms` as ISO 8601, or as unix milliseconds when no Date can hold it (a request may name any integer). */
function timeText(ms: number): string {
  return Math.abs(ms) <= MAX_DATE_MS ? new Date(ms).toISOString() : `${ms} (unix ms, past the last date there is)`;
}

/** A request that cannot be served, with a message naming the window. */
export class PitrError extends RelayError {
  constructor(message: string) {
    super('RELAY_ERR_PITR', message);
  }
}

export interface PlannerSource {
  readonly log: ReplLog;
  readonly marks: TimeMarks;
  /** The snapshots of the current history, oldest first. */
  snapshots(): readonly SnapshotMeta[];
}

/** Log bytes scanned per turn of the event loop: a scan of the whole disk log never blocks the relay. */
const SCAN_SLICE = 4 * 1024 * 1024;

/**
 * Chooses what a point-in-time replica gets: the newest held snapshot at or before the target, then the stream up
 * to exactly the target, moved back to a command boundary and out of any MULTI/EXEC block it falls in.
 */
export class PitrPlanner {
  #src: PlannerSource;

  constructor(src: PlannerSource) {
    this.#src = src;
  }

  /** The window: from the oldest snapshot the log still follows to the last whole command held. */
  window(): PitrWindow {
    const { log, marks } = this.#src;
    const snapshots = this.#src.snapshots().filter((s) => log.holds(s.offset + 1));
    const first = snapshots[0]?.offset ?? -1;
    const last = log.lastBoundary;
    return { firstOffset: first, lastOffset: last, firstMs: first < 0 ? null : marks.timeOf(first), lastMs: marks.timeOf(last) ?? marks.all.at(-1)?.ms ?? null, snapshots };
  }

  async plan(target: PitrTarget): Promise<PitrPlan> {
    const w = this.window();
    if (w.snapshots.length === 0) {
      // None yet (a full sync from upstream still being saved, on a slow disk for seconds) is not the log moving on.
      if (this.#src.snapshots().length === 0) throw new PitrError('no point in time can be served yet: the relay holds no snapshot of its current history; ask again');
      throw new PitrError('no point in time can be served: the log no longer follows any snapshot the relay holds');
    }
    const describe = (): string =>
      `the window is offsets ${w.firstOffset}..${w.lastOffset}` +
      (w.firstMs !== null && w.lastMs !== null ? ` (${new Date(w.firstMs).toISOString()} .. ${new Date(w.lastMs).toISOString()})` : '');
    let wanted: number;
    switch (target.kind) {
      case 'offset':
        if (target.offset < w.firstOffset || target.offset > w.lastOffset) throw new PitrError(`offset ${target.offset} is outside the window: ${describe()}`);
        wanted = target.offset;
        break;
      case 'time': {
        const mark = this.#src.marks.atOrBefore(target.ms);
        if (mark === null || mark.offset < w.firstOffset || target.ms > Date.now()) {
          throw new PitrError(`time ${timeText(target.ms)} is outside the window: ${describe()}`);
        }
        wanted = Math.min(mark.offset, w.lastOffset);
        break;
      }
      case 'before': {
        const start = await this.#lastOccurrence(w.firstOffset, w.lastOffset, target.command.toLowerCase(), target.pattern);
        if (start === null) {
          throw new PitrError(`no ${clip(target.command.toUpperCase())}${target.pattern ? ` on ${clip(target.pattern)}` : ''} in the window: ${describe()}`);
        }
        wanted = start - 1;
        break;
      }
    }
    const offset = await this.#settle(w, wanted);
    const snapshot = [...w.snapshots].reverse().find((s) => s.offset <= offset)!;
    return { snapshot, offset, ms: this.#src.marks.timeOf(offset) };
  }

  /**
   * The last whole command ending at or before `wanted`, outside any MULTI/EXEC block (a block in progress there
   * moves the point back to just before its MULTI). Scanned from the newest snapshot at or before it: a snapshot
   * is always at a boundary, outside a transaction.
   */
  async #settle(w: PitrWindow, wanted: number): Promise<number> {
    const from = [...w.snapshots].reverse().find((s) => s.offset <= wanted)!.offset;
    let beforeMulti = -1;
    let point = from;
    await this.#scan(from, wanted, (cmd) => {
      const name = cmd.args[0]?.toString('latin1').toLowerCase();
      if (name === 'multi') beforeMulti = cmd.start - 1;
      else if (name === 'exec' || name === 'discard') beforeMulti = -1;
      if (beforeMulti < 0) point = cmd.end;
    });
    return point;
  }

  /**
   * The first byte of the last command named `name` (and touching a key matching `pattern`) in (from, to]. Only its
   * key arguments are matched: not values or fields (`SET audit:last "user:1 edited"` is no SET on `user:*`).
   */
  async #lastOccurrence(from: number, to: number, name: string, pattern: string | null): Promise<number | null> {
    let found: number | null = null;
    const bytesPattern = pattern === null ? '' : globBytes(pattern);
    await this.#scan(from, to, (cmd) => {
      if (cmd.args[0]?.toString('latin1').toLowerCase() !== name) return;
      if (pattern !== null && !commandKeys(cmd.args, name).some((k) => globMatch(bytesPattern, k.toString('latin1')))) return;
      found = cmd.start;
    });
    return found;
  }

  /** Feeds the commands ending in (from, to] to `onCommand`, reading memory or disk, a slice per turn. */
  async #scan(from: number, to: number, onCommand: (cmd: ScannedCommand) => void): Promise<void> {
    const log = this.#src.log;
    const cursor = new LogCursor(log, from);
    const scanner = new StreamScanner(onCommand, { maxBulkLen: Number.MAX_SAFE_INTEGER });
    scanner.reset(from);
    scanner.decodeArgs = true;
    let slice = 0;
    while (cursor.offset < to) {
      if (cursor.lost) throw new PitrError(`the log dropped offset ${cursor.offset + 1} while it was read: try again`);
      const v = cursor.peek();
      if (v === null) break;
      if (!Buffer.isBuffer(v)) {
        await v;
        continue;
      }
      const n = Math.min(v.length, to - cursor.offset);
      const { error } = scanner.scan(n === v.length ? v : v.subarray(0, n));
      if (error !== null) throw new PitrError(`the log cannot be read at offset ${cursor.offset + 1}: ${error}`);
      cursor.advance(n);
      if ((slice += n) >= SCAN_SLICE) {
        slice = 0;
        await new Promise((r) => setImmediate(r));
      }
    }
  }
}
