import { join } from 'node:path';
import { crc32 } from './crc32.js';
import type { Logger } from '../log.js';
import { StreamScanner } from '../resp/stream-scanner.js';
import { nodeFileIo, readFully, writeFileAtomic, type FileHandleIo, type FileIo } from './file-io.js';
import { DiskWait } from './disk-wait.js';
import { DirectWriter, directUnavailable } from './direct-writer.js';
import { SegmentSums, mismatch, pieceEnd, pieceStart } from './segment-sums.js';
import { InternalError, LogRangeError, StorageError } from '../errors.js';
import { checkTransition, type Transitions } from '../util/transitions.js';
import { Telemetry } from '../observability/telemetry.js';

/**
 * One append-only file of raw stream bytes. Its name carries the history (epoch) and the offset of its first byte,
 * and a segment always starts right after a command boundary, so recovery needs no index: the last segment is
 * scanned from its start and cut back to its last whole command. Beside it, a `.sum` file holds the CRC of each of
 * its pieces (SegmentSums), against which every read is checked.
 */
interface Segment {
  readonly start: number;
  /** Bytes the kernel took (a write returned them). Nothing else counts. */
  size: number;
  /** The CRCs of its bytes, up to start + size - 1. */
  sums: SegmentSums;
  /**
   * Its `.sum` file may not describe it: recovery cut it and could not rewrite the file (it may hold CRCs of bytes
   * past the cut). Written whole, in place, before the segment is cut or written (#handle).
   */
  sumsStale?: boolean;
}

/** What the disk log copies from: the in-memory log, which keeps every byte the disk has not taken yet. */
export interface DiskLogSource {
  /** The last offset held. */
  readonly endOffset: number;
  /**
   * A view of held bytes from `offset` (at most to the end of one block) and the offset of the last command
   * boundary known inside that block (the last byte of a command), or -1. null when `offset` is not held.
   */
  view(offset: number): { readonly buf: Buffer; readonly boundary: number } | null;
  /** The first known command boundary at or after `offset` that memory still holds the bytes after; null if none. */
  boundaryFrom(offset: number): number | null;
}

/**
 * ok: writing keeps up. failing: writes fail (ENOSPC, EIO, EFBIG, ...) or hang; they are retried with backoff and
 * memory keeps what is not written. detached: the disk fell further behind than log.disk-queue; its history was
 * dropped, the relay forwards from memory only, and a new history starts on disk once writes work again.
 */
export const DiskLogState = { Ok: 'ok', Failing: 'failing', Detached: 'detached', Closed: 'closed' } as const;
export type DiskLogState = (typeof DiskLogState)[keyof typeof DiskLogState];

const DISK_TRANSITIONS: Transitions<DiskLogState> = {
  ok: ['failing', 'detached', 'closed'],
  failing: ['ok', 'detached', 'closed'],
  detached: ['ok', 'closed'],
  closed: [],
};

export interface DiskLogOptions {
  readonly dir: string;
  /** log.disk: segments are dropped (oldest first) to stay under this. */
  readonly maxBytes: number;
  readonly segmentBytes: number;
  /** log.disk-queue: most stream bytes memory may hold that the disk has not taken; past it the disk history is dropped. */
  readonly maxPending: number;
  /** The history the segments on disk must belong to; other segments are deleted. null = trust none. */
  readonly epoch: number | null;
  readonly logger: Logger;
  readonly io?: FileIo;
  /**
   * log.memory. A batch waits for no more than an eighth of it either: memory holds what waits on top of log.memory
   * (with a 1 MiB tail, a 1 MiB batch doubled it), and what a write took is dropped in one piece, so its read blocks
   * past their reuse slack (an eighth of log.memory, block-pool.ts) go to the garbage collector. Required, so that
   * the history passes it on.
   */
  readonly memory: number;
  /** How long pending bytes under FLUSH_BYTES wait for more before they are written (ms; FLUSH_DELAY_MS). */
  readonly flushDelayMs?: number;
  /** Retry delays after a failed write (doubling), and between attempts to start again after a detach. */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  /** A write outstanding this long counts as failing (a hung disk). */
  readonly hungMs?: number;
  /** Where write errors, detaches and state changes are published; absent (standalone use): a relay id of ''. */
  readonly telemetry?: Telemetry;
  /** log.disk-direct: write segments with O_DIRECT (DirectWriter), falling back to the page cache where refused. */
  readonly direct?: boolean;
}

const SEG_RE = /^seg-(\d{10})-(\d{20})\.log$/;
const segName = (epoch: number, start: number) => `seg-${String(epoch).padStart(10, '0')}-${String(start).padStart(20, '0')}.log`;
const SUM_RE = /^seg-(\d{10})-(\d{20})\.sum$/;
const sumName = (epoch: number, start: number) => segName(epoch, start).slice(0, -4) + '.sum';
/** Files of the previous on-disk format (segments that did not start at command boundaries, and their index). */
const LEGACY_RE = /^(seg-\d{20}\.log|index\.json(\.tmp-.*)?)$/;
const READ_MAX = 1024 * 1024;
const FSYNC_INTERVAL_MS = 1000;
/**
 * A write starts once this much is pending, or FLUSH_DELAY_MS after the first pending byte, and the write loop pauses
 * when less than this came in during a write. Every write costs something besides its bytes (the thread pool's
 * hand-off, the device's doorbell and, on a virtual disk, the hypervisor's work per request): starting at 64 KiB, a
 * busy stream went out in writes of ~580 KB; at 1 MiB, ~1.4 MB; at 4 MiB, ~3.5 MB, and the relay's CPU per GB fell
 * by 5-20% on the bench's VM (bench/README.md). Never more than an eighth of log.disk-queue, so that waiting for a
 * batch cannot come near the detach limit, nor of log.memory (see DiskLogOptions.memory). Memory holds what waits.
 */
const FLUSH_BYTES = 4 * 1024 * 1024;
const FLUSH_DELAY_MS = 10;
const BATCH_MAX_BYTES = 4 * 1024 * 1024;
const BATCH_MAX_BUFFERS = 256;
/** Read errors that say nothing about the segment (out of descriptors or memory): the reader tries again later. */
const TRANSIENT_READ = new Set(['EMFILE', 'ENFILE', 'ENOMEM', 'EAGAIN', 'EINTR', 'EBUSY']);
/** Repeated failures are logged at most this often. */
const LOG_EVERY_MS = 30_000;

/**
 * How many first bytes of `piece` have the CRC `want` (the last one wins: a CRC-32 repeats within 64 KiB only by
 * chance); 0 when none.
 */
function prefixMatching(piece: Buffer, want: number): number {
  let found = 0;
  let c = 0;
  for (let i = 0; i < piece.length; i++) {
    c = crc32(piece.subarray(i, i + 1), c);
    if (c >>> 0 === want) found = i + 1;
  }
  return found;
}

/**
 * The replication log on disk: the stream as raw bytes in append-only segment files behind the in-memory tail, so
 * replicas hours behind still resync partially and a restart loses nothing.
 *
 * Trust rules (DESIGN.md): a byte counts as on disk only when a write returned it, and a short write continues
 * where it stopped (positional writes, so a retry rewrites the same bytes at the same place). The writer copies
 * from the memory log, which never drops a byte the disk has not taken; so a failed write loses nothing and is
 * retried with backoff. When the disk falls more than `maxPending` behind, its history is dropped (memory then
 * behaves as a memory-only log) and a new history starts on disk, at a command boundary, once writes work again:
 * never a splice across a gap.
 */
export class DiskLog {
  readonly dir: string;
  #opts: DiskLogOptions;
  #io: FileIo;
  #telemetry: Telemetry;
  #epoch: number;
  #segments: Segment[] = [];
  /** Offset of the last byte on disk; with no segment, the offset the next segment starts after. */
  #written = 0;
  /** The last command boundary known at or before #written. */
  #boundary = 0;
  #source: DiskLogSource | null = null;
  #fh: FileHandleIo | null = null;
  #fhStart = -1;
  /** Whether #fh was opened with O_DIRECT (its writes then go through #direct). */
  #fhDirect = false;
  /** The `.sum` file of the segment #sumStart, open for writing its CRCs. */
  #sumFh: FileHandleIo | null = null;
  #sumStart = -1;
  /** #sumFh took writes since its last fsync. */
  #sumsUnsynced = false;
  /** null: writes go through the page cache (not asked for, or O_DIRECT proved unavailable: refused by the filesystem, or no aligned memory). */
  #direct: DirectWriter | null;
  #state: DiskLogState = DiskLogState.Ok;
  #cause: string | null = null;
  #since = 0;
  /** Bumped when the history on disk is replaced (reset, detach, close): late results of older work are ignored. */
  #gen = 0;
  #running = false;
  #timer: NodeJS.Timeout | null = null;
  /** #timer is the flush delay (not a retry's or a restart's). */
  #flushDelay = false;
  /** Pending bytes that start a write at once (FLUSH_BYTES, or less under a small log.disk-queue or log.memory). */
  readonly #flushBytes: number;
  #retryMs: number;
  #inflightSince = 0;
  /** The offsets of the write in flight (views of the memory log); from is Infinity when none is. */
  #inflightFrom = Infinity;
  #inflightTo = -1;
  #lastSync = Date.now();
  /** Writes returned since the last fsync. */
  #unsynced = false;
  /** Fsyncs what a stream that went quiet left unsynced (#syncLater). */
  #syncTimer: NodeJS.Timeout | null = null;
  #dirDirty = false;
  /** close() has begun: no write may start. */
  #closing = false;
  #lastLog = 0;
  #lastDetach = 0;
  #detachBackoff = 0;
  /** Deletions of dropped histories, in order (a new history waits for them). */
  #deleting: Promise<void> = Promise.resolve();
  /** When upstream reads wait for this disk (a burst faster than it). */
  readonly #wait: DiskWait;
  /** Bytes became readable from disk (the memory tail may be trimmed). */
  onWritten: (() => void) | null = null;
  /** Written bytes passed the disk limit (the owner drops old segments then). */
  onOverLimit: (() => void) | null = null;
  /** The state changed (ok, failing, detached). */
  onState: ((state: DiskLogState, cause: string | null) => void) | null = null;

  private constructor(opts: DiskLogOptions) {
    this.dir = opts.dir;
    this.#opts = opts;
    this.#io = opts.io ?? nodeFileIo;
    this.#telemetry = opts.telemetry ?? new Telemetry('');
    this.#epoch = opts.epoch ?? 0;
    this.#retryMs = opts.retryMinMs ?? 100;
    this.#direct = opts.direct ? new DirectWriter(BATCH_MAX_BYTES) : null;
    this.#flushBytes = Math.min(FLUSH_BYTES, Math.max(64 * 1024, Math.floor(Math.min(opts.maxPending, opts.memory) / 8)));
    this.#wait = new DiskWait({ from: Math.floor(opts.maxPending / 2), onWaited: (ms) => this.#telemetry.emit('disk.read-wait', { ms }) });
  }

  /**
   * Asked after each upstream read: a promise while the reads should wait for this disk (DiskWait: a healthy disk
   * more than half of log.disk-queue behind), null to read on.
   */
  readWait(): Promise<void> | null {
    return this.#wait.check(this.pending, this.#state === DiskLogState.Ok, this.#inflightSince);
  }

  /** Whether segments are written with O_DIRECT (false once it proved unavailable). */
  get direct(): boolean {
    return this.#direct !== null;
  }

  /** Opens the segments a previous run left for `opts.epoch`, and cuts a torn tail back to the last whole command. */
  static async open(opts: DiskLogOptions): Promise<DiskLog> {
    const log = new DiskLog(opts);
    await log.#io.mkdir(opts.dir);
    await log.#recover();
    return log;
  }

  /**
   * log.disk is 0: this run keeps no disk log, so the segments an earlier run left in `dir` go. This run moves on in
   * the same history without them; kept, they would be taken for its log when log.disk is turned on again, ending
   * where the earlier run stopped, and after an upstream failover in between their last bytes are not the new
   * master's (a replica would be served both histories spliced together).
   */
  static async discard(dir: string, logger: Logger, io: FileIo = nodeFileIo): Promise<void> {
    let names: string[];
    try {
      names = await io.readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') logger.error({ err, dir }, 'log.disk is 0: the disk log directory cannot be read');
      return;
    }
    const files = names.filter((n) => SEG_RE.test(n) || SUM_RE.test(n) || LEGACY_RE.test(n));
    if (files.length === 0) return;
    try {
      for (const name of files) await io.rm(join(dir, name));
    } catch (err) {
      // The relay still starts (it does not read them); they are removed at the next start.
      logger.error({ err, dir }, 'log.disk is 0: could not remove the disk log an earlier run left; remove it before turning the disk log on again');
      return;
    }
    logger.warn({ dir, files: files.length, limit: 'log.disk', value: 0 }, 'log.disk is 0: the disk log an earlier run left is removed (it would be stale when the disk log is turned on again)');
  }

  get firstOffset(): number {
    return this.#segments.length > 0 ? this.#segments[0]!.start : this.#written + 1;
  }
  /** LogHolder: a write in flight still reads these offsets of the memory log's blocks. */
  get heldFrom(): number {
    return this.#inflightFrom;
  }
  get heldTo(): number {
    return this.#inflightTo;
  }
  /** Offset of the last byte on disk (readable through read()). */
  get writtenOffset(): number {
    return this.#written;
  }
  get endOffset(): number {
    return this.#written;
  }
  /** Bytes in segment files. */
  get size(): number {
    let n = 0;
    for (const s of this.#segments) n += s.size;
    return n;
  }
  get segmentCount(): number {
    return this.#segments.length;
  }
  get empty(): boolean {
    return this.size === 0;
  }
  get epoch(): number {
    return this.#epoch;
  }
  /** Whether the disk holds a history the memory log continues (not detached or closed). */
  get active(): boolean {
    return this.#state === DiskLogState.Ok || this.#state === DiskLogState.Failing;
  }
  get state(): DiskLogState {
    if (this.#state === DiskLogState.Ok && this.#hung()) return DiskLogState.Failing;
    return this.#state;
  }
  /** Why the log is failing or detached, and since when (ms since the epoch); null when ok. */
  get problem(): { readonly cause: string; readonly since: number } | null {
    if (this.#state === DiskLogState.Ok && this.#hung()) return { cause: `a write has not returned for ${Date.now() - this.#inflightSince} ms`, since: this.#inflightSince };
    return this.#cause === null ? null : { cause: this.#cause, since: this.#since };
  }
  /** Bytes the disk has not taken yet. */
  get pending(): number {
    return this.#source && this.active ? Math.max(0, this.#source.endOffset - this.#written) : 0;
  }
  /** The oldest segment's first and last offsets (what dropping it would lose). */
  get oldestSegment(): { start: number; end: number } | null {
    const s = this.#segments[0];
    return s ? { start: s.start, end: s.start + s.size - 1 } : null;
  }
  /** Bytes the disk limit asks us to drop (0 when under it). */
  get overLimit(): number {
    return Math.max(0, this.size - this.#opts.maxBytes);
  }

  /** Does the disk hold `offset` and the bytes after it (up to writtenOffset)? */
  holds(offset: number): boolean {
    return this.active && this.#segments.length > 0 && offset >= this.firstOffset && offset <= this.#written;
  }

  #hung(): boolean {
    return this.#inflightSince !== 0 && Date.now() - this.#inflightSince > (this.#opts.hungMs ?? 10_000);
  }

  async #recover(): Promise<void> {
    const io = this.#io;
    const segs: Segment[] = [];
    const sums = new Set<string>();
    for (const name of (await io.readdir(this.dir)).sort()) {
      const m = SEG_RE.exec(name) ?? SUM_RE.exec(name);
      if (!m) {
        if (LEGACY_RE.test(name) || name.includes('.tmp-')) {
          this.#opts.logger.warn({ file: name }, 'disk log file of an older format or an unfinished write removed');
          await this.#rmAtRecovery(join(this.dir, name));
        }
        continue;
      }
      if (this.#opts.epoch === null || Number(m[1]) !== this.#opts.epoch) {
        this.#opts.logger.info({ file: name, epoch: this.#opts.epoch }, 'log file of another history removed');
        await this.#rmAtRecovery(join(this.dir, name));
        continue;
      }
      if (name.endsWith('.sum')) {
        sums.add(name);
        continue;
      }
      const { size } = await io.stat(join(this.dir, name));
      if (size === 0) {
        await this.#rmAtRecovery(join(this.dir, name));
        continue;
      }
      const start = Number(m[2]);
      segs.push({ start, size, sums: new SegmentSums(start) });
    }
    segs.sort((a, b) => a.start - b.start);
    // Keep the newest contiguous run: anything before a gap is an older history, or was cut by a power loss.
    let from = 0;
    for (let i = 1; i < segs.length; i++) if (segs[i - 1]!.start + segs[i - 1]!.size !== segs[i]!.start) from = i;
    for (const s of segs.slice(0, from)) {
      this.#opts.logger.warn({ segment: segName(this.#epoch, s.start) }, 'log segment before a gap removed');
      await this.#dropAtRecovery(s.start);
    }
    this.#segments = segs.slice(from);
    await this.#loadSums();
    await this.#cutTornTail();
    for (const name of sums) {
      if (!this.#segments.some((s) => sumName(this.#epoch, s.start) === name)) await this.#rmAtRecovery(join(this.dir, name));
    }
    const last = this.#segments[this.#segments.length - 1];
    this.#written = last ? last.start + last.size - 1 : 0;
    this.#boundary = this.#written;
  }

  /**
   * The CRCs of every segment but the last, from their `.sum` files; they are checked when the bytes are read. A
   * closed segment's CRCs were durable before the next segment began, so one whose file holds fewer than it has
   * pieces (cut short, lost, or a segment of a version before checksums) was damaged: bytes no stored CRC covers
   * could be anything that parses, so it goes, with every segment before it (the history on disk stays one
   * contiguous run), and replicas that needed them full-sync.
   */
  async #loadSums(): Promise<void> {
    for (let i = 0; i < this.#segments.length - 1; i++) {
      const seg = this.#segments[i]!;
      const end = seg.start + seg.size - 1;
      const stored = await this.#storedSums(seg.start);
      const need = seg.sums.index(end) + 1;
      if (stored.length >= need) {
        seg.sums = SegmentSums.restore(seg.start, end, stored.slice(0, need), true);
        continue;
      }
      const dropped = this.#segments.splice(0, i + 1);
      for (const d of dropped) await this.#dropAtRecovery(d.start);
      this.#opts.logger.error(
        { segment: segName(this.#epoch, seg.start), pieces: need, stored: stored.length, droppedSegments: dropped.length },
        'log segment checksums missing: its bytes cannot be checked, so it and the segments before it are given up',
      );
      i = -1;
    }
  }

  /**
   * The CRCs a segment's `.sum` file holds; none when it is missing or unreadable (then no byte of the segment is
   * covered, and none is kept).
   */
  async #storedSums(start: number): Promise<number[]> {
    try {
      return SegmentSums.stored(await this.#io.readFile(this.#sumPath(start)));
    } catch {
      return [];
    }
  }

  /**
   * Reads the last segment (the one that was being written) from its start, one piece at a time (reads stay on the
   * piece grid), and checks each piece's CRC against `stored`. `each` sees the bytes of every piece that matched and
   * may stop the reading (false). Stops at the first piece that does not match: `bad` is its first offset (-1:
   * none). `crcs` holds the CRC of each piece read, up to offset `end`.
   *
   * The last stored CRC may be of the first bytes of its piece only (the `.sum` file is written after each write;
   * the file may hold more, a write's that returned after it, or O_DIRECT's zero padding); the piece is checked up
   * to where it matches, and reading stops there. Nothing past the stored CRCs is read: bytes no CRC on disk covers
   * are not kept, since a disk that lost writes or returns other bytes can hand back bytes that parse as commands.
   */
  async #readPieces(seg: Segment, stored: readonly number[], each: (piece: Buffer) => boolean): Promise<{ crcs: number[]; bad: number; end: number; short: boolean }> {
    const crcs: number[] = [];
    let checked = seg.start - 1;
    const end = seg.start + seg.size - 1;
    const fh = await this.#io.open(this.#path(seg.start), 'r');
    try {
      const buf = Buffer.allocUnsafe(READ_MAX);
      for (let o = seg.start; o <= end; ) {
        // Whole pieces per read (READ_MAX is a multiple of PIECE), the first one cut by the segment's start.
        const to = Math.min(end, pieceStart(o) + READ_MAX - 1);
        const len = to - o + 1;
        const got = await readFully(fh, buf, len, o - seg.start);
        for (let p = o; p < o + got; ) {
          if (crcs.length >= stored.length) return { crcs, bad: -1, end: checked, short: false };
          const stop = Math.min(pieceEnd(p), o + got - 1);
          // A file shorter than recorded: what it lacks cannot be checked.
          if (stop !== pieceEnd(p) && stop !== end) return { crcs, bad: p, end: checked, short: true };
          let piece = buf.subarray(p - o, stop - o + 1);
          let c = crc32(piece) >>> 0;
          if (stored[crcs.length] !== c) {
            const n = crcs.length === stored.length - 1 ? prefixMatching(piece, stored[crcs.length]!) : 0;
            if (n === 0) return { crcs, bad: p, end: checked, short: false };
            piece = piece.subarray(0, n);
            c = stored[crcs.length]!;
          }
          crcs.push(c);
          checked = p + piece.length - 1;
          if (!each(piece)) return { crcs, bad: -1, end: checked, short: false };
          if (piece.length < stop - p + 1) return { crcs, bad: -1, end: checked, short: false };
          p = stop + 1;
        }
        if (got < len) return { crcs, bad: o + got, end: checked, short: true };
        o = to + 1;
      }
    } finally {
      await fh.close();
    }
    return { crcs, bad: -1, end: checked, short: false };
  }

  /**
   * A crash can leave the last segment ending inside a command, or (power loss) shorter than the data after it was
   * acknowledged, and a disk can hand back other bytes than were written. Every segment starts after a command
   * boundary, so the last one is read from its start, each piece checked against its stored CRC and scanned, and
   * the segment is cut back to its last whole command before the first piece that does not match; a segment left
   * empty is removed, and the one before it ends at a boundary. Its `.sum` file is then written anew.
   */
  async #cutTornTail(): Promise<void> {
    const last = this.#segments[this.#segments.length - 1];
    if (!last) return;
    try {
      await this.#cutLast(last);
    } catch (err) {
      // Unreadable (EIO): it must not keep the relay from starting. The segment before it ends at a command boundary.
      this.#opts.logger.error({ err, segment: segName(this.#epoch, last.start) }, 'last log segment unreadable at recovery: given up, the log ends with the segment before it');
      if (this.#segments[this.#segments.length - 1] === last) this.#segments.pop();
      await this.#dropAtRecovery(last.start);
    }
  }

  async #cutLast(last: Segment): Promise<void> {
    const end = last.start + last.size - 1;
    const scanner = new StreamScanner(() => {}, { maxBulkLen: Number.MAX_SAFE_INTEGER });
    scanner.reset(last.start - 1);
    // No `.sum` file (lost, or a segment of a version before checksums): no byte of it is covered, none is kept.
    const stored = await this.#storedSums(last.start);
    const { crcs, bad, end: checked, short } = await this.#readPieces(last, stored, (piece) => scanner.scan(piece).error === null);
    if (bad >= 0) {
      // CRCs of pieces past the file's end: it lost bytes whose writes had returned.
      const lost = short || stored.length > last.sums.index(end) + 1;
      this.#opts.logger.error(
        { segment: segName(this.#epoch, last.start), offset: bad },
        lost
          ? 'log segment shorter than its checksums record (writes lost after they returned: a power loss, or a disk that dropped them): the segment is cut back to the last whole command before the loss'
          : 'log segment bytes do not match their checksum: the segment is cut back to the last whole command before them',
      );
    }
    const keepEnd = scanner.boundary;
    if (keepEnd < end) {
      // notCovered: bytes past the last CRC on disk (O_DIRECT's zero padding, a write whose CRC a crash or the disk
      // lost), never kept: they are fetched from upstream again.
      this.#opts.logger.warn(
        { segment: segName(this.#epoch, last.start), from: end, to: keepEnd, bytes: end - keepEnd, notCovered: end - checked },
        'torn log tail cut back to the last whole command',
      );
    }
    if (keepEnd < last.start) {
      await this.#dropAtRecovery(last.start);
      this.#segments.pop();
      return;
    }
    // The pieces up to the one holding keepEnd; that one again when the cut falls inside it, from a read checked
    // against the CRC of what the pass above read of it.
    const k = last.sums.index(keepEnd);
    const kept = crcs.slice(0, k);
    const from = Math.max(last.start, pieceStart(keepEnd));
    const span = Buffer.allocUnsafe(Math.min(pieceEnd(keepEnd), checked) - from + 1);
    await this.#readWhole(last.start, span, span.length, from);
    if (crc32(span) >>> 0 !== crcs[k]) throw new StorageError(`log segment ${segName(this.#epoch, last.start)} read back other bytes at offset ${from} than a moment before`);
    kept.push(crc32(span.subarray(0, keepEnd - from + 1)) >>> 0);
    last.sums = SegmentSums.restore(last.start, keepEnd, kept, false);
    // The CRCs first, then the cut: a crash between the two leaves the new CRCs over the longer file, which the next
    // start reads as this one did (the last CRC matches a prefix of its piece) and cuts at the same place. The other
    // order left the old CRCs over the shorter file: a mismatch, logged as damage, and a whole piece cut.
    const rewritten = await this.#rewriteSums(last);
    if (keepEnd < end) {
      last.size = keepEnd - last.start + 1;
      // The bytes past the size are never read, and the file is cut before anything is appended to it (#handle). Not
      // cut now when the CRCs could not be rewritten, for the same reason as above; nor when the disk refuses.
      if (rewritten) {
        await this.#io.truncate(this.#path(last.start), last.size).catch((err: Error) =>
          this.#opts.logger.warn({ err, segment: segName(this.#epoch, last.start), size: last.size }, 'could not cut the torn log tail from the file; it is cut before the next write'),
        );
      }
    }
  }

  /**
   * Replaces a segment's `.sum` file with the CRCs recovery settled on; false when it could not. A disk too full for
   * it (or failing) must not keep the relay from starting: the CRCs are written whole with the segment's next write.
   * Until then the old file stays: it covers every byte kept, where no file would leave no byte covered.
   */
  async #rewriteSums(seg: Segment): Promise<boolean> {
    try {
      await writeFileAtomic(this.#sumPath(seg.start), seg.sums.encode(0, true), this.#io);
      seg.sums.persisted = seg.sums.count;
      return true;
    } catch (err) {
      this.#opts.logger.warn({ err, segment: segName(this.#epoch, seg.start) }, 'could not write log segment checksums at recovery; they are written with the next write');
      seg.sums.persisted = 0;
      seg.sumsStale = true;
      return false;
    }
  }

  /** Reads `len` bytes of the segment starting at `start`, from stream offset `from`, into `buf`; a file that ends first is an error. */
  async #readWhole(start: number, buf: Buffer, len: number, from: number): Promise<void> {
    const fh = await this.#io.open(this.#path(start), 'r');
    try {
      const got = await readFully(fh, buf, len, from - start);
      if (got < len) throw new StorageError(`log segment ${segName(this.#epoch, start)} is shorter than recorded (a read at ${from + got} returned nothing)`);
    } finally {
      await fh.close();
    }
  }

  /**
   * Recovery removes what it does not keep; a disk that refuses (read-only, failing) must not keep the relay from
   * starting. A file left behind is ignored (another history's, one before a gap) or replaced (`w` opens of a
   * segment starting at the same offset truncate it), and removed at a later start.
   */
  async #rmAtRecovery(path: string): Promise<void> {
    await this.#io.rm(path).catch((err: Error) => this.#opts.logger.warn({ err, file: path }, 'could not remove a log file at recovery; it is left in place and not used'));
  }

  async #dropAtRecovery(start: number): Promise<void> {
    for (const p of this.#paths(start)) await this.#rmAtRecovery(p);
  }

  /** Removes a segment and its `.sum` file. */
  async #removeSegment(start: number): Promise<void> {
    await this.#io.rm(this.#path(start));
    await this.#io.rm(this.#sumPath(start));
  }

  /** A segment's files: its bytes and its CRCs. */
  #paths(start: number): string[] {
    return [this.#path(start), this.#sumPath(start)];
  }

  #sumPath(start: number): string {
    return join(this.dir, sumName(this.#epoch, start));
  }

  #path(start: number): string {
    return join(this.dir, segName(this.#epoch, start));
  }

  /** Starts copying from `source`, whose bytes after writtenOffset the disk does not have yet. */
  attach(source: DiskLogSource): void {
    this.#source = source;
    this.notify();
  }

  /**
   * Starts a new history: every segment is removed; the next byte written has offset `offset + 1`, which follows a
   * command boundary (a full sync's offset). Also clears a failed state: the disk is tried again.
   */
  async reset(offset: number, epoch: number): Promise<void> {
    this.#gen++;
    this.#wait.release();
    this.#dropHandle();
    const old = this.#segments.flatMap((s) => this.#paths(s.start));
    this.#segments = [];
    this.#epoch = epoch;
    this.#written = offset;
    this.#boundary = offset;
    this.#clearTimer();
    this.#running = false;
    this.#inflightSince = 0;
    this.#retryMs = this.#opts.retryMinMs ?? 100;
    this.#deleteFiles(old);
    await this.#deleting;
    this.#setState(DiskLogState.Ok, null);
    this.notify();
  }

  /** More bytes are held in memory: write them soon, or give the disk history up if it is too far behind. */
  notify(): void {
    const src = this.#source;
    if (!src || !this.active || this.#closing) return;
    const pending = src.endOffset - this.#written;
    if (pending > this.#opts.maxPending) {
      const p = this.problem;
      this.#detach(`the disk is ${pending} bytes behind the stream, over log.disk-queue (${this.#opts.maxPending})${p ? `: ${p.cause}` : ''}`);
      return;
    }
    if (this.#running || pending <= 0) return;
    // A retry's or a restart's timer decides when writing resumes; the flush delay's gives way to a full batch.
    if (this.#timer !== null && !this.#flushDelay) return;
    if (pending >= this.#flushBytes) this.#start();
    else if (this.#timer === null) {
      this.#timer = setTimeout(() => this.#start(), this.#opts.flushDelayMs ?? FLUSH_DELAY_MS);
      this.#flushDelay = true;
    }
  }

  /**
   * Writes what is pending now rather than after FLUSH_DELAY_MS: a WAIT on the master waits for it (ack-policy min
   * and quorum acknowledge no more than is written). A retry's or a restart's timer still decides.
   */
  writeNow(): void {
    const src = this.#source;
    if (!src || !this.active || this.#closing || this.#running || src.endOffset <= this.#written) return;
    if (this.#timer !== null && !this.#flushDelay) return;
    this.#start();
  }

  #start(): void {
    this.#clearTimer();
    if (this.#running || !this.active || this.#closing) return;
    this.#running = true;
    void this.#writeLoop(this.#gen);
  }

  #clearTimer(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#flushDelay = false;
    if (this.#syncTimer !== null) clearTimeout(this.#syncTimer);
    this.#syncTimer = null;
  }

  /**
   * Writes are fsynced at most once a second, after a write; a stream that goes quiet would leave its last writes
   * (and their checksums) unsynced until the next one, for as long as it stays quiet. So the write loop, when it
   * stops with writes unsynced, has them fsynced a second after the last fsync.
   */
  #syncLater(): void {
    if (!this.#unsynced || this.#syncTimer !== null) return;
    const gen = this.#gen;
    this.#syncTimer = setTimeout(() => {
      this.#syncTimer = null;
      const seg = this.#segments[this.#segments.length - 1];
      const fh = this.#fh;
      if (gen !== this.#gen || this.#running || !this.active || !this.#unsynced || !seg || fh === null || this.#fhStart !== seg.start) return;
      // As a write loop: none starts meanwhile, and a failing fsync is retried like a failing write.
      this.#running = true;
      this.#inflight(gen, () => this.#sync(fh, seg)).then(
        () => {
          if (gen === this.#gen) this.#running = false;
          if (gen === this.#gen) this.notify();
        },
        (err: Error) => {
          if (gen !== this.#gen) return;
          this.#running = false;
          this.#failed(err);
        },
      );
    }, Math.max(0, FSYNC_INTERVAL_MS - (Date.now() - this.#lastSync)));
    this.#syncTimer.unref();
  }

  async #writeLoop(gen: number): Promise<void> {
    try {
      for (let whole = false; ; ) {
        if (gen !== this.#gen) return;
        const src = this.#source!;
        // Less than FLUSH_BYTES arrived during a whole write: the rest waits (notify() below), to go out bigger.
        if (this.#written >= src.endOffset || (whole && src.endOffset - this.#written < this.#flushBytes)) break;
        whole = await this.#writeBatch(gen, src);
      }
      if (gen === this.#gen && this.#state === DiskLogState.Failing) this.#recovered();
    } catch (err) {
      if (gen !== this.#gen) return;
      this.#failed(err as Error);
      return;
    } finally {
      if (gen === this.#gen) this.#running = false;
    }
    // Bytes may have arrived while the last write was in flight.
    if (gen === this.#gen) this.notify();
    if (gen === this.#gen && !this.#running) this.#syncLater();
  }

  /**
   * Writes one batch of views of the memory log to the current segment. A segment past segmentBytes is closed at
   * the next command boundary, so every segment starts right after one.
   */
  async #writeBatch(gen: number, src: DiskLogSource): Promise<boolean> {
    let seg = this.#segments[this.#segments.length - 1];
    if (!seg || (seg.size >= this.#opts.segmentBytes && this.#boundary === this.#written)) {
      const full = seg;
      if (full) await this.#inflight(gen, () => this.#closeHandle(gen, full));
      seg = { start: this.#written + 1, size: 0, sums: new SegmentSums(this.#written + 1) };
      this.#segments.push(seg);
    }
    const bufs: Buffer[] = [];
    /** Command boundaries within the batch, in order, as offsets. */
    const marks: number[] = [];
    let bytes = 0;
    let o = this.#written + 1;
    let known = this.#boundary;
    while (o <= src.endOffset && bufs.length < BATCH_MAX_BUFFERS && bytes < BATCH_MAX_BYTES) {
      const due = seg.size + bytes >= this.#opts.segmentBytes;
      if (due && known === o - 1 && bytes > 0) break;
      const v = src.view(o);
      if (!v) throw new InternalError(`the memory log no longer holds offset ${o}, which the disk does not have`);
      let buf = v.buf;
      const inView = v.boundary >= o && v.boundary < o + buf.length;
      if (due && inView) buf = buf.subarray(0, v.boundary - o + 1);
      // Never past what one write takes (DirectWriter's capacity): the rest would follow in a small write of its own.
      if (bytes + buf.length > BATCH_MAX_BYTES) buf = buf.subarray(0, BATCH_MAX_BYTES - bytes);
      bufs.push(buf);
      bytes += buf.length;
      o += buf.length;
      if (v.boundary >= o - buf.length - 1 && v.boundary <= o - 1) {
        known = v.boundary;
        marks.push(known);
      }
      if (due && inView) break;
    }
    const fh = await this.#handle(seg, gen);
    if (gen !== this.#gen) return false;
    this.#inflightSince = Date.now();
    // The thread pool reads these views until the write returns, whatever happens to this log meanwhile; an O_DIRECT
    // write reads them only until DirectWriter has copied them into its aligned buffer.
    this.#inflightFrom = this.#written + 1;
    this.#inflightTo = this.#written + bytes;
    const released = (): void => {
      this.#inflightFrom = Infinity;
    };
    let bytesWritten: number;
    const sums = seg.sums;
    try {
      if (this.#fhDirect && this.#direct) ({ bytesWritten } = await this.#direct.write(fh, bufs, seg.size, released, (taken) => sums.add(taken)));
      else {
        ({ bytesWritten } = await fh.writev(bufs, seg.size));
        // The views are still the memory log's until released() below.
        for (let left = bytesWritten, i = 0; left > 0 && i < bufs.length; i++) {
          const b = bufs[i]!;
          sums.add(left >= b.length ? b : b.subarray(0, left));
          left -= b.length;
        }
      }
    } catch (err) {
      if (gen !== this.#gen || !this.#fhDirect || !directUnavailable(err)) throw err;
      this.#directRefused(err as Error);
      this.#dropHandle();
      return false;
    } finally {
      released();
    }
    this.#inflightSince = 0;
    if (gen !== this.#gen) return false;
    if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    seg.size += bytesWritten;
    this.#written += bytesWritten;
    this.#unsynced = true;
    if (sums.end !== this.#written) throw new InternalError(`checksums cover up to ${sums.end}, the disk log up to ${this.#written}`);
    for (const m of marks) if (m <= this.#written) this.#boundary = m;
    if (this.#state === DiskLogState.Failing) this.#recovered();
    await this.#inflight(gen, () => (Date.now() - this.#lastSync >= FSYNC_INTERVAL_MS ? this.#sync(fh, seg) : this.#persistSums(seg, false)));
    this.onWritten?.();
    this.#wait.progressed(this.pending);
    if (this.overLimit > 0) this.onOverLimit?.();
    return bytesWritten === bytes;
  }

  async #handle(seg: Segment, gen: number): Promise<FileHandleIo> {
    if (this.#fh !== null && this.#fhStart === seg.start) return this.#fh;
    // A new segment's `.sum` file is created first: a crash then never leaves a segment holding bytes without one
    // (it would only be parsed at recovery, not checked). Empty, it covers nothing, and recovery keeps nothing.
    if (seg.size === 0) await this.#openSums(seg.start, 'w');
    // A new segment's file is created (truncating any leftover of a crashed run); an existing one is reopened, and
    // cut to its size: bytes past it (a torn tail recovery could not cut, a failed write's) must never follow ours.
    // Its CRCs first when the `.sum` file may not describe them (recovery cut the segment and could not rewrite it):
    // old CRCs over a file cut shorter read, after a crash, as damage, and cost the piece the cut fell in. Written
    // over the old file, which a full disk still takes; if even that fails, nothing is cut and the write is retried.
    if (seg.size > 0 && seg.sumsStale === true) await this.#persistSums(seg, true);
    const { fh, direct } = await this.#open(this.#path(seg.start), seg.size === 0 ? 'w' : 'r+');
    if (seg.size > 0) {
      try {
        await fh.truncate(seg.size);
      } catch (err) {
        void fh.close().catch(() => {});
        throw err;
      }
    }
    if (gen !== this.#gen) {
      // The history was replaced while the file opened: this handle belongs to nobody.
      void fh.close().catch(() => {});
      return fh;
    }
    if (seg.size === 0) this.#dirDirty = true;
    this.#setHandle(fh, seg.start, direct);
    return fh;
  }

  /** Opens a segment for writing, with O_DIRECT unless it is off or the filesystem refuses it. */
  async #open(path: string, flags: 'w' | 'r+'): Promise<{ fh: FileHandleIo; direct: boolean }> {
    if (this.#direct !== null) {
      try {
        return { fh: await this.#io.open(path, flags, 0o600, { direct: true }), direct: true };
      } catch (err) {
        if (!directUnavailable(err)) throw err;
        this.#directRefused(err as Error);
      }
    }
    return { fh: await this.#io.open(path, flags, 0o600), direct: false };
  }

  #directRefused(err: Error): void {
    if (this.#direct === null) return;
    this.#direct = null;
    // EINVAL also comes from a write that a file size limit (RLIMIT_FSIZE) cut to an unaligned length: the page
    // cache then reports the limit itself (EFBIG) on the next write.
    this.#opts.logger.warn(
      { err, dir: this.dir },
      'O_DIRECT is not available (the filesystem refuses it, no aligned memory, or a file size limit cut a write): the disk log writes through the page cache',
    );
  }

  #setHandle(fh: FileHandleIo, start: number, direct: boolean): void {
    this.#fh = fh;
    this.#fhStart = start;
    this.#fhDirect = direct;
  }

  /**
   * Runs a write of the log's own files that is not a segment write (the checksums, an fsync) as in flight: a disk
   * that hangs on it is reported as hung (#hung), as one that hangs on a segment write, instead of holding the write
   * loop with nothing said.
   */
  async #inflight(gen: number, op: () => Promise<void>): Promise<void> {
    this.#inflightSince = Date.now();
    try {
      await op();
    } finally {
      if (gen === this.#gen) this.#inflightSince = 0;
    }
  }

  async #sync(fh: FileHandleIo, seg: Segment): Promise<void> {
    this.#lastSync = Date.now();
    await fh.datasync();
    this.#unsynced = false;
    await this.#persistSums(seg, true);
    if (this.#dirDirty) {
      this.#dirDirty = false;
      try {
        await this.#io.syncDir(this.dir);
      } catch (err) {
        // Failed like a write: the new segments' entries are synced again on the retry.
        this.#dirDirty = true;
        throw err;
      }
    }
  }

  /**
   * The segment is complete: cut it to its bytes (O_DIRECT writes end in zero padding), make it durable and let its
   * handle go. Only the last segment can end in padding after a crash; recovery cuts that one.
   */
  async #closeHandle(gen: number, seg: Segment): Promise<void> {
    seg.sums.seal();
    let fh = this.#fh;
    if (!fh) {
      // An attempt failed (a cut or an fsync; its handle was dropped): the whole close is done again, so that no
      // closed segment keeps O_DIRECT's padding past its last byte (a restart would read it as the segment's) or
      // goes unsynced, its checksums with it.
      const reopened = await this.#io.open(this.#path(seg.start), 'r+', 0o600);
      if (gen !== this.#gen) {
        // The history was replaced while the file opened: this handle belongs to nobody (as in #handle).
        void reopened.close().catch(() => {});
        return;
      }
      fh = reopened;
      this.#setHandle(fh, seg.start, false);
      await this.#openSums(seg.start, 'r+');
      this.#sumsUnsynced = true;
      this.#dirDirty = true;
    }
    await fh.truncate(seg.size);
    await this.#sync(fh, seg);
    if (gen !== this.#gen) return;
    this.#fh = null;
    this.#fhStart = -1;
    await fh.close();
    await this.#closeSums();
  }

  /**
   * Writes the CRCs of `seg` its `.sum` file does not hold yet (those of complete pieces; all of them once the
   * segment is sealed), after every write: a SIGKILL then leaves unchecked at most the pieces of the write in
   * flight. `sync` (at each fsync of the segment, and when it closes) also makes them durable. After a crash the file
   * may hold fewer than the segment has pieces: recovery computes the rest from the bytes.
   */
  async #persistSums(seg: Segment, sync: boolean): Promise<void> {
    const sums = seg.sums;
    const from = sums.persisted;
    // A segment no longer in this log (a detach or reset dropped it) gets no file again.
    if (!this.#segments.includes(seg)) return;
    // With the running CRC of the incomplete last piece: the bytes of every write that returned are covered.
    const data = sums.encode(from, true);
    if (data.length > 0) {
      const open = this.#sumFh !== null && this.#sumStart === seg.start;
      // All of them again (recovery could not rewrite the file): over the old file, which a full disk still takes,
      // where truncating it to nothing first would leave no byte covered if the write then failed. An old file
      // longer than the new one is cut to the new length first: its CRCs up to there still match the segment (it is
      // not cut before this returns), and a crash between the cut and the write leaves no old CRC of a piece the
      // segment is cut inside of followed by CRCs past the cut (the next start would take that piece for damage).
      const fh = open ? this.#sumFh! : await this.#openSums(seg.start, from === 0 ? 'rewrite' : 'r+');
      if (!open && from === 0 && (await fh.stat()).size > data.length) await fh.truncate(data.length);
      for (let done = 0; done < data.length; ) {
        const { bytesWritten } = await fh.writev([data.subarray(done)], from * 4 + done);
        if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
        done += bytesWritten;
      }
      sums.persisted = sums.count;
      seg.sumsStale = false;
      this.#sumsUnsynced = true;
    }
    if (sync && this.#sumsUnsynced && this.#sumFh !== null) {
      this.#sumsUnsynced = false;
      await this.#sumFh.datasync();
    }
  }

  /** Opens the `.sum` file of the segment starting at `start` for writing its CRCs ('w': a new, empty one; 'rewrite': the one there, to be written over, else a new one). */
  async #openSums(start: number, flags: 'w' | 'r+' | 'rewrite'): Promise<FileHandleIo> {
    await this.#closeSums();
    const path = this.#sumPath(start);
    let fh: FileHandleIo;
    if (flags !== 'rewrite') fh = await this.#io.open(path, flags, 0o600);
    else {
      fh = await this.#io.open(path, 'r+', 0o600).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
        flags = 'w';
        return this.#io.open(path, 'w', 0o600);
      });
    }
    this.#sumFh = fh;
    this.#sumStart = start;
    if (flags === 'w') this.#dirDirty = true;
    return fh;
  }

  async #closeSums(): Promise<void> {
    const fh = this.#sumFh;
    this.#sumFh = null;
    this.#sumStart = -1;
    this.#sumsUnsynced = false;
    await fh?.close().catch(() => {});
  }

  /** Forgets the handle without waiting (it may belong to a hung write). */
  #dropHandle(): void {
    const fh = this.#fh;
    this.#fh = null;
    this.#fhStart = -1;
    if (fh) void fh.close().catch(() => {});
    void this.#closeSums();
  }

  #failed(err: Error): void {
    this.#dropHandle();
    this.#inflightSince = 0;
    const code = (err as NodeJS.ErrnoException).code ?? 'ERR';
    const cause = err.message.startsWith(code) ? err.message : `${code}: ${err.message}`;
    this.#telemetry.emit('disk.write-error', { cause });
    if (Date.now() - this.#lastLog >= LOG_EVERY_MS) {
      this.#lastLog = Date.now();
      this.#opts.logger.error(
        { err, code, writtenOffset: this.#written, pending: this.pending, retryMs: this.#retryMs, limit: 'log.disk-queue', value: this.#opts.maxPending },
        'disk log write failed: forwarding from memory, retrying',
      );
    }
    this.#setState(DiskLogState.Failing, cause);
    const delay = this.#retryMs;
    this.#retryMs = Math.min(this.#retryMs * 2, this.#opts.retryMaxMs ?? 5000);
    this.#clearTimer();
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#start();
    }, delay);
  }

  #recovered(): void {
    this.#opts.logger.warn({ writtenOffset: this.#written, failedForMs: Date.now() - this.#since }, 'disk log writes work again');
    this.#retryMs = this.#opts.retryMinMs ?? 100;
    this.#setState(DiskLogState.Ok, null);
  }

  /**
   * The disk cannot keep up (or failed for too long): give its history up so that memory can be trimmed, and try to
   * start a new one later. Replicas the disk was serving fall behind the log and full-sync.
   */
  #detach(cause: string): void {
    this.#gen++;
    this.#telemetry.emit('disk.detached', { cause });
    this.#dropHandle();
    this.#clearTimer();
    this.#running = false;
    this.#inflightSince = 0;
    const old = this.#segments.flatMap((s) => this.#paths(s.start));
    this.#segments = [];
    this.#deleteFiles(old);
    this.#opts.logger.error({ cause, limit: 'log.disk-queue', value: this.#opts.maxPending, droppedSegments: old.length }, 'disk log detached: forwarding from memory only');
    this.#setState(DiskLogState.Detached, cause);
    // Detaching again soon after a restart (a disk that frees only what we delete) backs off further each time.
    const max = this.#opts.retryMaxMs ?? 5000;
    const min = this.#opts.retryMinMs ?? 100;
    this.#detachBackoff = Date.now() - this.#lastDetach < 60_000 ? Math.min(Math.max(this.#detachBackoff * 2, min), max) : min;
    this.#lastDetach = Date.now();
    this.#retryMs = this.#detachBackoff;
    this.#scheduleRestart();
  }

  #scheduleRestart(): void {
    const delay = this.#retryMs;
    this.#retryMs = Math.min(this.#retryMs * 2, this.#opts.retryMaxMs ?? 5000);
    this.#clearTimer();
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.#restart(this.#gen);
    }, delay);
  }

  /**
   * After a detach: a new history on disk, from a command boundary memory still holds the bytes after. The boundary
   * is chosen after the file operations that may take long (deleting the old history), and checked again after the
   * new file is created: the stream does not wait for the disk.
   */
  async #restart(gen: number): Promise<void> {
    const src = this.#source;
    if (!src || gen !== this.#gen || this.#state !== DiskLogState.Detached) return;
    let fh: FileHandleIo | null = null;
    let direct = false;
    let b: number | null = null;
    try {
      await this.#deleting;
      for (let attempt = 0; attempt < 3 && gen === this.#gen; attempt++) {
        // Start no further back than half the queue limit, so the new history is not over it at once.
        b = src.boundaryFrom(Math.max(0, src.endOffset - Math.floor(this.#opts.maxPending / 2)));
        if (b === null) break;
        const path = this.#path(b + 1);
        ({ fh, direct } = await this.#open(path, 'w'));
        if (src.view(b + 1) !== null || b === src.endOffset) {
          if (src.endOffset - b <= this.#opts.maxPending) break;
        }
        // The stream moved on while the file was created: try again from a newer boundary.
        await fh.close().catch(() => {});
        await this.#io.rm(path).catch(() => {});
        fh = null;
      }
    } catch (err) {
      if (fh) void fh.close().catch(() => {});
      if (gen !== this.#gen) return;
      if (Date.now() - this.#lastLog >= LOG_EVERY_MS) {
        this.#lastLog = Date.now();
        this.#opts.logger.error({ err }, 'disk log still cannot be written; forwarding from memory only');
      }
      return this.#scheduleRestart();
    }
    if (gen !== this.#gen) {
      if (fh) void fh.close().catch(() => {});
      return;
    }
    if (fh === null || b === null) return this.#scheduleRestart();
    this.#setHandle(fh, b + 1, direct);
    this.#dirDirty = true;
    this.#segments = [{ start: b + 1, size: 0, sums: new SegmentSums(b + 1) }];
    this.#written = b;
    this.#boundary = b;
    this.#retryMs = this.#opts.retryMinMs ?? 100;
    this.#opts.logger.warn({ from: b + 1 }, 'disk log resumed: a new history on disk (older bytes are in memory only)');
    this.#setState(DiskLogState.Ok, null);
    this.notify();
    this.#start();
  }

  #deleteFiles(paths: string[]): void {
    if (paths.length === 0) return;
    this.#deleting = this.#deleting.then(async () => {
      for (const p of paths) {
        await this.#io.rm(p).catch((err: Error) => this.#opts.logger.warn({ err, file: p }, 'could not remove a dropped log segment'));
      }
    });
  }

  #setState(next: DiskLogState, cause: string | null): void {
    const from = this.#state;
    this.#cause = cause;
    if (from === next) return;
    checkTransition(DISK_TRANSITIONS, 'disk log', from, next);
    this.#state = next;
    this.#since = Date.now();
    this.#wait.release();
    this.onState?.(next, cause);
    this.#telemetry.emit('disk.state', { from, to: next, cause });
  }

  /**
   * Reads up to `max` bytes from `offset`, which must be on disk, into `into` (at least `max` bytes) or a new
   * buffer; returns a view of them. The read covers whole pieces (SegmentSums), widened for that when needed (into
   * `into` when they fit: a read from a piece's start to a piece's end, as DiskChunkCache's are, is not widened), and
   * is checked against their CRCs: bytes that do not match, like a segment shorter than recorded, are never
   * returned; the segment is given up (#unreadable).
   */
  async read(offset: number, max = READ_MAX, into?: Buffer): Promise<Buffer> {
    if (!this.holds(offset)) {
      throw new LogRangeError(offset, `offset ${offset} not on disk [${this.firstOffset}, ${this.#written}]`);
    }
    const seg = this.#segmentOf(offset);
    const n = Math.min(max, this.#written - offset + 1, seg.start + seg.size - offset);
    if (into !== undefined && into.length < n) throw new InternalError(`a disk log read of ${n} bytes into ${into.length}`);
    // As of now: bytes written later do not change these offsets, only the CRC of a piece still growing.
    const want = seg.sums.expect(offset, offset + n - 1);
    const len = want.to - want.from + 1;
    const buf = into !== undefined && into.length >= len ? into : Buffer.allocUnsafe(len);
    const gen = this.#gen;
    try {
      await this.#readWhole(seg.start, buf, len, want.from);
      const bad = mismatch(want, buf);
      if (bad >= 0) {
        throw new StorageError(`log segment ${segName(this.#epoch, seg.start)}: the bytes from offset ${bad} do not match their checksum (changed on disk)`);
      }
      return buf.subarray(offset - want.from, offset - want.from + n);
    } catch (err) {
      if (gen === this.#gen && !TRANSIENT_READ.has((err as NodeJS.ErrnoException).code ?? '')) this.#unreadable(seg, err as Error);
      throw err;
    }
  }

  /**
   * A segment could not be read back (EIO from a bad sector; the file removed or cut short behind our back): its
   * bytes can no longer be served, so it goes with every older segment (the history on disk stays one contiguous
   * run). Readers there fall behind the log and their replicas full-sync, instead of being continued from it, failing
   * and coming back for the same bytes forever. The segment being written takes the whole history with it (detach).
   */
  #unreadable(seg: Segment, err: Error): void {
    const i = this.#segments.indexOf(seg);
    if (i < 0) return;
    const cause = `log segment ${segName(this.#epoch, seg.start)} unreadable: ${err.message}`;
    this.#telemetry.emit('disk.read-error', { cause });
    if (i === this.#segments.length - 1) {
      this.#detach(cause);
      return;
    }
    const dropped = this.#segments.splice(0, i + 1);
    this.#deleteFiles(dropped.flatMap((s) => this.#paths(s.start)));
    this.#opts.logger.error(
      { err, segment: segName(this.#epoch, seg.start), droppedSegments: dropped.length, firstOffset: this.firstOffset },
      'disk log segment unreadable: it and the segments before it are given up; replicas that need them full-sync',
    );
  }

  #segmentOf(offset: number): Segment {
    let lo = 0;
    let hi = this.#segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.#segments[mid]!.start <= offset) lo = mid;
      else hi = mid - 1;
    }
    return this.#segments[lo]!;
  }

  /** Drops the oldest segment if it is not the one being written. Returns whether it did. */
  async dropOldest(): Promise<boolean> {
    const s = this.#segments[0];
    if (this.#segments.length < 2 || !s) return false;
    this.#segments.shift();
    await this.#removeSegment(s.start).catch((err: Error) => this.#opts.logger.warn({ err }, 'could not remove the oldest log segment'));
    return true;
  }

  /**
   * Writes what memory holds (for up to `timeoutMs`: a failing disk must not hold a shutdown forever), fsyncs and
   * closes. Bytes not written stay only in memory: recovery ends at the last whole command on disk.
   */
  async close(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.active && this.#source && this.#written < this.#source.endOffset && Date.now() < deadline) {
      if (!this.#running) this.#start();
      await new Promise((r) => setTimeout(r, 10));
    }
    while (this.#running && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    // From here no write starts: bytes arriving during the close (the link still reads) would open the segment again
    // behind the handles being closed, and a failure then would land on a closed log.
    this.#closing = true;
    const gen = ++this.#gen;
    this.#clearTimer();
    const fh = this.#fh;
    const last = this.#segments[this.#segments.length - 1];
    this.#fh = null;
    if (fh && !this.#hung()) {
      if (last && this.#fhStart === last.start) {
        await fh.truncate(last.size).catch((err: Error) => this.#opts.logger.warn({ err }, 'could not cut the last log segment to its bytes'));
      }
      await fh.datasync().catch((err: Error) => this.#opts.logger.warn({ err }, 'final fsync of the disk log failed'));
      await fh.close().catch(() => {});
    }
    if (last && this.active && !this.#hung()) {
      // All its CRCs, the growing last piece's too: a restart checks the whole segment.
      last.sums.seal();
      await this.#persistSums(last, true).catch((err: Error) => this.#opts.logger.warn({ err }, 'could not write the last log segment checksums'));
    }
    await this.#closeSums();
    void gen;
    this.#setState(DiskLogState.Closed, null);
  }
}

