import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { constants, createDeflateRaw, type DeflateRaw } from 'node:zlib';

/** write() returns false once this many bytes wait for the socket (pending + in the compressor + socket buffer). */
const HIGH_WATER = 256 * 1024;
/** A batch at least this large tells whether the data compresses; smaller ones say too little. */
const PROBE_MIN = 4 * 1024;
/** A batch that keeps more than this share of its size does not compress: store the next bytes instead. */
const INCOMPRESSIBLE = 0.9;
/** Bytes stored (deflate level 0) before trying to compress again; doubles while the data stays incompressible. */
const STORED_SPAN_MIN = 1024 * 1024;
const STORED_SPAN_MAX = 16 * 1024 * 1024;
/** A batch whose sampled bytes carry fewer bits than this per byte compresses: it ends a stored span at once. */
const COMPRESSIBLE_BITS = 7.5;
/** Bytes sampled for that estimate: SAMPLE_SLICES slices spread over the batch. */
const SAMPLE_SLICES = 16;
const SAMPLE_SLICE = 256;

/**
 * zlib runs on libuv's thread pool (UV_THREADPOOL_SIZE, 4 by default), which file I/O shares: the disk log's
 * writes and reads, snapshot transfers. All compressors together hold at most half of its threads, in arrival
 * order, so a relay with a hundred compressing replicas still writes its log on time; a replica waiting for a
 * thread gathers a bigger batch meanwhile.
 */
const ZLIB_SLOTS = Math.max(1, Math.floor((Number(process.env['UV_THREADPOOL_SIZE']) || 4) / 2));
const slots = { free: ZLIB_SLOTS, queue: [] as Array<() => void> };

function acquireSlot(start: () => void): void {
  if (slots.free > 0) {
    slots.free--;
    start();
  } else slots.queue.push(start);
}

/** Hands the slot to the next waiting compressor, or frees it. */
function releaseSlot(): void {
  const next = slots.queue.shift();
  if (next) next();
  else slots.free++;
}

export interface CompressedWriterOptions {
  /** zlib level 1-9 (upstream.compression-level of the replica relay). */
  readonly level: number;
  readonly highWaterMark?: number;
  /** Raw bytes in and compressed bytes out of each batch, for stats. */
  readonly onBatch?: (raw: number, wire: number) => void;
}

/**
 * One downstream relay's compressor (psync-relay-z1, src/compression.ts): a raw DEFLATE stream with a
 * Z_SYNC_FLUSH after every batch. A batch is everything written in one turn of the event loop plus whatever
 * arrived while the previous batch was in zlib (which runs on the libuv pool, off the event loop), so batches
 * grow under load and flushes cost little, and a lone command still leaves at once.
 *
 * Incompressible data (random bytes, already-compressed values) would cost CPU for nothing and grow by the
 * flush markers: when a batch of at least PROBE_MIN keeps more than 90% of its size, the writer switches the
 * stream to level 0 (deflate stored blocks: a 5-byte header per 64 KiB, memcpy speed) for a span of bytes
 * (1 MiB, doubling up to 16 MiB while probes keep failing), then tries its level again. A batch whose byte
 * histogram (a 4 KiB sample) says it would compress ends the span early, so text after a burst of random data
 * is not sent stored. The receiver needs no signal: stored blocks are plain DEFLATE.
 *
 * Interface of a socket as ReplicaSession uses it: write() → false when full, then 'drain'; end().
 */
export class CompressedWriter extends EventEmitter {
  readonly #socket: Socket;
  readonly #z: DeflateRaw;
  readonly #level: number;
  readonly #hwm: number;
  readonly #onBatch: CompressedWriterOptions['onBatch'];
  #current: number;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  /** Holding a zlib slot: a batch (or a level change) is in zlib. */
  #busy = false;
  /** Queued for a zlib slot. */
  #waiting = false;
  #inflight = 0;
  #scheduled = false;
  #needDrain = false;
  #ending = false;
  #closed = false;
  /** Compressed bytes produced so far. */
  #wire = 0;
  #storedLeft = 0;
  #storedSpan = STORED_SPAN_MIN;

  constructor(socket: Socket, opts: CompressedWriterOptions) {
    super();
    this.#socket = socket;
    this.#level = opts.level;
    this.#current = opts.level;
    this.#hwm = opts.highWaterMark ?? HIGH_WATER;
    this.#onBatch = opts.onBatch;
    this.#z = createDeflateRaw({ level: opts.level, flush: constants.Z_SYNC_FLUSH, chunkSize: 64 * 1024 });
    // Always flowing: the output of a batch is on the socket when its write callback runs.
    this.#z.on('data', (chunk: Buffer) => {
      this.#wire += chunk.length;
      if (!this.#socket.destroyed) this.#socket.write(chunk);
    });
    this.#z.on('end', () => this.#socket.end());
    this.#z.on('error', (err) => {
      // A callback that will not come must not keep its zlib slot from every other replica.
      this.#done();
      this.#socket.destroy(err);
    });
    socket.on('drain', () => {
      this.#next();
      this.#maybeDrain();
    });
    socket.once('close', () => this.#close());
  }

  /** Bytes handed to write() and not yet taken by the kernel. */
  get writableLength(): number {
    return this.#pendingBytes + this.#inflight + this.#socket.writableLength;
  }

  /** The compressor is released (its socket closed, or the stream ended). */
  get destroyed(): boolean {
    return this.#z.destroyed;
  }

  /** The stream is in a stored (level 0) span: the data did not compress. */
  get storing(): boolean {
    return this.#current === 0;
  }

  write(buf: Buffer): boolean {
    if (this.#closed || this.#ending) return false;
    if (buf.length > 0) {
      this.#pending.push(buf);
      this.#pendingBytes += buf.length;
      this.#schedule();
    }
    if (this.writableLength < this.#hwm) return true;
    this.#needDrain = true;
    return false;
  }

  /** Compresses what is pending, ends the DEFLATE stream, then ends the socket. */
  end(): void {
    if (this.#ending || this.#closed) return;
    this.#ending = true;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled || this.#busy || this.#waiting) return;
    this.#scheduled = true;
    // After the current turn's writes: one batch per turn.
    process.nextTick(() => {
      this.#scheduled = false;
      this.#next();
    });
  }

  #next(): void {
    if (this.#busy || this.#waiting) return;
    if (this.#closed) {
      this.#z.destroy();
      return;
    }
    if (this.#pendingBytes === 0) {
      if (this.#ending) this.#z.end();
      return;
    }
    // The socket still holds a batch: wait for its 'drain', so the next batch grows instead of its buffer.
    if (this.#socket.writableLength >= this.#hwm) return;
    this.#waiting = true;
    acquireSlot(() => {
      this.#waiting = false;
      this.#busy = true;
      this.#startBatch();
    });
  }

  /** Holding a slot: everything pending is the batch (it grew while we waited). */
  #startBatch(): void {
    if (this.#closed || this.#pendingBytes === 0) {
      this.#done();
      this.#next();
      return;
    }
    // Always a copy: zlib reads the batch on the thread pool, even after the socket closed, and the log reuses
    // its memory once no open socket holds it (block-pool.ts).
    const batch = Buffer.concat(this.#pending, this.#pendingBytes);
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#inflight = batch.length;
    if (this.#storedLeft > 0 && batch.length >= PROBE_MIN && sampledBitsPerByte(batch) < COMPRESSIBLE_BITS) {
      this.#storedLeft = 0;
      this.#storedSpan = STORED_SPAN_MIN;
    }
    const level = this.#storedLeft > 0 ? 0 : this.#level;
    if (level === this.#current) {
      this.#compress(batch);
      return;
    }
    // Both levels write plain DEFLATE: the switch flushes and goes on in the same stream.
    this.#z.params(level, constants.Z_DEFAULT_STRATEGY, () => {
      this.#current = level;
      this.#compress(batch);
    });
  }

  #compress(batch: Buffer): void {
    const before = this.#wire;
    this.#z.write(batch, (err) => {
      this.#done();
      if (err) return;
      this.#account(batch.length, this.#wire - before);
      this.#next();
      this.#maybeDrain();
    });
  }

  #done(): void {
    if (!this.#busy) return;
    this.#busy = false;
    this.#inflight = 0;
    releaseSlot();
  }

  #account(raw: number, wire: number): void {
    this.#onBatch?.(raw, wire);
    if (this.#current === 0) {
      this.#storedLeft = Math.max(0, this.#storedLeft - raw);
      return;
    }
    if (raw < PROBE_MIN) return;
    if (wire > raw * INCOMPRESSIBLE) {
      this.#storedLeft = this.#storedSpan;
      this.#storedSpan = Math.min(this.#storedSpan * 2, STORED_SPAN_MAX);
    } else {
      this.#storedSpan = STORED_SPAN_MIN;
    }
  }

  #maybeDrain(): void {
    if (!this.#needDrain || this.#closed || this.writableLength >= this.#hwm) return;
    this.#needDrain = false;
    this.emit('drain');
  }

  /** The socket is gone: drop what is pending; zlib is released once no operation is in flight (see #next). */
  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#pending = [];
    this.#pendingBytes = 0;
    if (!this.#busy) this.#z.destroy();
  }
}

/** Order-0 entropy of a sample of `buf` (bits per byte): ~8 for random or compressed data, ~5 for JSON. */
export function sampledBitsPerByte(buf: Buffer): number {
  const counts = new Uint32Array(256);
  let n = 0;
  const step = Math.max(SAMPLE_SLICE, Math.floor(buf.length / SAMPLE_SLICES));
  for (let at = 0; at < buf.length && n < SAMPLE_SLICES * SAMPLE_SLICE; at += step) {
    const end = Math.min(buf.length, at + SAMPLE_SLICE);
    for (let i = at; i < end; i++) counts[buf[i]!]!++;
    n += end - at;
  }
  let bits = 0;
  for (const c of counts) if (c > 0) bits -= (c / n) * Math.log2(c / n);
  return bits;
}
