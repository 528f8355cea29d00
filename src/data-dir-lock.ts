import { promises as fsp, readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { RelayError, StorageError } from './errors.js';

/**
 * One relay per data directory. Two relays on one `dir` (a second instance started by hand beside the service, a
 * rolling update whose old pod still runs) cut back and rewrite each other's log segments, snapshots and state file.
 * The first holds `dir/relay.lock`; a second refuses to start, naming the first.
 *
 * Node has no flock(2), so the lock is a file created with O_EXCL that names its owner, and it is judged stale two
 * ways. On the same kernel and in the same PID namespace (the same boot_id and /proc/self/ns/pid) the owner is alive
 * exactly when its pid runs with the same start time: a relay killed with SIGKILL is replaced at once, and so is one
 * of a restarted container (the same kernel, hostname and pid). Anywhere else (another container or host sharing the
 * volume) the owner refreshes the file's mtime every `heartbeatMs`: a lock
 * unchanged for `staleMs` is taken over. The owner reads the file at every heartbeat, so a relay whose lock was taken
 * over (its loop stalled longer than `staleMs`) learns it within a heartbeat and stops (`onLost`).
 */

export const LOCK_FILE = 'relay.lock';

export class DataDirLockedError extends RelayError {
  constructor(message: string) {
    super('RELAY_ERR_STORAGE', message);
  }
}

interface Owner {
  readonly runId: string;
  readonly pid: number;
  readonly host: string;
  readonly bootId: string;
  readonly pidNs: string;
  readonly startTime: string;
  readonly since: string;
}

export interface DataDirLockOptions {
  readonly runId: string;
  readonly logger: Logger;
  /** The lock was taken over or its file replaced: another process writes the directory now. */
  readonly onLost: (owner: string) => void;
  readonly heartbeatMs?: number;
  readonly staleMs?: number;
  /**
   * How long a live holder is waited for before the start is refused: a relay started while the previous one still
   * runs its graceful shutdown (a restart that did not wait for the exit) takes the directory once it is free.
   */
  readonly waitMs?: number;
  /** How old (ctime, ms) a takeover's file set aside must be before a start removes it; default TAKEOVER_LEFT_MS. */
  readonly takeoverLeftMs?: number;
}

/**
 * A takeover sets the lock aside under a name of its own for a moment (#takeOver); a SIGKILL in that moment leaves
 * the file. The next relay to hold the lock removes those older than this (the rename set their ctime): a takeover
 * in progress, a relay starting beside this one, lasts milliseconds.
 */
const TAKEOVER_LEFT_MS = 10_000;

/** Directories held by a lock of this process: a second relay in one process is refused like one in another. */
const heldHere = new Set<string>();

function readOr(fn: () => string): string {
  try {
    return fn().trim();
  } catch {
    return '';
  }
}

/**
 * Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); '' when the process does not exist or has
 * exited and awaits its parent's wait() (a zombie, state Z or X: a killed relay whose supervisor has not reaped it).
 */
function startTimeOf(pid: number): string {
  const stat = readOr(() => readFileSync(`/proc/${pid}/stat`, 'latin1'));
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[0] === 'Z' || fields[0] === 'X' ? '' : (fields[19] ?? '');
}

function self(runId: string): Owner {
  return {
    runId,
    pid: process.pid,
    host: hostname(),
    bootId: readOr(() => readFileSync('/proc/sys/kernel/random/boot_id', 'latin1')),
    pidNs: readOr(() => readlinkSync('/proc/self/ns/pid')),
    startTime: startTimeOf(process.pid),
    since: new Date().toISOString(),
  };
}

function parseOwner(text: string): Owner | null {
  try {
    const o = JSON.parse(text) as Partial<Owner>;
    return typeof o.runId === 'string' && typeof o.pid === 'number' ? (o as Owner) : null;
  } catch {
    return null;
  }
}

/** The same lock file contents: the same owner, or both naming none. */
function sameOwner(a: Owner | null, b: Owner | null): boolean {
  return a === null || b === null ? a === b : a.runId === b.runId && a.pid === b.pid && a.since === b.since;
}

function describe(o: Owner | null): string {
  return o === null ? 'an unreadable lock' : `pid ${o.pid} on ${o.host}, run id ${o.runId}, since ${o.since}`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The disk or the directory refuses writes (read-only after errors, full, immutable): the relay still starts, as it did before the lock. */
function refusedWrite(err: unknown): boolean {
  return ['EROFS', 'ENOSPC', 'EDQUOT', 'EIO', 'EPERM', 'EACCES'].includes((err as NodeJS.ErrnoException).code ?? '');
}

export class DataDirLock {
  readonly path: string;
  readonly #dir: string;
  readonly #me: Owner;
  readonly #opts: DataDirLockOptions;
  #timer: NodeJS.Timeout | null = null;
  #beating = false;
  #lost = false;
  /** Not written yet: the disk refused it at start. Each heartbeat tries again. */
  #pending = false;

  private constructor(dir: string, me: Owner, opts: DataDirLockOptions) {
    this.#dir = dir;
    this.path = join(dir, LOCK_FILE);
    this.#me = me;
    this.#opts = opts;
  }

  /** Creates `dir` if needed and takes its lock, or throws DataDirLockedError naming the holder. */
  static async acquire(dir: string, opts: DataDirLockOptions): Promise<DataDirLock> {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const real = await fsp.realpath(dir);
    if (heldHere.has(real)) throw new DataDirLockedError(`data directory ${dir} is in use by another relay in this process`);
    // Claimed before the first await: of two starts in this process, the second is refused here.
    heldHere.add(real);
    const lock = new DataDirLock(real, self(opts.runId), opts);
    try {
      await lock.#takeWaiting(opts.waitMs ?? 0);
    } catch (err) {
      if (!refusedWrite(err)) {
        heldHere.delete(real);
        throw err;
      }
      // No live relay holds it (that was checked first), and the relay starts on such a disk: it serves from memory.
      lock.#pending = true;
      opts.logger.warn({ err, lock: lock.path }, 'data directory lock not written (the disk refuses writes): starting without it, taken once the disk takes writes');
    }
    if (!lock.#pending) await lock.#removeTakeoversLeft();
    lock.#timer = setInterval(() => void lock.#beat(), opts.heartbeatMs ?? 1000);
    lock.#timer.unref();
    return lock;
  }

  async #removeTakeoversLeft(): Promise<void> {
    const prefix = `${LOCK_FILE}.takeover-`;
    const names = await fsp.readdir(this.#dir).catch(() => [] as string[]);
    for (const name of names) {
      if (!name.startsWith(prefix)) continue;
      const path = join(this.#dir, name);
      const st = await fsp.stat(path).catch(() => null);
      if (st === null || Date.now() - st.ctimeMs < (this.#opts.takeoverLeftMs ?? TAKEOVER_LEFT_MS)) continue;
      await fsp.rm(path, { force: true }).catch(() => {});
      this.#opts.logger.info({ file: path }, 'lock file left aside by a takeover that did not finish (a crash): removed');
    }
  }

  async #takeWaiting(waitMs: number): Promise<void> {
    const until = Date.now() + waitMs;
    for (let logged = false; ; logged = true) {
      try {
        return await this.#take();
      } catch (err) {
        if (!(err instanceof DataDirLockedError) || Date.now() >= until) throw err;
        if (!logged) this.#opts.logger.warn({ lock: this.path, waitMs }, `${err.message}: waiting for it to exit`);
      }
      await sleep(Math.min(100, Math.max(0, until - Date.now())));
    }
  }

  async #take(): Promise<void> {
    const staleMs = this.#opts.staleMs ?? 3000;
    for (let attempt = 0; attempt < 3; attempt++) {
      if (await this.#create()) return;
      const held = await this.#read();
      if (held === undefined) continue; // removed meanwhile: create again
      if (this.#sameNamespace(held)) {
        if (held.pid !== process.pid && startTimeOf(held.pid) === held.startTime) throw this.#refusal(held);
      } else if (!this.#previousLife(held) && !(await this.#stale(staleMs))) throw this.#refusal(held);
      if (!(await this.#takeOver(held))) continue; // changed or removed meanwhile: look again
      this.#opts.logger.warn({ lock: this.path, previous: describe(held) }, 'data directory lock left by a relay that is gone: taken over');
      return;
    }
    throw new DataDirLockedError(`data directory ${this.#dir}: its lock file keeps changing; is another relay starting on it?`);
  }

  /**
   * Takes over the lock judged stale from `held`. Two relays starting together may both judge it so, and a write in
   * place read back is no test of who won (the first reads its own bytes back before the second writes). So the lock
   * is renamed aside to a name of this relay's (atomic: of two racers one moves it, the other finds it gone and
   * looks again), checked to be still the one judged, rewritten in place (its block is allocated: this works on a
   * full disk), and linked back, which fails when another relay created a lock meanwhile. False: it changed or went,
   * look again. Throws the refusal when another relay got it.
   */
  async #takeOver(held: Owner | null): Promise<boolean> {
    const aside = `${this.path}.takeover-${this.#me.runId}`;
    try {
      await fsp.rename(this.path, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
    try {
      if (!sameOwner(parseOwner(await fsp.readFile(aside, 'utf8')), held)) {
        // Another relay took it over first, or its holder rewrote it: put it back, unless a lock is there again.
        await fsp.link(aside, this.path).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw err;
        });
        return false;
      }
      await this.#write(aside);
      try {
        await fsp.link(aside, this.path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw this.#refusal((await this.#read()) ?? null);
        throw err;
      }
      return true;
    } finally {
      await fsp.rm(aside, { force: true }).catch(() => {});
    }
  }

  #sameNamespace(o: Owner | null): o is Owner {
    return o !== null && o.bootId !== '' && o.bootId === this.#me.bootId && o.pidNs !== '' && o.pidNs === this.#me.pidNs;
  }

  /**
   * A container restarted (`docker restart`, a pod's container): a new PID namespace, but the same kernel, hostname
   * and pid (1, or what its entrypoint gives it). Another live relay with this very host name and pid would have to
   * run in another container given the same hostname: not waited for.
   */
  #previousLife(o: Owner | null): boolean {
    return o !== null && o.bootId !== '' && o.bootId === this.#me.bootId && o.host === this.#me.host && o.pid === this.#me.pid;
  }

  /** Whether the lock file's mtime stays still for `staleMs` (the holder's heartbeat stopped). */
  async #stale(staleMs: number): Promise<boolean> {
    const first = await fsp.stat(this.path).catch(() => null);
    if (first === null) return true;
    const step = Math.max(10, Math.min(250, staleMs / 4));
    for (let waited = 0; waited < staleMs; waited += step) {
      await sleep(step);
      const now = await fsp.stat(this.path).catch(() => null);
      if (now === null || now.mtimeMs !== first.mtimeMs) return now === null;
    }
    return true;
  }

  #refusal(held: Owner | null): DataDirLockedError {
    return new DataDirLockedError(
      `data directory ${this.#dir} is in use by another psync-relay (${describe(held)}; ${this.path}). ` +
        'Two relays on one directory would overwrite each other\'s log; stop the other one or give this one its own dir ' +
        '(a copy of a running relay\'s directory carries its lock: delete the copy\'s relay.lock)',
    );
  }

  async #create(): Promise<boolean> {
    try {
      await fsp.writeFile(this.path, JSON.stringify(this.#me) + '\n', { flag: 'wx', mode: 0o600 });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw err;
    }
  }

  /** The lock's owner; null when the file does not name one (a crash between its creation and its write); undefined when it is gone. */
  async #read(): Promise<Owner | null | undefined> {
    try {
      return parseOwner(await fsp.readFile(this.path, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      // A disk that refuses is handled as such (acquire starts without the lock). Anything else is named: a bare
      // EISDIR (a directory where the lock file goes) said neither which file nor what to do.
      if (refusedWrite(err)) throw err;
      throw new StorageError(`the data directory lock ${this.path} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): remove or fix it`, { cause: err });
    }
  }

  /**
   * Overwrites the file in place: its block is already allocated, so a takeover works on a full disk. A reader that
   * meets it half written sees no owner and waits for the file to stay unchanged, which it then does not.
   */
  async #write(path = this.path): Promise<void> {
    const text = Buffer.from(JSON.stringify(this.#me) + '\n');
    const fh = await fsp.open(path, 'r+');
    try {
      await fh.write(text, 0, text.length, 0);
      await fh.truncate(text.length);
    } finally {
      await fh.close();
    }
  }

  async #beat(): Promise<void> {
    if (this.#beating || this.#lost || this.#timer === null) return;
    this.#beating = true;
    try {
      if (this.#pending) {
        await this.#take();
        this.#pending = false;
        if (this.#timer === null) await fsp.rm(this.path, { force: true }); // released meanwhile
        else this.#opts.logger.info({ lock: this.path }, 'data directory lock taken');
        return;
      }
      const held = await this.#read();
      if (this.#timer === null) return; // released meanwhile
      if (held === undefined) {
        // Removed by hand: put it back, unless another relay was quicker.
        if (!(await this.#create())) return;
      } else if (held === null) {
        // Names nobody: a put-back whose write a full disk refused, or truncated by hand. Still this relay's: written
        // again (a newcomer caught mid-takeover reads it back, sees this relay and gives up, as it should).
        await this.#write();
      } else if (held.runId !== this.#me.runId) {
        this.#lost = true;
        this.#opts.onLost(describe(held));
        return;
      }
      const now = new Date();
      await fsp.utimes(this.path, now, now);
    } catch (err) {
      if (err instanceof DataDirLockedError) {
        // Another relay took the directory while the disk refused this one's lock.
        this.#lost = true;
        this.#opts.onLost(err.message);
        return;
      }
      // A full or read-only disk: the lock stays as it is; the disk log reports the fault itself.
      this.#opts.logger.debug({ err, lock: this.path }, 'data directory lock heartbeat failed');
    } finally {
      this.#beating = false;
    }
  }

  /** Stops the heartbeat and removes the file if it still names this relay. */
  async release(): Promise<void> {
    if (this.#timer === null) return;
    clearInterval(this.#timer);
    this.#timer = null;
    heldHere.delete(this.#dir);
    if (this.#lost) return;
    const held = await this.#read().catch(() => null);
    if (held?.runId === this.#me.runId) await fsp.rm(this.path, { force: true }).catch(() => {});
  }
}
