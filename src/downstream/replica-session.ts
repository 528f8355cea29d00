import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Logger } from '../log.js';
import type { ReplLog } from '../backlog/repl-log.js';
import type { LogHolder } from '../backlog/block-pool.js';
import { LogCursor } from '../backlog/log-cursor.js';
import type { RdbTransfer } from '../util/rdb-transfer.js';
import type { SnapshotLease } from '../backlog/snapshot-store.js';
import { LinkError, ReplicaGoneError, StorageError } from '../errors.js';
import { checkTransition, type Transitions } from '../util/transitions.js';
import type { Telemetry } from '../observability/telemetry.js';
import { CompressedWriter } from './compressed-writer.js';
import { Fanout, Flush, type FanoutMember } from './fanout.js';
import { WritePacer } from './write-pacer.js';
import { LogLimiter } from '../util/log-limiter.js';

/** Like Redis's SLAVE_STATE_*: waiting for a snapshot, sending it, streaming. */
export const ReplicaState = {
  WaitBgsave: 'wait_bgsave',
  SendBulk: 'send_bulk',
  Online: 'online',
  Closed: 'closed',
} as const;
export type ReplicaState = (typeof ReplicaState)[keyof typeof ReplicaState];

const REPLICA_TRANSITIONS: Transitions<ReplicaState> = {
  wait_bgsave: ['send_bulk', 'online', 'closed'],
  send_bulk: ['online', 'closed'],
  online: ['closed'],
  closed: [],
};

export interface ReplicaCapabilities {
  /** `REPLCONF capa psync2`: +CONTINUE carries the replid. */
  readonly psync2: boolean;
  /** `REPLCONF capa eof`: takes an EOF-marked payload (size unknown up front). */
  readonly eof: boolean;
  /** `REPLCONF rdb-only 1`: the RDB, then close (redis-cli --rdb). */
  readonly rdbOnly: boolean;
  /** `REPLCONF rdb-filter-only ""`: no keys wanted (redis-cli --replica); we send an empty RDB. */
  readonly rdbFilterEmpty: boolean;
  /** Plain SYNC: no +FULLRESYNC line, no ACKs expected. */
  readonly plainSync: boolean;
  /** `REPLCONF capa psync-relay`: a relay below, which learns the relays above it (INFO relay_chain) when it connects. */
  readonly relay?: boolean;
  /** A downstream relay's psync-relay-z1 level: everything after the PSYNC reply line is compressed; null/absent = plain. */
  readonly compression?: number | null;
}

export interface SessionOptions {
  readonly socket: Socket;
  readonly log: ReplLog;
  readonly logger: Logger;
  readonly telemetry: Telemetry;
  readonly maxLag: number;
  /** Soft lag limit (replication.replica-soft-lag): over it continuously for softLagMs, the replica is dropped; 0 = off. */
  readonly softLag?: number;
  readonly softLagMs?: number;
  readonly caps: ReplicaCapabilities;
  readonly onClose: (session: ReplicaSession) => void;
  /** The replica acknowledged a higher offset (REPLCONF ACK). */
  readonly onAck?: (session: ReplicaSession) => void;
  /**
   * A point-in-time replica: the stream stops at this offset (a command boundary). Once sent, the session lets go
   * of the log and only keeps the replica alive with newlines, which a Redis replica does not count into its offset
   * while no command follows them.
   */
  readonly until?: number;
  /** Schedules the stream writes of every session (DownstreamReplication's); default: one of its own. */
  readonly fanout?: Fanout;
  /** Paces the snapshot transfers' chunk writes over turns of the event loop; shared by the relay's sessions. */
  readonly pacer?: WritePacer;
  /** Rate limits the lines a replica's connections make (one client churning PSYNC wrote 2.4 MB of log in 45 s); shared by the relay's sessions. */
  readonly warnings?: LogLimiter;
}

/** Replica state lines per minute, of all replicas together, past which they are counted (`suppressed`) instead. */
const STATE_LINES_PER_MINUTE = 200;

/** Bytes read at a time from a snapshot file. */
const FILE_READ = 256 * 1024;

/** Bytes read at a time from an RDB still arriving. */
const INCOMING_READ = 256 * 1024;

/**
 * One downstream replica: a cursor into the shared log plus its socket's backpressure. The stream is
 * written as views of the log's blocks, never copied, when the fan-out (fanout.ts) gives this session its
 * turn; when the socket is full we stop and wait for 'drain', holding our place in the log (which keeps those
 * bytes until every cursor has passed them, or until the disk log holds them).
 */
export class ReplicaSession implements FanoutMember, LogHolder {
  readonly socket: Socket;
  readonly caps: ReplicaCapabilities;
  readonly createdAt = Date.now();
  #log: ReplLog;
  #logger: Logger;
  #telemetry: Telemetry;
  #maxLag: number;
  #softLag: number;
  #softLagMs: number;
  /** When the lag went over the soft limit (0 = it is not over it). */
  #softSince = 0;
  #onClose: (s: ReplicaSession) => void;
  #onAck: ((s: ReplicaSession) => void) | undefined;
  /** This replica's own compressor once its PSYNC reply line is out (caps.compression), else null: bytes go to the socket. */
  #z: CompressedWriter | null = null;
  #state: ReplicaState = ReplicaState.WaitBgsave;
  #cursor: LogCursor | null = null;
  /** The first stream byte after a payload still arriving from upstream (beginFull without a pin). */
  #streamFrom = 0;
  #blocked = false;
  /** Disk-log bytes the last flush handed to the socket, counted in the fan-out until it drains (fanout.ts DISK_FLUSH). */
  #diskHeld = 0;
  /**
   * After an EOF-marked payload the replica finds the end in the last 40 bytes it has read, so stream bytes read
   * together with the mark would hide it: the stream waits for the replica's first REPLCONF ACK, as a 7.0 master's
   * does after a diskless transfer (repl_put_online_on_ack).
   */
  #awaitingAck = false;
  readonly #warnings: LogLimiter;
  #diskRead = false;
  #fanout: Fanout;
  #pacer: WritePacer;
  #ackOffset = 0;
  #aofOffset = -1;
  /** A whole snapshot went out (a full sync reached 'rdb sent'). */
  #snapshotSent = false;
  /** Any REPLCONF ACK came. */
  #acked = false;
  /** The replica closed its link (not the relay). */
  #peerClosed = false;
  #until: number;
  /** `until` was reached: the cursor is closed, the offset stays there. */
  #parked = false;
  /** Set by REPLCONF ACK. */
  ackTime = Date.now();
  /** Since when a payload write waits for the socket to drain (0 = it does not): see stalledFor. */
  #stalledSince = 0;

  constructor(opts: SessionOptions) {
    this.socket = opts.socket;
    this.caps = opts.caps;
    this.#log = opts.log;
    this.#logger = opts.logger;
    this.#telemetry = opts.telemetry;
    this.#maxLag = opts.maxLag;
    this.#softLag = opts.softLag ?? 0;
    this.#softLagMs = opts.softLagMs ?? 0;
    this.#onClose = opts.onClose;
    this.#onAck = opts.onAck;
    this.#until = opts.until ?? Infinity;
    this.#fanout = opts.fanout ?? new Fanout();
    this.#pacer = opts.pacer ?? new WritePacer();
    this.#warnings = opts.warnings ?? new LogLimiter();
    this.#fanout.add(this);
    this.#log.addHolder(this);
    // With a compressor in front of the socket, its 'drain' says the bytes handed over left, not the socket's.
    this.socket.on('drain', () => {
      if (!this.#z) this.#sent();
    });
  }

  /** The socket (or the compressor in front of it) sent all it was handed: the disk bytes it held are gone. */
  #sent(): void {
    this.#blocked = false;
    this.#releaseDisk();
    this.pump();
  }

  #releaseDisk(): void {
    if (this.#diskHeld === 0) return;
    this.#fanout.releaseDisk(this.#diskHeld);
    this.#diskHeld = 0;
  }

  get state(): ReplicaState {
    return this.#state;
  }
  /** It sent a REPLCONF ACK: a replica does at once after loading its snapshot, then every second. */
  get acked(): boolean {
    return this.#acked;
  }
  /** The last offset the replica acknowledged (REPLCONF ACK). */
  get ackOffset(): number {
    return this.#ackOffset;
  }
  /** The last offset the replica said it fsynced to its AOF (REPLCONF ACK ... FACK), -1 when it never said. */
  get aofOffset(): number {
    return this.#aofOffset;
  }
  /**
   * REPLCONF ACK `offset` (FACK `aof` when given, else -1). The first one after an EOF-marked payload, whatever its
   * offset, lets the stream start.
   */
  acknowledged(offset: number, aof = -1): void {
    this.ackTime = Date.now();
    this.#acked = true;
    if (this.#awaitingAck) {
      this.#awaitingAck = false;
      this.pump();
    }
    const more = offset > this.#ackOffset || aof > this.#aofOffset;
    if (offset > this.#ackOffset) this.#ackOffset = offset;
    if (aof > this.#aofOffset) this.#aofOffset = aof;
    if (more) this.#onAck?.(this);
  }
  /** The offset of the last stream byte handed to the socket (-1 before the stream starts). */
  get offset(): number {
    if (this.#parked) return this.#until;
    return this.#cursor?.offset ?? -1;
  }
  /**
   * LogHolder: the socket (or the compressor in front of it) still reads the last `writableLength` bytes handed to
   * it, in order, and the stream's views are the last bytes handed to it. A destroyed socket reads nothing more
   * (libuv stops its writes when the handle closes).
   */
  get heldFrom(): number {
    if (this.socket.destroyed) return Infinity;
    const at = this.heldTo;
    return at < 0 ? Infinity : at + 1 - (this.#z ?? this.socket).writableLength;
  }
  /** The last stream byte handed to the socket: nothing after it is held. */
  get heldTo(): number {
    return this.#parked ? this.#until : (this.#cursor?.offset ?? -1);
  }

  /** The replica's address as the socket sees it (for telemetry). */
  get peer(): string {
    return `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? 0}`;
  }
  /** Bytes of stream the replica has not been sent yet. */
  get lagBytes(): number {
    return (this.#state === ReplicaState.Online || this.#state === ReplicaState.SendBulk) && this.#cursor ? this.#behind(this.#cursor) : 0;
  }

  /** Bytes this replica is still to be sent: up to the log's end, or to `until`. */
  #behind(c: LogCursor): number {
    return Math.min(c.behind, this.#until - c.offset);
  }

  #setState(next: ReplicaState, reason: string): void {
    const from = this.#state;
    if (from === next) return;
    checkTransition(REPLICA_TRANSITIONS, 'replica', from, next);
    this.#state = next;
    this.#warnings.info(this.#logger, { from, to: next, reason, offset: this.offset }, 'replica state', STATE_LINES_PER_MINUTE);
  }

  /** Partial resync: stream from `offset` (the first byte the replica lacks) on. */
  continueFrom(offset: number): void {
    this.#startCompression();
    this.#cursor = new LogCursor(this.#log, offset - 1, { pin: this.#pins(offset - 1) });
    this.#setState(ReplicaState.Online, 'partial resync');
    this.pump();
  }

  /**
   * Whether a cursor at `offset` holds the log (a reader: memory-only, the log keeps what it has not read). A
   * point-in-time replica already at its target reads nothing more: its cursor holds nothing, and it is served
   * even once the log has dropped the bytes up to it.
   */
  #pins(offset: number): boolean {
    return offset < this.#until;
  }

  /** Keepalive for a replica still waiting for its payload (Redis sends `\n`; it is not part of the stream). */
  keepalive(): void {
    if (this.#state === ReplicaState.WaitBgsave || this.#parked) this.#write(Buffer.from('\n'));
  }

  /** A point-in-time replica has its last byte: nothing more is read from the log. */
  get parked(): boolean {
    return this.#parked;
  }

  /**
   * Full resync: the replica's offset becomes `streamFrom - 1`, and the log is held from there (this session is a
   * reader) while the payload is prepared and sent.
   */
  beginFull(streamFrom: number, pin = true): void {
    // Taking an RDB still arriving, the log holds another history until it is committed: no cursor before that.
    this.#streamFrom = streamFrom;
    if (pin) this.#cursor = new LogCursor(this.#log, streamFrom - 1, { pin: this.#pins(streamFrom - 1) });
    this.#setState(ReplicaState.SendBulk, 'full resync');
  }

  /**
   * A full resync from an RDB still arriving from upstream (a pipelined cold start): the payload is read from the
   * file as it grows, with its size when upstream announced it, else EOF-marked. Once the transfer is checked and
   * committed as the new history, the stream follows from the log; a transfer that fails ends this one too. Also
   * serves a whole RDB of the current history held in memory (backlog/memory-snapshot.ts), begun with a pin.
   */
  async sendIncoming(header: Buffer, inc: RdbTransfer, rate = 0): Promise<void> {
    let reader: ReturnType<RdbTransfer['openReader']> | null = null;
    let marked = false;
    try {
      if (this.#state !== ReplicaState.SendBulk) return;
      if (header.length > 0) this.#write(header);
      this.#startCompression();
      const total = inc.total();
      const mark = total === null || this.#takesEofMark() ? randomBytes(20).toString('hex') : null;
      this.#write(Buffer.from(mark === null ? `$${total}\r\n` : `$EOF:${mark}\r\n`));
      reader = inc.openReader();
      const startedAt = Date.now();
      for (let pos = 0; ; ) {
        if (this.#state !== ReplicaState.SendBulk) throw new ReplicaGoneError('replica closed during the RDB transfer');
        const progress = inc.progress();
        if (progress === 'failed') throw new LinkError('the RDB transfer from upstream failed');
        const avail = inc.flushed() - pos;
        // Read in large pieces (fewer reads and writes per byte) unless the transfer has ended.
        if (avail > 0 && avail < INCOMING_READ && progress === 'receiving') {
          await inc.waitBeyond(pos + INCOMING_READ - 1);
          continue;
        }
        if (avail > 0) {
          // A buffer per read: the socket may still hold the previous one.
          const chunk = await reader.read(pos, Math.min(avail, INCOMING_READ));
          if (chunk.length === 0) throw new StorageError('the arriving RDB file is shorter than written');
          pos += chunk.length;
          const ok = await this.#pacer.run(() => this.#write(chunk));
          const early = rate > 0 ? (pos * 1000) / rate - (Date.now() - startedAt) : 0;
          if (!ok) await this.#payloadDrained();
          if (early > 0) await new Promise((r) => setTimeout(r, early).unref());
          continue;
        }
        if (progress === 'complete') break;
        await inc.waitBeyond(pos);
      }
      if (mark !== null) this.#write(Buffer.from(mark));
      marked = mark !== null;
    } catch (err) {
      this.close(`rdb send failed: ${(err as Error).message}`);
      return;
    } finally {
      reader?.close();
    }
    if (!(await inc.outcome)) {
      this.close('the RDB from upstream failed its check or its commit');
      return;
    }
    if (this.#state !== ReplicaState.SendBulk) return;
    // Committed: the log now holds the new history from the snapshot's next byte. An RDB of this history (held in
    // memory) had its cursor, and the log pinned, from beginFull on.
    this.#cursor ??= new LogCursor(this.#log, this.#streamFrom - 1, { pin: true });
    this.#awaitingAck = marked;
    this.#snapshotSent = true;
    this.#setState(ReplicaState.Online, 'rdb sent');
    this.ackTime = Date.now();
    this.pump();
  }

  /**
   * Whether the payload goes EOF-marked, size known or not: to a replica that takes it, as a Redis 7 master's
   * default diskless sync sends it. The replica then acknowledges as soon as it has loaded it (readSyncBulkPayload),
   * and the stream waits for that ACK. Sent `$<len>`, its first ACK came with its once-a-second cron, and a replica
   * moved away within that second (REPLICAOF elsewhere, a Sentinel) was taken for one that could not load the RDB
   * (loadedSnapshot). Tools (SYNC, rdb-only) get the length.
   */
  #takesEofMark(): boolean {
    return this.caps.eof && !this.caps.plainSync && !this.caps.rdbOnly && !this.caps.rdbFilterEmpty;
  }

  /** A payload write waits for the socket to drain; how long it has waited is stalledFor(). */
  async #payloadDrained(): Promise<void> {
    this.#stalledSince = Date.now();
    try {
      await this.#drained();
    } finally {
      this.#stalledSince = 0;
    }
  }

  /**
   * How long (ms) the snapshot transfer has waited for the replica to read, 0 when it is not waiting. A replica that
   * stops reading its payload would otherwise hold its transfer (a full-sync-concurrency slot, the snapshot file,
   * the log from its offset) for good: it sends no ACK until it has the payload, so replica-timeout counts this.
   */
  stalledFor(now: number): number {
    return this.#stalledSince === 0 ? 0 : now - this.#stalledSince;
  }

  /** Resolves when what the session writes to (the socket, or its compressor) drains, or the socket closes. */
  #drained(): Promise<void> {
    if (this.socket.destroyed) return Promise.resolve();
    const target = this.#z ?? this.socket;
    return new Promise((resolve) => {
      const done = (): void => {
        target.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      target.once('drain', done);
      this.socket.once('close', done);
    });
  }

  /**
   * Sends the payload of a full resync begun with beginFull(): `header` (the +FULLRESYNC line, empty for SYNC),
   * then the snapshot the lease holds open (released when done, whatever happens) or an in-memory `payload`, then
   * the stream.
   */
  async sendPayload(header: Buffer, rdb: { readonly lease: SnapshotLease } | { readonly payload: Buffer }, rate = 0): Promise<void> {
    const lease = 'lease' in rdb ? rdb.lease : null;
    const mark = this.#takesEofMark() ? randomBytes(20).toString('hex') : null;
    try {
      if (this.#state !== ReplicaState.SendBulk) return;
      if (header.length > 0) this.#write(header);
      this.#startCompression();
      if (lease) await this.#sendFile(lease, rate, mark);
      else {
        const payload = (rdb as { payload: Buffer }).payload;
        this.#write(Buffer.from(mark === null ? `$${payload.length}\r\n` : `$EOF:${mark}\r\n`));
        this.#write(payload);
      }
      if (mark !== null && this.#state === ReplicaState.SendBulk) this.#write(Buffer.from(mark));
      // The whole snapshot is written: from here a close by the replica is one after the whole snapshot, even while
      // the release below still waits for the thread pool (a busy disk), which a replica that cannot load it outruns.
      if (this.#state === ReplicaState.SendBulk) this.#snapshotSent = true;
    } catch (err) {
      this.close(`rdb send failed: ${(err as Error).message}`);
      return;
    } finally {
      await lease?.release();
    }
    if (this.#state !== ReplicaState.SendBulk) return;
    if (this.caps.rdbOnly) {
      // Like Redis: an rdb-only replica (redis-cli --rdb) is closed once it has the RDB.
      this.#cursor?.close();
      this.#fanout.remove(this);
      (this.#z ?? this.socket).end();
      this.#setState(ReplicaState.Closed, 'rdb-only transfer complete');
      this.#onClose(this);
      return;
    }
    this.#awaitingAck = mark !== null;
    this.#setState(ReplicaState.Online, 'rdb sent');
    this.ackTime = Date.now();
    this.pump();
  }

  /**
   * Streams the leased snapshot file to the socket, paced by the socket's backpressure (and full-sync-rate). Reads go
   * through the lease, one at a time and each awaited: when this returns, no read it started is in flight, so the
   * store may close the file's handle once the last lease is released. (A fs.ReadStream on the descriptor would close
   * it when destroyed, autoClose or not, and the store would then close a number the process may have reused.)
   */
  async #sendFile(lease: SnapshotLease, rate: number, mark: string | null): Promise<void> {
    const size = lease.meta.size;
    const startedAt = Date.now();
    if (this.socket.destroyed) throw new ReplicaGoneError('replica closed before the RDB transfer');
    this.#write(Buffer.from(mark === null ? `$${size}\r\n` : `$EOF:${mark}\r\n`));
    for (let sent = 0; sent < size; ) {
      if (this.socket.destroyed || this.#state !== ReplicaState.SendBulk) throw new ReplicaGoneError('replica closed during the RDB transfer');
      // The checksum trailer goes only once the bytes before it proved to match it: a damaged file is cut short
      // (the replica retries) instead of reaching a replica that would exit on it.
      const body = size - lease.trailer;
      if (sent === body) await lease.verify();
      // Shared with the other transfers of this snapshot; never written to, so sockets may hold it as long as they like.
      const chunk = await lease.read(sent, Math.min(FILE_READ, (sent < body ? body : size) - sent));
      sent += chunk.length;
      const ok = await this.#pacer.run(() => this.#write(chunk));
      // replication.full-sync-rate: no faster than `rate` bytes per second, on average since the start.
      const early = rate > 0 ? (sent * 1000) / rate - (Date.now() - startedAt) : 0;
      if (!ok) await this.#payloadDrained();
      if (early > 0) await new Promise((r) => setTimeout(r, early).unref());
    }
  }

  /** There may be bytes to send: the fan-out gives this session a turn (never a write from here: see flush). */
  pump(): void {
    if (this.#state === ReplicaState.Online && !this.#blocked && !this.#diskRead && !this.#awaitingAck) this.#fanout.wake(this);
  }

  /**
   * The fan-out's turn: hands at most `budget` bytes of the memory tail and the fan-out's disk allowance of the disk
   * log to the socket, as views, corked so that they leave in one writev. The whole budget goes even past the
   * socket's high-water mark (memory views cost no memory of their own, and the kernel then has bytes to take until
   * the next turn); then, if the socket is full, 'drain' wakes us. Stops early when the next bytes must be read from
   * disk first.
   */
  flush(budget: number): Flush {
    const c = this.#cursor;
    if (this.#state !== ReplicaState.Online || this.#blocked || this.#diskRead || this.#awaitingAck || !c) return Flush.Wait;
    // Not blocked: what the last flush handed over has gone to the kernel.
    this.#releaseDisk();
    let left = budget;
    let diskLeft = this.#fanout.diskAllowance();
    let fromDiskNow = 0;
    let corked = false;
    let full = false;
    let capped = false;
    try {
      for (;;) {
        if (this.#overLimit()) return Flush.Wait;
        const toUntil = this.#until - c.offset;
        if (toUntil <= 0) {
          this.#park(c);
          return Flush.Wait;
        }
        // Chunks read ahead as far as this flush may take from the disk.
        const v = c.peek(diskLeft);
        if (v === null) break;
        if (!Buffer.isBuffer(v)) {
          this.#awaitDisk(v);
          return Flush.Wait;
        }
        const fromDisk = c.onDisk;
        if (fromDisk ? diskLeft === 0 : left === 0) {
          capped = fromDisk;
          break;
        }
        const n = Math.min(v.length, toUntil, fromDisk ? diskLeft : left);
        const view = n < v.length ? v.subarray(0, n) : v;
        if (fromDisk) {
          diskLeft -= view.length;
          fromDiskNow += view.length;
        } else left -= view.length;
        if (!corked) {
          this.socket.cork();
          corked = true;
        }
        c.advance(view.length);
        this.#telemetry.traffic.replOutputBytes += view.length;
        if (fromDisk) this.#telemetry.traffic.diskReadBytes += view.length;
        if (!this.#write(view)) {
          if (this.socket.destroyed) return Flush.Wait;
          full = true;
        }
      }
    } finally {
      // A session closed in the loop (a lag limit) released what it held already; a parked one with room in its socket
      // gets no 'drain' to release at.
      if (fromDiskNow > 0 && (this.#state as ReplicaState) !== ReplicaState.Closed && (full || !this.#parked)) {
        this.#diskHeld = fromDiskNow;
        this.#fanout.holdDisk(this, fromDiskNow);
      }
      if (corked) this.socket.uncork();
      // Also when the flush stopped for a disk read: only 'drain' says the socket sent what it holds.
      if (full) this.#blocked = true;
    }
    if (full) return Flush.Wait;
    return left === 0 || capped ? Flush.More : Flush.Idle;
  }

  #park(c: LogCursor): void {
    this.#parked = true;
    this.#cursor = null;
    c.close();
    this.#logger.info({ offset: this.#until }, 'point-in-time replica has the stream up to its target; held there');
  }

  /** Behind the memory tail: wait for a (possibly shared) disk read, then carry on. */
  #awaitDisk(read: Promise<void>): void {
    this.#diskRead = true;
    read.then(
      () => {
        this.#diskRead = false;
        this.pump();
      },
      (err: Error) => {
        this.#diskRead = false;
        this.close(`log read failed: ${err.message}`);
      },
    );
  }

  /** Checks the lag limits of a replica that is not being sent to (socket full, RDB still going out). */
  checkLag(): void {
    if (this.#state === ReplicaState.Online || this.#state === ReplicaState.SendBulk) this.#overLimit();
  }

  /**
   * Without a disk log, a lagging replica holds memory (the log keeps what it has not read): past
   * replica-max-lag it is dropped at once, and past replica-soft-lag for replica-soft-seconds in a row (Redis's
   * client-output-buffer-limit replica hard and soft limits). With a disk log, it reads from disk and holds
   * nothing: neither lag limit applies, and it is dropped only when the disk limit removed bytes it still needs.
   */
  #overLimit(): boolean {
    const log = this.#log;
    const c = this.#cursor;
    // A point-in-time replica at its target reads nothing more: it pins nothing (see #pins) and misses nothing.
    if (!c || c.offset >= this.#until) return false;
    // What the session pins in memory: everything after its position (also past a point-in-time target).
    const lag = c.behind;
    if (c.lost) {
      this.#dropForLag(`fell behind the log: needs offset ${c.offset + 1}, log starts at ${log.firstOffset}`, { limit: 'log.disk', lag, firstOffset: log.firstOffset });
      return true;
    }
    // Served from disk, the replica holds no memory: no lag limit. Behind memory not on disk, it does.
    if (log.onDisk(c.offset + 1)) return false;
    if (lag > this.#maxLag) {
      this.#dropForLag(`lag ${lag} bytes over replica-max-lag ${this.#maxLag}`, { limit: 'replication.replica-max-lag', lag, value: this.#maxLag });
      return true;
    }
    if (this.#softLag > 0 && lag > this.#softLag) {
      const now = Date.now();
      if (this.#softSince === 0) this.#softSince = now;
      else if (now - this.#softSince >= this.#softLagMs) {
        this.#dropForLag(`lag over replica-soft-lag ${this.#softLag} for ${now - this.#softSince} ms`, {
          limit: 'replication.replica-soft-lag',
          lag,
          value: this.#softLag,
          seconds: this.#softLagMs / 1000,
        });
        return true;
      }
    } else this.#softSince = 0;
    return false;
  }

  #dropForLag(reason: string, fields: Record<string, unknown>): void {
    this.#telemetry.emit('replica.dropped', { reason: 'lag', peer: this.peer, detail: reason });
    this.close(reason, fields);
  }

  #write(buf: Buffer): boolean {
    if (this.socket.destroyed) return false;
    if (this.#z) return this.#z.write(buf);
    this.#telemetry.traffic.netOutputBytes += buf.length;
    return this.socket.write(buf);
  }

  /** From here on, bytes go through this replica's own compressor (src/compression.ts); its 'drain' resumes the pump. */
  #startCompression(): void {
    const level = this.caps.compression;
    if (level == null || this.#z) return;
    const traffic = this.#telemetry.traffic;
    const onBatch = (raw: number, wire: number): void => {
      traffic.netOutputBytes += wire;
      traffic.compressedRawBytes += raw;
      traffic.compressedWireBytes += wire;
    };
    this.#z = new CompressedWriter(this.socket, { level, onBatch });
    this.#z.on('drain', () => this.#sent());
    this.#logger.info({ compression: 'psync-relay-z1', level }, 'replica stream compressed');
  }

  /**
   * Closes a session still waiting for its payload with an error line in place of it (`text`, without the `-`):
   * a replica or redis-cli reads it where the `+FULLRESYNC` or `$<length>` line would be, after any keepalives.
   */
  refuse(text: string, reason: string, fields: Record<string, unknown> = {}): void {
    if (this.#state !== ReplicaState.WaitBgsave) return;
    this.#write(Buffer.from(`-${text}\r\n`));
    this.close(reason, fields, true);
  }

  close(reason: string, fields: Record<string, unknown> = {}, flush = false): void {
    if (this.#state === ReplicaState.Closed) return;
    this.#warnings.warn(this.#logger, { reason, offset: this.offset, ackOffset: this.ackOffset, ...fields }, 'closing replica');
    this.#setState(ReplicaState.Closed, reason);
    this.#cursor?.close();
    this.#releaseDisk();
    this.#fanout.remove(this);
    if (flush) {
      // What was written leaves first; a peer that never reads it does not hold the socket.
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 1000).unref();
    } else this.socket.destroy();
    this.#log.removeHolder(this);
    this.#onClose(this);
  }

  /**
   * Whether the replica loaded the snapshot it was sent: true once it acknowledged the stream (a replica does at once
   * after loading an EOF-marked payload, which a `capa eof` replica is sent), false when it closed its link after the
   * whole snapshot without doing so. Null when that cannot be
   * told: no whole snapshot sent, the relay closed it, or it never acknowledges (SYNC, redis-cli --rdb / --replica).
   */
  get loadedSnapshot(): boolean | null {
    if (!this.#snapshotSent || this.caps.plainSync || this.caps.rdbOnly || this.caps.rdbFilterEmpty) return null;
    if (this.#acked) return true;
    return this.#peerClosed ? false : null;
  }

  /** The socket closed on its own. */
  closed(): void {
    if (this.#state === ReplicaState.Closed) return;
    this.#peerClosed = true;
    this.#setState(ReplicaState.Closed, 'connection closed');
    this.#cursor?.close();
    this.#releaseDisk();
    this.#fanout.remove(this);
    this.#log.removeHolder(this);
    this.#onClose(this);
  }
}
