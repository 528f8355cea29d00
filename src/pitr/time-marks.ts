import { appendFile, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import { writeFileAtomic } from '../backlog/file-io.js';
import { crc32 } from '../backlog/crc32.js';

/** One point of the stream in time: the last byte of a whole command, and when the relay received it. */
export interface TimeMark {
  readonly offset: number;
  readonly ms: number;
}

const EVERY_MS = 1000;

/**
 * One mark as a line of the file: `<offset> <ms> <crc>`, the CRC-32 (hex) of `<offset> <ms>`. A digit changed on disk
 * would move a point-in-time request by time to another moment; with the CRC such a line is not a mark. Lines of the
 * earlier format (no CRC) are still read.
 */
function line(m: TimeMark): string {
  const text = `${m.offset} ${m.ms}`;
  return `${text} ${(crc32(Buffer.from(text, 'latin1')) >>> 0).toString(16).padStart(8, '0')}\n`;
}

/** The mark a line holds; null when it holds none (torn, damaged, or not a mark). */
function parse(text: string): TimeMark | null {
  const m = /^(\d+) (\d+)(?: ([0-9a-f]{8}))?$/.exec(text);
  if (!m) return null;
  if (m[3] !== undefined && (crc32(Buffer.from(`${m[1]} ${m[2]}`, 'latin1')) >>> 0) !== parseInt(m[3], 16)) return null;
  return { offset: Number(m[1]), ms: Number(m[2]) };
}

/** Forgotten marks after which the file is rewritten with only the kept ones (it never grows without bound). */
const COMPACT_AFTER = 3600;

/**
 * The wall-clock time of the stream: at most one mark a second (the command boundary the relay held then, and the
 * time), kept in memory and appended to `<dir>/marks-<epoch>.log` so that a restart still knows when each part of
 * the disk log arrived. Marks older than the log's first byte are forgotten. Used by point-in-time requests
 * (`RELAY PITR TIME`) and to say when an offset was written.
 */
export class TimeMarks {
  #dir: string;
  #logger: Logger;
  #epoch = -1;
  #marks: TimeMark[] = [];
  #pending: string[] = [];
  /** The write under way (it goes on with the lines noted meanwhile); null when none. */
  #writing: Promise<void> | null = null;
  /** Marks forgotten since the file was last rewritten. */
  #dropped = 0;
  /** The boundary held after the previous append, and when. */
  #seen: TimeMark | null = null;
  /**
   * The file may end inside a line (a crash or a full disk cut an append short): an append would join that part
   * with the next mark into a false one, so the next write replaces the file instead.
   */
  #torn = false;
  /**
   * Marks the end of a burst a second after it when no byte follows (#quiet). Without it the end stayed in #seen,
   * memory only, until the next byte, which a quiet master sends once per repl-ping-replica-period (10 s by
   * default): a SIGKILL meanwhile lost up to that much of the marks, not a second.
   */
  #quietTimer: NodeJS.Timeout | null = null;

  constructor(dir: string, logger: Logger) {
    this.#dir = dir;
    this.#logger = logger;
  }

  get all(): readonly TimeMark[] {
    return this.#marks;
  }

  #file(epoch: number): string {
    return join(this.#dir, `marks-${String(epoch).padStart(10, '0')}.log`);
  }

  /** Loads the marks of `epoch` a previous run left (those past `endOffset` were never on disk: dropped). */
  async load(epoch: number, endOffset: number): Promise<void> {
    this.#stopQuiet();
    this.#epoch = epoch;
    this.#marks = [];
    this.#seen = null;
    // Files of other histories (a crash between a new history and the old file's removal) go, and so do the temp
    // files of compactions a crash interrupted.
    for (const name of await readdir(this.#dir).catch(() => [] as string[])) {
      const stale = (/^marks-\d{10}\.log$/.test(name) && join(this.#dir, name) !== this.#file(epoch)) || /^marks-\d{10}\.log\.tmp-/.test(name);
      if (stale) await rm(join(this.#dir, name), { force: true }).catch(() => {});
    }
    this.#torn = false;
    try {
      const text = await readFile(this.#file(epoch), 'utf8');
      this.#torn = text.length > 0 && !text.endsWith('\n');
      let damaged = 0;
      for (const l of text.split('\n')) {
        const mark = parse(l);
        if (mark === null) {
          if (l !== '') damaged++;
          continue;
        }
        const last = this.#marks[this.#marks.length - 1];
        if (mark.offset <= endOffset && (!last || (mark.offset > last.offset && mark.ms >= last.ms))) this.#marks.push(mark);
      }
      // The last line may be torn (see #torn): not damage.
      if (damaged > (this.#torn ? 1 : 0)) this.#logger.warn({ lines: damaged, file: this.#file(epoch) }, 'time marks that do not match their checksum skipped: those times are not used for points in time');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.#logger.warn({ err }, 'time marks unreadable: times of older offsets unknown');
    }
  }

  /** A new history: its marks start empty (the old file goes). */
  reset(epoch: number): void {
    this.#stopQuiet();
    const old = this.#epoch;
    this.#epoch = epoch;
    this.#marks = [];
    this.#pending = [];
    this.#dropped = 0;
    this.#seen = null;
    this.#torn = false;
    if (old >= 0 && old !== epoch) void rm(this.#file(old), { force: true }).catch(() => {});
  }

  /**
   * The relay holds a whole command ending at `boundary`; marked when a second has passed since the last mark.
   * Marks before `firstOffset` (bytes the log no longer holds) are forgotten on the way.
   */
  note(boundary: number, firstOffset: number, now = Date.now()): void {
    const seen = this.#seen;
    this.#seen = { offset: boundary, ms: now };
    if (this.#quietTimer === null) this.#armQuiet(EVERY_MS);
    // After a quiet second, the end of the previous burst is marked with its own time: a point in the quiet
    // stretch then resolves to exactly what was held, not to a mark inside the burst.
    if (seen && now - seen.ms >= EVERY_MS) this.#mark(seen);
    const last = this.#marks[this.#marks.length - 1];
    if (last && now - last.ms < EVERY_MS) return;
    this.#mark(this.#seen);
    this.#trim(firstOffset);
    void this.#flush();
  }

  #armQuiet(ms: number): void {
    this.#quietTimer = setTimeout(() => this.#quiet(), ms);
    this.#quietTimer.unref();
  }

  /** A second after the last note with none since: its boundary is marked with its own time, and written. */
  #quiet(): void {
    this.#quietTimer = null;
    const seen = this.#seen;
    const last = this.#marks[this.#marks.length - 1];
    if (seen === null || (last && last.offset >= seen.offset)) return;
    const wait = seen.ms + EVERY_MS - Date.now();
    if (wait > 0) {
      this.#armQuiet(wait);
      return;
    }
    this.#mark(seen);
    void this.#flush();
  }

  #stopQuiet(): void {
    if (this.#quietTimer !== null) clearTimeout(this.#quietTimer);
    this.#quietTimer = null;
  }

  #mark(m: TimeMark): void {
    const last = this.#marks[this.#marks.length - 1];
    if (last && (m.offset <= last.offset || m.ms < last.ms)) return;
    this.#marks.push(m);
    this.#pending.push(line(m));
  }

  /** Keeps the last mark before `firstOffset` (it still dates the log's first bytes) and those after it. */
  #trim(firstOffset: number): void {
    let i = 0;
    while (i < this.#marks.length - 1 && this.#marks[i + 1]!.offset < firstOffset) i++;
    if (i === 0) return;
    this.#marks = this.#marks.slice(i);
    this.#dropped += i;
  }

  /** Writes the pending lines; resolves when none is left (those noted while it writes included). */
  #flush(): Promise<void> {
    if (this.#writing === null && this.#pending.length > 0 && this.#epoch >= 0) this.#writing = this.#write();
    return this.#writing ?? Promise.resolve();
  }

  async #write(): Promise<void> {
    while (this.#pending.length > 0 && this.#epoch >= 0) {
      const compact = this.#dropped >= COMPACT_AFTER || this.#torn;
      const lines = compact ? this.#marks.map(line).join('') : this.#pending.join('');
      this.#pending = [];
      if (compact) this.#dropped = 0;
      try {
        if (compact) await writeFileAtomic(this.#file(this.#epoch), lines);
        else await appendFile(this.#file(this.#epoch), lines, { mode: 0o600 });
        if (compact) this.#torn = false;
      } catch (err) {
        // Part of the lines may be in the file.
        this.#torn = true;
        this.#logger.debug({ err }, 'time marks not written');
      }
    }
    this.#writing = null;
  }

  /**
   * A graceful stop: the end of the last burst (noted, not yet marked: see note()) is marked with its own time and
   * every mark is on disk when this resolves; else a restart would date that end at the restart.
   */
  async close(): Promise<void> {
    this.#stopQuiet();
    if (this.#seen) this.#mark(this.#seen);
    await this.#flush();
  }

  /**
   * The last command boundary held at `ms` (null: none that old is held): the last mark at or before it, or the
   * boundary noted after it when that one was held by `ms` (the end of a burst not marked yet: see note()). Inside
   * a busy stretch at most a second earlier than what was held (the marks' resolution), never later.
   */
  atOrBefore(ms: number): TimeMark | null {
    let best: TimeMark | null = null;
    for (const m of this.#marks) {
      if (m.ms > ms) break;
      best = m;
    }
    const seen = this.#seen;
    const last = this.#marks[this.#marks.length - 1];
    if (seen && seen.ms <= ms && (!last || seen.offset > last.offset)) return seen;
    return best;
  }

  /** When `offset` was received, as far as the marks tell (the first mark at or after it); null if unknown. */
  timeOf(offset: number): number | null {
    for (const m of this.#marks) if (m.offset >= offset) return m.ms;
    // Newer than the last mark: held since the last append at the latest.
    return this.#seen && this.#seen.offset >= offset ? this.#seen.ms : null;
  }
}
