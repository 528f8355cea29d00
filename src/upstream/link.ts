import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Readable } from 'node:stream';
import type { Logger } from '../log.js';
import type { ClientTlsConfig } from '../config/types.js';
import { encodeCommand } from '../resp/writer.js';
import { StreamScanner, type ScannedCommand } from '../resp/stream-scanner.js';
import { isWord } from '../resp/command-names.js';
import { LinkError, ProtocolError, TimeoutError } from '../errors.js';
import { openReplicationConnection } from './connection.js';
import { RdbReceiver } from './rdb-receiver.js';
import { receiveRdb } from './receive-rdb.js';
import { payloadSource } from './decompress-stream.js';
import { backoffDelay } from './backoff.js';
import type { Endpoint, PsyncOutcome, UpstreamReplInfo } from './handshake.js';
import { TimerSet } from './timer-set.js';
import { ReadTap } from './read-tap.js';
import { ReadBudget, TURN_READ_MEMORY } from './read-budget.js';
import type { RdbTransfer } from '../util/rdb-transfer.js';

export type { RdbTransfer };
import { checkTransition, type Transitions } from '../util/transitions.js';
import { DiskRoom, noRoom, refusesWrites } from '../util/disk-room.js';
import type { Telemetry } from '../observability/telemetry.js';

/** Reads in place (plain TCP) get between READ_MIN and READ_MAX bytes of room in the log's tail block. */
const READ_MIN = 64 * 1024;
const READ_MAX = 256 * 1024;
/**
 * ACKs waiting in the socket's buffer past which no more are queued: an upstream that sends `REPLCONF GETACK *` but
 * does not read our replies would otherwise grow this queue by one ACK per GETACK, without limit. Each ACK carries
 * the newest offset, so the ACK sent once the buffer drains (every second, or at the next GETACK) supersedes the
 * skipped ones.
 */
const ACK_BUFFER_MAX = 64 * 1024;
/**
 * How long the link must stream before its reconnect backoff starts over. Reaching the stream proves nothing: an
 * upstream that closes right after `+CONTINUE`, or sends garbage right after each full sync, would otherwise be
 * retried every backoff-min, forever (each time a full sync, and every replica dropped, in the second case).
 */
const HEALTHY_AFTER_MS = 5000;

export const LinkState = {
  /** No upstream configured. */
  None: 'none',
  Connecting: 'connecting',
  /** Receiving the RDB of a full sync. */
  Transfer: 'transfer',
  /** Streaming: the master link is up. */
  Connected: 'connected',
  /** Waiting to reconnect. */
  Backoff: 'backoff',
  Stopped: 'stopped',
} as const;
export type LinkState = (typeof LinkState)[keyof typeof LinkState];
export type FullSyncPending = 'arriving' | 'waiting-for-disk';

const LINK_TRANSITIONS: Transitions<LinkState> = {
  // backoff from none or stopped: started while a full sync still waits for room on the disk (from before a restart).
  none: ['connecting', 'backoff', 'stopped'],
  connecting: ['transfer', 'connected', 'backoff', 'stopped', 'none'],
  transfer: ['connected', 'backoff', 'stopped', 'none', 'connecting'],
  connected: ['backoff', 'stopped', 'none', 'connecting'],
  backoff: ['connecting', 'stopped', 'none'],
  stopped: ['connecting', 'backoff', 'none'],
};

/** What the link needs from the relay; keeps upstream/ free of backlog/ and downstream/ imports. */
export interface LinkHost {
  /** Where to PSYNC from: `?`/-1 on first contact, else our replid and offset + 1. */
  psyncTarget(): { replid: string; offset: number };
  /** The offset to acknowledge upstream (ack policy), given the offset the relay holds. */
  ackOffset(held: number): number;
  /** The FACK to send with an ACK of `ack` (what the replicas below fsynced to their AOF, by the ack policy), null for none. */
  aofAckOffset?(ack: number): number | null;
  /** master_repl_offset: the last byte held. */
  masterReplOffset(): number;
  tempSnapshotPath(): string;
  /** A full sync's RDB is complete in `tempPath`: make it the snapshot and start a new history at `offset` (replid null after a plain SYNC). */
  commitFullSync(tempPath: string, replid: string | null, offset: number): Promise<void>;
  discardTemp(tempPath: string): Promise<void>;
  /**
   * Upstream continued us; `replid` is set when it has a new id (it failed over); `upstream`, its ids from INFO
   * replication before PSYNC, if it gave them. Resolves before any stream byte is appended.
   */
  continued(replid: string | null, upstream: UpstreamReplInfo | null): Promise<void>;
  /** We cannot continue from our own position (upstream's stream after it keeps failing): the next PSYNC is a full sync. */
  cannotResume(reason: string): void;
  /** A view of held stream bytes from `offset` (ReplLog.read), or null when not held. */
  readStream(offset: number): Buffer | null;
  /** Validated stream bytes, in order; `boundary` is the offset of the last whole command scanned. */
  appendStream(chunk: Buffer, boundary: number): void;
  /** Room (`min` to `max` bytes) at the log's tail for the socket to read into (ReplLog.reserve); absent: copies. */
  reserveStream?(min: number, max: number): Buffer;
  /** The first `n` bytes of `space` (from reserveStream) are validated stream bytes (ReplLog.commit). */
  commitStream?(space: Buffer, n: number, boundary: number): void;
  /** Every command seen in the stream (for subscribers); called before the bytes are appended. */
  commandSeen?(cmd: ScannedCommand): void;
  /** A full sync's RDB started arriving (its header is read): replicas may take it as it comes. */
  transferStarted?(transfer: RdbTransfer): void;
  /** Whether the relay's own listener accepted a connection from `address`:`port` (our link looped back to us). */
  isSelf?(address: string, port: number): boolean;
  /** Whether the relay's own listener holds the connection from `remote` to `local` (an upstream's master link is ours). */
  isOwnConnection?(remote: Endpoint, local: Endpoint): boolean;
  /** The relays above us (relay_chain) are not the ones the last handshake named. */
  relayChainChanged?(chain: readonly string[]): void;
}

export interface LinkOptions {
  readonly host: string | null;
  readonly port: number;
  readonly user: string | null;
  readonly password: string | null;
  /** upstream.tls: TLS to upstream; null = plain TCP. */
  readonly tls?: ClientTlsConfig | null;
  readonly listeningPort: number;
  readonly announceIp: string | null;
  readonly timeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly backoffMinMs: number;
  readonly backoffMaxMs: number;
  /** Ask an upstream relay to compress at this zlib level (upstream.compression); null/absent = plain. */
  readonly compression?: number | null;
  /** This relay's id (INFO relay_id): an upstream relay whose chain names it follows us, and is refused (a loop). */
  readonly relayId?: string | null;
  /** Stream read per turn of the event loop, at most, asked per read (turnRead()); default TURN_READ_MEMORY. */
  readonly turnRead?: () => number;
  /** Asked after each stream read: a promise while reading must wait (for the disk log: DiskWait), null to go on. */
  readonly readWait?: () => Promise<void> | null;
  readonly log: Logger;
  readonly telemetry: Telemetry;
}

/**
 * The relay's replica side: owns the upstream socket, drives the handshake, receives the RDB, scans and hands
 * on the stream, acknowledges, times out and reconnects. State changes only through #setState.
 */
export class UpstreamLink extends EventEmitter {
  #opts: LinkOptions;
  #host: string | null;
  #port: number;
  #hostApi: LinkHost;
  #log: Logger;
  #state: LinkState = LinkState.None;
  #socket: Socket | null = null;
  /** Reads of the current plain TCP socket (null over TLS). */
  #tap: ReadTap | null = null;
  #attempt = 0;
  #timers = new TimerSet();
  #ackTimer: NodeJS.Timeout | null = null;
  #lastIo = 0;
  #scanner: StreamScanner;
  #stopped = false;
  #generation = 0;
  #receiver: RdbReceiver | null = null;
  readonly #room: DiskRoom;
  #scannerFailed = false;
  /** Settles the RdbTransfer in progress (false: it failed). */
  #settleTransfer: ((committed: boolean) => void) | null = null;
  /** masterReplOffset at the last garbage failure (-1: none since the last clean stretch). */
  #garbageAt = -1;
  #replaying = false;
  /** When reading pauses until the next turn (LinkOptions.turnRead). */
  readonly #readBudget: ReadBudget;
  #syncStartedAt = 0;
  /** The relays above us: the upstream's relay_id then its relay_chain, as its INFO said at our last handshake. */
  #relayChain: readonly string[] = [];

  constructor(opts: LinkOptions, host: LinkHost) {
    super();
    this.#opts = opts;
    this.#readBudget = new ReadBudget(opts.turnRead ?? (() => TURN_READ_MEMORY));
    this.#host = opts.host;
    this.#port = opts.port;
    this.#hostApi = host;
    this.#log = opts.log;
    // A master's stream is exempt from proto-max-bulk-len (Redis never limits its master client): no bulk cap.
    // Without decodeArgs only REPLCONF's second arg is looked at (GETACK): no copy of every SET's key.
    this.#scanner = new StreamScanner((cmd) => this.#onCommand(cmd), { maxBulkLen: Number.MAX_SAFE_INTEGER, secondArg: (name) => isWord(name, 'REPLCONF') });
    this.#room = new DiskRoom({ dir: dirname(host.tempSnapshotPath()), logger: opts.log, what: 'full sync from upstream', then: 'connecting', file: 'room-full-sync.json' });
  }

  /** Room on the disk the next connection waits for (a full sync's RDB ran out of it), 0 when none. */
  get waitingForRoom(): number {
    return this.#room.needBytes;
  }
  /** The error the disk refused the last full sync's RDB with while it still refuses writes (the next waits), null when none. */
  get diskRefusedBy(): string | null {
    return this.#room.refusedBy;
  }

  /**
   * A full sync from upstream on its way (`arriving`), or one the disk could not take, the next waiting for the disk
   * (`waiting-for-disk`): the history held is stale, a newer one comes when it commits. Null when none.
   */
  get fullSyncPending(): FullSyncPending | null {
    if (this.#state === LinkState.Transfer) return 'arriving';
    return this.#room.waiting ? 'waiting-for-disk' : null;
  }

  get state(): LinkState {
    return this.#state;
  }
  get host(): string | null {
    return this.#host;
  }
  get port(): number {
    return this.#port;
  }
  /** The relays this one follows, nearest first (INFO relay_chain); empty when the upstream is no psync-relay. */
  get relayChain(): readonly string[] {
    return this.#relayChain;
  }
  /** ms since the last byte from upstream; -1 when never. */
  get lastIoAgoMs(): number {
    return this.#lastIo === 0 ? -1 : Date.now() - this.#lastIo;
  }
  get syncProgress(): { received: number; total: number | null; startedAt: number } | null {
    const r = this.#receiver;
    return r ? { received: r.received, total: r.total, startedAt: this.#syncStartedAt } : null;
  }
  /** Turn on full decoding of stream commands (only while someone subscribes). */
  set decodeArgs(on: boolean) {
    this.#scanner.decodeArgs = on;
  }

  start(): void {
    this.#stopped = false;
    if (this.#host === null) {
      this.#setState(LinkState.None, 'no upstream configured');
      return;
    }
    // A full sync that ran out of room before a restart still waits for it (and the wait's file is made now, while
    // there is room, if there was none).
    if (this.#room.needBytes > 0) return this.#scheduleReconnect();
    void this.#connect();
  }

  /** Follow another upstream (REPLICAOF). The next PSYNC asks it for our replid and offset + 1. */
  setUpstream(host: string | null, port: number): void {
    this.#host = host;
    this.#port = port;
    this.#attempt = 0;
    this.#setRelayChain([]);
    this.#teardown();
    if (this.#stopped) return;
    if (host === null) this.#setState(LinkState.None, 'upstream removed');
    else void this.#connect();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#teardown();
    this.#setState(LinkState.Stopped, 'stopped');
  }

  #setState(next: LinkState, reason: string, fields: Record<string, unknown> = {}): void {
    const from = this.#state;
    if (from === next) return;
    checkTransition(LINK_TRANSITIONS, 'upstream link', from, next);
    this.#state = next;
    this.#log.info({ from, to: next, reason, peer: this.#peer(), ...fields }, 'upstream link state');
    this.emit('state', next, from);
  }

  #setRelayChain(chain: readonly string[]): void {
    if (chain.join() === this.#relayChain.join()) return;
    this.#relayChain = chain;
    this.#hostApi.relayChainChanged?.(chain);
  }

  #peer(): string {
    return `${this.#host}:${this.#port}`;
  }


  /** Ends the current connection attempt or session without scheduling anything. */
  #teardown(): void {
    this.#generation++;
    this.#timers.clear();
    if (this.#ackTimer) clearInterval(this.#ackTimer);
    this.#ackTimer = null;
    this.#socket?.destroy();
    this.#socket = null;
    if (this.#tap) this.#tap.sink = null;
    this.#tap = null;
    const r = this.#receiver;
    this.#receiver = null;
    if (r) void r.abort().then(() => this.#hostApi.discardTemp(r.path));
    // A transfer that replicas take as it arrives ends for them too.
    this.#settleTransfer?.(false);
    this.#settleTransfer = null;
  }

  #fail(err: Error): void {
    if (this.#stopped) return;
    this.#opts.telemetry.emit('upstream.error', { message: err.message });
    this.#log.warn({ err, peer: this.#peer(), offset: this.#hostApi.masterReplOffset() }, 'upstream link failed');
    const r = this.#receiver;
    if (r && noRoom(err)) {
      // A full sync's RDB ran out of room: the room it had is measured before its file goes (taken from teardown).
      this.#receiver = null;
      void this.#room.ranOut(r.path, r.abort()).then(() => this.#hostApi.discardTemp(r.path));
    }
    // A full sync's RDB the disk refused (read-only): every reconnect made the master fork for another.
    if (r && refusesWrites(err)) this.#room.refused(err);
    this.#teardown();
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    if (this.#stopped || this.#host === null) return;
    if (this.#room.waiting) {
      // Another full sync now would only make the master fork for an RDB the disk cannot take: looked at every second.
      const why = this.#room.refusedBy === null ? 'waiting for room on the disk' : 'waiting for the disk to take writes';
      this.#setState(LinkState.Backoff, why, { needBytes: this.#room.needBytes, refusedBy: this.#room.refusedBy });
      // Room is measured; a refusal only probed (a disk may take the probe and still refuse the RDB): backed off.
      const wait = this.#room.refusedBy === null ? 1000 : Math.max(1000, backoffDelay(this.#attempt++, this.#opts.backoffMinMs, this.#opts.backoffMaxMs));
      this.#timers.set(wait, () => void this.#connectWhenRoom());
      return;
    }
    const delay = backoffDelay(this.#attempt++, this.#opts.backoffMinMs, this.#opts.backoffMaxMs);
    this.#setState(LinkState.Backoff, 'reconnect scheduled', { delayMs: delay });
    this.#timers.set(delay, () => void this.#connect());
  }

  async #connectWhenRoom(): Promise<void> {
    const gen = this.#generation;
    const room = await this.#room.hasRoom();
    if (gen !== this.#generation || this.#stopped) return; // stopped, or told to follow another upstream meanwhile
    if (room) void this.#connect();
    else this.#timers.set(1000, () => void this.#connectWhenRoom());
  }

  async #connect(): Promise<void> {
    const gen = ++this.#generation;
    const host = this.#host;
    if (host === null || this.#stopped) return;
    this.#setState(LinkState.Connecting, 'connecting');
    const target = this.#hostApi.psyncTarget();
    // Plain TCP: reads go through a ReadTap, straight into the log once streaming. (TLS sockets read on their own.)
    const tap = this.#opts.tls ? null : new ReadTap();
    this.#tap = tap;
    let opened;
    try {
      opened = await openReplicationConnection({
        host,
        port: this.#port,
        user: this.#opts.user,
        password: this.#opts.password,
        tls: this.#opts.tls ?? null,
        listeningPort: this.#opts.listeningPort,
        announceIp: this.#opts.announceIp,
        rdbOnly: false,
        psyncReplid: target.replid,
        psyncOffset: target.offset,
        compression: this.#opts.compression ?? null,
        relayId: this.#opts.relayId ?? null,
        connectTimeoutMs: this.#opts.connectTimeoutMs,
        replyTimeoutMs: this.#opts.timeoutMs,
        log: this.#log,
        ...(tap && { onread: tap.onread }),
        isSelf: (s) => s.localPort !== undefined && (this.#hostApi.isSelf?.(s.localAddress ?? '', s.localPort) ?? false),
        // The upstream's end of its master link is that connection's remote end for us.
        isOwnConnection: (l) => this.#hostApi.isOwnConnection?.(l.local, l.remote) ?? false,
        onSocket: (s) => {
          if (tap) tap.socket = s;
          if (gen === this.#generation) this.#socket = s;
        },
      });
    } catch (err) {
      if (gen === this.#generation) this.#fail(err as Error);
      return;
    }
    if (gen !== this.#generation) {
      opened.socket.destroy();
      return;
    }
    this.#socket = opened.socket;
    this.#lastIo = Date.now();
    this.#setRelayChain(opened.upstreamInfo?.relayChain ?? []);
    // Compressed by an upstream relay: read through an inflater (the socket stays ours for ACKs).
    const { source, rest } = payloadSource(opened);
    this.#handleOutcome(opened.outcome, source, rest, target, opened.upstreamInfo);
  }

  #handleOutcome(outcome: PsyncOutcome, socket: Readable, rest: Buffer, target: { replid: string; offset: number }, upstreamInfo: UpstreamReplInfo | null): void {
    const log = this.#log;
    const gen = this.#generation;
    socket.on('error', (err) => gen === this.#generation && this.#fail(err));
    socket.on('close', () => gen === this.#generation && this.#fail(new LinkError('upstream closed the connection')));
    switch (outcome.kind) {
      case 'try-later':
        this.#fail(new LinkError(`upstream cannot serve us yet: ${outcome.reply}`));
        return;
      case 'continue': {
        // We asked `PSYNC ? -1` (no history): there is nothing to continue, and the bytes that follow have no offset
        // we could know. Redis would dereference a missing cached master here; refuse and retry.
        if (target.replid === '?') {
          this.#fail(new ProtocolError(`upstream answered +CONTINUE to a first-contact PSYNC ? -1: ${outcome.replid ?? '(no id)'}`));
          return;
        }
        this.#opts.telemetry.emit('upstream.sync', { kind: 'partial', replid: outcome.replid ?? target.replid, offset: target.offset - 1 });
        log.info({ replid: outcome.replid ?? target.replid, offset: target.offset - 1, peer: this.#peer(), compressed: outcome.compressed === true }, 'partial resync accepted by upstream');
        // The new id (if any) is persisted before a byte of its stream is appended; the socket stays paused meanwhile.
        this.#hostApi.continued(outcome.replid, upstreamInfo).then(
          () => gen === this.#generation && this.#startStreaming(socket, rest),
          (err: Error) => gen === this.#generation && this.#fail(err),
        );
        return;
      }
      case 'full':
      case 'sync': {
        const replid = outcome.kind === 'full' ? outcome.replid : null;
        const offset = outcome.kind === 'full' ? outcome.offset : 0;
        log.info({ replid, offset, peer: this.#peer(), compressed: outcome.kind === 'full' && outcome.compressed === true }, 'full resync from upstream');
        void this.#receiveRdb(socket, rest, replid, offset);
        return;
      }
    }
  }

  async #receiveRdb(socket: Readable, first: Buffer, replid: string | null, offset: number): Promise<void> {
    const gen = this.#generation;
    const shared = replid !== null && this.#hostApi.transferStarted !== undefined;
    const receiver = new RdbReceiver(this.#hostApi.tempSnapshotPath(), { shareReads: shared });
    this.#receiver = receiver;
    this.#syncStartedAt = Date.now();
    this.#setState(LinkState.Transfer, 'receiving RDB', { replid, offset });
    let settle: (committed: boolean) => void = () => undefined;
    if (replid !== null && shared) {
      const outcome = new Promise<boolean>((resolve) => (settle = resolve));
      // Readers that joined while it arrived keep the shared descriptor until they are done.
      void outcome.then(() => receiver.releaseReaders());
      this.#settleTransfer = settle;
      const transfer: RdbTransfer = {
        replid,
        offset,
        path: receiver.path,
        total: () => receiver.total ?? (receiver.progress === 'complete' ? receiver.flushed : null),
        flushed: () => receiver.flushed,
        progress: () => receiver.progress,
        waitBeyond: (bytes) => receiver.waitBeyond(bytes),
        openReader: () => receiver.openReader(),
        outcome,
      };
      receiver.onHeader = () => this.#hostApi.transferStarted?.(transfer);
    }
    try {
      const rest = await receiveRdb(socket, first, receiver, { timeoutMs: this.#opts.timeoutMs, log: this.#log, peer: this.#peer() });
      if (gen !== this.#generation) return;
      this.#receiver = null;
      this.#lastIo = Date.now();
      await this.#hostApi.commitFullSync(receiver.path, replid, offset);
      // Committed: the history is ours even if the link dropped meanwhile (the next PSYNC continues it), so it counts.
      this.#opts.telemetry.emit('upstream.sync', { kind: 'full', replid, offset });
      const seconds = +((Date.now() - this.#syncStartedAt) / 1000).toFixed(2);
      this.#log.info({ replid, offset, bytes: receiver.received, seconds, peer: this.#peer() }, 'rdb received, snapshot committed');
      if (gen !== this.#generation) return;
      this.#scanner.reset(offset);
      this.#settleTransfer = null;
      settle(true);
      this.#startStreaming(socket, rest);
      // A Redis 7.0 master holds the stream back after an EOF-marked RDB until our first ACK.
      this.#sendAck();
    } catch (err) {
      if (gen === this.#generation) this.#fail(err as Error);
    }
  }

  #startStreaming(socket: Readable, rest: Buffer): void {
    // Cancelled by a failure before then (teardown clears the timers): the backoff keeps growing.
    this.#timers.set(HEALTHY_AFTER_MS, () => (this.#attempt = 0));
    this.#resyncScanner();
    this.#setState(LinkState.Connected, 'streaming', { offset: this.#hostApi.masterReplOffset() });
    this.#ackTimer = setInterval(() => {
      if (Date.now() - this.#lastIo > this.#opts.timeoutMs) {
        this.#fail(new TimeoutError('no data from upstream within the replication timeout'));
        return;
      }
      this.#sendAck();
    }, 1000);
    socket.on('data', (chunk: Buffer) => {
      this.#onStream(chunk);
      if (this.#heldForLog(socket)) socket.pause();
      else if (this.#readBudget.spend(chunk.length, false)) {
        socket.pause();
        this.#resumeNextTurn(socket);
      }
    });
    if (rest.length > 0) this.#onStream(rest);
    const host = this.#hostApi;
    const tap = this.#tap;
    // Not when the stream comes through an inflater (compressed): then the socket's reads are not stream bytes.
    const raw = this.#socket;
    if (tap && raw && socket === raw && host.reserveStream && host.commitStream) {
      const gen = this.#generation;
      tap.sink = {
        space: () => host.reserveStream!(READ_MIN, READ_MAX),
        arrived: (space, n) => gen === this.#generation && this.#onArrived(raw, space, n),
      };
    }
    socket.resume();
  }

  /**
   * After a partial resync the stream continues where it stopped, possibly inside a command. The scanner must
   * be positioned there: if it is not (it failed on garbage, or never saw these bytes), rescan the unfinished
   * command from the log, quietly.
   */
  #resyncScanner(): void {
    const offset = this.#hostApi.masterReplOffset();
    if (!this.#scannerFailed && this.#scanner.offset === offset) return;
    const from = Math.min(this.#scanner.boundary, offset);
    this.#scannerFailed = false;
    if (from < offset && this.#hostApi.readStream(from + 1) !== null) {
      this.#scanner.reset(from);
      this.#replaying = true;
      try {
        for (let o = from + 1; o <= offset; ) {
          const view = this.#hostApi.readStream(o);
          if (!view) break;
          const part = view.subarray(0, Math.min(view.length, offset - o + 1));
          if (this.#scanner.scan(part).error !== null) break;
          o += part.length;
        }
      } finally {
        this.#replaying = false;
      }
      if (this.#scanner.offset === offset) return;
    }
    this.#scanner.reset(offset);
  }

  /** Stream bytes that arrived in a buffer of their own ('data'): appended as they are. */
  #onStream(chunk: Buffer): void {
    const { validBytes, error } = this.#scan(chunk);
    if (validBytes > 0) this.#hostApi.appendStream(validBytes === chunk.length ? chunk : chunk.subarray(0, validBytes), this.#scanner.boundary);
    if (error !== null) this.#garbage(error);
  }

  /**
   * Stream bytes read straight into the log's tail (`space`, from reserveStream): committed where they are. Returns
   * false to pause reading until the next turn (LinkOptions.turnRead).
   */
  #onArrived(socket: Socket, space: Buffer, n: number): boolean {
    const { validBytes, error } = this.#scan(n === space.length ? space : space.subarray(0, n));
    if (validBytes > 0) this.#hostApi.commitStream!(space, validBytes, this.#scanner.boundary);
    if (error !== null) {
      this.#garbage(error);
      return false;
    }
    if (this.#heldForLog(socket)) return false;
    if (!this.#readBudget.spend(n, n < space.length)) return true;
    this.#resumeNextTurn(socket);
    return false;
  }

  #resumeNextTurn(source: Readable): void {
    const gen = this.#generation;
    setImmediate(() => gen === this.#generation && !source.destroyed && source.resume());
  }

  /**
   * Whether reading must wait for the log (its disk behind a burst: LinkOptions.readWait); if so, `source` is resumed
   * once it may read again (DiskWait lets it ask again at least once a second). The caller pauses it.
   */
  #heldForLog(source: Readable): boolean {
    const wait = this.#opts.readWait?.() ?? null;
    if (wait === null) return false;
    const gen = this.#generation;
    void wait.then(() => gen === this.#generation && !source.destroyed && source.resume());
    return true;
  }

  #scan(chunk: Buffer): { validBytes: number; error: string | null } {
    this.#lastIo = Date.now();
    this.#opts.telemetry.traffic.upstreamBytesIn += chunk.length;
    return this.#scanner.scan(chunk);
  }

  /** The stream stopped parsing: what was valid is kept; drop the link and PSYNC from there. */
  #garbage(error: string): void {
    this.#scannerFailed = true;
    const at = this.#hostApi.masterReplOffset();
    // The same failure at the same offset again: what follows our position does not parse as a continuation
    // (our log ends inside a command the upstream does not have, or upstream is not what it claims). Retrying
    // the same PSYNC would loop forever: give our position up and full-sync.
    if (this.#garbageAt === at) this.#hostApi.cannotResume(`the upstream stream after offset ${at} failed to parse twice: ${error}`);
    this.#garbageAt = at;
    // Upstream resends the rest.
    this.#fail(new ProtocolError(`garbage in the upstream stream: ${error}`, at));
  }

  #onCommand(cmd: ScannedCommand): void {
    if (this.#replaying) return;
    // Compared as bytes: no string per command.
    if (isWord(cmd.args[0], 'REPLCONF') && isWord(cmd.args[1], 'GETACK')) {
      // Redis answers with the offset before the GETACK command itself (this chunk is not appended yet).
      this.#sendAck(cmd.start - 1);
    }
    this.#hostApi.commandSeen?.(cmd);
  }

  /** Send `REPLCONF ACK` now, not at the next second (the ack policy's offset went up). */
  ackNow(): void {
    this.#sendAck();
  }

  #sendAck(offset?: number): void {
    const s = this.#socket;
    if (!s || s.destroyed || this.#state !== LinkState.Connected) return;
    if (s.writableLength >= ACK_BUFFER_MAX) return;
    const off = this.#hostApi.ackOffset(offset ?? this.#hostApi.masterReplOffset());
    // A master before 7.2 reads the ACK and ignores what follows it, as it does from a Redis 7.2 replica.
    const aof = this.#hostApi.aofAckOffset?.(off) ?? null;
    s.write(encodeCommand(aof === null ? ['REPLCONF', 'ACK', String(off)] : ['REPLCONF', 'ACK', String(off), 'FACK', String(aof)]));
  }
}
