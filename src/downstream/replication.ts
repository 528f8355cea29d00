import type { Logger } from '../log.js';
import type { ReplLog } from '../backlog/repl-log.js';
import type { ReplIds } from '../backlog/repl-ids.js';
import { emptyRdb, type SnapshotLease, type SnapshotMeta } from '../backlog/snapshot-store.js';
import type { Telemetry } from '../observability/telemetry.js';
import type { ClientConnection } from './client.js';
import { ReplicaSession, ReplicaState } from './replica-session.js';
import { Fanout } from './fanout.js';
import { WritePacer } from './write-pacer.js';
import type { RdbTransfer } from '../util/rdb-transfer.js';
import { psyncReplyLine } from '../compression.js';
import { clip } from '../util/text.js';
import { errorReply } from '../resp/writer.js';
import { FullSyncRetries } from './full-sync-retries.js';
import { LogLimiter } from '../util/log-limiter.js';
import type { FullSyncPending } from '../upstream/link.js';

/** What the master side needs from the relay's backlog. */
export interface ReplicationSource {
  readonly ids: ReplIds;
  readonly log: ReplLog;
  /** The snapshot, if the log holds the stream right after it (a consistent full sync is possible). */
  usableSnapshot(): SnapshotMeta | null;
  /** Opens a snapshot for one transfer; the file stays until the lease is released. */
  lease(snap: SnapshotMeta): Promise<SnapshotLease>;
  /** A snapshot could not be opened or read: stop offering it. */
  snapshotFailed(snap: SnapshotMeta, err: Error): void;
  /**
   * No usable snapshot and a replica needs one, or (`from`) an RDB-only client needs one as of that offset: get a
   * fresh one from upstream (rate-limited by the source).
   */
  needSnapshot(from?: number): void;
  /** The history counter (a new one per full sync from upstream): a snapshot of a later one is newer than any offset of this one. */
  epoch(): number;
  /** How long the upstream has been out of reach (ms): 0 while it streams or sends a snapshot. */
  upstreamDownMs(): number;
  /**
   * The relay's own full sync from upstream, on its way or waiting for the disk to take it: the history held is stale.
   * Null when none.
   */
  upstreamFullSync(): FullSyncPending | null;
}

export interface DownstreamOptions {
  readonly source: ReplicationSource;
  readonly telemetry: Telemetry;
  readonly logger: Logger;
  readonly maxLag: number;
  /** replication.replica-soft-lag and replica-soft-seconds (ms); 0 = off. */
  readonly softLag?: number;
  readonly softLagMs?: number;
  readonly replicaTimeoutMs: number;
  /**
   * How long a replica asking for an offset ahead of ours (our replid, or replid2 up to second_repl_offset) is held until the log reaches it, then
   * continued, instead of a full sync (replication.ahead-wait). 0 = full sync at once, as Redis does.
   */
  readonly aheadWaitMs?: number;
  /** A replica acknowledged a higher offset (feeds the ack policy). */
  readonly onAck?: () => void;
  /** replication.full-sync-concurrency: at most this many snapshot transfers at once (the rest wait in order); 0 = no limit. */
  readonly fullSyncConcurrency?: number;
  /** replication.full-sync-rate: bytes per second per snapshot transfer; 0 = no limit. */
  readonly fullSyncRate?: number;
  /** replication.compression: compress for downstream relays that ask (capa psync-relay-z1); false = always plain. */
  readonly compression?: boolean;
  /** A point-in-time listener: replicas get the stream up to this offset and nothing after it (see ReplicaSession). */
  readonly until?: number;
  /**
   * An RDB-only client owed the data as of its request (redis-cli --rdb) waits for a fresh snapshot only while the
   * upstream has been out of reach for less than this (upstream.connect-timeout); then it gets an error. Default: forever.
   */
  readonly rdbOnlyDownWaitMs?: number;
}

/** A PSYNC held because the replica is ahead of the relay: decided when the log reaches `offset`, or at `deadline`. */
interface AheadWait {
  readonly client: ClientConnection;
  readonly replid: string;
  readonly offset: number;
  readonly deadline: number;
}

/**
 * The relay as a master: decides PSYNC (partial from the log, else full from the snapshot), keeps the
 * replica sessions, feeds them as the log grows, keeps waiting ones alive, drops dead or lagging ones.
 */
export class DownstreamReplication {
  #opts: DownstreamOptions;
  #sessions = new Set<ReplicaSession>();
  /** Rate limits what replicas' connections log (shared with their sessions). */
  readonly #warnings = new LogLimiter();
  /** Replicas waiting for a full sync, in arrival order (a Set iterates in insertion order). */
  #waiting = new Set<ReplicaSession>();
  /** Snapshot transfers in progress (full-sync-concurrency counts them). */
  #transfers = new Set<ReplicaSession>();
  /** The RDB arriving from upstream, while it does. */
  #incoming: RdbTransfer | null = null;
  /**
   * A snapshot of the current history held in memory, fetched when the disk had no room for one
   * (replication.full-sync-memory): served while no snapshot on disk is usable and the log holds its next byte.
   */
  #memory: RdbTransfer | null = null;
  /** Sessions taking #incoming as it arrives: the new history's first replicas, kept when it is committed. */
  #pipelined = new Set<ReplicaSession>();
  #ahead = new Map<ReplicaSession, AheadWait>();
  /** Each session's replica, as its address and announced port: what FullSyncRetries counts failed loads by. */
  #replicaOf = new Map<ReplicaSession, string>();
  readonly #retries = new FullSyncRetries();
  /** Waiting sessions whose full sync may not start before this time (ms): their replica failed to load the last ones. */
  #heldUntil = new Map<ReplicaSession, number>();
  /** RDB-only clients owed the data as of their request: the snapshot they get must reach this offset, or a later epoch. */
  #rdbFrom = new Map<ReplicaSession, { readonly epoch: number; readonly offset: number }>();
  /** Relays below, not yet streaming when the relays above this one changed (disconnectRelays). */
  #chainStale = new Set<ReplicaSession>();
  /** Writes the stream to every session in passes, one per turn of the event loop. */
  readonly fanout = new Fanout();
  readonly pacer = new WritePacer();
  #tick: NodeJS.Timeout;
  #unsubscribe: () => void;

  constructor(opts: DownstreamOptions) {
    this.#opts = opts;
    this.#unsubscribe = opts.source.log.onAppend((bytes) => {
      this.fanout.appended(bytes);
      if (this.#ahead.size > 0) this.#checkAhead(false);
    });
    this.#tick = setInterval(() => this.#onTick(), 1000);
    this.#tick.unref();
  }

  get sessions(): ReadonlySet<ReplicaSession> {
    return this.#sessions;
  }

  /** PSYNC replid offset (replid null: plain SYNC). Redis syncCommand + masterTryPartialResynchronization. */
  startSync(client: ClientConnection, replid: string | null, offset: number): void {
    if (client.replica) return;
    const { ids, log } = this.#opts.source;
    const rc = client.replconf;
    // An RDB alone is owed the data as of now, as a Redis replica forks for it: a plain SYNC (redis-cli --rdb, a
    // backup) is told no offset, and a relay fetching for such a client passes on the offset it needs
    // (src/rdb-from.ts). Other RDB-only fetches get the newest snapshot held, its offset named in +FULLRESYNC.
    // Never past what the relay holds: an offset beyond it would have it fetch snapshots forever.
    const owed = Math.min(log.endOffset, this.#opts.until ?? Infinity);
    const rdbFrom = !rc.rdbOnly || rc.rdbFilterEmpty ? -1 : replid === null ? owed : Math.min(rc.rdbFrom, owed);
    if (rdbFrom >= 0 && this.#opts.until !== undefined && (this.#opts.source.usableSnapshot()?.offset ?? -1) < rdbFrom) {
      // A point-in-time listener holds one snapshot, from before its point: an RDB alone cannot be as of it.
      client.reply(errorReply('ERR a point-in-time listener serves replicas only: an RDB alone would predate its point; replicate from it, then dump the replica'));
      return;
    }
    const session = new ReplicaSession({
      socket: client.socket,
      log,
      logger: client.logger.child({ replica: `${client.ip}:${rc.listeningPort}` }),
      telemetry: this.#opts.telemetry,
      maxLag: this.#opts.maxLag,
      softLag: this.#opts.softLag,
      softLagMs: this.#opts.softLagMs,
      onAck: () => this.#opts.onAck?.(),
      fanout: this.fanout,
      pacer: this.pacer,
      warnings: this.#warnings,
      caps: {
        psync2: rc.capaPsync2,
        eof: rc.capaEof,
        rdbOnly: rc.rdbOnly,
        rdbFilterEmpty: rc.rdbFilterEmpty,
        plainSync: replid === null,
        relay: rc.capaRelay,
        // A plain SYNC has no reply line to mark: never compressed.
        compression: this.#opts.compression !== false && replid !== null ? client.capaCompression : null,
      },
      onClose: (s) => this.#remove(s),
      until: this.#opts.until,
    });
    client.becomeReplica(session);
    this.#sessions.add(session);
    // A replica announces the port it serves on; a tool speaking PSYNC (a probe, a backup) does not, and is not held back.
    if (rc.listeningPort > 0) this.#replicaOf.set(session, `${client.ip}:${rc.listeningPort}`);
    const logger = client.logger;
    if (rdbFrom >= 0) {
      this.#rdbFrom.set(session, { epoch: this.#opts.source.epoch(), offset: rdbFrom });
      const newest = this.#opts.source.usableSnapshot()?.offset ?? -1;
      // Any client allowed SYNC can ask at will: the line is rate limited.
      if (newest < rdbFrom) this.#warnings.info(logger, { rdbFrom, snapshotOffset: newest }, 'RDB-only sync waits for a snapshot as of its request: the newest held is older');
    }

    if (replid !== null && replid !== '?' && !rc.rdbOnly && !rc.rdbFilterEmpty) {
      if (this.#tryContinue(client, session, replid, offset)) return;
      const waitMs = this.#opts.aheadWaitMs ?? 0;
      if (waitMs > 0 && ids.accepts(replid, offset) && offset > log.endOffset + 1 && offset <= Number.MAX_SAFE_INTEGER) {
        // It followed our upstream directly (or us before a restart) and holds bytes we have not received yet, of
        // our history (replid) or of the one before a failover (replid2, as far as second_repl_offset): wait for
        // them (bounded), then continue it, rather than throw its dataset away. Neither ok nor err until decided. An
        // offset past 2^53 is none a stream reaches (the relay refuses one upstream): not waited for.
        this.#ahead.set(session, { client, replid, offset, deadline: Date.now() + waitMs });
        logger.info({ replid, askedOffset: offset, endOffset: log.endOffset, waitMs }, 'replica is ahead of the relay, waiting for the stream to reach its offset');
        return;
      }
      this.#refusePartial(client, replid, offset);
    }
    this.#startFull(session);
  }

  /** `+CONTINUE` when the ids and the log allow it (Redis masterTryPartialResynchronization). */
  #tryContinue(client: ClientConnection, session: ReplicaSession, replid: string, offset: number): boolean {
    const { ids, log } = this.#opts.source;
    if (!ids.accepts(replid, offset) || !log.holds(offset) || offset > (this.#opts.until ?? Infinity) + 1) return false;
    this.#opts.telemetry.emit('replica.sync', { kind: 'partial', peer: client.addr });
    const z = session.caps.compression != null;
    const line = psyncReplyLine(client.replconf.capaPsync2 || z ? `+CONTINUE ${ids.replid}` : '+CONTINUE', z);
    client.socket.write(line);
    client.logger.info({ replid: ids.replid, offset, backlogBytes: log.endOffset - offset + 1 }, 'partial resync accepted');
    session.continueFrom(offset);
    return true;
  }

  #refusePartial(client: ClientConnection, asked: string, offset: number): void {
    const { ids, log } = this.#opts.source;
    // Client text (up to listen.max-bulk-len): cut as every client text logged is.
    const replid = clip(asked);
    this.#opts.telemetry.emit('replica.partial-refused', { peer: client.addr, replid, offset });
    client.logger.info(
      { askedReplid: replid, askedOffset: offset, replid: ids.replid, replid2: ids.replid2, firstOffset: log.firstOffset, endOffset: log.endOffset },
      'partial resync refused, full resync',
    );
  }

  #startFull(session: ReplicaSession): void {
    this.#opts.telemetry.emit('replica.sync', { kind: 'full', peer: session.peer });
    const replica = this.#replicaOf.get(session);
    const notBefore = replica === undefined ? 0 : this.#retries.notBefore(replica);
    if (notBefore > Date.now()) {
      this.#heldUntil.set(session, notBefore);
      this.#opts.logger.info({ replica, delayMs: notBefore - Date.now() }, 'full sync held back: this replica did not load the last snapshots it was sent');
    }
    this.#waiting.add(session);
    this.#serveWaiting();
  }

  /** Decides held PSYNCs: continue those the log now reaches; full sync those past their deadline (`expire`) or no longer ours. */
  #checkAhead(expire: boolean): void {
    const { ids, log } = this.#opts.source;
    const now = Date.now();
    for (const [session, w] of [...this.#ahead]) {
      if (session.state !== ReplicaState.WaitBgsave) {
        this.#ahead.delete(session);
        continue;
      }
      // Our ids may have shifted while it waited (upstream continued us under a new id): its id is then our
      // replid2, still ours up to second_repl_offset.
      const stillOurs = ids.accepts(w.replid, w.offset) && w.offset >= log.firstOffset;
      // While the upstream sends us a full sync (or one waits for the disk), the history held is to be replaced by a
      // newer one: a full sync now would hand the replica data older than its own, and a second at the commit.
      const expired = expire && now >= w.deadline && this.#opts.source.upstreamFullSync() === null;
      if (stillOurs && !log.holds(w.offset) && !expired) continue;
      this.#ahead.delete(session);
      if (stillOurs && this.#tryContinue(w.client, session, w.replid, w.offset)) continue;
      this.#refusePartial(w.client, w.replid, w.offset);
      this.#startFull(session);
    }
  }

  /** Replicas waiting for a full sync (for a snapshot, or for their turn under full-sync-concurrency). */
  get fullSyncsWaiting(): number {
    let n = 0;
    for (const s of this.#waiting) if (s.state === ReplicaState.WaitBgsave) n++;
    return n;
  }
  /** Snapshot transfers in progress. */
  get fullSyncsActive(): number {
    return this.#transfers.size;
  }

  /** Starts the full syncs that can start now, in arrival order. */
  #serveWaiting(): void {
    if (this.#waiting.size === 0) return;
    const src = this.#opts.source;
    const limit = this.#opts.fullSyncConcurrency ?? 0;
    let snap: SnapshotMeta | null | undefined;
    for (const session of this.#waiting) {
      if (session.state !== ReplicaState.WaitBgsave) {
        this.#waiting.delete(session);
        continue;
      }
      const heldUntil = this.#heldUntil.get(session);
      if (heldUntil !== undefined) {
        if (Date.now() < heldUntil) continue; // kept alive with newlines by the tick, which serves the line again
        this.#heldUntil.delete(session);
      }
      if (session.caps.rdbFilterEmpty) {
        // No keys wanted: an empty RDB, and the stream from the last whole command we hold (never mid-command).
        this.#waiting.delete(session);
        const from = src.log.lastBoundary + 1;
        session.beginFull(from);
        void session.sendPayload(this.#header(session, from - 1), { payload: emptyRdb(src.usableSnapshot()?.rdbVersion ?? 10) });
        continue;
      }
      // A new history arriving from upstream replaces what we hold: take it as it comes when the replica can
      // (its size is known, or the replica reads an EOF-marked payload).
      const inc = this.#incoming;
      if (inc && inc.progress() !== 'failed' && (inc.total() !== null || (session.caps.eof && !session.caps.plainSync))) {
        if (limit > 0 && this.#transfers.size >= limit) return;
        this.#waiting.delete(session);
        this.#transfers.add(session);
        this.#pipelined.add(session);
        session.beginFull(inc.offset + 1, false);
        const header = this.#header(session, inc.offset, inc.replid);
        void session.sendIncoming(header, inc, this.#opts.fullSyncRate ?? 0).finally(() => this.#transferEnded(session));
        continue;
      }
      if (inc) continue; // it waits for the new history's snapshot
      // The upstream has answered the relay's PSYNC with a full sync and not sent its RDB yet (the master is forking):
      // the held history is about to be replaced, and a replica served from it now full-syncs again at the commit.
      if (src.upstreamFullSync() === 'arriving') continue;
      snap ??= src.usableSnapshot();
      if (!snap) {
        const mem = this.#memorySnapshot();
        // RDB-only clients are not served from it (nor told the data as of their request is there): they wait.
        if (mem === null || session.caps.rdbOnly || this.#rdbFrom.has(session)) {
          src.needSnapshot();
          return;
        }
        if (mem.offset > src.log.endOffset) continue; // a snapshot ahead of the stream: served once the log reaches it
        if (limit > 0 && this.#transfers.size >= limit) return;
        this.#waiting.delete(session);
        this.#transfers.add(session);
        // Pinned from here: the log keeps the stream after the snapshot for as long as the transfer takes.
        session.beginFull(mem.offset + 1);
        void session.sendIncoming(this.#header(session, mem.offset), mem, this.#opts.fullSyncRate ?? 0).finally(() => this.#transferEnded(session));
        continue;
      }
      const from = this.#rdbFrom.get(session);
      if (from !== undefined && snap.epoch <= from.epoch && snap.offset < from.offset) {
        // It waits (kept alive with newlines) for a fresher one; those behind it in line are served meanwhile.
        src.needSnapshot(from.offset);
        continue;
      }
      // The others keep waiting (kept alive with newlines) until a transfer ends.
      if (limit > 0 && this.#transfers.size >= limit) return;
      this.#waiting.delete(session);
      this.#transfers.add(session);
      this.#sendSnapshot(session, snap);
    }
  }

  /** The +FULLRESYNC line (marked for a compressing replica), empty for SYNC; `replid` of the history served. */
  #header(session: ReplicaSession, offset: number, replid = this.#opts.source.ids.replid): Buffer {
    if (session.caps.plainSync) return Buffer.alloc(0);
    return Buffer.from(psyncReplyLine(`+FULLRESYNC ${replid} ${offset}`, session.caps.compression != null));
  }

  /**
   * The log is held from the snapshot's next byte at once (beginFull), then the file is opened; the +FULLRESYNC
   * line names the offset of the very snapshot the lease holds open.
   */
  #sendSnapshot(session: ReplicaSession, snap: SnapshotMeta): void {
    const src = this.#opts.source;
    session.beginFull(snap.offset + 1);
    src.lease(snap).then(
      (lease) => {
        if (session.state !== ReplicaState.SendBulk) {
          void lease.release();
          return;
        }
        void session.sendPayload(this.#header(session, lease.meta.offset), { lease }, this.#opts.fullSyncRate ?? 0).finally(() => this.#transferEnded(session));
      },
      (err: Error) => {
        src.snapshotFailed(snap, err);
        session.close(`snapshot unreadable: ${err.message}`);
      },
    );
  }

  /**
   * The offsets the streaming replicas acknowledged (for the ack policy): replicas that ACK (not plain SYNC),
   * each capped at what it was sent, since a replica cannot hold more.
   */
  ackOffsets(): number[] {
    const acks: number[] = [];
    for (const s of this.#sessions) {
      if (s.state === ReplicaState.Online && !s.caps.plainSync) acks.push(Math.min(s.ackOffset, s.offset));
    }
    return acks;
  }

  /** For the same replicas, in the same order: the offsets they fsynced to their AOF (FACK), -1 for none said. */
  aofAckOffsets(): number[] {
    const acks: number[] = [];
    for (const s of this.#sessions) {
      if (s.state === ReplicaState.Online && !s.caps.plainSync) acks.push(s.aofOffset < 0 ? -1 : Math.min(s.aofOffset, s.ackOffset, s.offset));
    }
    return acks;
  }

  /**
   * Graceful shutdown: resolves once every streaming replica holds the log's end (acknowledged it; a plain SYNC
   * replica, which never ACKs, once its socket has taken every byte), or at `deadline` (ms since the epoch),
   * with the replicas still behind. `cut` resolves it early (a second signal).
   */
  async flush(deadline: number, cut: Promise<void>): Promise<ReplicaSession[]> {
    const end = this.#opts.source.log.endOffset;
    const behind = () =>
      [...this.#sessions].filter((s) => {
        if (s.state !== ReplicaState.Online) return false;
        if (s.caps.plainSync) return s.offset < end || s.socket.writableLength > 0;
        return s.ackOffset < end;
      });
    let cutShort = false;
    void cut.then(() => (cutShort = true));
    for (;;) {
      const left = behind();
      if (left.length === 0 || cutShort || Date.now() >= deadline) return left;
      await new Promise((r) => setTimeout(r, Math.max(1, Math.min(20, deadline - Date.now()))));
    }
  }

  /** A usable snapshot may have appeared. */
  snapshotReady(): void {
    // One on disk serves every full sync from now on: the memory one goes.
    this.#memory = null;
    this.#serveWaiting();
  }

  /** A snapshot of the current history fetched into memory (the disk had no room): waiting replicas take it. */
  memorySnapshot(snap: RdbTransfer): void {
    this.#memory = snap;
    this.#serveWaiting();
  }

  /**
   * The memory snapshot while it can serve a full sync: dropped once the log no longer holds its next byte, or once
   * our ids no longer vouch for it (ReplIds.vouches: a failover whose promotion point lies before a snapshot fetched
   * ahead of the log; History.#ofThisStream for the files).
   */
  #memorySnapshot(): RdbTransfer | null {
    const mem = this.#memory;
    const { ids, log } = this.#opts.source;
    if (mem !== null && (mem.offset + 1 < log.firstOffset || !ids.vouches(mem.replid, mem.offset + 1))) this.#memory = null;
    return this.#memory;
  }

  /** Upstream started sending a full sync: waiting replicas may take it as it arrives. */
  incoming(inc: RdbTransfer): void {
    this.#incoming = inc;
    void inc.outcome.then(() => {
      if (this.#incoming === inc) this.#incoming = null;
      this.#serveWaiting();
    });
    this.#serveWaiting();
  }

  /**
   * A full sync from upstream started a new history: every replica told the old one is dropped (they reconnect and
   * PSYNC against the new one), except those already taking the new history's RDB as it arrived. Replicas still
   * waiting for a snapshot have been told nothing: they stay and are served from the new one.
   */
  newHistory(reason: string): void {
    this.#memory = null;
    for (const s of [...this.#sessions]) if (s.state !== ReplicaState.WaitBgsave && !this.#pipelined.has(s)) s.close(reason);
  }

  /**
   * Drop every replica that has been told a replid or offset (new history, or a new replid they must learn);
   * they reconnect and PSYNC. Replicas still waiting for a snapshot have been told nothing: they stay and
   * are served from the new one.
   */
  disconnectAll(reason: string, includeWaiting = false): void {
    for (const s of [...this.#sessions]) if (includeWaiting || s.state !== ReplicaState.WaitBgsave) s.close(reason);
  }

  /**
   * The relays above this one changed: relays below it reconnect (a partial resync) and read the new chain, so that
   * a relay told to follow one of them sees the loop, and none names a relay no longer above it (handshake.ts). One
   * waiting for or taking a snapshot is left to finish it (a WAN transfer is worth more) and to load it.
   */
  disconnectRelays(): void {
    for (const s of this.#sessions) if (s.caps.relay) this.#chainStale.add(s);
    this.#closeChainStale();
  }

  /** Relays below that read an old chain and are streaming, their snapshot loaded (they acknowledged): they reconnect. */
  #closeChainStale(): void {
    for (const s of [...this.#chainStale]) {
      if (s.state !== ReplicaState.Online || !s.acked) continue;
      this.#chainStale.delete(s);
      s.close('the relays above this one changed');
    }
  }

  #remove(s: ReplicaSession): void {
    this.#sessions.delete(s);
    this.#pipelined.delete(s);
    this.#waiting.delete(s);
    this.#ahead.delete(s);
    this.#heldUntil.delete(s);
    this.#rdbFrom.delete(s);
    this.#chainStale.delete(s);
    this.#countLoad(s);
    this.#transferEnded(s);
  }

  /** A session ended: whether its replica loaded the snapshot it was sent counts towards holding back its next full sync. */
  #countLoad(s: ReplicaSession): void {
    const replica = this.#replicaOf.get(s);
    this.#replicaOf.delete(s);
    const loaded = s.loadedSnapshot;
    if (replica === undefined || loaded === null) return;
    const failed = this.#retries.ended(replica, loaded);
    if (failed === 0) return;
    this.#warnings.warn(
      this.#opts.logger,
      { replica, failedLoads: failed, rdbVersion: this.#opts.source.usableSnapshot()?.rdbVersion, nextFullSyncDelayMs: this.#retries.delayAfter(failed) },
      'replica closed its link after a whole snapshot without acknowledging the stream: it did not load it (an RDB version it cannot read? its disk?)',
    );
  }

  /** A snapshot transfer finished (or its replica went): the next replica in line may start. */
  #transferEnded(s: ReplicaSession): void {
    this.#pipelined.delete(s);
    if (this.#transfers.delete(s)) this.#serveWaiting();
  }

  #onTick(): void {
    const now = Date.now();
    for (const s of [...this.#sessions]) {
      if (s.state === ReplicaState.WaitBgsave || s.parked) s.keepalive();
      else if (s.state === ReplicaState.Online && !s.caps.plainSync && now - s.ackTime > this.#opts.replicaTimeoutMs) {
        this.#opts.telemetry.emit('replica.dropped', { reason: 'timeout', peer: s.peer, detail: 'no REPLCONF ACK within replica-timeout' });
        s.close('timeout: no REPLCONF ACK within replica-timeout');
      } else if (s.state === ReplicaState.SendBulk && s.stalledFor(now) > this.#opts.replicaTimeoutMs) {
        // Redis drops a diskless transfer the replica stopped reading after repl-timeout ("timedout replica (full sync)").
        this.#opts.telemetry.emit('replica.dropped', { reason: 'timeout', peer: s.peer, detail: 'read no snapshot bytes within replica-timeout' });
        s.close('timeout: read no snapshot bytes within replica-timeout', { limit: 'replication.replica-timeout', value: this.#opts.replicaTimeoutMs });
      } else s.checkLag();
    }
    if (this.#ahead.size > 0) this.#checkAhead(true);
    if (this.#chainStale.size > 0) this.#closeChainStale();
    if (this.#rdbFrom.size > 0) this.#refuseRdbOnlyWithoutUpstream();
    this.#serveWaiting();
  }

  /**
   * RDB-only clients waiting for a snapshot as of their request, which only the upstream can give, once it has been
   * out of reach for rdbOnlyDownWaitMs: an error now (a backup job can retry or go elsewhere) rather than a wait with
   * no end.
   */
  #refuseRdbOnlyWithoutUpstream(): void {
    const down = this.#opts.source.upstreamDownMs();
    if (down < (this.#opts.rdbOnlyDownWaitMs ?? Infinity)) return;
    const seconds = Math.floor(down / 1000);
    this.#refuseRdbOnly(Infinity, `psync-relay's upstream has been out of reach for ${seconds} s`, 'retry once the upstream is back', 'the upstream is out of reach');
  }

  /**
   * A snapshot fetch that began at offset `upTo` failed (`reason`): the RDB-only clients owed the data up to there
   * were waiting for it, and get its error now, as the next fetch is up to replication.snapshot-refresh-min-interval
   * away.
   */
  rdbOnlyFetchFailed(upTo: number, reason: string): void {
    // One line: the reason may quote an upstream's reply (an upstream relay's own refusal, nested here).
    const text = clip(reason.replace(/[\r\n]+/g, ' '), 512);
    this.#refuseRdbOnly(upTo, `psync-relay could not fetch a snapshot as of now from its upstream (${text})`, 'retry later', 'the snapshot fetch for it failed');
  }

  /**
   * Refuses the RDB-only clients still waiting for a snapshot as of an offset up to `upTo`; those the snapshot held
   * already serves are left to be served.
   */
  #refuseRdbOnly(upTo: number, why: string, advice: string, reason: string): void {
    const snap = this.#opts.source.usableSnapshot();
    const epoch = this.#opts.source.epoch();
    for (const [s, from] of this.#rdbFrom) {
      if (s.state !== ReplicaState.WaitBgsave || from.epoch !== epoch || from.offset > upTo) continue;
      if (snap && (snap.epoch > from.epoch || snap.offset >= from.offset)) continue;
      const held = snap ? `at offset ${snap.offset}, ${from.offset - snap.offset} bytes behind` : 'none';
      s.refuse(`ERR ${why}: an RDB as of now needs a fresh snapshot from it (the newest held is ${held}); ${advice}`, `RDB-only client refused: ${reason}`, {
        rdbFrom: from.offset,
        snapshotOffset: snap?.offset ?? null,
      });
    }
  }

  close(): void {
    clearInterval(this.#tick);
    this.#unsubscribe();
    this.disconnectAll('relay shutting down', true);
    this.fanout.close();
  }
}
