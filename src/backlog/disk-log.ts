import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import { StreamScanner } from '../resp/stream-scanner.js';
import { writeFileAtomic } from './snapshot-store.js';

/** One append-only file of raw stream bytes; its name carries the offset of its first byte. */
interface Segment {
  readonly start: number;
  size: number;
  /** A command boundary inside or just before this segment (offset of a command's last byte), or null when not yet known. */
  firstBoundary: number | null;
}

interface IndexFile {
  readonly segments: ReadonlyArray<{ start: number; firstBoundary: number | null }>;
}

const INDEX = 'index.json';
const segName = (start: number) => `seg-${String(start).padStart(20, '0')}.log`;
const SEG_RE = /^seg-(\d{20})\.log$/;
const READ_MAX = 1024 * 1024;
const FSYNC_INTERVAL_MS = 1000;
const FLUSH_BYTES = 64 * 1024;
const FLUSH_DELAY_MS = 5;

export interface DiskLogOptions {
  readonly dir: string;
  /** log.disk: segments are dropped (oldest first) to stay under this. */
  readonly maxBytes: number;
  readonly segmentBytes: number;
  readonly logger: Logger;
  /** Offsets known to end a command (e.g. the snapshot's offset: a history starts there), for recovery. */
  readonly knownBoundaries?: ReadonlyArray<number>;
}

/**
 * The replication log on disk: the stream as raw bytes in append-only segment files behind the in-memory tail,
 * so replicas hours behind still resync partially and a restart loses nothing. Writes are queued and written in
 * batches (writev) off the forwarding path; reads are async, so a replica reading old bytes never stalls the live
 * fan-out. Segments start anywhere in the stream; each records a command boundary so recovery can cut a torn
 * tail back to the last whole command.
 */
export class DiskLog {
  readonly dir: string;
  #opts: DiskLogOptions;
  #segments: Segment[] = [];
  /** Offset of the last byte handed to append() (queued or written). */
  #endOffset = 0;
  /** Offset of the last byte written to a file (readable through read()). */
  #writtenOffset = 0;
  #queue: Buffer[] = [];
  #queuedBytes = 0;
  #fh: FileHandle | null = null;
  #writing: Promise<void> | null = null;
  #lastSync = Date.now();
  #closed = false;
  #flushTimer: NodeJS.Timeout | null = null;
  #indexWrite: Promise<void> = Promise.resolve();
  #error: Error | null = null;
  /** Called when bytes become readable from disk (the in-memory tail may then be trimmed). */
  onWritten: (() => void) | null = null;
  /** Called when written bytes pass the disk limit (the owner drops old segments then). */
  onOverLimit: (() => void) | null = null;

  private constructor(opts: DiskLogOptions) {
    this.dir = opts.dir;
    this.#opts = opts;
  }

  /** Opens the segments a previous run left, checks them and cuts a torn tail back to the last whole command. */
  static async open(opts: DiskLogOptions): Promise<DiskLog> {
    const log = new DiskLog(opts);
    await fsp.mkdir(opts.dir, { recursive: true });
    await log.#recover();
    return log;
  }

  get firstOffset(): number {
    return this.#segments.length > 0 ? this.#segments[0]!.start : this.#endOffset + 1;
  }
  get endOffset(): number {
    return this.#endOffset;
  }
  /** Bytes up to here can be read back. */
  get writtenOffset(): number {
    return this.#writtenOffset;
  }
  /** Bytes written to segment files (queued bytes are still only in memory). */
  get size(): number {
    return Math.max(0, this.#writtenOffset - this.firstOffset + 1);
  }
  get segmentCount(): number {
    return this.#segments.length;
  }
  get empty(): boolean {
    return this.#segments.length === 0 || this.#endOffset < this.firstOffset;
  }
  /** The start offset of the oldest segment and where the next one starts (what dropping it would lose). */
  get oldestSegment(): { start: number; end: number } | null {
    const s = this.#segments[0];
    return s ? { start: s.start, end: s.start + s.size - 1 } : null;
  }

  async #recover(): Promise<void> {
    const names = (await fsp.readdir(this.dir)).filter((n) => SEG_RE.test(n)).sort();
    let index: IndexFile = { segments: [] };
    try {
      index = JSON.parse(await fsp.readFile(join(this.dir, INDEX), 'utf8')) as IndexFile;
    } catch {
      // No index: segments without a known boundary are kept only if they are not the torn tail.
    }
    const boundaries = new Map(index.segments.map((s) => [s.start, s.firstBoundary]));
    const segs: Segment[] = [];
    for (const name of names) {
      const start = Number(SEG_RE.exec(name)![1]);
      const st = await fsp.stat(join(this.dir, name));
      segs.push({ start, size: st.size, firstBoundary: boundaries.get(start) ?? null });
    }
    // Keep the newest contiguous run: anything before a gap belongs to another history.
    let from = 0;
    for (let i = 1; i < segs.length; i++) {
      if (segs[i - 1]!.start + segs[i - 1]!.size !== segs[i]!.start) from = i;
    }
    for (const s of segs.slice(0, from)) await fsp.rm(join(this.dir, segName(s.start)), { force: true });
    this.#segments = segs.slice(from);
    await this.#cutTornTail();
    const last = this.#segments[this.#segments.length - 1];
    this.#endOffset = last ? last.start + last.size - 1 : 0;
    this.#writtenOffset = this.#endOffset;
    await this.#writeIndex();
  }

  /** A crash can leave the last segment ending inside a command: cut it back to the last whole command. */
  async #cutTornTail(): Promise<void> {
    while (this.#segments.length > 0) {
      const last = this.#segments[this.#segments.length - 1]!;
      // The boundary to scan from: this segment's, else the previous one's.
      const prev = this.#segments.length > 1 ? this.#segments[this.#segments.length - 2]! : null;
      const known = (this.#opts.knownBoundaries ?? []).filter((b) => b >= this.firstOffset - 1 && b <= last.start + last.size - 1);
      const from = last.firstBoundary ?? prev?.firstBoundary ?? (known.length > 0 ? Math.max(...known) : null);
      if (from === null || from < this.firstOffset - 1) {
        this.#opts.logger.warn({ segment: segName(last.start) }, 'log segment without a known command boundary dropped');
        await fsp.rm(join(this.dir, segName(last.start)), { force: true });
        this.#segments.pop();
        continue;
      }
      const end = last.start + last.size - 1;
      const scanner = new StreamScanner(() => {});
      scanner.reset(from);
      for (let o = from + 1; o <= end; ) {
        const buf = await this.#readRange(o, Math.min(READ_MAX, end - o + 1));
        if (buf.length === 0) break;
        if (scanner.scan(buf).error !== null) break;
        o += buf.length;
      }
      const keepEnd = scanner.boundary;
      if (keepEnd < end) {
        this.#opts.logger.warn({ segment: segName(last.start), from: end, to: keepEnd, bytes: end - keepEnd }, 'torn log tail cut back to the last whole command');
        if (keepEnd < last.start) {
          await fsp.rm(join(this.dir, segName(last.start)), { force: true });
          this.#segments.pop();
          // The previous segment ends before keepEnd+1 only if keepEnd is inside it; loop to cut it.
          continue;
        }
        await fsp.truncate(join(this.dir, segName(last.start)), keepEnd - last.start + 1);
        last.size = keepEnd - last.start + 1;
      }
      return;
    }
  }

  /** Starts a new history: every segment is removed; the next appended byte has offset `offset + 1`. */
  async reset(offset: number): Promise<void> {
    await this.#drain();
    await this.#fh?.close();
    this.#fh = null;
    for (const s of this.#segments) await fsp.rm(join(this.dir, segName(s.start)), { force: true });
    this.#segments = [];
    this.#endOffset = offset;
    this.#writtenOffset = offset;
    this.#error = null;
    await this.#writeIndex();
  }

  /**
   * Queues stream bytes (the same Buffer the memory log holds: no copy). `boundary` is the offset of the last
   * whole command the upstream scanner has seen, recorded for recovery.
   */
  append(chunk: Buffer, boundary: number): void {
    if (this.#closed || chunk.length === 0) return;
    const start = this.#endOffset + 1;
    const last = this.#segments[this.#segments.length - 1];
    if (!last || last.size >= this.#opts.segmentBytes) {
      this.#segments.push({ start, size: 0, firstBoundary: boundary >= start - 1 ? boundary : null });
      this.#queue.push(Buffer.alloc(0)); // marks the roll point for the writer

    }
    const cur = this.#segments[this.#segments.length - 1]!;
    if (cur.firstBoundary === null && boundary >= cur.start - 1) cur.firstBoundary = boundary;
    cur.size += chunk.length;
    this.#queue.push(chunk);
    this.#queuedBytes += chunk.length;
    this.#endOffset += chunk.length;
    // Small appends are gathered for up to FLUSH_DELAY_MS into one writev; 64 KiB queued is written at once.
    if (this.#writing) return;
    if (this.#queuedBytes >= FLUSH_BYTES) {
      if (this.#flushTimer) clearTimeout(this.#flushTimer);
      this.#flushTimer = null;
      this.#writing = this.#writeLoop();
    } else {
      this.#flushTimer ??= setTimeout(() => {
        this.#flushTimer = null;
        this.#writing ??= this.#writeLoop();
      }, FLUSH_DELAY_MS);
    }
  }

  async #writeLoop(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        // Take everything queued up to the next roll marker.
        const batch: Buffer[] = [];
        let bytes = 0;
        while (this.#queue.length > 0) {
          const b = this.#queue[0]!;
          if (b.length === 0) {
            if (batch.length > 0) break;
            this.#queue.shift();
            await this.#roll();
            continue;
          }
          batch.push(b);
          bytes += b.length;
          this.#queue.shift();
          if (batch.length >= 512) break;
        }
        if (batch.length === 0) continue;
        if (!this.#fh) await this.#roll();
        await this.#fh!.writev(batch);
        this.#queuedBytes -= bytes;
        this.#writtenOffset += bytes;
        if (Date.now() - this.#lastSync > FSYNC_INTERVAL_MS) {
          this.#lastSync = Date.now();
          await this.#fh!.datasync();
        }
        this.onWritten?.();
        if (this.overLimit > 0) this.onOverLimit?.();
      }
    } catch (err) {
      this.#error = err as Error;
      this.#opts.logger.error({ err }, 'log segment write failed');
    } finally {
      this.#writing = null;
    }
  }

  /** Opens the newest segment's file for appending (after fsyncing the previous one) and records the index. */
  async #roll(): Promise<void> {
    if (this.#fh) {
      await this.#fh.datasync();
      await this.#fh.close();
    }
    // The segment holding the next byte to write (a new one at a roll point, else the recovered last one).
    // The index names it before its file exists, so recovery always knows where its commands start.
    // Not awaited: the index's fsyncs must not hold the stream back. A segment missing from the index is
    // still recovered from a known boundary (the history start).
    const seg = this.#segmentOf(this.#writtenOffset + 1);
    void this.#writeIndex().catch((err: Error) => this.#opts.logger.warn({ err }, 'log index write failed'));
    this.#fh = await fsp.open(join(this.dir, segName(seg.start)), 'a');
  }

  /** Index writes are serialised: each writes the segment list as it is when its turn comes. */
  #writeIndex(): Promise<void> {
    this.#indexWrite = this.#indexWrite.catch(() => {}).then(() => {
      const body: IndexFile = { segments: this.#segments.map((s) => ({ start: s.start, firstBoundary: s.firstBoundary })) };
      return writeFileAtomic(join(this.dir, INDEX), JSON.stringify(body));
    });
    return this.#indexWrite;
  }

  async #drain(): Promise<void> {
    if (this.#flushTimer) {
      clearTimeout(this.#flushTimer);
      this.#flushTimer = null;
      this.#writing ??= this.#writeLoop();
    }
    while (this.#writing) await this.#writing;
  }

  /** Reads up to 1 MiB of written stream bytes from `offset` (which must be ≥ firstOffset and ≤ writtenOffset). */
  async read(offset: number, max = READ_MAX): Promise<Buffer> {
    if (offset < this.firstOffset || offset > this.#writtenOffset) {
      throw new RangeError(`offset ${offset} not on disk [${this.firstOffset}, ${this.#writtenOffset}]`);
    }
    return this.#readRange(offset, Math.min(max, this.#writtenOffset - offset + 1));
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

  async #readRange(offset: number, len: number): Promise<Buffer> {
    const seg = this.#segmentOf(offset);
    const n = Math.min(len, seg.start + seg.size - offset);
    const buf = Buffer.allocUnsafe(n);
    const fh = await fsp.open(join(this.dir, segName(seg.start)), 'r');
    try {
      const { bytesRead } = await fh.read(buf, 0, n, offset - seg.start);
      return bytesRead === n ? buf : buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

  /** Drops the oldest segment, if it is wholly written and not the last one. Returns whether it did. */
  async dropOldest(): Promise<boolean> {
    const s = this.#segments[0];
    if (this.#segments.length < 2 || !s || s.start + s.size - 1 > this.#writtenOffset) return false;
    this.#segments.shift();
    void this.#writeIndex().catch((err: Error) => this.#opts.logger.warn({ err }, 'log index write failed'));
    await fsp.rm(join(this.dir, segName(s.start)), { force: true });
    return true;
  }

  /** Bytes the disk limit asks us to drop (0 when under it). */
  get overLimit(): number {
    return Math.max(0, this.size - this.#opts.maxBytes);
  }

  get error(): Error | null {
    return this.#error;
  }

  /** Writes everything queued, fsyncs and closes. */
  async close(): Promise<void> {
    await this.#drain();
    this.#closed = true;
    if (this.#fh) {
      await this.#fh.datasync();
      await this.#fh.close();
      this.#fh = null;
    }
  }
}
