import { nodeFileIo, type FileHandleIo, type FileIo, type OpenOptions } from '../../src/backlog/file-io.js';
import { DIRECT_ALIGN } from '../../src/backlog/direct-writer.js';
import { basename, extname } from 'node:path';

/** The error a simulated crash throws: the process is "dead" from then on, every later operation throws too. */
export class CrashError extends Error {
  readonly code = 'ECRASH';
}

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected`), { code });
}

/**
 * A real file layer (node's, on a temp dir) with faults injected on demand:
 * - `shortWrites(n)`: every writev writes at most n bytes (the rest is left to the caller, as a real short write);
 *   on an O_DIRECT file, whole blocks (at least one), as the kernel would;
 * - `failWrites(code, count, segmentsOnly)`: the next `count` writev calls (to disk log segments only: a full disk
 *   that still takes writes in place of other files' blocks) fail with that errno (EIO, ENOSPC, EFBIG), writing nothing;
 * - `failReads(code, count)`: the next `count` reads fail with that errno;
 * - `failOps(op, code, count)`: the next `count` rm (rename, directory fsync) calls fail with that errno, changing
 *   nothing;
 * - `hangWrites()`: writev calls never return until `release()` (then they write, and `releasedWrites` shows what);
 * - `crashAt(n, seed)`: the n-th mutating operation (open for writing, writev, datasync, sync, rename, rm, truncate) and
 *   every operation after it throw CrashError; a writev that crashes first writes a seeded prefix of its data (torn;
 *   whole blocks on an O_DIRECT file, as a device tears a write);
 * - `refuseDirect('open' | 'write')`: O_DIRECT opens, or writes on O_DIRECT files, fail with EINVAL (a filesystem
 *   without O_DIRECT; a device whose block is larger than the writer aligns to);
 * `ops` counts the mutating operations so far.
 */
export class FaultyIo implements FileIo {
  ops = 0;
  /** The kinds of mutating operation made so far (`open:w .log`, `writev .sum`, `rm .log`, `syncDir`, ...). */
  readonly kinds = new Set<string>();
  /** The size in bytes of every writev call so far to a disk log segment (`.log`), in order. */
  readonly writes: number[] = [];
  /** datasync calls on disk log segments (`.log`) so far. */
  segmentSyncs = 0;
  /** Files (base names) with a datasync that succeeded, in order. */
  readonly synced: string[] = [];
  /** Files (base names) opened for writing, with their flags, once opened, in order. */
  readonly opened: string[] = [];
  crashed = false;
  /** Directory fsyncs that succeeded so far. */
  dirSyncs = 0;
  #short = 0;
  #fail: { code: string; left: number; segmentsOnly: boolean } | null = null;
  #failRead: { code: string; left: number } | null = null;
  #failOp: { op: 'rm' | 'rename' | 'syncDir'; code: string; left: number } | null = null;
  #failSegmentOp: { op: 'datasync' | 'truncate'; code: string; left: number } | null = null;
  #hang: Array<() => void> | null = null;
  /** Opens waiting in hangOpens(), and which ones wait. */
  #hungOpens: Array<() => void> = [];
  #hangOpens: ((path: string, flags: string) => boolean) | null = null;
  #hangOnlySums = false;
  #crashAt = 0;
  #seed = 1;
  #inflight = new Set<Promise<unknown>>();
  #refuseDirect: 'open' | 'write' | null = null;
  /** Writes that hung and were released, with what they wrote. */
  readonly releasedWrites: Array<{ position: number; data: Buffer }> = [];

  /** Resolves once every real operation started before now has finished: a crash is atomic for the ones in flight. */
  async settled(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#inflight.add(p);
    void p.finally(() => this.#inflight.delete(p)).catch(() => {});
    return p;
  }

  shortWrites(n: number): void {
    this.#short = n;
  }
  failWrites(code: string, count: number, segmentsOnly = false): void {
    this.#fail = { code, left: count, segmentsOnly };
  }
  /** The next `count` reads fail with that errno (EIO: a bad sector; EMFILE: out of descriptors). */
  failReads(code: string, count: number): void {
    this.#failRead = { code, left: count };
  }
  /** The next `count` rm (rename, directory fsync) calls fail with that errno (EIO, EROFS, ENOSPC), changing nothing. */
  failOps(op: 'rm' | 'rename' | 'syncDir', code: string, count: number): void {
    this.#failOp = { op, code, left: count };
  }
  /** The next `count` fdatasync (or ftruncate) calls on a disk log segment (`.log`) fail with that errno. */
  failSegment(op: 'datasync' | 'truncate', code: string, count: number): void {
    this.#failSegmentOp = { op, code, left: count };
  }
  /** Writes from now on wait until release(): every file's, or only the checksum files' (`.sum`). */
  hangWrites(only: 'sums' | null = null): void {
    this.#hang = [];
    this.#hangOnlySums = only === 'sums';
  }
  /** Opens from now on for which `which` is true return only at release() (the file is opened at once). */
  hangOpens(which: (path: string, flags: string) => boolean): void {
    this.#hangOpens = which;
  }
  /** Opens waiting in hangOpens(). */
  get hungOpens(): number {
    return this.#hungOpens.length;
  }
  /** Writes waiting in hangWrites(). */
  get hungWrites(): number {
    return this.#hang?.length ?? 0;
  }
  /** Lets hung writes go on (they then do their write). */
  release(): void {
    const waiting = [...(this.#hang ?? []), ...this.#hungOpens];
    this.#hang = null;
    this.#hangOpens = null;
    this.#hungOpens = [];
    for (const go of waiting) go();
  }
  refuseDirect(what: 'open' | 'write'): void {
    this.#refuseDirect = what;
  }
  crashAt(n: number, seed = 1): void {
    this.#crashAt = n;
    this.#seed = seed;
  }

  #rand(): number {
    // mulberry32
    let x = (this.#seed += 0x6d2b79f5);
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  }

  /** Counts a mutating operation (`kind`: what it is and on which kind of file, e.g. `writev .log`); true when this is the one that crashes. */
  #step(kind: string): boolean {
    if (this.crashed) throw new CrashError('crashed earlier');
    this.ops++;
    this.kinds.add(kind);
    if (this.#crashAt > 0 && this.ops >= this.#crashAt) {
      this.crashed = true;
      return true;
    }
    return false;
  }

  #check(): void {
    if (this.crashed) throw new CrashError('crashed earlier');
  }

  async open(path: string, flags: string, mode?: number, opts?: OpenOptions): Promise<FileHandleIo> {
    if (flags === 'r') this.#check();
    else if (this.#step(`open:${flags} ${extname(path)}`)) throw new CrashError(`crash at open ${path}`);
    if (opts?.direct && this.#refuseDirect === 'open') throw errno('EINVAL');
    const fh = await this.#track(nodeFileIo.open(path, flags, mode, opts));
    if (flags !== 'r') this.opened.push(`${basename(path)} ${flags}`);
    // The file is open; its caller hears of it only once released.
    if (this.#hangOpens?.(path, flags)) await new Promise<void>((go) => this.#hungOpens.push(go));
    return this.#wrap(fh, opts?.direct === true, path.endsWith('.log'), path.endsWith('.sum'), basename(path));
  }

  #wrap(fh: FileHandleIo, direct: boolean, segment: boolean, sums: boolean, name: string): FileHandleIo {
    const ext = extname(name);
    // O_DIRECT transfers stay whole blocks.
    const cut = (n: number, min: number): number => (direct ? Math.max(min, n - (n % DIRECT_ALIGN)) : n);
    return {
      fd: fh.fd,
      writev: async (buffers, position) => {
        if (segment) this.writes.push(buffers.reduce((n, b) => n + b.length, 0));
        const crash = this.#step(`writev ${ext}`);
        if (crash) {
          const all = Buffer.concat(buffers);
          const torn = all.subarray(0, cut(Math.floor(this.#rand() * all.length), 0));
          if (torn.length > 0) await this.#track(fh.writev([torn], position));
          throw new CrashError('crash during writev');
        }
        if (this.#hang && (sums || !this.#hangOnlySums)) {
          await new Promise<void>((go) => this.#hang!.push(go));
          // What the released write writes: the bytes its buffers hold now, not when it was called.
          this.releasedWrites.push({ position, data: Buffer.concat(buffers) });
        }
        if (direct && this.#refuseDirect === 'write') throw errno('EINVAL');
        if (this.#fail && this.#fail.left > 0 && (segment || !this.#fail.segmentsOnly)) {
          this.#fail.left--;
          throw errno(this.#fail.code);
        }
        if (this.#short > 0) {
          const all = Buffer.concat(buffers);
          return this.#track(fh.writev([all.subarray(0, Math.min(cut(this.#short, DIRECT_ALIGN), all.length))], position));
        }
        return this.#track(fh.writev(buffers, position));
      },
      read: async (buffer, offset, length, position) => {
        this.#check();
        if (this.#failRead && this.#failRead.left > 0) {
          this.#failRead.left--;
          throw errno(this.#failRead.code);
        }
        return fh.read(buffer, offset, length, position);
      },
      datasync: async () => {
        if (segment) this.segmentSyncs++;
        if (this.#step(`datasync ${ext}`)) throw new CrashError('crash at datasync');
        if (segment) opFault(this.#failSegmentOp, 'datasync');
        await this.#track(fh.datasync());
        this.synced.push(name);
      },
      sync: async () => {
        if (this.#step(`sync ${ext}`)) throw new CrashError('crash at sync');
        return this.#track(fh.sync());
      },
      truncate: async (len) => {
        if (this.#step(`ftruncate ${ext}`)) throw new CrashError('crash at ftruncate');
        if (segment) opFault(this.#failSegmentOp, 'truncate');
        return this.#track(fh.truncate(len));
      },
      stat: () => fh.stat(),
      close: () => fh.close(),
    };
  }

  async readdir(dir: string): Promise<string[]> {
    this.#check();
    return nodeFileIo.readdir(dir);
  }
  async stat(path: string): Promise<{ size: number; mtimeMs: number }> {
    this.#check();
    return nodeFileIo.stat(path);
  }
  async rm(path: string): Promise<void> {
    if (this.#step(`rm ${extname(path)}`)) throw new CrashError(`crash at rm ${path}`);
    opFault(this.#failOp, 'rm');
    return this.#track(nodeFileIo.rm(path));
  }
  async truncate(path: string, len: number): Promise<void> {
    if (this.#step(`truncate ${extname(path)}`)) throw new CrashError(`crash at truncate ${path}`);
    return this.#track(nodeFileIo.truncate(path, len));
  }
  async rename(from: string, to: string): Promise<void> {
    if (this.#step(`rename ${extname(from)}`)) throw new CrashError(`crash at rename ${from}`);
    opFault(this.#failOp, 'rename');
    return this.#track(nodeFileIo.rename(from, to));
  }
  async mkdir(dir: string): Promise<void> {
    this.#check();
    return nodeFileIo.mkdir(dir);
  }
  async readFile(path: string): Promise<Buffer> {
    this.#check();
    return nodeFileIo.readFile(path);
  }
  async syncDir(dir: string): Promise<void> {
    if (this.#step('syncDir')) throw new CrashError('crash at syncDir');
    opFault(this.#failOp, 'syncDir');
    await this.#track(nodeFileIo.syncDir(dir));
    this.dirSyncs++;
  }
}

/** Throws the errno `f` asks for when it is armed for `op` (failOps, failSegment), counting it down. */
function opFault(f: { op: string; code: string; left: number } | null, op: string): void {
  if (f === null || f.op !== op || f.left <= 0) return;
  f.left--;
  throw errno(f.code);
}
