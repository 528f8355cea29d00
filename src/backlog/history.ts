import { statfs } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Logger } from '../log.js';
import { DiskLog, DiskLogState } from './disk-log.js';
import { nodeFileIo, type FileIo } from './file-io.js';
import { NULL_REPLID, ReplIds, randomReplid, type UpstreamIds } from './repl-ids.js';
import { ReplLog, type LogReader } from './repl-log.js';
import { SnapshotStore, type SnapshotMeta } from './snapshot-store.js';
import { LINEAGE_MAX, readState, removeState, removeStateTemps, writeState, type PersistedState } from './state-file.js';
import { StorageError } from '../errors.js';
import type { Telemetry } from '../observability/telemetry.js';
import { TimeMarks } from '../pitr/time-marks.js';

/** How often a failed state write is tried again, and how often the failure is logged while it lasts. */
const PERSIST_RETRY_MS = 1000;
const PERSIST_LOG_EVERY_MS = 30_000;

export interface HistoryOptions {
  readonly dir: string;
  /** log.memory */
  readonly memory: number;
  /** log.disk; 0 = memory only. */
  readonly disk: number;
  /** log.disk-queue */
  readonly diskQueue: number;
  /** log.disk-direct */
  readonly diskDirect: boolean;
  /** log.refresh-hold */
  readonly refreshHold: number;
  /** history.keep-snapshots (default 1). */
  readonly keepSnapshots?: number;
  readonly logger: Logger;
  readonly telemetry: Telemetry;
  readonly io?: FileIo;
  /** Disk-log retry timings (tests shorten them). */
  readonly diskRetryMinMs?: number;
  readonly diskRetryMaxMs?: number;
}

/** Segment size for a disk log of `disk` bytes: an eighth of it, between 64 KiB and 64 MiB. */
export function segmentBytesFor(disk: number): number {
  return Math.max(64 * 1024, Math.min(64 * 1024 * 1024, Math.floor(disk / 8)));
}

/**
 * The disk log's size limit: log.disk, or half of the filesystem's size (`fsBytes`) when that is smaller. A disk log
 * that may grow past the filesystem runs it out by itself and stays there: its segments are dropped only past
 * log.disk, so every write fails (ENOSPC) and nothing is left for the snapshots a full sync needs, whatever else
 * frees space. The other half is for snapshots (history.keep-snapshots of them and one arriving) and whatever else
 * shares the filesystem.
 */
export function diskLimitFor(disk: number, fsBytes: number): number {
  return fsBytes > 0 ? Math.min(disk, Math.floor(fsBytes / 2)) : disk;
}

/**
 * The relay's replication history, and the one owner of its invariants: the replication ids (replid, replid2,
 * second_repl_offset), the epoch (a new one per full sync from upstream; snapshot files and log segments carry
 * it), the log (memory and disk) and the snapshots. Everything else asks it; each transition is one method:
 * restart recovery, a full sync from upstream, `+CONTINUE <new id>`, a snapshot commit, giving the history up.
 *
 * Crash safety comes from the order of file operations in each transition (see each method): at any instant the
 * files on disk describe the old history or the new one, never a mix.
 */
export class History {
  readonly ids = new ReplIds();
  readonly log: ReplLog;
  readonly store: SnapshotStore;
  /** When each part of this history's stream arrived (point-in-time requests by time). */
  readonly marks: TimeMarks;
  #opts: HistoryOptions;
  #io: FileIo;
  #logger: Logger;
  #epoch = 0;
  /** Every replid of this epoch, oldest first (PersistedState.lineage). */
  #lineage: string[] = [];
  /** We hold a position in some history (after a full sync, or recovered): upstream can continue us. */
  #hasHistory = false;
  /** Readers keeping the log from a snapshot being fetched (see hold()). */
  #holds = new Set<LogReader>();
  #dropping = false;
  #newHistory = new Set<() => void>();
  /** State writes, one after another (persist()). */
  #persistQueue: Promise<void> = Promise.resolve();
  /** The next try after a state write failed; null when the last one succeeded. */
  #persistRetry: NodeJS.Timeout | null = null;
  #persistFailing = false;
  #persistLogged = 0;
  #closed = false;
  /** The disk log's size limit in use (log.disk, or less on a smaller filesystem: diskLimitFor). */
  #diskLimit: number;
  /** The size of the data directory's filesystem (0: not known). */
  #fsBytes = 0;

  constructor(opts: HistoryOptions) {
    this.#opts = opts;
    this.#io = opts.io ?? nodeFileIo;
    this.#logger = opts.logger;
    this.#diskLimit = opts.disk;
    this.log = new ReplLog(opts.memory);
    this.store = new SnapshotStore(opts.dir, { io: this.#io, logger: opts.logger, keep: opts.keepSnapshots ?? 1, telemetry: opts.telemetry });
    this.marks = new TimeMarks(opts.dir, opts.logger);
    this.log.onAppend(() => this.marks.note(this.log.lastBoundary, this.log.firstOffset));
  }

  get epoch(): number {
    return this.#epoch;
  }

  /** `fn` runs (synchronously, once the ids and the log have switched) when a full sync starts a new history. */
  onNewHistory(fn: () => void): () => void {
    this.#newHistory.add(fn);
    return () => this.#newHistory.delete(fn);
  }
  get hasHistory(): boolean {
    return this.#hasHistory;
  }
  get disk(): DiskLog | null {
    return this.log.disk;
  }

  /** Where to PSYNC upstream from: our replid and offset + 1, or `? -1` with no history. */
  psyncTarget(): { replid: string; offset: number } {
    return this.#hasHistory ? { replid: this.ids.replid, offset: this.log.endOffset + 1 } : { replid: '?', offset: -1 };
  }

  /** The newest snapshot of this history whose next byte the log holds: a full sync can be served from it. */
  usableSnapshot(): SnapshotMeta | null {
    return this.store.newestWhere(this.#epoch, (s) => this.#ofThisStream(s) && this.log.holds(s.offset + 1));
  }

  /** The snapshots of this history, oldest first (point-in-time replicas: the log may not hold their next byte). */
  snapshots(): SnapshotMeta[] {
    return this.store.all.filter((s) => s.epoch === this.#epoch && this.#ofThisStream(s));
  }

  /**
   * Whether the log's stream up to `s.offset` is the stream `s` was taken of (ReplIds.vouches). One that is not (the
   * old id's, fetched from upstream.snapshot-source ahead of the log before a failover whose promotion point lay
   * behind it) was served as `+FULLRESYNC <new id> <its offset>`: a replica got the dead master's writes, missed the
   * new master's, then read the stream from mid-command (the replication audit). Such snapshots are removed at the
   * failover (pruneSnapshots); this also keeps out one a crash left before the removal.
   */
  #ofThisStream(s: SnapshotMeta): boolean {
    return this.ids.vouches(s.replid, s.offset + 1);
  }

  /** The newest snapshot of this history, usable or not. */
  newestSnapshot(): SnapshotMeta | null {
    return this.store.newest(this.#epoch);
  }

  /**
   * Restart recovery: picks up where a previous run stopped. With the state and a disk log of its epoch, the log
   * continues from its last whole command; else the newest snapshot of that history lets upstream continue us
   * from its offset; else (nothing usable, or a state file that cannot be trusted) we start without a history
   * and upstream gives us a full sync. Each case is logged with its reason.
   */
  async recover(): Promise<void> {
    await this.#recover();
    await this.marks.load(this.#epoch, this.log.endOffset);
  }

  async #recover(): Promise<void> {
    await this.store.init();
    await removeStateTemps(this.#opts.dir, this.#io, this.#logger);
    let state: PersistedState | null = null;
    try {
      state = await readState(this.#opts.dir, this.#io);
    } catch (err) {
      // Its ids cannot be trusted: what the snapshot files' names vouch for can (below), without the disk log.
      this.#logger.warn({ file: join(this.#opts.dir, 'state.json'), reason: (err as Error).message }, 'state file not used: continuing from the newest snapshot, if any, without the disk log');
    }
    let snaps = await this.store.recover(null);
    if (state) {
      // A full sync from upstream publishes its snapshot under the next epoch before the state names it: a crash in
      // between (or a state write that failed) leaves a snapshot of a newer history than the state file. That
      // history is the current one (the older one's log was already deleted): continue from it, not full-sync again.
      const ahead = snaps.filter((s) => s.epoch > state!.epoch).pop();
      if (ahead) {
        this.#logger.warn(
          { stateEpoch: state.epoch, epoch: ahead.epoch, replid: ahead.replid, offset: ahead.offset, file: ahead.path },
          'state file names an older history than the newest snapshot (a stop between the two writes): continuing the snapshot\'s history',
        );
        state = { replid: ahead.replid, replid2: NULL_REPLID, secondReplOffset: -1, epoch: ahead.epoch, lineage: [ahead.replid] };
        this.#adopt(state);
        await this.persist();
      } else if (this.#stranger(state, snaps)) state = null;
      if (state) snaps = await this.store.recover(state.epoch);
    }
    if (this.#opts.disk > 0) {
      this.#diskLimit = await this.#fittingDiskLimit();
      const disk = await DiskLog.open({
        dir: join(this.#opts.dir, 'log'),
        maxBytes: this.#diskLimit,
        segmentBytes: segmentBytesFor(this.#diskLimit),
        maxPending: this.#opts.diskQueue,
        memory: this.#opts.memory,
        epoch: state ? state.epoch : null,
        logger: this.#logger.child({ component: 'disk-log' }),
        io: this.#io,
        retryMinMs: this.#opts.diskRetryMinMs,
        retryMaxMs: this.#opts.diskRetryMaxMs,
        telemetry: this.#opts.telemetry,
        direct: this.#opts.diskDirect,
      });
      disk.onOverLimit = () => void this.enforceDiskLimit();
      if (state && !disk.empty) {
        this.#adopt(state);
        this.log.reset(disk.endOffset);
        this.log.attachDisk(disk);
        this.#hasHistory = true;
        const snap = this.usableSnapshot();
        this.#logger.info(
          { replid: this.ids.replid, replid2: this.ids.replid2, epoch: this.#epoch, firstOffset: this.log.firstOffset, offset: this.log.endOffset, snapshotOffset: snap?.offset ?? null },
          'replication log recovered',
        );
        return;
      }
      this.log.attachDisk(disk);
    } else {
      await DiskLog.discard(join(this.#opts.dir, 'log'), this.#logger, this.#io);
    }
    if (state) {
      this.#adopt(state);
      const snap = this.store.newest(state.epoch);
      if (snap) {
        await this.log.resetHistory(snap.offset, this.#epoch);
        this.#hasHistory = true;
        this.#logger.info({ replid: this.ids.replid, offset: snap.offset, bytes: snap.size }, 'snapshot recovered, no log after it: upstream continues from its offset');
        return;
      }
      this.#logger.info({ epoch: state.epoch }, 'no log or snapshot of the last history survived: full sync from upstream');
    } else if (snaps.length > 0) {
      // No state (first run of this layout, or a torn file): the newest snapshot still names a point of a history.
      const snap = snaps[snaps.length - 1]!;
      this.#epoch = snap.epoch;
      this.ids.reset(snap.replid);
      this.#lineage = [snap.replid];
      await this.log.resetHistory(snap.offset, this.#epoch);
      this.#hasHistory = true;
      await this.persist();
      this.#logger.info({ replid: snap.replid, offset: snap.offset }, 'snapshot recovered without a state file: upstream continues from its offset');
      return;
    }
    await this.log.resetHistory(0, this.#epoch);
  }

  /** The disk log's size limit in use: log.disk, or half of a smaller filesystem (diskLimitFor); 0 = no disk log. */
  get diskLimit(): number {
    return this.#diskLimit;
  }

  /**
   * log.disk, kept to half of the filesystem under `dir` when that is smaller (diskLimitFor), and said so. A
   * filesystem whose size cannot be read leaves log.disk as it is.
   */
  async #fittingDiskLimit(): Promise<number> {
    let fsBytes: number;
    try {
      const s = await statfs(this.#opts.dir);
      fsBytes = s.blocks * s.bsize;
      this.#fsBytes = fsBytes;
    } catch (err) {
      this.#logger.warn({ err, dir: this.#opts.dir }, 'the size of the data directory\'s filesystem cannot be read: log.disk is used as it is');
      return this.#opts.disk;
    }
    const limit = diskLimitFor(this.#opts.disk, fsBytes);
    if (limit < this.#opts.disk) {
      this.#logger.warn(
        { limit: 'log.disk', value: this.#opts.disk, filesystemBytes: fsBytes, used: limit, dir: this.#opts.dir },
        'log.disk is larger than half of its filesystem: the disk log keeps to half of it, leaving room for snapshots',
      );
    }
    return limit;
  }

  /**
   * Whether a snapshot of the state's epoch carries a replid the state does not know: the state is then of another
   * history (every relay's first one is epoch 1: a state file from another relay's directory), and trusting it would
   * continue its replid with this directory's bytes. Said, and the state is not used: the snapshots are.
   */
  #stranger(state: PersistedState, snaps: readonly SnapshotMeta[]): boolean {
    // A file of an earlier version has no lineage: its ids alone vouch (a snapshot older than two failovers then
    // costs the disk log once).
    const known = new Set([...(state.lineage ?? []), state.replid, state.replid2]);
    const snap = snaps.find((s) => s.epoch === state.epoch && !known.has(s.replid));
    if (!snap) return false;
    this.#logger.error(
      { epoch: state.epoch, replid: state.replid, replid2: state.replid2, lineage: state.lineage ?? null, file: snap.path },
      'state file does not name the history of the snapshots beside it (another relay\'s state file?): not trusted, continuing from the newest snapshot without the disk log',
    );
    return true;
  }

  #adopt(state: PersistedState): void {
    this.ids.set(state);
    this.#epoch = state.epoch;
    this.#lineage = state.lineage ? [...state.lineage] : [state.replid2, state.replid].filter((id) => id !== NULL_REPLID);
  }

  /**
   * A full sync from upstream completed: `tempPath` holds its checked, fsynced RDB at `offset` of history
   * `replid` (null after a plain SYNC: a random id). Order on disk: the old log segments go, then the snapshot is
   * published under the new epoch, then the state names that epoch, then the old snapshots go. A crash before the
   * state write recovers the old history from its snapshot; after it, the new one.
   * In memory the switch is synchronous: no full sync is served from a mix of the two.
   */
  async fullSync(tempPath: string, replid: string | null, offset: number): Promise<SnapshotMeta> {
    const id = replid ?? randomReplid();
    this.#epoch++;
    this.ids.reset(id);
    this.#lineage = [id];
    this.#hasHistory = true;
    this.#holds.clear();
    this.marks.reset(this.#epoch);
    const reset = this.log.resetHistory(offset, this.#epoch);
    for (const fn of this.#newHistory) fn();
    await reset;
    let snap: SnapshotMeta;
    try {
      snap = await this.store.commit(tempPath, { replid: id, offset, epoch: this.#epoch });
    } catch (err) {
      // An RDB's worth of a disk that may be full: not kept until a restart removes it.
      await this.store.discard(tempPath).catch(() => {});
      this.#logger.error({ err, replid: id, offset, epoch: this.#epoch }, 'could not publish the snapshot of a full sync from upstream: its RDB file is removed');
      throw err;
    }
    await this.persist();
    await this.pruneSnapshots();
    return snap;
  }

  /**
   * Deletes the snapshots no longer wanted (SnapshotStore.prune), with those the log has left behind (it dropped
   * their next byte; one ahead of the log is kept: the log reaches it): they can serve no full sync and no point in
   * time, and on a full disk they kept out the fresh snapshot a waiting replica's full sync needed, so it waited
   * forever. Run when a fresh snapshot is coming (a fetch, a full sync from upstream) and after one is published.
   * (After a restart without the log, upstream could continue the relay from such a snapshot only if its backlog
   * reached further back than the whole log: the relay full-syncs instead.)
   */
  async pruneSnapshots(): Promise<void> {
    const dropped = await this.store.prune(this.#epoch, (s) => s.offset + 1 >= this.log.firstOffset && this.#ofThisStream(s));
    const [behind, elsewhere] = [dropped.filter((s) => this.#ofThisStream(s)), dropped.filter((s) => !this.#ofThisStream(s))];
    if (behind.length > 0) {
      this.#logger.info(
        { files: behind.map((s) => basename(s.path)), bytes: behind.reduce((n, s) => n + s.size, 0), firstOffset: this.log.firstOffset },
        'snapshots the log has left behind removed: they can serve no full sync or point in time',
      );
    }
    if (elsewhere.length > 0) {
      this.#logger.warn(
        { files: elsewhere.map((s) => basename(s.path)), replid: this.ids.replid, replid2: this.ids.replid2, secondReplOffset: this.ids.secondReplOffset },
        'snapshots of an id past where this history follows it removed (taken ahead of a failover): they hold writes the new master never had',
      );
    }
  }

  /**
   * Upstream continued us (`+CONTINUE [id]`). With a new id it failed over: replid2 takes the old id, valid up to
   * our offset (Redis shiftReplicationId) or as far as `upstream`'s own ids vouch (ReplIds.shift), persisted before
   * any byte of the new id is appended. Returns whether the id changed (replicas must then learn it).
   */
  async continued(replid: string | null, upstream: UpstreamIds | null = null): Promise<boolean> {
    if (replid === null || replid === this.ids.replid) return false;
    // Shifted on a copy: `ids` answers replicas' PSYNCs, and one continued under the new id before the state file
    // names it would, after a crash in between, ask the restarted relay for an id it does not know (a full sync).
    const next = this.ids.copy();
    const { secondReplOffset, from } = next.shift(replid, this.log.endOffset, upstream);
    const lineage = this.#trimLineage([...this.#lineage.filter((id) => id !== replid), replid]);
    this.#logger.info(
      { replid, replid2: next.replid2, offset: this.log.endOffset, secondReplOffset, secondReplOffsetFrom: from, upstream },
      'upstream has a new replid, shifting ids',
    );
    const persisted = await this.#persistShift(next, lineage);
    if (persisted === true) await this.pruneSnapshots();
    if (persisted !== false) return persisted === true;
    // Neither written nor removed: the new id's bytes must not reach the log under the old state. The link fails
    // and tries again (upstream continues us again with the new id).
    throw new StorageError('cannot persist the new replid nor remove the old state file: not following the new id until one works');
  }

  /**
   * The newest LINEAGE_MAX ids, and every older one a snapshot file of this epoch still carries: a restart trusts
   * the state only if it names the id of each of them (#stranger), so dropping the id of the epoch's full sync after
   * 16 switchovers would cost the disk log and a full sync on the next restart.
   */
  #trimLineage(ids: readonly string[]): string[] {
    const named = new Set(this.store.all.filter((s) => s.epoch === this.#epoch).map((s) => s.replid));
    const newest = new Set(ids.slice(-LINEAGE_MAX));
    return ids.filter((id) => newest.has(id) || named.has(id));
  }

  /**
   * The state after a replid shift, written before any byte of the new id is appended. A state file left naming
   * the old id would have a restart take the new id's bytes in the disk log for the old id's history (served to
   * a replica of the old master as if they were its own). So when the write fails (a full disk), the old file is
   * removed instead: a restart then keeps only what a snapshot's name vouches for. The retry writes it later.
   * false when neither worked; 'superseded' when a full sync replaced the history meanwhile (nothing is taken). In
   * the write queue, so no later write that succeeded is removed.
   */
  #persistShift(next: ReplIds, lineage: string[]): Promise<boolean | 'superseded'> {
    const epoch = this.#epoch;
    const superseded = (): boolean => this.#epoch !== epoch || this.ids.replid !== next.replid2;
    // The new ids are taken in the queue, right after the write: a write queued behind this one then names them.
    const take = (): boolean | 'superseded' => {
      if (superseded()) return 'superseded';
      this.ids.set(next);
      this.#lineage = lineage;
      return true;
    };
    const done = this.#persistQueue.then(async (): Promise<boolean | 'superseded'> => {
      if (superseded()) return 'superseded';
      const state = { replid: next.replid, replid2: next.replid2, secondReplOffset: next.secondReplOffset, epoch, lineage };
      if (await this.#writeState(state)) return take();
      try {
        await removeState(this.#opts.dir, this.#io);
      } catch (err) {
        this.#logger.error({ err, replid: next.replid }, 'could not remove the state file naming the old replid either');
        return false;
      }
      if (take() === 'superseded') return 'superseded';
      this.#logger.error(
        { replid: this.ids.replid, replid2: this.ids.replid2, epoch: this.#epoch },
        'state file naming the old replid removed (the new one could not be written): until a retry writes it, a restart keeps no disk log and continues from the newest snapshot',
      );
      return true;
    });
    this.#persistQueue = done.then(() => undefined);
    return done;
  }

  /**
   * A fetched snapshot (a refresh) arrived in `tempPath`. It is published only if it belongs to this history: same
   * epoch as when the fetch began, our replid, and an offset whose next byte the log holds or will hold. Returns
   * it, or null (and removes the file) when it does not fit.
   */
  /** Whether a snapshot fetched since `epochAtStart` belongs to the history held: same epoch and replid, and the log holds (or will) its next byte. */
  fits(fetched: { replid: string; offset: number }, epochAtStart: number): boolean {
    return epochAtStart === this.#epoch && fetched.replid === this.ids.replid && fetched.offset + 1 >= this.log.firstOffset;
  }

  async commitSnapshot(tempPath: string, fetched: { replid: string; offset: number }, epochAtStart: number): Promise<SnapshotMeta | null> {
    if (!this.fits(fetched, epochAtStart)) {
      this.#logger.warn({ replid: fetched.replid, offset: fetched.offset, ours: this.ids.replid, firstOffset: this.log.firstOffset }, 'fetched snapshot does not fit our history, discarded');
      await this.store.discard(tempPath);
      return null;
    }
    const snap = await this.store.commit(tempPath, { ...fetched, epoch: this.#epoch });
    await this.pruneSnapshots();
    return snap;
  }

  /**
   * We cannot continue from our own state (upstream keeps rejecting what follows our offset): the next PSYNC asks
   * for a full sync. Replicas keep being served what we hold until it replaces our history.
   */
  forget(reason: string): void {
    if (!this.#hasHistory) return;
    this.#logger.error({ reason, replid: this.ids.replid, offset: this.log.endOffset }, 'giving up our own history: the next sync from upstream is a full sync');
    this.#hasHistory = false;
  }

  /**
   * Keeps the log from `reader.offset + 1` while a snapshot at that offset is fetched, up to log.refresh-hold
   * beyond the log's limits. Returns the release function.
   */
  hold(reader: LogReader): () => void {
    this.#holds.add(reader);
    this.log.addReader(reader);
    return () => {
      this.#holds.delete(reader);
      this.log.removeReader(reader);
    };
  }

  /** Whether a hold is past log.refresh-hold (the fetch should be abandoned). */
  holdExceeded(reader: LogReader): boolean {
    if (!this.#holds.has(reader)) return false;
    const d = this.log.disk;
    if (d && d.active && this.log.onDisk(reader.offset + 1)) return d.size - this.#diskLimit > this.#opts.refreshHold;
    return this.log.size - this.log.limit > this.#opts.refreshHold;
  }

  /**
   * Keeps the disk log under log.disk by dropping its oldest segments. A segment a snapshot fetch is holding stays
   * while the overshoot is within #holdAllowance (log.refresh-hold, and half of the filesystem). Dropping the segment
   * after the snapshot makes the snapshot unusable; a fresh one is fetched only when a replica needs a full sync
   * (never ahead of need: each costs a fork).
   */
  async enforceDiskLimit(): Promise<void> {
    const disk = this.log.disk;
    if (!disk || this.#dropping) return;
    this.#dropping = true;
    try {
      while (disk.overLimit > 0 && disk.segmentCount > 1) {
        const oldest = disk.oldestSegment!;
        const held = [...this.#holds].some((r) => r.offset + 1 <= oldest.end);
        if (held && disk.overLimit <= this.#holdAllowance()) return;
        if (!(await disk.dropOldest())) return;
        this.log.trim();
      }
    } finally {
      this.#dropping = false;
    }
  }

  /**
   * How far past its limit the disk log may grow to keep what a snapshot fetch will need (log.refresh-hold), but never
   * past half of its filesystem: the other half is the snapshots' (diskLimitFor). Where the limit already is that half,
   * nothing: on a 16 MiB filesystem the segments held during a burst filled it, and the disk log and the fetch both
   * failed with ENOSPC (the disk log detached, its history lost). Dropped, they cost the fetch instead: its snapshot
   * arrives unusable and a later full sync fetches another.
   */
  #holdAllowance(): number {
    if (this.#fsBytes <= 0) return this.#opts.refreshHold;
    return Math.min(this.#opts.refreshHold, Math.max(0, Math.floor(this.#fsBytes / 2) - this.#diskLimit));
  }

  /**
   * replid, replid2, second_repl_offset and the epoch: temp file, fsync, rename. A failure is logged, not fatal, and
   * retried every PERSIST_RETRY_MS until a write succeeds: the state file names the history a restart keeps, so one
   * left naming an older history (a full disk or a failing rename during a full sync from upstream) would have the
   * next start delete the current history's snapshot and log, and full-sync. Writes are serialized, each with the
   * state as of its own start, so an older one never lands after a newer one.
   */
  persist(): Promise<void> {
    this.#persistQueue = this.#persistQueue.then(async () => {
      await this.#writeState();
    });
    return this.#persistQueue;
  }

  /** One state write (of the current state, or `state`); true when it landed (a failure is logged and retried). */
  async #writeState(given?: PersistedState): Promise<boolean> {
    if (this.#persistRetry !== null) clearTimeout(this.#persistRetry);
    this.#persistRetry = null;
    try {
      const state = given ?? { replid: this.ids.replid, replid2: this.ids.replid2, secondReplOffset: this.ids.secondReplOffset, epoch: this.#epoch, lineage: this.#lineage };
      await writeState(this.#opts.dir, state, this.#io);
      if (this.#persistFailing) this.#logger.warn({ epoch: this.#epoch, replid: this.ids.replid }, 'replication state persisted again');
      this.#persistFailing = false;
      return true;
    } catch (err) {
      if (!this.#persistFailing || Date.now() - this.#persistLogged >= PERSIST_LOG_EVERY_MS) {
        this.#persistLogged = Date.now();
        this.#logger.error(
          { err, epoch: this.#epoch, replid: this.ids.replid, retryMs: PERSIST_RETRY_MS },
          'could not persist replication state: retrying (until it is written, a restart cannot keep this history)',
        );
      }
      this.#persistFailing = true;
      if (!this.#closed) {
        this.#persistRetry = setTimeout(() => void this.persist(), PERSIST_RETRY_MS);
        this.#persistRetry.unref();
      }
      return false;
    }
  }

  /** Disk log health for INFO, /status and metrics (its write errors and detaches are counted from its telemetry). */
  diskStatus(): { state: DiskLogState | 'off'; cause: string | null; since: number; pending: number; direct: boolean } {
    const d = this.log.disk;
    if (!d) return { state: 'off', cause: null, since: 0, pending: 0, direct: false };
    const p = d.problem;
    return { state: d.state, cause: p?.cause ?? null, since: p?.since ?? 0, pending: d.pending, direct: d.direct };
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.log.disk?.close();
    // The end of the last burst, with its own time (see TimeMarks.close()).
    await this.marks.close();
    if (this.#hasHistory) await this.persist();
    if (this.#persistRetry !== null) clearTimeout(this.#persistRetry);
    this.#persistRetry = null;
  }
}
