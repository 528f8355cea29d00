import type { Socket } from 'node:net';
import type { Logger } from './log.js';
import type { History } from './backlog/history.js';
import type { SnapshotMeta } from './backlog/snapshot-store.js';
import { fetchSnapshot, type FetchOptions } from './upstream/snapshot-fetcher.js';
import { LinkError } from './errors.js';
import { MemorySink, memoryTransfer } from './backlog/memory-snapshot.js';
import { DiskRoom, noRoom, refusesWrites } from './util/disk-room.js';
import type { RdbTransfer } from './util/rdb-transfer.js';
import type { Telemetry } from './observability/telemetry.js';

const NOT_IN_HISTORY = 'it does not fit the history held (a new one began, or the log moved past it)';

export interface RefresherOptions {
  readonly history: History;
  readonly logger: Logger;
  readonly telemetry: Telemetry;
  /** replication.snapshot-refresh-min-interval */
  readonly minIntervalMs: number;
  /** Where and how to fetch from now (null: no upstream known). */
  readonly source: () => Omit<FetchOptions, 'log'> | null;
  /** upstream.snapshot-source: a replica of the same master, asked first (null: none configured). */
  readonly snapshotSource?: () => Omit<FetchOptions, 'log'> | null;
  /** Whether the main link is in a state where a second connection makes sense (not itself full-syncing). */
  readonly linkReady: () => boolean;
  /** A new snapshot is usable: serve the replicas waiting for one. */
  readonly onUsable: () => void;
  /** history.snapshot-interval: also fetch when the newest snapshot is this old (point-in-time replicas); 0 = off. */
  readonly intervalMs?: number;
  /**
   * A fetch failed with no fallback left (`reason`); `upTo`: the relay's offset when it began. RDB-only clients owed
   * the data up to there were waiting for it (src/downstream/replication.ts rdbOnlyFetchFailed).
   */
  readonly onFailed?: (upTo: number, reason: string) => void;
  /**
   * replication.full-sync-memory: when a fetch ran out of room on the disk and the disk still has none, the next one
   * goes to memory if the RDB is no larger than this (0 = never), and is handed to `onMemorySnapshot`.
   */
  readonly memoryCap?: number;
  readonly onMemorySnapshot?: (snap: RdbTransfer) => void;
}

/**
 * Fetches a fresh snapshot from upstream (a second connection, `REPLCONF rdb-only 1`, `PSYNC ? -1`: a fork on
 * the master) only when a replica needs a full sync that no snapshot the relay holds can serve, and never more often
 * than the configured minimum interval. While the RDB arrives, the log is held from the snapshot's offset (bounded
 * by log.refresh-hold) so that the stream after it is still there when it lands.
 */
export class SnapshotRefresher {
  #opts: RefresherOptions;
  #fetch: { socket: Socket | null; aborted: string | null } | null = null;
  #lastStart = -Infinity;
  #watch: NodeJS.Timeout | null = null;
  #pendingUsable: (() => void) | null = null;
  /** The snapshot #pendingUsable waits for the log to reach (fetched ahead of our stream). */
  #ahead: SnapshotMeta | null = null;
  #interval: NodeJS.Timeout | null = null;
  /** The offset the next fetch must reach for an RDB-only client (-1: none asked). */
  #rdbFrom = -1;
  /** A fetch ran out of room on the disk: the next waits for more (backlog/disk-room.ts). */
  readonly #room: DiskRoom;
  #lookingForRoom = false;
  /** The fetch being started is history.snapshot-interval's, which no client waits for (its log line says so). */
  #forInterval = false;

  constructor(opts: RefresherOptions) {
    this.#opts = opts;
    this.#room = new DiskRoom({ dir: opts.history.store.dir, logger: opts.logger, what: 'snapshot fetch', then: 'fetching it', file: 'room-snapshot-fetch.json' });
    const every = opts.intervalMs ?? 0;
    if (every > 0) {
      this.#interval = setInterval(() => {
        const newest = opts.history.newestSnapshot();
        if (newest === null || Date.now() - newest.createdAt >= every) this.#request(-1, false);
      }, Math.min(every, 10_000));
      this.#interval.unref();
    }
  }

  get inProgress(): boolean {
    return this.#fetch !== null;
  }

  /** Bytes of room the next fetch waits for on the disk (the last one ran out of room), 0 when it waits for none. */
  get waitingForRoom(): number {
    return this.#room.needBytes;
  }
  /** The error the disk refused the last fetch's RDB with while it still refuses writes (the next one waits), null when none. */
  get diskRefusedBy(): string | null {
    return this.#room.refusedBy;
  }
  /** When the next refresh may start (ms since the epoch). */
  get notBefore(): number {
    return this.#lastStart + this.#opts.minIntervalMs;
  }

  /**
   * A replica needs a full sync and no usable snapshot exists, or the newest snapshot is history.snapshot-interval
   * old, or (`from`) an RDB-only client needs the data as of that offset: the next fetch asks an upstream relay for
   * it (src/rdb-from.ts; a master forks anyway).
   */
  request(from = -1): void {
    this.#request(from, true);
  }

  /**
   * `waited`: a client waits for the snapshot (a full sync, an RDB-only client), so on a full disk it may be fetched
   * into memory; not for history.snapshot-interval's, a point-in-time snapshot only the disk can hold (each ask
   * would fork the master for a snapshot nobody takes).
   */
  #request(from: number, waited: boolean): void {
    const h = this.#opts.history;
    if (from > this.#rdbFrom) this.#rdbFrom = from;
    if (this.#fetch || this.#lookingForRoom || !h.hasHistory || !this.#opts.linkReady()) return;
    // A snapshot fetched ahead of our stream serves once the log reaches it; another fetch would be no older than it,
    // and a fork on the source for nothing (a backup waiting on a stalled stream had one every minute). Not once a
    // failover has removed it (History.pruneSnapshots).
    const ahead = this.#ahead;
    if (ahead !== null && this.#rdbFrom <= ahead.offset && h.snapshots().includes(ahead)) return;
    if (this.#room.waiting) {
      this.#lookForRoom(waited);
      return;
    }
    if (Date.now() < this.notBefore) return;
    const master = this.#opts.source();
    if (!master) return;
    // A disk that takes no writes (read-only) would fail the RDB at once, after the master forked for it.
    if (!this.#room.writable()) {
      this.#lookForRoom(waited);
      return;
    }
    const replica = this.#opts.snapshotSource?.() ?? null;
    // Asked of this fetch (and its fallback); a client still short of it afterwards asks again.
    const rdbFrom = this.#rdbFrom >= 0 ? this.#rdbFrom : null;
    this.#rdbFrom = -1;
    this.#forInterval = !waited;
    // A snapshot source spares the master its fork; when it cannot supply one that fits, the master does.
    if (replica) this.#start(replica, 'snapshot-source', rdbFrom, () => this.#start(master, 'master', rdbFrom, null));
    else this.#start(master, 'master', rdbFrom, null);
  }

  /**
   * After a fetch ran out of room, at every request (the replicas' tick asks every second): snapshots the log left
   * behind are pruned, then the disk asked. With room, the fetch starts at once (the minimum interval is for the
   * master's sake; that one failed on our disk); without, RDB-only clients owed the data as of now get the reason,
   * and the fetch may go to memory (`waited`: a client waits for it).
   */
  #lookForRoom(waited: boolean): void {
    const h = this.#opts.history;
    this.#lookingForRoom = true;
    // A disk that takes writes again is no reason to skip the interval: the probe is not the RDB.
    const forRoom = this.#room.needBytes > 0;
    void h
      .pruneSnapshots()
      .then(() => this.#room.hasRoom())
      // An unexpected failure (of the prune): asked again at the next request.
      .catch(() => false)
      .then((room) => {
        this.#lookingForRoom = false;
        if (room) {
          if (forRoom) this.#lastStart = -Infinity;
          this.#request(-1, waited);
          return;
        }
        const refused = this.#room.refusedBy;
        this.#opts.onFailed?.(
          h.log.endOffset,
          refused === null ? `no room on the relay's disk for a snapshot (it needs more than ${this.#room.needBytes} bytes)` : `the relay's disk takes no writes (${refused}): no snapshot can be stored`,
        );
        if (waited) this.#fetchIntoMemory();
      });
  }

  /**
   * No room on the disk: fetch into memory instead (replication.full-sync-memory), unless the RDB is known to be
   * larger (the last fetch got further than the cap), and no more often than a disk fetch. From a snapshot source
   * when one is set; the master supplies it when the source cannot (down, no link to its own master after a
   * failover, another history), but not when the source's RDB passed the cap: the master's would not fit either.
   */
  #fetchIntoMemory(): void {
    const cap = this.#opts.memoryCap ?? 0;
    const h = this.#opts.history;
    if (cap <= 0 || this.#room.needBytes > cap || this.#fetch || Date.now() < this.notBefore) return;
    if (!h.hasHistory || !this.#opts.linkReady()) return;
    const replica = this.#opts.snapshotSource?.() ?? null;
    const master = this.#opts.source();
    if (replica) this.#start(replica, 'snapshot-source', null, master ? () => this.#start(master, 'master', null, null, new MemorySink(cap)) : null, new MemorySink(cap));
    else if (master) this.#start(master, 'master', null, null, new MemorySink(cap));
  }

  /** Give up the fetch in progress (upstream changed, shutting down). */
  abort(reason: string): void {
    const f = this.#fetch;
    if (!f) return;
    f.aborted = reason;
    f.socket?.destroy();
  }

  close(): void {
    if (this.#interval) clearInterval(this.#interval);
    this.abort('relay closing');
    this.#pendingUsable?.();
  }

  /** Fetches from `src`; when that fails or does not fit our history, `fallback` (if any) runs next. */
  #start(src: Omit<FetchOptions, 'log'>, from: 'master' | 'snapshot-source', rdbFrom: number | null, fallback: (() => void) | null, memory: MemorySink | null = null): void {
    const h = this.#opts.history;
    const logger = this.#opts.logger.child({ from, source: `${src.host}:${src.port}` });
    const epoch = h.epoch;
    const temp = h.store.tempPath();
    const fetch = { socket: null as Socket | null, aborted: null as string | null };
    this.#fetch = fetch;
    this.#lastStart = Date.now();
    this.#opts.telemetry.emit('snapshot.refresh', { phase: 'started', from, reason: null });
    const hold = { offset: h.log.endOffset };
    const upTo = hold.offset;
    let release: (() => void) | null = null;
    let again: (() => void) | null = null;
    const ctx = { replid: h.ids.replid, firstOffset: h.log.firstOffset, endOffset: h.log.endOffset };
    if (rdbFrom !== null) logger.info({ ...ctx, rdbFrom }, 'an RDB-only client needs the data as of now: fetching a fresh snapshot from upstream');
    else if (memory) logger.info({ ...ctx, cap: this.#opts.memoryCap }, 'no usable snapshot for a full sync and no room on the disk: fetching a fresh one into memory');
    else if (this.#forInterval) logger.info({ ...ctx, intervalMs: this.#opts.intervalMs }, 'the newest snapshot is history.snapshot-interval old: fetching a fresh one from upstream');
    else logger.info(ctx, 'no usable snapshot for a full sync: fetching a fresh one from upstream');
    this.#watch = setInterval(() => {
      if (h.holdExceeded(hold)) {
        logger.warn({ limit: 'log.refresh-hold', offset: hold.offset }, 'snapshot fetch abandoned: holding the log for it went past log.refresh-hold');
        this.abort('log.refresh-hold exceeded');
      }
    }, 1000);
    this.#watch.unref();
    // Room first: snapshots the log no longer follows go (History.pruneSnapshots), or on a full disk they keep this one out.
    const onHeader = (snap: { readonly offset: number }): void => {
      // Keep the stream from the new snapshot's offset while its RDB arrives.
      hold.offset = Math.max(h.log.firstOffset - 1, Math.min(snap.offset, h.log.endOffset));
      release = h.hold(hold);
    };
    h.pruneSnapshots()
      .then(() => fetchSnapshot({ ...src, rdbFrom, log: logger }, temp, onHeader, fetch, memory ?? undefined))
      .then(async (fetched) => {
        if (fetch.aborted) throw new LinkError(fetch.aborted);
        if (memory) {
          if (!this.#inMemory(fetched, memory, epoch, from, upTo, fallback !== null)) again = fallback;
          return;
        }
        const snap = await h.commitSnapshot(temp, fetched, epoch);
        if (!snap) {
          const reason = NOT_IN_HISTORY;
          this.#opts.telemetry.emit('snapshot.refresh', { phase: 'failed', from, reason });
          if (fallback) {
            logger.warn({ replid: fetched.replid, offset: fetched.offset, ours: h.ids.replid }, 'the snapshot source is not in our history: fetching from the master instead');
            again = fallback;
          } else this.#opts.onFailed?.(upTo, `the fetched snapshot ${reason}`);
          return;
        }
        this.#opts.telemetry.emit('snapshot.refresh', { phase: 'committed', from, reason: null });
        logger.info({ replid: snap.replid, offset: snap.offset, bytes: snap.size }, 'fresh snapshot committed');
        this.#whenUsable(snap);
      })
      .catch(async (err: Error) => {
        this.#opts.telemetry.emit('snapshot.refresh', { phase: 'failed', from, reason: fetch.aborted ?? err.message });
        // Our own disk ran out of room, or takes no writes: the master's RDB would not fit either.
        const outOfRoom = !memory && !fetch.aborted && noRoom(err);
        const refused = !memory && !fetch.aborted && refusesWrites(err);
        if (refused) this.#room.refused(err);
        // Past the cap: the RDB needs more than memory may hold, so no memory fetch is tried again for it.
        if (memory?.overCap) this.#room.atLeast(memory.cap + 1);
        if (fallback && !fetch.aborted && !outOfRoom && !refused && !memory?.overCap) {
          logger.warn({ err: err.message }, 'snapshot fetch from the snapshot source failed: fetching from the master instead');
          again = fallback;
        } else {
          // The room it had (measured before its file goes below): the next one needs more.
          if (outOfRoom) await this.#room.ranOut(temp);
          logger.warn({ err: fetch.aborted ?? err.message, nextAttemptInMs: Math.max(0, this.notBefore - Date.now()) }, 'snapshot fetch failed');
          // Aborted too (log.refresh-hold exceeded: a stream faster than the log holds during a fetch, so the next
          // may fail as well). Clients of a history given up meanwhile are not told: the new one's snapshot serves them.
          this.#opts.onFailed?.(upTo, fetch.aborted ?? err.message);
        }
        await h.store.discard(temp).catch(() => {});
      })
      .finally(() => {
        if (this.#watch) clearInterval(this.#watch);
        this.#watch = null;
        release?.();
        if (this.#fetch === fetch) this.#fetch = null;
        again?.();
      });
  }

  /**
   * A fetch into memory arrived, checked: handed to the replicas waiting, when it belongs to the history held. Returns
   * false when it does not; `fallback`: the master is asked next (else the failure is reported).
   */
  #inMemory(fetched: { replid: string; offset: number }, memory: MemorySink, epoch: number, from: 'master' | 'snapshot-source', upTo: number, fallback: boolean): boolean {
    const h = this.#opts.history;
    const logger = this.#opts.logger;
    if (!h.fits(fetched, epoch)) {
      const reason = NOT_IN_HISTORY;
      this.#opts.telemetry.emit('snapshot.refresh', { phase: 'failed', from, reason });
      logger.warn({ replid: fetched.replid, offset: fetched.offset, ours: h.ids.replid }, `snapshot fetched into memory discarded: ${reason}${fallback ? ': fetching from the master instead' : ''}`);
      if (!fallback) this.#opts.onFailed?.(upTo, `the fetched snapshot ${reason}`);
      return false;
    }
    this.#opts.telemetry.emit('snapshot.refresh', { phase: 'committed', from, reason: null });
    logger.info({ replid: fetched.replid, offset: fetched.offset, bytes: memory.size }, 'fresh snapshot held in memory (no room on the disk): serving the replicas waiting for a full sync');
    this.#opts.onMemorySnapshot?.(memoryTransfer(fetched.replid, fetched.offset, memory));
    return true;
  }

  /** A snapshot ahead of our stream becomes usable when the log reaches its offset. */
  #whenUsable(snap: SnapshotMeta): void {
    const h = this.#opts.history;
    if (h.log.holds(snap.offset + 1)) {
      this.#opts.onUsable();
      return;
    }
    this.#pendingUsable?.();
    const off = h.log.onAppend(() => {
      if (h.log.endOffset < snap.offset) return;
      done();
      this.#opts.onUsable();
    });
    const done = (): void => {
      off();
      if (this.#pendingUsable !== done) return;
      this.#pendingUsable = null;
      this.#ahead = null;
    };
    this.#pendingUsable = done;
    this.#ahead = snap;
  }
}
