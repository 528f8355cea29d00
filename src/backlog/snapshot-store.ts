import { promises as fsp } from 'node:fs';
import { join } from 'node:path';

/** An RDB file the relay holds, and the point of the stream it was taken at. */
export interface SnapshotMeta {
  /** The replid upstream named in +FULLRESYNC. */
  readonly replid: string;
  /** master_repl_offset the RDB corresponds to: the stream continues at offset + 1. */
  readonly offset: number;
  readonly size: number;
  /** RDB format version from the header (10 for Redis 7.0). */
  readonly rdbVersion: number;
  readonly createdAt: number;
}

const SNAPSHOT_FILE = 'snapshot.rdb';
const META_FILE = 'snapshot.json';

/** Writes `data` to `path` atomically: temp file, fsync, rename, fsync of the directory. */
let tmpSeq = 0;

export async function writeFileAtomic(path: string, data: string | Buffer): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${++tmpSeq}`;
  const fh = await fsp.open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, path);
  await syncDir(path.slice(0, path.lastIndexOf('/')) || '.');
}

async function syncDir(dir: string): Promise<void> {
  const dh = await fsp.open(dir, 'r');
  try {
    await dh.sync();
  } catch {
    // Some filesystems refuse fsync on a directory; the rename is still atomic.
  } finally {
    await dh.close();
  }
}

/**
 * The relay's snapshot in its data directory. A new RDB is received into a temp file and only renamed
 * over snapshot.rdb when complete, so a transfer cut midway is never served. Readers open the file by
 * descriptor, so a replacement never disturbs a full sync in progress.
 */
export class SnapshotStore {
  readonly dir: string;
  #current: SnapshotMeta | null = null;
  #tempSeq = 0;

  constructor(dir: string) {
    this.dir = dir;
  }

  get current(): SnapshotMeta | null {
    return this.#current;
  }
  get path(): string {
    return join(this.dir, SNAPSHOT_FILE);
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true });
    // Leftover temp files are transfers that never completed.
    for (const name of await fsp.readdir(this.dir)) {
      if (name.startsWith('temp-') && name.endsWith('.rdb')) await fsp.rm(join(this.dir, name), { force: true });
    }
  }

  /** Reads the snapshot a previous run left, if its file is whole. */
  async recover(): Promise<SnapshotMeta | null> {
    try {
      const meta = JSON.parse(await fsp.readFile(join(this.dir, META_FILE), 'utf8')) as SnapshotMeta;
      const st = await fsp.stat(this.path);
      if (typeof meta.replid !== 'string' || typeof meta.offset !== 'number' || st.size !== meta.size) return null;
      this.#current = Object.freeze({ ...meta });
      return this.#current;
    } catch {
      return null;
    }
  }

  tempPath(): string {
    return join(this.dir, `temp-${process.pid}-${++this.#tempSeq}.rdb`);
  }

  /** Makes a completely received temp file the current snapshot. */
  async commit(tempPath: string, meta: Omit<SnapshotMeta, 'createdAt' | 'size' | 'rdbVersion'>): Promise<SnapshotMeta> {
    const st = await fsp.stat(tempPath);
    const header = Buffer.alloc(9);
    const fh = await fsp.open(tempPath, 'r');
    try {
      await fh.read(header, 0, 9, 0);
    } finally {
      await fh.close();
    }
    const full: SnapshotMeta = Object.freeze({
      ...meta,
      size: st.size,
      rdbVersion: parseRdbVersion(header),
      createdAt: Date.now(),
    });
    await fsp.rename(tempPath, this.path);
    await writeFileAtomic(join(this.dir, META_FILE), JSON.stringify(full));
    this.#current = full;
    return full;
  }

  async discard(tempPath: string): Promise<void> {
    await fsp.rm(tempPath, { force: true });
  }
}

/** "REDIS0010" → 10; 0 when the header is not an RDB header. */
export function parseRdbVersion(header: Buffer): number {
  if (header.length < 9 || header.toString('latin1', 0, 5) !== 'REDIS') return 0;
  const v = Number(header.toString('latin1', 5, 9));
  return Number.isInteger(v) ? v : 0;
}

/** An RDB with no keys (what a master sends for `REPLCONF rdb-filter-only ""`); checksum 0 means "not checked". */
export function emptyRdb(version: number): Buffer {
  const v = String(version > 0 ? version : 10).padStart(4, '0');
  return Buffer.concat([Buffer.from(`REDIS${v}`, 'latin1'), Buffer.from([0xff]), Buffer.alloc(8)]);
}
