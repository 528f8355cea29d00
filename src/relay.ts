import { randomBytes } from 'node:crypto';
import type { Logger } from './log.js';
import type { RelayConfig } from './config/types.js';
import { ReplLog, type LogReader } from './backlog/repl-log.js';
import { ReplIds, randomReplid } from './backlog/repl-ids.js';
import { SnapshotStore, type SnapshotMeta } from './backlog/snapshot-store.js';
import { readState, writeState, type PersistedState } from './backlog/state-file.js';
import { DiskLog } from './backlog/disk-log.js';
import { join } from 'node:path';
import { UpstreamLink, LinkState, type LinkHost } from './upstream/link.js';
import { fetchSnapshot } from './upstream/snapshot-fetcher.js';
import { SentinelConnector } from './upstream/sentinel-connector.js';
import { announcedPort } from './tls.js';
import type { ScannedCommand } from './resp/stream-scanner.js';
import { ReplicaServer } from './downstream/server.js';
import { DownstreamReplication, type ReplicationSource } from './downstream/replication.js';
import { formatAckPolicy, policyAckOffset } from './downstream/ack-policy.js';
import { REDIS_VERSION, type CommandHost } from './downstream/commands.js';
import type { ClientConnection } from './downstream/client.js';
import { arrayReply, bulkReply, integerReply } from './resp/writer.js';
import { RelayStats } from './observability/stats.js';
import { formatInfo } from './observability/info.js';
import type { RelayStatus } from './observability/status.js';
import { WebServer } from './web/server.js';
import { rewriteUpstream } from './config/rewrite.js';

export const RELAY_VERSION = '0.1.0';

/**
 * The composition root: the only module that knows every other one. Wires the upstream link to the
 * backlog (log, ids, snapshot) and the backlog to the downstream server.
 */
export class Relay {
  readonly config: RelayConfig;
  readonly stats = new RelayStats();
  readonly runId = randomBytes(20).toString('hex');
  readonly ids = new ReplIds();
  readonly log: ReplLog;
  readonly store: SnapshotStore;
  #logger: Logger;
  #link: UpstreamLink;
  #downstream: DownstreamReplication;
  #server: ReplicaServer;
  #startedAt = Date.now();
  #port = 0;
  /** Bumped on every new history (full sync from upstream); a snapshot is only good for its own history. */
  #epoch = 0;
  #snapshotEpoch = -1;
  /** We hold a position in some history (after a full sync, or a snapshot recovered from disk). */
  #hasHistory = false;
  #fetch: { socket: import('node:net').Socket | null; pin: { offset: number } } | null = null;
  #fetchNotBefore = 0;
  /** A fresh snapshot whose offset the log has not reached yet. */
  #snapshotPendingAt: number | null = null;
  #linkDownSince = Date.now();
  #upstreamHost: string | null;
  #upstreamPort: number;
  #commandListeners = new Set<(cmd: ScannedCommand) => void>();
  #sentinel: SentinelConnector | null = null;
  #diskTimer: NodeJS.Timeout | null = null;
  #dropping = false;
  #web: WebServer | null = null;
  /** Ack policy min/quorum: the highest offset acknowledged upstream in this history ("nothing new" stays here). */
  #ackFloor = 0;
  #lastAckSent = -1;
  #ackCheckQueued = false;
  #shutdown: { promise: Promise<void>; cut: () => void } | null = null;

  constructor(config: RelayConfig, logger: Logger) {
    this.config = config;
    this.#logger = logger;
    this.log = new ReplLog(config.log.memory);
    this.store = new SnapshotStore(config.dir);
    // Sentinel mode: no address until the Sentinels name the master.
    this.#upstreamHost = config.upstream.sentinel ? null : config.upstream.host;
    this.#upstreamPort = config.upstream.port;

    this.#link = new UpstreamLink(
      {
        ...config.upstream,
        host: this.#upstreamHost,
        listeningPort: announcedPort(config.listen, config.upstream.tls),
        announceIp: config.listen.announceIp,
        log: logger.child({ component: 'upstream' }),
      },
      this.#linkHost(),
    );
    this.#link.on('state', (to: LinkState, from: LinkState) => {
      if (from === LinkState.Connected) this.#linkDownSince = Date.now();
      void to;
    });
    this.#downstream = new DownstreamReplication({
      source: this.#replicationSource(),
      stats: this.stats,
      logger: logger.child({ component: 'downstream' }),
      maxLag: config.replication.replicaMaxLag,
      softLag: config.replication.replicaSoftLag,
      softLagMs: config.replication.replicaSoftMs,
      replicaTimeoutMs: config.replication.replicaTimeoutMs,
      aheadWaitMs: config.replication.aheadWaitMs,
      onAck: () => this.#replicaAcked(),
    });
    if (config.upstream.sentinel) {
      const sc = config.upstream.sentinel;
      this.#sentinel = new SentinelConnector({
        ...sc,
        tls: sc.tls ? config.upstream.tls : null,
        connectTimeoutMs: config.upstream.connectTimeoutMs,
        backoffMinMs: config.upstream.backoffMinMs,
        backoffMaxMs: config.upstream.backoffMaxMs,
        log: logger.child({ component: 'sentinel' }),
      });
      this.#sentinel.on('master', (host: string, port: number) => this.#follow(host, port, 'sentinel'));
    }
    this.#server = new ReplicaServer(config.listen, logger.child({ component: 'server' }), this.stats, this.#commandHost());
  }

  get port(): number {
    return this.#port;
  }
  get link(): UpstreamLink {
    return this.#link;
  }
  /** The web server's port; 0 when it is off (web.port 0). */
  get webPort(): number {
    return this.#web?.port ?? 0;
  }

  async start(): Promise<void> {
    await this.store.init();
    await this.#recover();
    this.#diskTimer = setInterval(() => void this.#enforceDiskLimit(), 1000);
    this.#diskTimer.unref();
    this.#port = await this.#server.listen();
    if (this.config.web.port !== 0) {
      this.#web = new WebServer(this, this.config.web, this.#logger.child({ component: 'web' }));
      await this.#web.listen();
    }
    this.#logger.info(
      {
        replid: this.ids.replid,
        offset: this.log.endOffset,
        upstream: `${this.#upstreamHost}:${this.#upstreamPort}`,
        ackPolicy: formatAckPolicy(this.config.replication.ackPolicy),
      },
      'relay started',
    );
    this.#link.start();
    this.#sentinel?.start();
  }

  /**
   * Graceful shutdown (SIGTERM): stop accepting clients and stop the upstream link, so the stream stops growing;
   * wait up to shutdown-timeout for the online replicas to acknowledge all of it; then close() (persists the state,
   * closes the disk log). A second call cuts the wait short.
   */
  shutdown(): Promise<void> {
    if (this.#shutdown) {
      this.#shutdown.cut();
      return this.#shutdown.promise;
    }
    let cut!: () => void;
    const cutP = new Promise<void>((r) => (cut = r));
    const run = async () => {
      const timeoutMs = this.config.shutdownTimeoutMs;
      this.#web?.shuttingDown();
      this.#server.stopAccepting();
      await this.#link.stop();
      const end = this.log.endOffset;
      this.#logger.info({ offset: end, replicas: this.#downstream.sessions.size, timeoutMs }, 'shutting down: waiting for replicas to acknowledge the stream');
      const started = Date.now();
      const behind = await this.#downstream.flush(started + timeoutMs, cutP);
      if (behind.length > 0) {
        this.#logger.warn(
          { limit: 'shutdown-timeout', offset: end, behind: behind.map((r) => ({ ackOffset: r.ackOffset, offset: r.offset })) },
          'replicas did not acknowledge the whole stream before the shutdown deadline',
        );
      } else {
        this.#logger.info({ offset: end, ms: Date.now() - started }, 'replicas hold the whole stream');
      }
      await this.close();
    };
    this.#shutdown = { promise: run(), cut };
    return this.#shutdown.promise;
  }

  async close(): Promise<void> {
    if (this.#diskTimer) clearInterval(this.#diskTimer);
    this.#sentinel?.stop();
    this.#fetch?.socket?.destroy();
    await this.#link.stop();
    this.#downstream.close();
    await this.#web?.close();
    await this.#server.close();
    await this.log.disk?.close();
    if (this.#hasHistory) await this.#persistState();
  }

  /**
   * Picks up where a previous run stopped: the replication ids and the disk log (segments checked, a torn tail cut
   * back), and the snapshot when it belongs to that history. Without a usable disk log, the snapshot alone
   * still lets upstream continue us from its offset.
   */
  async #recover(): Promise<void> {
    const recovered = await this.store.recover();
    const state = await readState(this.config.dir);
    if (this.config.log.disk > 0) {
      const disk = await DiskLog.open({
        dir: join(this.config.dir, 'log'),
        maxBytes: this.config.log.disk,
        segmentBytes: Math.max(64 * 1024, Math.min(64 * 1024 * 1024, Math.floor(this.config.log.disk / 8))),
        logger: this.#logger.child({ component: 'disk-log' }),
        // A history starts right after its snapshot: a command boundary even if the index missed a segment.
        knownBoundaries: recovered && state?.snapshot?.offset === recovered.offset ? [recovered.offset] : [],
      });
      this.log.attachDisk(disk);
      disk.onOverLimit = () => void this.#enforceDiskLimit();
      if (state && !disk.empty) {
        this.ids.replid = state.replid;
        this.ids.replid2 = state.replid2;
        this.ids.secondReplOffset = state.secondReplOffset;
        this.#epoch = state.epoch;
        this.log.reset(disk.endOffset);
        this.#hasHistory = true;
        const snapOk = recovered && state.snapshot && recovered.replid === state.snapshot.replid && recovered.offset === state.snapshot.offset;
        this.#snapshotEpoch = snapOk && state.snapshot!.epoch === state.epoch ? this.#epoch : -1;
        this.#logger.info(
          { replid: this.ids.replid, replid2: this.ids.replid2, firstOffset: this.log.firstOffset, offset: this.log.endOffset, snapshotOffset: snapOk ? recovered.offset : null },
          'replication log recovered',
        );
        return;
      }
    }
    if (recovered) {
      // Resume the history the snapshot belongs to: upstream can continue us from its offset.
      this.ids.reset(recovered.replid);
      if (state && state.replid === recovered.replid) {
        this.ids.replid2 = state.replid2;
        this.ids.secondReplOffset = state.secondReplOffset;
      }
      await this.log.resetHistory(recovered.offset);
      this.#hasHistory = true;
      this.#snapshotEpoch = this.#epoch;
      this.#logger.info({ replid: recovered.replid, offset: recovered.offset, bytes: recovered.size }, 'snapshot recovered');
    }
  }

  /** replid, replid2, second_repl_offset and which snapshot belongs to which history: temp file, fsync, rename. */
  async #persistState(): Promise<void> {
    const snap = this.store.current;
    const state: PersistedState = {
      replid: this.ids.replid,
      replid2: this.ids.replid2,
      secondReplOffset: this.ids.secondReplOffset,
      epoch: this.#epoch,
      snapshot: snap ? { replid: snap.replid, offset: snap.offset, epoch: this.#snapshotEpoch } : null,
    };
    try {
      await writeState(this.config.dir, state);
    } catch (err) {
      this.#logger.error({ err }, 'could not persist replication state');
    }
  }

  /**
   * Keeps the disk log under log.disk. Dropping the segment that holds the byte after the snapshot would leave
   * no consistent full sync, so a fresh snapshot is fetched first (started a segment early); the drop waits for it
   * while the overshoot is within one segment.
   */
  async #enforceDiskLimit(): Promise<void> {
    const disk = this.log.disk;
    if (!disk || this.#dropping) return;
    this.#dropping = true;
    try {
      const segBytes = Math.max(64 * 1024, Math.min(64 * 1024 * 1024, Math.floor(this.config.log.disk / 8)));
      for (;;) {
        const oldest = disk.oldestSegment;
        if (!oldest || disk.segmentCount < 2) return;
        const snap = this.usableSnapshot();
        const needsOldest = snap !== null && snap.offset + 1 <= oldest.end;
        if (needsOldest && disk.size > this.config.log.disk - segBytes) this.#refreshSnapshot();
        if (disk.overLimit === 0) return;
        if (needsOldest && disk.overLimit < segBytes && this.#fetch !== null) return;
        this.#logger.debug({ bytes: disk.size, overLimit: disk.overLimit, oldest, needsOldest }, 'dropping the oldest log segment');
        if (!(await disk.dropOldest())) return;
        this.log.trim();
      }
    } finally {
      this.#dropping = false;
    }
  }

  /** Subscribe to every command seen in the upstream stream (turns on full argument decoding). */
  onCommand(fn: (cmd: ScannedCommand) => void): () => void {
    this.#commandListeners.add(fn);
    this.#link.decodeArgs = true;
    return () => {
      this.#commandListeners.delete(fn);
      this.#link.decodeArgs = this.#commandListeners.size > 0;
    };
  }

  usableSnapshot(): SnapshotMeta | null {
    const m = this.store.current;
    if (!m || this.#snapshotEpoch !== this.#epoch || !this.log.holds(m.offset + 1)) return null;
    return m;
  }

  status(): RelayStatus {
    const link = this.#link;
    const progress = link.syncProgress;
    const snap = this.store.current;
    const now = Date.now();
    const mem = process.memoryUsage();
    const clientOf = new Map<unknown, ClientConnection>();
    for (const c of this.#server.clients) if (c.replica) clientOf.set(c.replica, c);
    const replicas = [...this.#downstream.sessions].map((s) => {
      const client = clientOf.get(s);
      return {
        id: client?.id ?? 0,
        ip: client?.replconf.ipAddress || client?.ip || '',
        port: client?.replconf.listeningPort ?? 0,
        state: s.state,
        offset: s.offset,
        ackOffset: s.ackOffset,
        lagSeconds: Math.floor((now - s.ackTime) / 1000),
        lagBytes: s.lagBytes,
        version: client?.replconf.version ?? '',
      };
    });
    return {
      version: RELAY_VERSION,
      runId: this.runId,
      pid: process.pid,
      uptimeSeconds: Math.floor((now - this.#startedAt) / 1000),
      tcpPort: this.#port,
      configFile: this.config.configFile ?? '',
      upstream: {
        host: this.#upstreamHost,
        port: this.#upstreamPort,
        state: link.state,
        linkUp: link.state === LinkState.Connected,
        lastIoSecondsAgo: link.lastIoAgoMs < 0 ? -1 : Math.floor(link.lastIoAgoMs / 1000),
        linkDownSinceSeconds: link.state === LinkState.Connected ? 0 : Math.floor((now - this.#linkDownSince) / 1000),
        syncInProgress: progress !== null,
        syncReceivedBytes: progress?.received ?? 0,
        syncTotalBytes: progress?.total ?? null,
        syncLastIoSecondsAgo: link.lastIoAgoMs < 0 ? -1 : Math.floor(link.lastIoAgoMs / 1000),
        fullSyncs: link.stats.fullSyncs,
        partialSyncs: link.stats.partialSyncs,
        bytesIn: link.stats.bytesIn,
        lastError: link.stats.lastError,
      },
      replid: this.ids.replid,
      replid2: this.ids.replid2,
      masterReplOffset: this.log.endOffset,
      secondReplOffset: this.ids.secondReplOffset,
      log: {
        firstOffset: this.log.firstOffset,
        endOffset: this.log.endOffset,
        size: this.log.size,
        limit: this.log.limit,
        memFirstOffset: this.log.memFirstOffset,
        diskBytes: this.log.disk && !this.log.disk.empty ? this.log.disk.size : 0,
        diskLimit: this.config.log.disk,
        diskSegments: this.log.disk?.segmentCount ?? 0,
      },
      snapshot: snap ? { replid: snap.replid, offset: snap.offset, size: snap.size, rdbVersion: snap.rdbVersion, usable: this.usableSnapshot() !== null } : null,
      snapshotRefreshInProgress: this.#fetch !== null,
      connectedClients: this.#server.clients.size,
      maxClients: this.config.listen.maxClients,
      replicas,
      stats: { ...this.stats },
      memory: { rss: mem.rss, heapUsed: mem.heapUsed, external: mem.external },
    };
  }

  #linkHost(): LinkHost {
    return {
      psyncTarget: () => (this.#hasHistory ? { replid: this.ids.replid, offset: this.log.endOffset + 1 } : { replid: '?', offset: -1 }),
      ackOffset: (held) => this.#ackOffset(held),
      masterReplOffset: () => this.log.endOffset,
      tempSnapshotPath: () => this.store.tempPath(),
      discardTemp: (p) => this.store.discard(p),
      commitFullSync: async (tempPath, replid, offset) => {
        const id = replid ?? randomReplid();
        await this.store.commit(tempPath, { replid: id, offset });
        // No full sync is served across the awaits below: the new snapshot is not usable (epoch ahead of
        // snapshotEpoch) until the ids and the log have switched to its history, all in one synchronous step.
        this.#epoch++;
        this.#snapshotPendingAt = null;
        this.#ackFloor = 0;
        this.#lastAckSent = -1;
        await this.log.resetHistory(offset);
        this.ids.reset(id);
        this.#snapshotEpoch = this.#epoch;
        this.#hasHistory = true;
        // Replicas hold the previous history; they reconnect and PSYNC against the new one.
        this.#downstream.disconnectAll('upstream full resync: new history');
        this.#downstream.snapshotReady();
        await this.#persistState();
      },
      continued: (replid) => {
        if (replid !== null && replid !== this.ids.replid) {
          this.#logger.info({ replid, replid2: this.ids.replid, offset: this.log.endOffset }, 'upstream has a new replid, shifting ids');
          this.ids.shift(replid, this.log.endOffset);
          void this.#persistState();
          // Like Redis: replicas must learn the new id; they come back with the old one and continue via replid2.
          this.#downstream.disconnectAll('replid changed');
        }
      },
      readStream: (offset) => (offset >= this.log.memFirstOffset && this.log.holds(offset) ? this.log.read(offset) : null),
      appendStream: (chunk, boundary) => {
        this.log.append(chunk, boundary);
        if (this.#snapshotPendingAt !== null && this.log.endOffset >= this.#snapshotPendingAt) {
          this.#snapshotPendingAt = null;
          this.#downstream.snapshotReady();
        }
      },
      commandSeen: (cmd) => {
        const name = cmd.args[0]?.toString('latin1').toLowerCase();
        if (name) this.stats.streamCommands.set(name, (this.stats.streamCommands.get(name) ?? 0) + 1);
        for (const fn of this.#commandListeners) fn(cmd);
      },
    };
  }

  /**
   * replication.ack-policy: what to acknowledge upstream, never more than `held` (the offset the relay holds, or
   * for a GETACK the offset before it). min/quorum acknowledge what the online replicas hold; with too few of
   * them online, nothing new (the last offset acknowledged in this history), so WAIT counts only what replicas hold.
   */
  #ackOffset(held: number): number {
    const policy = this.config.replication.ackPolicy;
    if (policy.kind === 'self') return held;
    const v = policyAckOffset(policy, this.#downstream.ackOffsets());
    if (v !== null && v > this.#ackFloor) this.#ackFloor = v;
    const ack = Math.min(held, this.#ackFloor);
    this.#lastAckSent = ack;
    return ack;
  }

  /**
   * A downstream replica acknowledged more: under min/quorum, tell upstream now so WAIT returns promptly. Checked
   * once per turn of the event loop, however many replicas acknowledged in it.
   */
  #replicaAcked(): void {
    const policy = this.config.replication.ackPolicy;
    if (policy.kind === 'self' || this.#ackCheckQueued) return;
    this.#ackCheckQueued = true;
    setImmediate(() => {
      this.#ackCheckQueued = false;
      if (this.#link.state !== LinkState.Connected) return;
      const v = policyAckOffset(policy, this.#downstream.ackOffsets());
      if (v !== null && Math.min(v, this.log.endOffset) > this.#lastAckSent) this.#link.ackNow();
    });
  }

  #replicationSource(): ReplicationSource {
    return {
      ids: this.ids,
      log: this.log,
      snapshotPath: this.store.path,
      usableSnapshot: () => this.usableSnapshot(),
      needSnapshot: () => this.#refreshSnapshot(),
    };
  }

  /** Fetch a fresh snapshot on a second upstream connection, leaving the streaming link alone. */
  #refreshSnapshot(): void {
    const host = this.#upstreamHost;
    if (this.#fetch || host === null || !this.#hasHistory) return;
    // A full sync on the main link brings a snapshot of its own.
    if (this.#link.state === LinkState.Transfer || this.#link.state === LinkState.Connecting) return;
    if (Date.now() < this.#fetchNotBefore || this.#snapshotPendingAt !== null) return;
    const epoch = this.#epoch;
    const temp = this.store.tempPath();
    const pin: LogReader & { offset: number } = { offset: this.log.endOffset };
    const fetch = { socket: null as import('node:net').Socket | null, pin };
    this.#fetch = fetch;
    const logger = this.#logger.child({ component: 'snapshot-fetch' });
    logger.info({ replid: this.ids.replid, firstOffset: this.log.firstOffset, endOffset: this.log.endOffset }, 'snapshot stale, fetching a fresh one');
    fetchSnapshot(
      {
        host,
        port: this.#upstreamPort,
        user: this.config.upstream.user,
        password: this.config.upstream.password,
        tls: this.config.upstream.tls,
        listeningPort: announcedPort(this.config.listen, this.config.upstream.tls),
        connectTimeoutMs: this.config.upstream.connectTimeoutMs,
        timeoutMs: this.config.upstream.timeoutMs,
        log: logger,
      },
      temp,
      (snap) => {
        // Keep the stream from the new snapshot's offset while its RDB arrives.
        pin.offset = Math.max(this.log.firstOffset - 1, Math.min(snap.offset, this.log.endOffset));
        this.log.addReader(pin);
      },
      fetch,
    )
      .then(async (snap) => {
        if (epoch !== this.#epoch || snap.replid !== this.ids.replid || snap.offset + 1 < this.log.firstOffset) {
          logger.warn({ replid: snap.replid, offset: snap.offset, ours: this.ids.replid }, 'fetched snapshot does not fit our history, discarded');
          await this.store.discard(temp);
          this.#fetchNotBefore = Date.now() + 1000;
          return;
        }
        await this.store.commit(temp, { replid: snap.replid, offset: snap.offset });
        this.#snapshotEpoch = epoch;
        await this.#persistState();
        logger.info({ replid: snap.replid, offset: snap.offset }, 'fresh snapshot committed');
        if (this.log.endOffset >= snap.offset) this.#downstream.snapshotReady();
        else this.#snapshotPendingAt = snap.offset;
      })
      .catch(async (err: Error) => {
        logger.warn({ err }, 'snapshot fetch failed');
        this.#fetchNotBefore = Date.now() + 1000;
        await this.store.discard(temp);
      })
      .finally(() => {
        this.log.removeReader(pin);
        if (this.#fetch === fetch) this.#fetch = null;
      });
  }

  #commandHost(): CommandHost {
    return {
      password: this.config.listen.password,
      users: this.config.listen.users,
      info: (sections) => formatInfo(this.status(), sections, REDIS_VERSION),
      role: () => {
        const state = this.#link.state;
        const role =
          state === LinkState.Connected ? 'connected' : state === LinkState.Transfer ? 'sync' : state === LinkState.Connecting ? 'connecting' : 'connect';
        return arrayReply([
          bulkReply('slave'),
          bulkReply(this.#upstreamHost ?? '?'),
          integerReply(this.#upstreamPort),
          bulkReply(role),
          integerReply(this.log.endOffset),
        ]);
      },
      startSync: (client, replid, offset) => this.#downstream.startSync(client, replid, offset),
      replicaOf: (host, port) => {
        this.#follow(host, port, 'REPLICAOF');
        return null;
      },
      clients: (): Iterable<ClientConnection> => this.#server.clients,
      configRewrite: () => this.#configRewrite(),
    };
  }

  /**
   * Follow another upstream (REPLICAOF, or the Sentinels naming a new master): the link PSYNCs it with our replid
   * and offset + 1. The same address again is a no-op, as in Redis ("Already connected to specified master"):
   * Sentinel's SLAVEOF and its +switch-master event both name the new master.
   */
  #follow(host: string, port: number, how: string): void {
    if (host === this.#upstreamHost && port === this.#upstreamPort) return;
    this.#logger.info({ from: `${this.#upstreamHost}:${this.#upstreamPort}`, to: `${host}:${port}`, how }, 'following a new upstream');
    this.#upstreamHost = host;
    this.#upstreamPort = port;
    this.#fetch?.socket?.destroy();
    this.#link.setUpstream(host, port);
  }

  /** CONFIG REWRITE (Sentinel sends it after SLAVEOF): persist the current upstream in the config file. */
  #configRewrite(): string | null {
    const file = this.config.configFile;
    if (!file) {
      this.#logger.info('CONFIG REWRITE: no config file, nothing persisted');
      return null;
    }
    try {
      rewriteUpstream(file, this.#upstreamHost, this.#upstreamPort);
      this.#logger.info({ file, upstream: `${this.#upstreamHost}:${this.#upstreamPort}` }, 'CONFIG REWRITE: upstream persisted');
      return null;
    } catch (err) {
      this.#logger.error({ err, file }, 'CONFIG REWRITE failed');
      return `ERR Rewriting config file: ${(err as Error).message}`;
    }
  }
}
