import { join } from 'node:path';
import { crc32 } from './crc32.js';
import type { Logger } from '../log.js';
import { nodeFileIo, readFully, writeFileAtomic, type FileHandleIo, type FileIo } from './file-io.js';
import { StorageError } from '../errors.js';
import { Crc64 } from './crc64.js';
import { Telemetry } from '../observability/telemetry.js';

export { writeFileAtomic };

/** An RDB file the relay holds, and the point of the stream it was taken at. */
export interface SnapshotMeta {
  /** The replid upstream named in +FULLRESYNC. */
  readonly replid: string;
  /** master_repl_offset the RDB corresponds to: the stream continues at offset + 1. */
  readonly offset: number;
  /** The relay's history counter (a new one per full sync from upstream) the snapshot belongs to. */
  readonly epoch: number;
  readonly size: number;
  /** RDB format version from the header (10 for Redis 7.0). */
  readonly rdbVersion: number;
  readonly createdAt: number;
  /** The file, named after epoch, replid and offset. */
  readonly path: string;
}

/** A snapshot opened for one transfer; the file is kept until every lease is released. */
export interface SnapshotLease {
  readonly meta: SnapshotMeta;
  readonly fh: FileHandleIo;
  /**
   * Up to `n` bytes of the file from `pos` (at least one; a file that ends first is an error). Transfers of the same
   * snapshot share their recent reads: replicas that full-sync together cost one read per chunk, not one each. The
   * leases of a file share one handle, closed with the last release: so a transfer awaits every read it starts.
   */
  read(pos: number, n: number): Promise<Buffer>;
  /**
   * Bytes at the end of the file to send only once verify() resolved: the RDB's CRC-64 trailer (8), or 0 for an RDB
   * older than version 5, which has none.
   */
  readonly trailer: number;
  /**
   * Resolves when the bytes before the trailer match it, and throws a SnapshotCorruptError (the snapshot is then no
   * longer offered) when they do not. A Redis replica that loads an RDB with a wrong checksum exits, so a file
   * damaged on disk since it was received must never go out whole.
   */
  verify(): Promise<void>;
  release(): Promise<void>;
}

/** A snapshot file's bytes do not match its own checksum: it changed on disk since it was received and checked. */
export class SnapshotCorruptError extends StorageError {}

/**
 * The CRC of a leased file, computed once for all the transfers that read it together: every read that reaches
 * `pos` moves it on. The same bytes give a CRC-32 per PIECE of the file (trailer included), kept once the CRC-64
 * matched: later transfers check each read against those (zlib, native: ~4 ms for a 23.6 MiB RDB) instead of
 * another CRC-64 pass (28-60 ms each, bench/README.md), so a file whose bytes change under an unchanged ctime (bit
 * rot, a bad sector) is still never sent.
 */
interface Check {
  pos: number;
  readonly crc: Crc64;
  result: Promise<void> | null;
  /** CRC-32 of each whole piece up to `pos`, and of the piece `pos` is in so far. */
  readonly pieces: number[];
  piece: number;
}

/** What a file's bytes were when they last matched their trailer: the file's ctime then, and its pieces' CRC-32s. */
interface Proven {
  readonly ctime: number;
  readonly pieces: Uint32Array;
}

/** Bytes per CRC-32 piece of a checked snapshot (as the disk log's pieces). */
const PIECE = 64 * 1024;

/**
 * Reads kept per snapshot file for other transfers to share (of up to 256 KiB each: 8 MiB). A thousand replicas
 * connecting at once read the same 1 MB file: each read its own copy into a fresh buffer, and the copies and their
 * page faults on libuv's threads took the cores from the event loop for over a second (bench/README.md).
 */
const SHARED_READS = 32;
/** Bytes per read when verify() reads what no transfer did. */
const CHECK_READ = 256 * 1024;

const NAME_RE = /^snapshot-(\d{10})-([0-9A-Za-z]{40})-(\d{20})\.rdb$/;
const fileName = (epoch: number, replid: string, offset: number) =>
  `snapshot-${String(epoch).padStart(10, '0')}-${replid}-${String(offset).padStart(20, '0')}.rdb`;
/** Files of the previous layout (one snapshot.rdb whose metadata lived in snapshot.json). */
const LEGACY = new Set(['snapshot.rdb', 'snapshot.json']);

export interface SnapshotStoreOptions {
  readonly io?: FileIo;
  readonly logger?: Logger;
  /** How many snapshots of the current history to keep (the newest ones); older ones go once no transfer reads them. */
  readonly keep?: number;
  /** Where a damaged snapshot is published; absent (standalone use): a relay id of ''. */
  readonly telemetry?: Telemetry;
}

/**
 * The relay's snapshots in its data directory. Each snapshot is its own file, named by its history (epoch), replid
 * and offset, so a snapshot and its metadata can never disagree: a rename publishes both at once, and a crash at any
 * instant leaves the old snapshot, the new one, or both, never a mix. A transfer reads from an open handle (a
 * lease); a superseded file is deleted only when no lease holds it. A new RDB is received into a temp file and only
 * renamed into place when whole and checked.
 */
export class SnapshotStore {
  readonly dir: string;
  #io: FileIo;
  #logger: Logger | null;
  #keep: number;
  #telemetry: Telemetry;
  /** Every committed snapshot, oldest offset first. */
  #snaps: SnapshotMeta[] = [];
  #leases = new Map<string, number>();
  /** Per snapshot file while it is leased: its one open handle (#handle). */
  #handles = new Map<string, Promise<FileHandleIo>>();
  /** Per snapshot file while it is leased: recent reads by position, oldest first. */
  #reads = new Map<string, Map<number, Promise<Buffer>>>();
  /** Per snapshot file while it is leased and not known to match: its checksum so far. */
  #checks = new Map<string, Check>();
  /** Per snapshot file whose bytes matched its trailer: what they were then. */
  #verified = new Map<string, Proven>();
  /** Per snapshot file while it is leased: its ctime when opened. */
  #ctimes = new Map<string, number>();
  /** Pruned snapshots a transfer still reads: deleted when released. */
  #doomed = new Set<string>();
  #tempSeq = 0;

  constructor(dir: string, opts: SnapshotStoreOptions = {}) {
    this.dir = dir;
    this.#io = opts.io ?? nodeFileIo;
    this.#logger = opts.logger ?? null;
    this.#keep = Math.max(1, opts.keep ?? 1);
    this.#telemetry = opts.telemetry ?? new Telemetry('');
  }

  /** Every snapshot held, oldest first. */
  get all(): readonly SnapshotMeta[] {
    return this.#snaps;
  }

  /** The newest snapshot of `epoch`, or null. */
  newest(epoch: number): SnapshotMeta | null {
    for (let i = this.#snaps.length - 1; i >= 0; i--) if (this.#snaps[i]!.epoch === epoch) return this.#snaps[i]!;
    return null;
  }

  /** The newest snapshot of `epoch` for which `fits` holds (the log holds the byte after it). */
  newestWhere(epoch: number, fits: (s: SnapshotMeta) => boolean): SnapshotMeta | null {
    for (let i = this.#snaps.length - 1; i >= 0; i--) {
      const s = this.#snaps[i]!;
      if (s.epoch === epoch && fits(s)) return s;
    }
    return null;
  }

  /** Creates the directory; removes temp files (transfers that never completed) and files of the old layout. */
  async init(): Promise<void> {
    await this.#io.mkdir(this.dir);
    for (const name of await this.#io.readdir(this.dir)) {
      if ((name.startsWith('temp-') && name.endsWith('.rdb')) || LEGACY.has(name) || (name.startsWith('snapshot') && name.includes('.tmp-'))) {
        // A read-only or failing disk must not keep the relay from starting: the file is never used, and goes later.
        await this.#io.rm(join(this.dir, name)).catch((err: Error) => this.#logger?.warn({ err, file: name }, 'could not remove an unfinished snapshot file; it is not used'));
      }
    }
  }

  /**
   * Finds the snapshots a previous run left. With `epoch` set, those of other histories are deleted; with null
   * (no state survived), all are kept and the caller picks.
   */
  async recover(epoch: number | null): Promise<readonly SnapshotMeta[]> {
    const found: SnapshotMeta[] = [];
    for (const name of await this.#io.readdir(this.dir)) {
      const m = NAME_RE.exec(name);
      if (!m) continue;
      const path = join(this.dir, name);
      const e = Number(m[1]);
      if (epoch !== null && e !== epoch) {
        this.#logger?.info({ file: name, epoch }, 'snapshot of another history removed');
        await this.#rm(path);
        continue;
      }
      try {
        found.push(await this.#describe(path, m[2]!, Number(m[3]), e));
      } catch (err) {
        this.#logger?.warn({ err, file: name }, 'unreadable snapshot removed');
        await this.#rm(path);
      }
    }
    this.#snaps = found.sort((a, b) => a.epoch - b.epoch || a.offset - b.offset);
    return this.#snaps;
  }

  async #describe(path: string, replid: string, offset: number, epoch: number): Promise<SnapshotMeta> {
    const st = await this.#io.stat(path);
    const header = Buffer.alloc(9);
    const fh = await this.#io.open(path, 'r');
    try {
      await fh.read(header, 0, 9, 0);
    } finally {
      await fh.close();
    }
    const rdbVersion = parseRdbVersion(header);
    if (rdbVersion === 0) throw new StorageError('not an RDB file');
    return Object.freeze({ replid, offset, epoch, size: st.size, rdbVersion, createdAt: st.mtimeMs, path });
  }

  tempPath(): string {
    return join(this.dir, `temp-${process.pid}-${++this.#tempSeq}.rdb`);
  }

  /**
   * Publishes a completely received (and fsynced) temp file as a snapshot: one rename, then the directory fsynced.
   * Nothing is deleted here: the caller prunes once its own state names the new history (see History.fullSync).
   */
  async commit(tempPath: string, meta: { readonly replid: string; readonly offset: number; readonly epoch: number }): Promise<SnapshotMeta> {
    if (!/^[0-9A-Za-z]{40}$/.test(meta.replid)) throw new StorageError(`bad replid for a snapshot name: ${meta.replid}`);
    const path = join(this.dir, fileName(meta.epoch, meta.replid, meta.offset));
    const full = await this.#describe(tempPath, meta.replid, meta.offset, meta.epoch);
    // The same point again (a refresh, a snapshot source): renamed over the file held, its new bytes would be read
    // through the handle its transfers share, sized and checked as the old file's (and taken for damaged).
    const held = this.#snaps.find((s) => s.path === path);
    if (held || (this.#leases.get(path) ?? 0) > 0) {
      await this.discard(tempPath);
      if (held) return held;
      throw new StorageError(`a snapshot of offset ${meta.offset} given up is still being read: the new one is discarded`);
    }
    await this.#io.rename(tempPath, path);
    try {
      await this.#io.syncDir(this.dir);
    } catch (err) {
      // Its name may not survive a power loss: not published, as Redis cancels a sync whose directory fsync failed.
      await this.#io.rm(path).catch(() => {});
      throw err;
    }
    const snap = Object.freeze({ ...full, path, createdAt: Date.now() });
    this.#snaps = this.#snaps.filter((s) => s.path !== path);
    this.#snaps.push(snap);
    this.#snaps.sort((a, b) => a.epoch - b.epoch || a.offset - b.offset);
    return snap;
  }

  /**
   * Deletes snapshots no longer wanted: those of other histories than `epoch`, all but the newest `keep` of it, and
   * of those the ones not `followed` (the log has dropped their next byte), unless a transfer reads them (they go
   * when it releases them). Returns the ones deleted for not being followed (or to be, when released); not one the
   * disk refused to delete (read-only: it is no longer offered, and goes at the next start).
   */
  async prune(epoch: number, followed: (s: SnapshotMeta) => boolean = () => true): Promise<SnapshotMeta[]> {
    const ofEpoch = this.#snaps.filter((s) => s.epoch === epoch);
    const kept = ofEpoch.slice(-this.#keep);
    const keep = new Set(kept.filter((s) => followed(s)).map((s) => s.path));
    const unfollowed = new Set(kept.filter((s) => !keep.has(s.path)));
    for (const s of [...this.#snaps]) {
      if (keep.has(s.path)) continue;
      // No longer offered; a file a transfer still reads goes when its last lease is released.
      this.#snaps = this.#snaps.filter((x) => x !== s);
      if ((this.#leases.get(s.path) ?? 0) > 0) this.#doomed.add(s.path);
      else if (!(await this.#rm(s.path))) unfollowed.delete(s);
    }
    return [...unfollowed];
  }

  /** Deletes a snapshot file; false (said) when the disk refused. */
  async #rm(path: string): Promise<boolean> {
    this.#verified.delete(path);
    return this.#io.rm(path).then(
      () => true,
      (err: Error) => {
        this.#logger?.warn({ err, file: path }, 'could not remove an old snapshot');
        return false;
      },
    );
  }

  /**
   * Opens `meta` for a transfer. The lease is taken before the open, so the file cannot be pruned in between; the
   * caller must release it (also when the transfer fails).
   */
  async lease(meta: SnapshotMeta): Promise<SnapshotLease> {
    this.#leases.set(meta.path, (this.#leases.get(meta.path) ?? 0) + 1);
    let released = false;
    const release = async (): Promise<void> => {
      if (released) return;
      released = true;
      const n = (this.#leases.get(meta.path) ?? 1) - 1;
      if (n > 0) {
        this.#leases.set(meta.path, n);
        return;
      }
      this.#leases.delete(meta.path);
      this.#reads.delete(meta.path);
      this.#checks.delete(meta.path);
      this.#ctimes.delete(meta.path);
      // Every lease awaited its reads before its release: none is in flight on the handle now.
      const handle = this.#handles.get(meta.path);
      this.#handles.delete(meta.path);
      await handle?.then((fh) => fh.close()).catch(() => {});
      if (this.#doomed.delete(meta.path)) await this.#rm(meta.path);
    };
    let fh: FileHandleIo;
    try {
      fh = await this.#handle(meta);
    } catch (err) {
      await release();
      throw err;
    }
    const trailer = meta.rdbVersion >= 5 && meta.size >= 9 + 1 + 8 ? 8 : 0;
    return { meta, fh, read: (pos, n) => this.#sharedRead(meta, fh, pos, n), trailer, verify: () => (trailer > 0 ? this.#verify(meta, fh) : Promise.resolve()), release };
  }

  /** A read of `buf` at `pos` came back: the checksum takes whatever of it lies past its position (never the trailer). */
  #checked(meta: SnapshotMeta, pos: number, buf: Buffer): void {
    const c = this.#checks.get(meta.path);
    const body = meta.size - 8;
    if (c === undefined || c.pos < pos || c.pos >= pos + buf.length || c.pos >= body) return;
    const end = Math.min(buf.length, body - pos);
    c.crc.update(buf, c.pos - pos, end);
    addPieces(c, buf.subarray(c.pos - pos, end));
    c.pos = pos + end;
  }

  /**
   * Reads whatever the transfers did not (a short read may have shifted their positions), then compares the CRC
   * with the trailer. A zero trailer is a file written by a relay before RdbReceiver wrote its computed CRC-64 in
   * place of the zero trailer of a master saving without checksums (rdbchecksum no): nothing to check it against.
   */
  #verify(meta: SnapshotMeta, fh: FileHandleIo): Promise<void> {
    const c = this.#checks.get(meta.path);
    if (c === undefined) return Promise.resolve();
    c.result ??= (async () => {
      const body = meta.size - 8;
      while (c.pos < body) await this.#sharedRead(meta, fh, c.pos, Math.min(CHECK_READ, body - c.pos));
      const trailer = await readAt(meta, fh, body, 8);
      const computed = c.crc.digestLE();
      if (trailer.every((b) => b === 0) || computed.equals(trailer)) {
        addPieces(c, trailer);
        if (meta.size % PIECE !== 0) c.pieces.push(c.piece >>> 0);
        const ctime = this.#ctimes.get(meta.path);
        if (ctime !== undefined) this.#verified.set(meta.path, { ctime, pieces: Uint32Array.from(c.pieces) });
        // From now on every read of it is checked against its pieces: the reads kept so far were not, unless the
        // CRC-64 took them.
        this.#checks.delete(meta.path);
        this.#reads.delete(meta.path);
        return;
      }
      throw await this.#damaged(meta, `snapshot checksum mismatch: its trailer says ${trailer.toString('hex')}, its bytes give ${computed.toString('hex')}`);
    })();
    return c.result;
  }

  /** `meta`'s bytes changed on disk: it is no longer offered, and goes once no transfer reads it. */
  async #damaged(meta: SnapshotMeta, cause: string): Promise<SnapshotCorruptError> {
    const err = new SnapshotCorruptError(cause);
    if (this.#snaps.some((s) => s.path === meta.path)) {
      this.#logger?.error({ err, file: meta.path }, 'snapshot damaged on disk: it is no longer offered; replicas that need a full sync get a fresh one');
      this.#telemetry.emit('snapshot.given-up', { reason: 'damaged', cause });
      await this.remove(meta);
    }
    return err;
  }

  /**
   * Up to `n` bytes from `pos` of a file whose bytes matched their trailer before: read in whole pieces and checked
   * against their CRC-32s then, so bytes that changed since (under the same ctime) are never returned.
   */
  async #readProven(meta: SnapshotMeta, fh: FileHandleIo, pos: number, n: number, pieces: Uint32Array): Promise<Buffer> {
    const from = pos - (pos % PIECE);
    const to = Math.min(meta.size, Math.ceil((pos + n) / PIECE) * PIECE);
    const buf = Buffer.allocUnsafe(to - from);
    const got = await readFully(fh, buf, buf.length, from);
    if (got < buf.length) throw new StorageError(`snapshot file ended at ${from + got} of ${meta.size} bytes`);
    for (let o = from; o < to; o += PIECE) {
      if (crc32(buf.subarray(o - from, Math.min(to, o + PIECE) - from)) >>> 0 !== pieces[o / PIECE]) {
        throw await this.#damaged(meta, `snapshot bytes from ${o} no longer match the checksum they had when the file matched its trailer`);
      }
    }
    return buf.subarray(pos - from, Math.min(pos + n, meta.size) - from);
  }

  /**
   * The open handle of a leased file, one for all its leases (checked against the size it was committed with). A
   * thousand replicas full-syncing at once cost one open, not a thousand: each open is a hand-off to the thread pool
   * that took ~0.1 ms of the event loop (bench/README.md). A failed open is not kept: the next lease tries again.
   */
  #handle(meta: SnapshotMeta): Promise<FileHandleIo> {
    let handle = this.#handles.get(meta.path);
    if (handle === undefined) {
      const opening = (async () => {
        const fh = await this.#io.open(meta.path, 'r');
        try {
          const st = await fh.stat();
          if (st.size !== meta.size) throw new StorageError(`snapshot file is ${st.size} bytes, expected ${meta.size}`);
          this.#ctimes.set(meta.path, st.ctimeMs);
          if (this.#verified.get(meta.path)?.ctime !== st.ctimeMs) this.#checks.set(meta.path, { pos: 0, crc: new Crc64(), result: null, pieces: [], piece: 0 });
          return fh;
        } catch (err) {
          await fh.close().catch(() => {});
          throw err;
        }
      })();
      handle = opening;
      this.#handles.set(meta.path, opening);
      opening.catch(() => {
        if (this.#handles.get(meta.path) === opening) this.#handles.delete(meta.path);
      });
    }
    return handle;
  }

  #sharedRead(meta: SnapshotMeta, fh: FileHandleIo, pos: number, n: number): Promise<Buffer> {
    let reads = this.#reads.get(meta.path);
    if (reads === undefined) this.#reads.set(meta.path, (reads = new Map()));
    let p = reads.get(pos);
    if (p === undefined) {
      const proven = this.#checks.has(meta.path) ? undefined : this.#verified.get(meta.path);
      const mine = proven !== undefined && proven.ctime === this.#ctimes.get(meta.path) ? this.#readProven(meta, fh, pos, n, proven.pieces) : readAt(meta, fh, pos, n);
      reads.set(pos, mine);
      if (reads.size > SHARED_READS) reads.delete(reads.keys().next().value!);
      // A failed read is not kept: the next transfer that needs these bytes tries again.
      const own = reads;
      mine.catch(() => {
        if (own.get(pos) === mine) own.delete(pos);
      });
      p = mine;
    }
    return p.then((buf) => {
      this.#checked(meta, pos, buf);
      return buf.length > n ? buf.subarray(0, n) : buf;
    });
  }

  /** Transfers reading any snapshot now. */
  get leases(): number {
    let n = 0;
    for (const v of this.#leases.values()) n += v;
    return n;
  }

  /** Stops offering `snap` (it could not be read) and deletes it once no transfer reads it. */
  async remove(snap: SnapshotMeta): Promise<void> {
    this.#snaps = this.#snaps.filter((s) => s.path !== snap.path);
    if ((this.#leases.get(snap.path) ?? 0) > 0) this.#doomed.add(snap.path);
    else await this.#rm(snap.path);
  }

  async discard(tempPath: string): Promise<void> {
    await this.#io.rm(tempPath);
  }
}

/** The CRC-32 pieces of `c` move on over `bytes` (the file's, from `c.pos`). */
function addPieces(c: Check, bytes: Buffer): void {
  let at = c.pos;
  for (let i = 0; i < bytes.length; ) {
    const take = Math.min(bytes.length - i, PIECE - (at % PIECE));
    c.piece = crc32(bytes.subarray(i, i + take), c.piece);
    i += take;
    at += take;
    if (at % PIECE === 0) {
      c.pieces.push(c.piece >>> 0);
      c.piece = 0;
    }
  }
}

/** One read of a snapshot file: up to `n` bytes from `pos`, at least one. */
async function readAt(meta: SnapshotMeta, fh: FileHandleIo, pos: number, n: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(n);
  const { bytesRead } = await fh.read(buf, 0, n, pos);
  if (bytesRead === 0) throw new StorageError(`snapshot file ended at ${pos} of ${meta.size} bytes`);
  return bytesRead === n ? buf : buf.subarray(0, bytesRead);
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
