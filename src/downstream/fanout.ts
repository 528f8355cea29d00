import { performance } from 'node:perf_hooks';

/** What a member's flush did. */
export const Flush = {
  /** It holds every byte of the log: woken by the next append. */
  Idle: 0,
  /** Its budget ran out with bytes left to send and room in its socket: it stays in line. */
  More: 1,
  /** It waits for its own event (socket drain, disk read, the RDB transfer) and calls wake() then; or it closed. */
  Wait: 2,
} as const;
export type Flush = (typeof Flush)[keyof typeof Flush];

/** A reader the fan-out feeds: a replica session. */
export interface FanoutMember {
  /** Hands at most `budget` held bytes to the socket. */
  flush(budget: number): Flush;
  /** The log grew while this member was waiting: check its lag limits. */
  checkLag(): void;
}

export interface FanoutOptions {
  /** Bytes one member may hand to its socket per pass (redis-like 256 KiB). */
  readonly memberBudget?: number;
  /** Wall time one pass may take before it yields to the event loop (ms). */
  readonly passMs?: number;
}

/**
 * Disk-log bytes a member may hand to its socket in one flush: at least a floor; more when few members read the
 * disk (DISK_HELD shared between the members that read it in the last DISK_WINDOW_MS, up to DISK_FLUSH_MAX each),
 * and never past DISK_HELD held by all sockets together. A replica reading the disk holds the chunks it was handed
 * until its socket sends them (they are not the shared memory tail): a hundred replicas reading the disk that each
 * took megabytes held hundreds of MB of chunks and spent four times the CPU (fan-out N = 100: 1,008 MB/s against
 * 2,854). But one replica behind the memory tail needs more than the intake of a turn to catch up: at 256 KiB a
 * turn, long turns (a busy /stream, many clients) left it further behind at every turn.
 *
 * The floor is DISK_FLUSH (one chunk of the disk cache) while DISK_FLOOR_HELD covers it for every reader, down to
 * DISK_FLUSH_MIN: a 256 KiB floor at N = 100 cost a socket write and a 'drain' per 256 KiB, and a 1 MiB one sent 13%
 * more for 15% less CPU per GB (bench/README), with 1,000 readers still held to 256 KiB each.
 */
export const DISK_FLUSH = 1024 * 1024;
export const DISK_FLUSH_MIN = 256 * 1024;
const DISK_FLOOR_HELD = 128 * 1024 * 1024;
const DISK_FLUSH_MAX = 4 * 1024 * 1024;
const DISK_HELD = 16 * 1024 * 1024;
const DISK_WINDOW_MS = 100;

const Where = { Ready: 0, Idle: 1, Parked: 2 } as const;
type Where = (typeof Where)[keyof typeof Where];

/**
 * Feeds every replica from the shared log in passes, one pass per turn of the event loop (setImmediate): appends
 * and drains only mark members ready, so an upstream read costs one pass however many replicas there are, and
 * the bytes that arrived meanwhile leave together. A pass serves ready members round-robin, at most `memberBudget`
 * bytes each, and stops after `passMs`: what is left goes first in the next pass, after the loop has read
 * upstream and answered clients. No replica starves the others and the loop keeps answering.
 */
export class Fanout {
  readonly #memberBudget: number;
  readonly #passMs: number;
  readonly #where = new Map<FanoutMember, Where>();
  /** Ready members in order; entries no longer ready are skipped (a member is in it at most once). */
  #line: FanoutMember[] = [];
  #head = 0;
  #scheduled = false;
  #appended = false;
  /**
   * Bytes appended since the last pass. Counted, not taken as a difference of end offsets: a fan-out made on a log
   * that already held 34 MB (a point-in-time listener's) took all of it as its first pass's intake, and handed it to a
   * replica that never read, past replica-max-lag (which counts from where the socket was handed to).
   */
  #intake = 0;
  #closed = false;
  /** Disk-log bytes the members' sockets hold (handed over, not yet sent: holdDisk/releaseDisk). */
  #diskHeld = 0;
  /** Members that took disk bytes in the current window (since #windowAt), and how many did in the last one. */
  #diskMembers = new Set<FanoutMember>();
  #diskReaders = 0;
  #windowAt = 0;
  readonly stats = { passes: 0, yields: 0 };

  constructor(opts: FanoutOptions = {}) {
    this.#memberBudget = opts.memberBudget ?? 256 * 1024;
    this.#passMs = opts.passMs ?? 5;
  }

  /** A new member, waiting for its own wake() (it is not streaming yet). */
  add(m: FanoutMember): void {
    if (!this.#where.has(m)) this.#where.set(m, Where.Parked);
  }

  remove(m: FanoutMember): void {
    this.#where.delete(m);
    this.#diskMembers.delete(m);
  }

  /** `m` may have bytes to send (it went online, its socket drained, a disk read finished). */
  wake(m: FanoutMember): void {
    const w = this.#where.get(m);
    if (w === undefined || w === Where.Ready) return;
    this.#ready(m);
    this.#schedule();
  }

  /** The log grew by `bytes`: idle members become ready (in the next pass, once for all appends of this turn). */
  appended(bytes = 0): void {
    this.#intake += bytes;
    this.#appended = true;
    this.#schedule();
  }

  /** Disk-log bytes a member may hand over in the flush it is making (see DISK_FLUSH). */
  diskAllowance(): number {
    const readers = Math.max(1, this.#diskReaders, this.#diskMembers.size);
    const floor = Math.max(DISK_FLUSH_MIN, Math.min(DISK_FLUSH, Math.floor(DISK_FLOOR_HELD / readers)));
    return Math.max(floor, Math.min(DISK_FLUSH_MAX, Math.floor(DISK_HELD / readers), DISK_HELD - this.#diskHeld));
  }

  /** `m`'s socket took `n` disk-log bytes to send. */
  holdDisk(m: FanoutMember, n: number): void {
    this.#diskHeld += n;
    this.#diskMembers.add(m);
  }

  /** A member's socket sent (or dropped) the `n` disk-log bytes it held. */
  releaseDisk(n: number): void {
    this.#diskHeld -= n;
  }

  /** Disk-log bytes the members' sockets hold now. */
  get diskHeld(): number {
    return this.#diskHeld;
  }

  close(): void {
    this.#closed = true;
    this.#where.clear();
    this.#line = [];
    this.#head = 0;
  }

  #ready(m: FanoutMember): void {
    this.#where.set(m, Where.Ready);
    this.#line.push(m);
  }

  #schedule(): void {
    if (this.#scheduled || this.#closed) return;
    this.#scheduled = true;
    setImmediate(() => this.#pass());
  }

  #pass(): void {
    this.#scheduled = false;
    if (this.#closed) return;
    this.stats.passes++;
    const now = performance.now();
    if (now - this.#windowAt >= DISK_WINDOW_MS) {
      this.#windowAt = now;
      this.#diskReaders = this.#diskMembers.size;
      this.#diskMembers.clear();
    }
    if (this.#appended) {
      this.#appended = false;
      for (const [m, w] of this.#where) {
        if (w === Where.Idle) this.#ready(m);
        else if (w === Where.Parked) m.checkLag();
      }
    }
    const deadline = now + this.#passMs;
    // At least what came in since the last pass: a member whose socket is full gets one flush a turn (its 'drain'),
    // so when turns run long (the link reads up to 2 MiB a turn with a disk log; /stream subscribers, many
    // clients) a fixed 256 KiB a pass left replicas further behind at every turn, down to a few MB/s. What the
    // kernel cannot take waits in the socket as views of the log: no copy, no memory of its own.
    const budget = Math.max(this.#memberBudget, this.#intake);
    this.#intake = 0;
    // Members re-queued in this pass go behind the ones already waiting.
    while (this.#head < this.#line.length) {
      const m = this.#line[this.#head++]!;
      if (this.#where.get(m) !== Where.Ready) continue;
      // Parked while it flushes: a wake() meanwhile puts it back in line.
      this.#where.set(m, Where.Parked);
      const r = m.flush(budget);
      const now = this.#where.get(m);
      if (now === Where.Parked) {
        if (r === Flush.More) this.#ready(m);
        else if (r === Flush.Idle) this.#where.set(m, Where.Idle);
      }
      if (performance.now() >= deadline) break;
    }
    if (this.#head >= this.#line.length) {
      this.#line = [];
      this.#head = 0;
    } else {
      if (this.#head > 1024 && this.#head * 2 > this.#line.length) {
        this.#line = this.#line.slice(this.#head);
        this.#head = 0;
      }
      this.stats.yields++;
      this.#schedule();
    }
  }
}
