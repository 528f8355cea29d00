import type { Logger } from '../log.js';
import type { ReplLog } from '../backlog/repl-log.js';
import type { ReplIds } from '../backlog/repl-ids.js';
import { emptyRdb, type SnapshotMeta } from '../backlog/snapshot-store.js';
import type { RelayStats } from '../observability/stats.js';
import type { ClientConnection } from './client.js';
import { ReplicaSession, ReplicaState } from './replica-session.js';

/** What the master side needs from the relay's backlog. */
export interface ReplicationSource {
  readonly ids: ReplIds;
  readonly log: ReplLog;
  /** The snapshot, if the log holds the stream right after it (a consistent full sync is possible). */
  usableSnapshot(): SnapshotMeta | null;
  readonly snapshotPath: string;
  /** No usable snapshot and a replica needs one: get a fresh one from upstream. */
  needSnapshot(): void;
}

export interface DownstreamOptions {
  readonly source: ReplicationSource;
  readonly stats: RelayStats;
  readonly logger: Logger;
  readonly maxLag: number;
  readonly replicaTimeoutMs: number;
}

/**
 * The relay as a master: decides PSYNC (partial from the log, else full from the snapshot), keeps the
 * replica sessions, feeds them as the log grows, keeps waiting ones alive, drops dead or lagging ones.
 */
export class DownstreamReplication {
  #opts: DownstreamOptions;
  #sessions = new Set<ReplicaSession>();
  #waiting = new Set<ReplicaSession>();
  #tick: NodeJS.Timeout;
  #unsubscribe: () => void;

  constructor(opts: DownstreamOptions) {
    this.#opts = opts;
    this.#unsubscribe = opts.source.log.onAppend(() => {
      for (const s of this.#sessions) s.pump();
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
    const stats = this.#opts.stats;
    const rc = client.replconf;
    const session = new ReplicaSession({
      socket: client.socket,
      log,
      logger: client.logger.child({ replica: `${client.ip}:${rc.listeningPort}` }),
      stats,
      maxLag: this.#opts.maxLag,
      caps: { psync2: rc.capaPsync2, rdbOnly: rc.rdbOnly, rdbFilterEmpty: rc.rdbFilterEmpty, plainSync: replid === null },
      onClose: (s) => this.#remove(s),
    });
    client.replica = session;
    this.#sessions.add(session);
    const logger = client.logger;

    if (replid !== null && replid !== '?' && !rc.rdbOnly && !rc.rdbFilterEmpty) {
      if (ids.accepts(replid, offset) && log.holds(offset)) {
        stats.syncPartialOk++;
        const line = rc.capaPsync2 ? `+CONTINUE ${ids.replid}\r\n` : '+CONTINUE\r\n';
        client.socket.write(line);
        logger.info({ replid: ids.replid, offset, backlogBytes: log.endOffset - offset + 1 }, 'partial resync accepted');
        session.continueFrom(offset);
        return;
      }
      stats.syncPartialErr++;
      logger.info(
        { askedReplid: replid, askedOffset: offset, replid: ids.replid, replid2: ids.replid2, firstOffset: log.firstOffset, endOffset: log.endOffset },
        'partial resync refused, full resync',
      );
    }
    stats.syncFull++;
    this.#waiting.add(session);
    this.#serveWaiting();
  }

  /** Starts the full syncs that can start now. */
  #serveWaiting(): void {
    if (this.#waiting.size === 0) return;
    const src = this.#opts.source;
    let snap: SnapshotMeta | null | undefined;
    for (const session of this.#waiting) {
      if (session.state !== ReplicaState.WaitBgsave) {
        this.#waiting.delete(session);
        continue;
      }
      if (session.caps.rdbFilterEmpty) {
        // No keys wanted: an empty RDB, and the stream from what we hold now.
        this.#waiting.delete(session);
        const from = src.log.endOffset + 1;
        const header = session.caps.plainSync ? Buffer.alloc(0) : Buffer.from(`+FULLRESYNC ${src.ids.replid} ${from - 1}\r\n`);
        void session.fullSync(header, null, '', emptyRdb(src.usableSnapshot()?.rdbVersion ?? 10), from);
        continue;
      }
      snap ??= src.usableSnapshot();
      if (!snap) {
        src.needSnapshot();
        return;
      }
      this.#waiting.delete(session);
      const header = session.caps.plainSync ? Buffer.alloc(0) : Buffer.from(`+FULLRESYNC ${src.ids.replid} ${snap.offset}\r\n`);
      void session.fullSync(header, snap, src.snapshotPath, null, snap.offset + 1);
    }
  }

  /** A usable snapshot may have appeared. */
  snapshotReady(): void {
    this.#serveWaiting();
  }

  /** Drop every replica (new history, or a new replid they must learn). They reconnect and PSYNC. */
  disconnectAll(reason: string): void {
    for (const s of [...this.#sessions]) s.close(reason);
  }

  #remove(s: ReplicaSession): void {
    this.#sessions.delete(s);
    this.#waiting.delete(s);
  }

  #onTick(): void {
    const now = Date.now();
    for (const s of [...this.#sessions]) {
      if (s.state === ReplicaState.WaitBgsave) s.keepalive();
      else if (s.state === ReplicaState.Online && !s.caps.plainSync && now - s.ackTime > this.#opts.replicaTimeoutMs) {
        this.#opts.stats.replicasDroppedTimeout++;
        s.close('timeout: no REPLCONF ACK within replica-timeout');
      } else s.checkLag();
    }
    this.#serveWaiting();
  }

  close(): void {
    clearInterval(this.#tick);
    this.#unsubscribe();
    this.disconnectAll('relay shutting down');
  }
}
