import { Writable } from 'node:stream';
import { SnapshotError } from '../errors.js';
import type { RdbTransfer } from '../util/rdb-transfer.js';

/**
 * Where a snapshot fetch writes its RDB when the disk has no room for it (replication.full-sync-memory): memory, up
 * to `cap` bytes. Past the cap the write fails, as a full disk would, and the fetch with it.
 */
export class MemorySink extends Writable {
  readonly cap: number;
  readonly chunks: Buffer[] = [];
  size = 0;
  /** A write went past the cap: the RDB is larger than memory may hold. */
  overCap = false;

  constructor(cap: number) {
    super({ highWaterMark: 1024 * 1024 });
    this.cap = cap;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.size + chunk.length > this.cap) {
      this.overCap = true;
      done(new SnapshotError(`the RDB is larger than replication.full-sync-memory (${this.cap} bytes)`));
      return;
    }
    // The receiver hands over views of socket reads, which are never written again: kept, not copied.
    this.chunks.push(chunk);
    this.size += chunk.length;
    done();
  }
}

/**
 * A whole, checked RDB held in memory, served like one arriving from upstream (ReplicaSession.sendIncoming): its size
 * is known, every byte is there, and it is already part of the history (`outcome` true).
 */
export function memoryTransfer(replid: string, offset: number, sink: MemorySink): RdbTransfer {
  const { chunks, size } = sink;
  // Where each chunk starts in the payload, to find a read's first chunk by binary search.
  const starts: number[] = [];
  let at = 0;
  for (const c of chunks) {
    starts.push(at);
    at += c.length;
  }
  const read = (position: number, length: number): Buffer => {
    const end = Math.min(size, position + length);
    if (position >= end) return Buffer.alloc(0);
    let lo = 0;
    let hi = chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid]! <= position) lo = mid;
      else hi = mid - 1;
    }
    const first = chunks[lo]!.subarray(position - starts[lo]!);
    if (first.length >= end - position) return first.subarray(0, end - position);
    const parts = [first];
    let got = first.length;
    for (let i = lo + 1; got < end - position; i++) {
      const piece = chunks[i]!.subarray(0, end - position - got);
      parts.push(piece);
      got += piece.length;
    }
    return Buffer.concat(parts, end - position);
  };
  return {
    replid,
    offset,
    path: '',
    total: () => size,
    flushed: () => size,
    progress: () => 'complete',
    waitBeyond: () => Promise.resolve(),
    openReader: () => ({ read: (position, length) => Promise.resolve(read(position, length)), close: () => {} }),
    outcome: Promise.resolve(true),
  };
}
