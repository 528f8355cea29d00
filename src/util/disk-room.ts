import { closeSync, fsyncSync, openSync, promises as fsp, readFileSync, rmSync, statfsSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log.js';

/** Whether a write failed because the disk (or a quota) has no room left. */
export function noRoom(err: unknown): boolean {
  return ['ENOSPC', 'EDQUOT'].includes((err as NodeJS.ErrnoException | null)?.code ?? '');
}

/**
 * Whether a write failed because the disk takes none: a filesystem mounted (or remounted after an error) read-only,
 * a directory the relay may no longer write. No room would help; the disk must take writes again.
 */
export function refusesWrites(err: unknown): boolean {
  const e = err as (NodeJS.ErrnoException & { address?: string }) | null;
  // A socket's EPERM or EACCES (a firewall, SELinux) is no disk's.
  if (e?.syscall === 'connect' || e?.address !== undefined) return false;
  return ['EROFS', 'EACCES', 'EPERM'].includes(e?.code ?? '');
}

export interface DiskRoomOptions {
  /** The directory the RDB is written in. */
  readonly dir: string;
  readonly logger: Logger;
  /** What waits, for the log lines: `snapshot fetch`. */
  readonly what: string;
  /** What starts once there is room: `fetching it`. */
  readonly then: string;
  /**
   * A file in `dir` the wait is kept in, so that a restart does not forget it (each restart of a relay on a full disk
   * made the master fork again for an RDB that could not be written); absent = kept in memory only.
   */
  readonly file?: string;
}

/**
 * The wait file's size: made at start, while there is room, and from then on overwritten in place, which needs no
 * new block on a full disk. A torn or unreadable one is no wait: at worst one more attempt.
 */
const FILE_BYTES = 256;

/** The file made and removed to learn whether the disk takes writes (refusesWrites). */
const PROBE_FILE = '.write-probe';

/** More room than the last attempt had by at least this much before another starts: a trickle of freed bytes is no reason to fork the master again. */
const MARGIN = 1024 * 1024;

/**
 * An RDB written to the disk (a snapshot fetch, or the relay's own full sync from upstream) ran out of room. The
 * room it had (its file's size plus what was still free, measured before the file is removed) is the least the next
 * one needs; another attempt before the disk has more than that would only make the master fork for an RDB that
 * cannot be written, so the owner asks hasRoom() first, and starts at once when it says yes. statfs counts what the
 * relay's user may write (bavail); a filesystem that cannot say gets the attempt.
 */
export class DiskRoom {
  readonly #opts: DiskRoomOptions;
  #needBytes = 0;
  #loaded = false;
  #measured: Promise<void> = Promise.resolve();
  #logged = false;
  /** The error code of the last write the disk refused (refusesWrites), null while it takes writes. */
  #refused: string | null = null;

  constructor(opts: DiskRoomOptions) {
    this.#opts = opts;
  }

  /**
   * Reads the kept wait, or makes its file: at the first use, which comes after the relay took its data directory's
   * lock and made the directory (never from the constructor, which runs before both).
   */
  #load(): void {
    if (this.#loaded) return;
    this.#loaded = true;
    const path = this.#path;
    if (path === null) return;
    try {
      const kept = (JSON.parse(readFileSync(path, 'latin1')) as { needBytes?: unknown }).needBytes;
      if (typeof kept === 'number' && Number.isSafeInteger(kept) && kept > 0) {
        // The room an attempt had never exceeds the filesystem: a larger wait (a damaged file) would never end.
        const st = statfsSync(this.#opts.dir);
        if (kept <= st.blocks * st.bsize) this.#needBytes = kept;
        else this.#opts.logger.warn({ file: path, needBytes: kept }, `kept wait for room on the disk is larger than the filesystem: not used`);
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') this.#keep();
    }
  }

  get #path(): string | null {
    return this.#opts.file === undefined ? null : join(this.#opts.dir, this.#opts.file);
  }

  /** Writes the wait to its file, in place once the file exists; a failure is logged, and the wait kept in memory. */
  #keep(): void {
    const path = this.#path;
    if (path === null) return;
    const text = JSON.stringify({ needBytes: this.#needBytes }).padEnd(FILE_BYTES, ' ');
    try {
      let fd: number;
      try {
        fd = openSync(path, 'r+');
      } catch {
        // The relay's own user only, as every file of its data directory.
        writeFileSync(path, text, { encoding: 'latin1', flag: 'wx', mode: 0o600 });
        return;
      }
      try {
        writeSync(fd, text, 0, 'latin1');
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      this.#opts.logger.warn({ err, file: path }, `could not keep the ${this.#opts.what}'s wait for room on the disk; a restart forgets it`);
    }
  }

  /** The room the next attempt waits for (more than the last one had), 0 when it waits for none. */
  get needBytes(): number {
    this.#load();
    return this.#needBytes;
  }

  /** Whether the next attempt waits: for room, or for the disk to take writes again. */
  get waiting(): boolean {
    return this.needBytes > 0 || this.#refused !== null;
  }

  /** The error code of the write the disk refused while it still refuses (the next attempt waits), null when none. */
  get refusedBy(): string | null {
    return this.#refused;
  }

  /**
   * An attempt failed with `err`, a write the disk refused (refusesWrites): the next one waits until a write to the
   * directory works again. On a read-only disk every attempt of a full sync made the master fork for an RDB that
   * failed at once.
   */
  refused(err: unknown): void {
    this.#refused = (err as NodeJS.ErrnoException).code ?? 'EROFS';
    this.#logged = false;
  }

  /**
   * Whether the disk takes writes now (a new file made and removed in the directory, as an RDB's temp file is);
   * false also marks the wait (refused), as an attempt that failed would have.
   */
  writable(): boolean {
    this.#load();
    const err = this.#probe();
    if (err === null) return true;
    if (this.#refused === null) this.refused(err);
    return false;
  }

  #probe(): NodeJS.ErrnoException | null {
    // A file of its own, not the wait file: a directory that refuses new files may still let one be written in place.
    const path = join(this.#opts.dir, PROBE_FILE);
    try {
      closeSync(openSync(path, 'w', 0o600));
      rmSync(path, { force: true });
      return null;
    } catch (err) {
      // Anything else (ENOSPC: no block for the directory): the room, measured, says whether to wait.
      return refusesWrites(err) ? (err as NodeJS.ErrnoException) : null;
    }
  }

  /**
   * An attempt ran out of room writing `file`: waits from now; the room it had is measured once `closed` resolves
   * (the file written to the end), before the returned promise resolves; `file` must stay until then.
   */
  ranOut(file: string, closed: Promise<unknown> = Promise.resolve()): Promise<void> {
    this.#load();
    this.#logged = false;
    this.#needBytes = Math.max(1, this.#needBytes);
    this.#measured = (async () => {
      await closed.catch(() => {});
      const size = await fsp.stat(file).then(
        (st) => st.size,
        () => 0,
      );
      const free = await this.#free();
      this.#needBytes = Math.max(1, size + (Number.isFinite(free) ? free : 0));
      this.#keep();
    })();
    return this.#measured;
  }

  /** The next attempt needs at least `bytes` (it is known to be larger than what it was given), if it waits at all. */
  atLeast(bytes: number): void {
    this.#load();
    if (this.#needBytes === 0 || bytes <= this.#needBytes) return;
    this.#needBytes = bytes;
    this.#keep();
  }

  /**
   * Whether the next attempt may start: no wait, or the disk takes writes again and now has more room than the last
   * one had.
   */
  async hasRoom(): Promise<boolean> {
    this.#load();
    const { dir, logger, what, then } = this.#opts;
    if (this.#refused !== null) {
      const err = this.#probe();
      if (err !== null) {
        if (!this.#logged) {
          this.#logged = true;
          logger.warn({ err, dir }, `${what} waits for the disk to take writes: the last one was refused (${this.#refused}); it starts again once a write works`);
        }
        return false;
      }
      logger.info({ dir, was: this.#refused }, `the disk takes writes again: ${then}`);
      this.#refused = null;
      this.#logged = false;
    }
    if (this.#needBytes === 0) return true;
    await this.#measured;
    const freeBytes = await this.#free();
    const fields = { needBytes: this.#needBytes, freeBytes, dir };
    if (freeBytes > this.#needBytes + MARGIN) {
      logger.info(fields, `room on the disk for the ${what} again: ${then}`);
      this.#needBytes = 0;
      this.#keep();
      return true;
    }
    if (!this.#logged) {
      this.#logged = true;
      logger.warn(fields, `${what} waits for room on the disk: the last one ran out of room; it starts again once more is free`);
    }
    return false;
  }

  #free(): Promise<number> {
    return fsp.statfs(this.#opts.dir).then(
      (st) => st.bavail * st.bsize,
      () => Infinity,
    );
  }
}
