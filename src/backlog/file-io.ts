import { constants as fsc, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { failpoint } from '../util/failpoint.js';
import { StorageError } from '../errors.js';

/**
 * The file operations the storage modules use, behind one interface so that tests can inject faults (short writes,
 * EIO, ENOSPC, EFBIG, a write that never returns, a crash between two operations) without a real failing disk.
 * Production code uses `nodeFileIo`.
 */
export interface FileHandleIo {
  /** pwritev: writes at `position`; may write fewer bytes than given (a short write). */
  writev(buffers: readonly Buffer[], position: number): Promise<{ bytesWritten: number }>;
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  datasync(): Promise<void>;
  sync(): Promise<void>;
  /** ftruncate. */
  truncate(len: number): Promise<void>;
  /** ctimeMs changes with any write to the file (and cannot be set back by utimes). */
  stat(): Promise<{ size: number; ctimeMs: number }>;
  close(): Promise<void>;
  /** The descriptor, for streaming a whole file to a socket. */
  readonly fd: number;
}

export interface OpenOptions {
  /**
   * O_DIRECT, for 'w' and 'r+' (the file is then also readable): transfers bypass the page cache and must be
   * aligned (DirectWriter). Filesystems without it refuse the open with EINVAL.
   */
  readonly direct?: boolean;
}

export interface FileIo {
  open(path: string, flags: string, mode?: number, opts?: OpenOptions): Promise<FileHandleIo>;
  readdir(dir: string): Promise<string[]>;
  stat(path: string): Promise<{ size: number; mtimeMs: number }>;
  rm(path: string): Promise<void>;
  truncate(path: string, len: number): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  mkdir(dir: string): Promise<void>;
  readFile(path: string): Promise<Buffer>;
  /** fsync a directory, so that a rename or a new file in it survives a power loss. */
  syncDir(dir: string): Promise<void>;
}

/** A node FileHandle with failpoints before every operation that changes the disk. */
function wrapHandle(fh: FileHandle): FileHandleIo {
  return {
    fd: fh.fd,
    writev: (buffers, position) => {
      failpoint('writev');
      return fh.writev(buffers as Buffer[], position);
    },
    read: (buffer, offset, length, position) => fh.read(buffer, offset, length, position),
    datasync: () => {
      failpoint('datasync');
      return fh.datasync();
    },
    sync: () => {
      failpoint('sync');
      return fh.sync();
    },
    truncate: (len) => {
      failpoint('ftruncate');
      return fh.truncate(len);
    },
    stat: () => fh.stat(),
    close: () => fh.close(),
  };
}

/** The numeric flags of an O_DIRECT open; 'w' opens for reading too, so a writer can read its partial block back. */
function directFlags(flags: string): number {
  if (flags === 'w') return fsc.O_RDWR | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_DIRECT;
  if (flags === 'r+') return fsc.O_RDWR | fsc.O_DIRECT;
  throw new TypeError(`no O_DIRECT open for flags '${flags}'`);
}

export const nodeFileIo: FileIo = {
  open: async (path, flags, mode, opts) => {
    failpoint(`open:${flags}`);
    return wrapHandle(await fsp.open(path, opts?.direct ? directFlags(flags) : flags, mode));
  },
  readdir: (dir) => fsp.readdir(dir),
  stat: (path) => fsp.stat(path),
  rm: async (path) => {
    failpoint('rm');
    await fsp.rm(path, { force: true });
  },
  truncate: async (path, len) => {
    failpoint('truncate');
    await fsp.truncate(path, len);
  },
  rename: async (from, to) => {
    failpoint('rename');
    await fsp.rename(from, to);
  },
  mkdir: async (dir) => {
    // 0700 for the directories it makes (an existing one keeps its mode): they hold the dataset.
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  },
  readFile: (path) => fsp.readFile(path),
  syncDir: async (dir) => {
    const dh = await fsp.open(dir, 'r');
    try {
      await dh.sync();
    } catch (err) {
      // Some filesystems refuse fsync on a directory (EINVAL, EBADF; Redis's fsyncFileDir ignores the same two):
      // the rename is still atomic. Anything else (EIO) means the entries may not survive a power loss.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EINVAL' && code !== 'EBADF') throw err;
    } finally {
      await dh.close();
    }
  },
};

let tmpSeq = 0;

/**
 * Writes `data` to `path` so that a crash at any instant leaves the old file or the new one: a uniquely named temp
 * file opened exclusively (a file or symlink planted at that name is never followed), written, fsynced, renamed over
 * `path`, then the directory fsynced. `mode` is the new file's permission bits.
 */
export async function writeFileAtomic(path: string, data: string | Buffer, io: FileIo = nodeFileIo, mode = 0o600): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${Date.now().toString(36)}-${++tmpSeq}`;
  const buf = typeof data === 'string' ? Buffer.from(data) : data;
  const fh = await io.open(tmp, 'wx', mode);
  try {
    let done = 0;
    while (done < buf.length) {
      const { bytesWritten } = await fh.writev([buf.subarray(done)], done);
      if (bytesWritten <= 0) throw new StorageError(`no progress writing ${tmp}`);
      done += bytesWritten;
    }
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await io.rm(tmp).catch(() => {});
    throw err;
  }
  await fh.close();
  try {
    await io.rename(tmp, path);
  } catch (err) {
    await io.rm(tmp).catch(() => {});
    throw err;
  }
  await io.syncDir(dirname(path));
}

/** Reads `len` bytes at file `position` into the start of `buf`, continuing short reads; fewer only at the file's end. */
export async function readFully(fh: FileHandleIo, buf: Buffer, len: number, position: number): Promise<number> {
  let got = 0;
  for (let r = 1; got < len && r > 0; got += r) ({ bytesRead: r } = await fh.read(buf, got, len - got, position + got));
  return got;
}
