import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import { open, type FileHandle } from 'node:fs/promises';
import { InternalError, ProtocolError, SnapshotError } from '../errors.js';
import { Crc64 } from '../backlog/crc64.js';

const EOF_MARK_LEN = 40;
const MAX_HEADER = 256;
/**
 * The newest payload bytes kept in memory for readers taking the RDB as it arrives: a reader that keeps pace reads
 * them from here, not from the file, so its reads never queue on the thread pool ahead of the file's own writes
 * (which would slow the transfer from upstream itself).
 */
const RECENT_BYTES = 8 * 1024 * 1024;
/** The file's write buffer: the upstream socket is paused only past this much unwritten payload. */
const WRITE_BUFFER = 1024 * 1024;

export const RdbReceiverState = {
  Header: 'header',
  Bulk: 'bulk',
  EofMarked: 'eof-marked',
  Done: 'done',
} as const;
export type RdbReceiverState = (typeof RdbReceiverState)[keyof typeof RdbReceiverState];

export interface RdbPushResult {
  /** The payload is complete; `rest` holds the bytes after it (stream bytes). */
  readonly done: boolean;
  readonly rest: Buffer | null;
  /** The file write buffer is full: pause the socket until `drained()` resolves. */
  readonly backpressure: boolean;
}

/** SYNC unknown too (PSYNC was, or the relay would not have sent SYNC): the peer is no Redis master at all. */
const NOT_A_MASTER =
  ' (the upstream knows neither PSYNC nor SYNC: it is no Redis master; if it is a Sentinel, list it in upstream.sentinel.nodes instead)';

/**
 * Receives the RDB payload of a full sync into a file: skips `\n` keepalives, reads `$<len>\r\n` or
 * `$EOF:<40-byte mark>\r\n`, then the payload. With an EOF mark the end is found, as Redis does, by
 * comparing the last 40 bytes received with the mark; those 40 bytes are held back and never written.
 */
export class RdbReceiver {
  readonly path: string;
  #state: RdbReceiverState = RdbReceiverState.Header;
  #header = Buffer.alloc(0);
  #remaining = 0;
  #mark: Buffer | null = null;
  #held = Buffer.alloc(0);
  /** The file, or what replaces it (a MemorySink when the disk has no room for the RDB). */
  #file: Writable;
  #received = 0;
  #total: number | null = null;
  #fileError: Error | null = null;
  #flushed = 0;
  /** The descriptor readers share, opened as soon as the file exists (see openReader). */
  #readFh: Promise<FileHandle>;
  #readers = 0;
  #readersReleased = false;
  #readClosed = false;
  #ended = false;
  #aborted = false;
  #waiters: Array<() => void> = [];
  /** CRC over every payload byte but the last 8 (the RDB trailer), which wait in #crcTail. */
  #crc = new Crc64();
  #crcTail: Buffer = Buffer.alloc(0);
  #rdbHead: Buffer = Buffer.alloc(0);
  /** Payload bytes handed to the file so far (written or queued). */
  #emitted = 0;
  /** The newest emitted payload pieces (see RECENT_BYTES), oldest first, with their file positions. */
  #recent: Array<{ readonly at: number; readonly buf: Buffer }> = [];
  #recentBytes = 0;

  /** Called once, when the payload header ($<len> or $EOF:<mark>) has been read. */
  onHeader: (() => void) | null = null;

  /**
   * `shareReads`: open the descriptor readers share (openReader) as soon as the file exists; release it with
   * releaseReaders(). `sink`: write the payload there instead of a file at `path` (no readers then).
   */
  constructor(path: string, opts: { shareReads?: boolean; sink?: Writable } = {}) {
    this.path = path;
    // 0600: an RDB is the whole dataset, for the relay's user only (as the log segments and the state file are).
    this.#file = opts.sink ?? createWriteStream(path, { flush: true, highWaterMark: WRITE_BUFFER, mode: 0o600 });
    this.#file.on('error', (err) => {
      this.#fileError = err;
    });
    this.#readFh = opts.shareReads
      ? new Promise<FileHandle>((resolve, reject) => {
          this.#file.once('ready', () => void open(path, 'r').then(resolve, reject));
          this.#file.once('error', reject);
        })
      : Promise.reject(new InternalError('this RDB transfer is not shared with readers'));
    this.#readFh.catch(() => {});
    this.#readClosed = !opts.shareReads;
  }

  /**
   * A reader of the payload while it arrives (a replica taking it as it comes). All readers share one descriptor,
   * opened when the file is created, so the file can be renamed (committed) or removed under them. It is closed once
   * the owner released it (the transfer's outcome is settled) and the last reader closed.
   */
  openReader(): { read(position: number, length: number): Promise<Buffer>; close(): void } {
    const fh = this.#readFh;
    this.#readers++;
    let closed = false;
    return {
      read: async (position, length) => {
        const hot = this.#fromRecent(position, length);
        if (hot !== null) return hot;
        const b = Buffer.allocUnsafe(length);
        const { bytesRead } = await (await fh).read(b, 0, length, position);
        return bytesRead === length ? b : b.subarray(0, bytesRead);
      },
      close: () => {
        if (closed) return;
        closed = true;
        this.#readers--;
        this.#maybeCloseReaders();
      },
    };
  }

  /** `length` bytes at `position` from the newest payload pieces, if they are all there (a view when in one piece). */
  #fromRecent(position: number, length: number): Buffer | null {
    const r = this.#recent;
    if (r.length === 0 || position < r[0]!.at || position + length > this.#emitted) return null;
    let i = r.length - 1;
    while (r[i]!.at > position) i--;
    const first = r[i]!;
    const off = position - first.at;
    if (off + length <= first.buf.length) return first.buf.subarray(off, off + length);
    const parts: Buffer[] = [first.buf.subarray(off)];
    let got = parts[0]!.length;
    for (let j = i + 1; got < length; j++) {
      const piece = r[j]!.buf.subarray(0, length - got);
      parts.push(piece);
      got += piece.length;
    }
    return Buffer.concat(parts, length);
  }

  /** No new reader will come (the transfer's outcome is settled): the descriptor goes with the last reader. */
  releaseReaders(): void {
    this.#readersReleased = true;
    this.#maybeCloseReaders();
  }

  #maybeCloseReaders(): void {
    if (!this.#readersReleased || this.#readers > 0 || this.#readClosed) return;
    this.#readClosed = true;
    this.#recent = [];
    this.#recentBytes = 0;
    void this.#readFh.then((h) => h.close()).catch(() => {});
  }

  get state(): RdbReceiverState {
    return this.#state;
  }
  /** Payload bytes received so far. */
  get received(): number {
    return this.#received;
  }
  /** Payload size when upstream announced it (`$<len>`), null for EOF-marked transfers. */
  get total(): number | null {
    return this.#total;
  }
  get eofMarked(): boolean {
    return this.#mark !== null;
  }

  push(chunk: Buffer): RdbPushResult {
    const failed = this.#fileError ?? this.#file.errored;
    if (failed) throw failed;
    let data = chunk;
    if (this.#state === RdbReceiverState.Header) {
      data = this.#readHeader(data);
      if (this.#state === RdbReceiverState.Header) return { done: false, rest: null, backpressure: false };
    }
    let ok = true;
    if (this.#state === RdbReceiverState.Bulk) {
      const take = Math.min(this.#remaining, data.length);
      if (take > 0) ok = this.#emit(data.subarray(0, take));
      this.#remaining -= take;
      this.#received += take;
      if (this.#remaining === 0) {
        this.#state = RdbReceiverState.Done;
        ok = this.#sealTrailer() && ok;
        return { done: true, rest: data.subarray(take), backpressure: !ok };
      }
      return { done: false, rest: null, backpressure: !ok };
    }
    if (this.#state === RdbReceiverState.EofMarked) {
      this.#received += data.length;
      if (data.length >= EOF_MARK_LEN) {
        if (this.#held.length > 0) this.#emit(this.#held);
        ok = this.#emit(data.subarray(0, data.length - EOF_MARK_LEN));
        this.#held = Buffer.from(data.subarray(data.length - EOF_MARK_LEN));
      } else {
        const merged = Buffer.concat([this.#held, data]);
        const keep = Math.min(EOF_MARK_LEN, merged.length);
        if (merged.length > keep) ok = this.#emit(merged.subarray(0, merged.length - keep));
        this.#held = merged.subarray(merged.length - keep);
      }
      if (this.#held.length === EOF_MARK_LEN && this.#held.equals(this.#mark!)) {
        this.#received -= EOF_MARK_LEN;
        this.#state = RdbReceiverState.Done;
        ok = this.#sealTrailer() && ok;
        return { done: true, rest: Buffer.alloc(0), backpressure: !ok };
      }
      return { done: false, rest: null, backpressure: !ok };
    }
    return { done: true, rest: data, backpressure: false };
  }

  /**
   * Payload bytes go through the CRC and to the file, both 8 bytes behind: the last 8 bytes of the payload, the RDB
   * trailer, are held (#crcTail) until the transfer is done (#sealTrailer).
   */
  #emit(buf: Buffer): boolean {
    if (this.#rdbHead.length < 9) this.#rdbHead = Buffer.concat([this.#rdbHead, buf.subarray(0, 9 - this.#rdbHead.length)]);
    let ok = true;
    if (buf.length >= 8) {
      this.#crc.update(this.#crcTail);
      this.#crc.update(buf, 0, buf.length - 8);
      if (this.#crcTail.length > 0) ok = this.#write(this.#crcTail);
      if (buf.length > 8) ok = this.#write(buf.subarray(0, buf.length - 8));
      this.#crcTail = Buffer.from(buf.subarray(buf.length - 8));
    } else {
      const merged = Buffer.concat([this.#crcTail, buf]);
      const cut = Math.max(0, merged.length - 8);
      this.#crc.update(merged, 0, cut);
      if (cut > 0) ok = this.#write(merged.subarray(0, cut));
      this.#crcTail = merged.subarray(cut);
    }
    return ok;
  }

  /**
   * The transfer is done: the held trailer goes to the file. A master saving with `rdbchecksum no` sends a zero
   * trailer, and the file would then carry nothing its bytes can be checked against once on disk (the snapshot
   * store checks a file against its trailer before serving it, also after a restart): the CRC-64 computed from the
   * bytes as they arrived is written in its place. The data is the master's; a replica with rdbchecksum on checks it.
   */
  #sealTrailer(): boolean {
    const tail = this.#crcTail;
    if (tail.length === 0) return true;
    const sealed = tail.length === 8 && this.#checksummed() && tail.every((b) => b === 0) ? this.#crc.digestLE() : tail;
    return this.#write(sealed);
  }

  /** An RDB whose format has a CRC-64 trailer (version 5 and later). */
  #checksummed(): boolean {
    return this.#rdbHead.length >= 9 && this.#rdbHead.toString('latin1', 0, 5) === 'REDIS' && Number(this.#rdbHead.toString('latin1', 5, 9)) >= 5;
  }

  #write(buf: Buffer): boolean {
    const n = buf.length;
    if (!this.#readClosed) {
      // The pieces are never written to again (the file write holds them too): views, no copy.
      this.#recent.push({ at: this.#emitted, buf });
      this.#recentBytes += n;
      while (this.#recentBytes - this.#recent[0]!.buf.length >= RECENT_BYTES) this.#recentBytes -= this.#recent.shift()!.buf.length;
    }
    this.#emitted += n;
    return this.#file.write(buf, (err) => {
      if (err) return;
      this.#flushed += n;
      this.#wake();
    });
  }

  /** receiving, complete (every payload byte is in the file, not yet checked), or failed (aborted). */
  get progress(): 'receiving' | 'complete' | 'failed' {
    return this.#aborted ? 'failed' : this.#ended ? 'complete' : 'receiving';
  }

  /** Payload bytes the file holds (written by the kernel, readable by another descriptor). */
  get flushed(): number {
    return this.#flushed;
  }

  /** Resolves once more than `bytes` payload bytes are in the file, or the transfer ended (either way). */
  waitBeyond(bytes: number): Promise<void> {
    if (this.#flushed > bytes || this.#ended) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const fn of w) fn();
  }

  /**
   * Checks the received RDB as Redis would load it: the `REDIS` magic, and the CRC-64 trailer of RDB version 5
   * and later (a zero trailer means the master saved without checksums).
   */
  verify(): void {
    if (this.#rdbHead.length < 9 || this.#rdbHead.toString('latin1', 0, 5) !== 'REDIS') {
      throw new SnapshotError('received payload is not an RDB file (no REDIS header)');
    }
    if (!this.#checksummed() || this.#crcTail.length < 8 || this.#crcTail.every((b) => b === 0)) return;
    const expected = this.#crc.digestLE();
    if (!expected.equals(this.#crcTail)) {
      throw new SnapshotError(`RDB checksum mismatch: trailer ${this.#crcTail.toString('hex')}, computed ${expected.toString('hex')}`);
    }
  }

  /**
   * Resolves when the file accepts more writes, or failed (a full disk): a failed file never drains, and the
   * socket paused for it would wait out the replication timeout. The next push() or finish() reports the error.
   */
  drained(): Promise<void> {
    return new Promise((resolve) => {
      const f = this.#file;
      if (!f.writableNeedDrain || this.#fileError !== null || f.destroyed) return resolve();
      const done = (): void => {
        f.off('drain', done);
        f.off('error', done);
        f.off('close', done);
        resolve();
      };
      f.on('drain', done);
      f.on('error', done);
      f.on('close', done);
    });
  }

  /** Flushes and closes the file (fsync included); rejects on a write error. */
  finish(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      // A failed write destroys the file stream at once; its 'error' event waits for the descriptor to close. The
      // error it was destroyed with is the cause: end() on it fails with 'Cannot call end after a stream was
      // destroyed', which hid a full disk (ENOSPC) from the snapshot fetch, so it forked the master again at once.
      const failed = (): Error | null => this.#fileError ?? this.#file.errored;
      if (failed()) return reject(failed());
      this.#file.once('error', reject);
      this.#file.end((err?: Error | null) => {
        // end()'s callback runs on an error too (a full disk), and may run before the 'error' event: resolving then
        // took an RDB cut short for a whole one (its CRC is computed from the bytes received, not those written).
        if (err) return reject(failed() ?? err);
        if (this.#fileError) return reject(this.#fileError);
        if (this.#flushed !== this.#emitted) return reject(new SnapshotError(`the RDB file holds ${this.#flushed} of ${this.#emitted} payload bytes: a write failed`));
        resolve();
      });
    }).finally(() => {
      this.#ended = true;
      this.#wake();
    });
  }

  /** Stops writing; the caller removes the file. */
  abort(): Promise<void> {
    this.#ended = true;
    this.#aborted = true;
    this.#wake();
    return new Promise((resolve) => {
      if (this.#file.closed) return resolve();
      this.#file.once('close', () => resolve());
      this.#file.destroy();
    });
  }

  #readHeader(chunk: Buffer): Buffer {
    let data = this.#header.length > 0 ? Buffer.concat([this.#header, chunk]) : chunk;
    for (;;) {
      // Keepalive newlines while upstream prepares the RDB.
      let i = 0;
      while (i < data.length && (data[i] === 0x0a || data[i] === 0x0d)) i++;
      data = data.subarray(i);
      if (data.length === 0) {
        this.#header = Buffer.alloc(0);
        return data;
      }
      const nl = data.indexOf(0x0a);
      if (nl < 0) {
        if (data.length > MAX_HEADER) throw new ProtocolError('RDB payload header too long');
        this.#header = Buffer.from(data);
        return Buffer.alloc(0);
      }
      const line = data.toString('latin1', 0, nl).replace(/\r$/, '');
      const rest = data.subarray(nl + 1);
      this.#header = Buffer.alloc(0);
      if (line.startsWith('-')) throw new ProtocolError(`upstream aborted the transfer: ${line}${/^-ERR unknown command/i.test(line) ? NOT_A_MASTER : ''}`);
      if (!line.startsWith('$')) throw new ProtocolError(`bad RDB payload header: ${JSON.stringify(line.slice(0, 64))}`);
      if (line.startsWith('$EOF:')) {
        const mark = line.slice(5);
        if (mark.length !== EOF_MARK_LEN) throw new ProtocolError('bad EOF mark in RDB payload header');
        this.#mark = Buffer.from(mark, 'latin1');
        this.#state = RdbReceiverState.EofMarked;
        this.onHeader?.();
      } else {
        const len = /^\$\d{1,15}$/.test(line) ? Number(line.slice(1)) : NaN;
        if (!Number.isSafeInteger(len)) throw new ProtocolError(`bad RDB payload length: ${line.slice(0, 64)}`);
        this.#remaining = len;
        this.#total = len;
        this.#state = RdbReceiverState.Bulk;
        this.onHeader?.();
      }
      return rest;
    }
  }
}
