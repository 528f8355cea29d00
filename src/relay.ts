import { randomBytes } from 'node:crypto';
import type { Logger } from './log.js';
import type { RelayConfig } from './config/types.js';
import type { SnapshotMeta } from './backlog/snapshot-store.js';
import { History } from './backlog/history.js';
import { SnapshotRefresher } from './snapshot-refresher.js';
import { UpstreamLink, LinkState, type LinkHost } from './upstream/link.js';
import { turnRead } from './upstream/read-budget.js';
import { SentinelConnector } from './upstream/sentinel-connector.js';
import { announcedPort, certificateWarnings, checkClientTls, expiryWarning, sideLinkTls, tlsWarnings } from './tls.js';
import { loadListenerTls } from './downstream/listener-tls.js';
import { TlsFileError } from './errors.js';
import type { ScannedCommand } from './resp/stream-scanner.js';
import { ReplicaServer } from './downstream/server.js';
import { listenWithinFdLimit } from './downstream/fd-limit.js';
import { DownstreamReplication, type ReplicationSource } from './downstream/replication.js';
import { AckTracker, formatAckPolicy } from './downstream/ack-policy.js';
import { REDIS_VERSION, type CommandHost } from './downstream/commands.js';
import { PubSub } from './downstream/pubsub.js';
import type { ClientConnection } from './downstream/client.js';
import { RelayStats } from './observability/stats.js';
import { StatusBuilder } from './observability/status-builder.js';
import { Telemetry } from './observability/telemetry.js';
import { formatInfo, infoStatsBase, statsSince, type InfoStatsBase } from './observability/info.js';
import type { RelayStatus } from './observability/status.js';
import { WebServer, type WebSource } from './web/server.js';
import type { PitrApi } from './pitr/api.js';
import { ClientMemory } from './downstream/client-memory.js';
import { PitrService } from './pitr/service.js';
import { crc32Implementation } from './backlog/crc32.js';
import { removeRewriteTemps, rewriteUpstream } from './config/rewrite.js';
import { DataDirLock } from './data-dir-lock.js';

export const RELAY_VERSION = '0.1.0';

/** log.memory-prefault makes at most this much at start (under a second on a VM); a larger tail fills as it comes. */
const PREFAULT_MAX = 256 * 1024 * 1024;

/**
 * The composition root: the only module that knows every other one. Wires the upstream link to the
 * backlog (log, ids, snapshot) and the backlog to the downstream server.
 */
export class Relay {
  readonly config: RelayConfig;
  readonly runId = randomBytes(20).toString('hex');
  readonly #telemetry = new Telemetry(this.runId);
  readonly #stats = new RelayStats(this.#telemetry);
  readonly #status: StatusBuilder;
  readonly #history: History;
  #refresher: SnapshotRefresher;
  #logger: Logger;
  #link: UpstreamLink;
  #downstream: DownstreamReplication;
  #server: ReplicaServer;
  #port = 0;
  #commandListeners = new Set<(cmd: ScannedCommand) => void>();
  #sentinel: SentinelConnector | null = null;
  #limitTimer: NodeJS.Timeout | null = null;
  #lock: DataDirLock | null = null;
  /** What INFO's stats section counts from (CONFIG RESETSTAT); null: from the start. */
  #infoBase: InfoStatsBase | null = null;
  #web: WebServer | null = null;
  #acks: AckTracker;
  #pitr: PitrService;
  #shutdown: { promise: Promise<void>; cut: () => void } | null = null;

  constructor(config: RelayConfig, logger: Logger) {
    this.config = config;
    this.#logger = logger;
    // listen.max-clients as the open files limit allows (fd-limit.ts): what the listeners and INFO use.
    const listen = listenWithinFdLimit(config, logger);
    this.#history = new History({
      dir: config.dir,
      memory: config.log.memory,
      disk: config.log.disk,
      diskQueue: config.log.diskQueue,
      diskDirect: config.log.diskDirect,
      refreshHold: config.log.refreshHold,
      keepSnapshots: config.history.keepSnapshots,
      logger,
      telemetry: this.#telemetry,
    });

    this.#link = new UpstreamLink(
      {
        ...config.upstream,
        // Sentinel mode: no address until the Sentinels name the master. The link owns the address from here on.
        host: config.upstream.sentinel ? null : config.upstream.host,
        listeningPort: announcedPort(config.listen, config.upstream.tls),
        announceIp: config.listen.announceIp,
        compression: config.upstream.compression ? config.upstream.compressionLevel : null,
        relayId: this.runId,
        turnRead: () => turnRead(config.log, this.#history.log.disk?.active ?? false),
        readWait: () => this.#history.log.disk?.readWait() ?? null,
        log: logger.child({ component: 'upstream' }),
        telemetry: this.#telemetry,
      },
      this.#linkHost(),
    );
    this.#acks = new AckTracker(config.replication.ackPolicy, {
      acks: () => this.#downstream.ackOffsets(),
      aofAcks: () => this.#downstream.aofAckOffsets(),
      endOffset: () => this.#history.log.endOffset,
      durableOffset: () => {
        const disk = this.#history.log.disk;
        return disk !== null && disk.active ? disk.writtenOffset : this.#history.log.endOffset;
      },
      writeDiskNow: () => this.#history.log.disk?.writeNow(),
      linkUp: () => this.#link.state === LinkState.Connected,
      ackNow: () => this.#link.ackNow(),
    });
    this.#history.log.onDiskWritten(() => this.#acks.replicaAcked());
    this.#downstream = new DownstreamReplication({
      source: this.#replicationSource(),
      telemetry: this.#telemetry,
      logger: logger.child({ component: 'downstream' }),
      maxLag: config.replication.replicaMaxLag,
      softLag: config.replication.replicaSoftLag,
      softLagMs: config.replication.replicaSoftMs,
      replicaTimeoutMs: config.replication.replicaTimeoutMs,
      aheadWaitMs: config.replication.aheadWaitMs,
      fullSyncConcurrency: config.replication.fullSyncConcurrency,
      fullSyncRate: config.replication.fullSyncRate,
      onAck: () => this.#acks.replicaAcked(),
      compression: config.replication.compression,
      rdbOnlyDownWaitMs: config.upstream.connectTimeoutMs,
    });
    if (config.upstream.sentinel) {
      const sc = config.upstream.sentinel;
      this.#sentinel = new SentinelConnector({
        ...sc,
        tls: sc.tls ? sideLinkTls(config.upstream.tls) : null,
        connectTimeoutMs: config.upstream.connectTimeoutMs,
        backoffMinMs: config.upstream.backoffMinMs,
        backoffMaxMs: config.upstream.backoffMaxMs,
        log: logger.child({ component: 'sentinel' }),
      });
      this.#sentinel.on('master', (host: string, port: number) => this.#follow(host, port, 'sentinel'));
    }
    const clientMemory = new ClientMemory(listen.maxClientsMemory);
    this.#pitr = new PitrService({
      history: this.#history,
      listen,
      clientMemory,
      logger, // each listener's lines say component pitr (a child here too wrote the key twice)
      telemetry: this.#telemetry,
      idleTimeoutMs: config.history.pitrIdleTimeoutMs,
      maxListeners: config.history.pitrMaxListeners,
      replicaTimeoutMs: config.replication.replicaTimeoutMs,
      maxLag: config.replication.replicaMaxLag,
    });
    this.#server = new ReplicaServer(listen, logger.child({ component: 'server' }), this.#telemetry, this.#commandHost(), { memory: clientMemory });
    this.#refresher = new SnapshotRefresher({
      history: this.#history,
      logger: logger.child({ component: 'snapshot-fetch' }),
      telemetry: this.#telemetry,
      minIntervalMs: config.replication.snapshotRefreshMinIntervalMs,
      intervalMs: config.history.snapshotIntervalMs,
      memoryCap: config.replication.fullSyncMemory,
      onMemorySnapshot: (snap) => this.#downstream.memorySnapshot(snap),
      linkReady: () => this.#link.state !== LinkState.Transfer && this.#link.state !== LinkState.Connecting,
      source: () =>
        this.#link.host === null
          ? null
          : {
              host: this.#link.host,
              port: this.#link.port,
              user: config.upstream.user,
              password: config.upstream.password,
              tls: config.upstream.tls,
              listeningPort: announcedPort(config.listen, config.upstream.tls),
              connectTimeoutMs: config.upstream.connectTimeoutMs,
              timeoutMs: config.upstream.timeoutMs,
              compression: config.upstream.compression ? config.upstream.compressionLevel : null,
            },
      snapshotSource: () => {
        const sc = config.upstream.snapshotSource;
        return sc === null
          ? null
          : {
              host: sc.host,
              port: sc.port,
              user: sc.user,
              password: sc.password,
              tls: sc.tls ? sideLinkTls(config.upstream.tls) : null,
              listeningPort: announcedPort(config.listen, config.upstream.tls),
              connectTimeoutMs: config.upstream.connectTimeoutMs,
              timeoutMs: config.upstream.timeoutMs,
            };
      },
      onUsable: () => this.#downstream.snapshotReady(),
      onFailed: (upTo, reason) => this.#downstream.rdbOnlyFetchFailed(upTo, reason),
    });
    this.#status = new StatusBuilder({
      version: RELAY_VERSION,
      runId: this.runId,
      config: listen === config.listen ? config : { ...config, listen },
      link: this.#link,
      history: this.#history,
      refresher: this.#refresher,
      clients: () => this.#server.clients,
      sessions: () => this.#downstream.sessions,
      fullSyncs: () => ({ waiting: this.#downstream.fullSyncsWaiting, active: this.#downstream.fullSyncsActive }),
      stats: this.#stats,
      port: () => this.#port,
      web: () => this.#web?.gauges() ?? null,
    });
  }

  get port(): number {
    return this.#port;
  }
  /** Point-in-time replicas (RELAY PITR, RELAY HISTORY, the web API). */
  get pitr(): PitrApi {
    return this.#pitr;
  }
  /** The web server's port; 0 when it is off (web.port 0). */
  get webPort(): number {
    return this.#web?.port ?? 0;
  }

  async start(): Promise<void> {
    if (this.config.upstream.tls !== null) checkClientTls(this.config.upstream.tls);
    this.#lock = await DataDirLock.acquire(this.config.dir, {
      runId: this.runId,
      logger: this.#logger,
      onLost: (owner) => this.#lockLost(owner),
      // A previous relay still shutting down gracefully: at most its shutdown-timeout, and a margin to exit.
      waitMs: this.config.shutdownTimeoutMs + 5000,
    });
    try {
      await this.#start();
    } catch (err) {
      // What did start stops before the lock goes: a relay that failed to start (its web port taken after its RESP
      // port listened) went on answering replicas from a dir another relay could now take.
      if (this.#limitTimer) clearInterval(this.#limitTimer);
      await this.#web?.close();
      await this.#server.close();
      await this.#lock.release();
      throw err;
    }
  }

  /**
   * Another process took the data directory over (this relay's loop stalled past the lock's stale time): every write
   * from here on could land in its files. Stop now, without the graceful shutdown, which writes the state file.
   */
  #lockLost(owner: string): void {
    this.#logger.fatal({ dir: this.config.dir, owner }, 'data directory taken over by another relay: stopping');
    this.onFatal();
  }

  /**
   * What a fatal fault does. main.ts exits the process at once. The default, for an embedded relay, is close(),
   * which also flushes the disk log and writes the state file: set this to stop without them.
   */
  onFatal: () => void = () => void this.close();

  async #start(): Promise<void> {
    await this.#history.recover();
    // The waits for room on the disk a previous run kept are read now, and their files made while there is room:
    // at start, in a directory the relay holds, not at the first failure (the disk full then) or at any later moment.
    void this.#refresher.waitingForRoom;
    void this.#link.waitingForRoom;
    this.#removeRewriteTemps();
    this.#limitTimer = setInterval(() => {
      this.#history.log.settle();
      void this.#history.enforceDiskLimit();
    }, 1000);
    this.#limitTimer.unref();
    // Before listening: once the relay answers, its memory is what it will be (and no client waits on this).
    if (this.config.log.memoryPrefault) {
      const started = performance.now();
      const blocks = this.#history.log.prefault(PREFAULT_MAX);
      if (blocks > 0) this.#logger.info({ blocks, ms: Math.round(performance.now() - started) }, 'memory tail prefaulted (log.memory-prefault)');
    }
    this.#port = await this.#server.listen();
    if (this.config.web.port !== 0) {
      this.#web = new WebServer(this.webSource(), this.config.web, this.#logger.child({ component: 'web' }), this.#telemetry);
      await this.#web.listen();
    }
    this.#logger.info(
      {
        replid: this.#history.ids.replid,
        offset: this.#history.log.endOffset,
        upstream: `${this.#link.host}:${this.#link.port}`,
        ackPolicy: formatAckPolicy(this.config.replication.ackPolicy),
        checksums: crc32Implementation,
      },
      'relay started',
    );
    for (const { key, message } of tlsWarnings(this.config.upstream)) this.#logger.warn({ key }, message);
    for (const { key, notAfter, message } of certificateWarnings(this.config.listen, this.config.upstream)) this.#logger.warn({ key, notAfter }, message);
    this.#link.start();
    this.#sentinel?.start();
  }

  /**
   * SIGHUP: reads listen.tls's files again and serves them to new TLS connections, on the RESP listener and the
   * point-in-time ones (a renewed certificate without a restart, so no replica reconnects); connections already open
   * keep their session. Files that cannot serve (unreadable, malformed, a key of another certificate) leave the
   * previous certificate in service, logged as an error naming the key and the file. Upstream TLS files need no
   * reload (read at each connect: clientTlsOptions); the web server has no TLS. True when a new certificate serves.
   */
  reloadTls(): boolean {
    const cfg = this.config.listen.tls;
    if (cfg === null) {
      this.#logger.info('no listen.tls: no certificate to reload');
      return false;
    }
    try {
      const tls = loadListenerTls(cfg);
      // The listener reads the files itself when it opens: a signal during the start has nothing to swap yet.
      if (!this.#server.setSecureContext(tls)) {
        this.#logger.info('the TLS listener is not open yet: it reads listen.tls as it opens');
        return false;
      }
      const pitrListeners = this.#pitr.setSecureContext(tls);
      const c = tls.certificate;
      const notAfter = new Date(c.validTo).toISOString();
      this.#logger.info({ key: 'listen.tls', subject: c.subject, notAfter, serialNumber: c.serialNumber, fingerprint256: c.fingerprint256, pitrListeners }, 'TLS certificate reloaded: new connections get it');
      // A renewal to a certificate that is itself about to expire must not go unnoticed until the next one.
      const warning = expiryWarning('listen.tls.cert', c);
      if (warning) this.#logger.warn({ key: warning.key, notAfter: warning.notAfter }, warning.message);
      return true;
    } catch (err) {
      const where = err instanceof TlsFileError ? { key: err.path, file: err.file } : { key: 'listen.tls' };
      this.#logger.error({ err, ...where }, 'TLS certificate not reloaded: the previous one stays in service');
      return false;
    }
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
      this.#pitr.closeAll();
      await this.#link.stop();
      const end = this.#history.log.endOffset;
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
    if (this.#limitTimer) clearInterval(this.#limitTimer);
    this.#sentinel?.stop();
    this.#refresher.close();
    this.#pitr.closeAll();
    await this.#link.stop();
    this.#downstream.close();
    await this.#web?.close();
    await this.#server.close();
    await this.#history.close();
    this.#stats.close();
    await this.#lock?.release();
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
    return this.#history.usableSnapshot();
  }

  /** What INFO, /status and /metrics show (observability/status-builder.ts). */
  status(): RelayStatus {
    return this.#status.build();
  }

  #linkHost(): LinkHost {
    const log = this.#history.log;
    return {
      psyncTarget: () => this.#history.psyncTarget(),
      ackOffset: (held) => this.#acks.offsetFor(held),
      aofAckOffset: (ack) => this.#acks.aofOffsetFor(ack),
      masterReplOffset: () => log.endOffset,
      tempSnapshotPath: () => this.#history.store.tempPath(),
      discardTemp: (p) => this.#history.store.discard(p),
      commitFullSync: async (tempPath, replid, offset) => {
        // Replicas hold the previous history: they reconnect and PSYNC against the new one. Those still waiting
        // for a snapshot were told nothing and are served from the new one.
        this.#refresher.abort('new history from upstream');
        this.#acks.reset();
        const committed = this.#history.fullSync(tempPath, replid, offset);
        this.#downstream.newHistory('upstream full resync: new history');
        await committed;
        this.#downstream.snapshotReady();
      },
      continued: async (replid, upstream) => {
        // Like Redis: replicas must learn the new id; they come back with the old one and continue via replid2.
        if (await this.#history.continued(replid, upstream)) this.#downstream.disconnectAll('replid changed');
      },
      cannotResume: (reason) => this.#history.forget(reason),
      transferStarted: (transfer) => {
        // Its RDB needs room: snapshots the log has left behind are of no use meanwhile (History.pruneSnapshots).
        void this.#history.pruneSnapshots();
        this.#downstream.incoming(transfer);
      },
      isSelf: (address, port) => this.#server.hasPeer(address, port),
      isOwnConnection: (remote, local) => this.#server.hasConnection(remote, local),
      relayChainChanged: (chain) => {
        this.#logger.info({ relayChain: chain }, 'the relays above this one changed: relays below reconnect to learn them');
        this.#downstream.disconnectRelays();
      },
      readStream: (offset) => (offset >= log.memFirstOffset && log.holds(offset) ? log.read(offset) : null),
      appendStream: (chunk, boundary) => log.append(chunk, boundary),
      reserveStream: (min, max) => log.reserve(min, max),
      commitStream: (space, n, boundary) => log.commit(space, n, boundary),
      commandSeen: (cmd) => {
        // From the name's bytes: no string per command (without decodeArgs the scanner's args are scratch views).
        const name = cmd.args[0];
        if (name) this.#telemetry.traffic.streamCommand(name);
        // Per command: no iterator over an empty set (there is no listener unless /stream has a subscriber).
        if (this.#commandListeners.size > 0) for (const fn of this.#commandListeners) fn(cmd);
      },
    };
  }

  /** What the web server (/status, /metrics, /stream, /history, /pitr) reads: the status, the log and ids the stream hub tails, point-in-time requests. */
  webSource(): WebSource {
    const history = this.#history;
    return {
      log: history.log,
      ids: history.ids,
      get epoch() {
        return history.epoch;
      },
      onNewHistory: (fn) => history.onNewHistory(fn),
      onCommand: (fn) => this.onCommand(fn),
      usableSnapshot: () => history.usableSnapshot(),
      status: () => this.status(),
      respSlotsFree: () => this.#server.freeSlots,
      pitr: this.pitr,
    };
  }

  #replicationSource(): ReplicationSource {
    return {
      ids: this.#history.ids,
      log: this.#history.log,
      usableSnapshot: () => this.#history.usableSnapshot(),
      lease: (snap) => this.#history.store.lease(snap),
      snapshotFailed: (snap, err) => {
        this.#logger.error({ err, file: snap.path }, 'snapshot unreadable: it is no longer offered');
        this.#telemetry.emit('snapshot.given-up', { reason: 'unreadable', cause: err.message });
        void this.#history.store.remove(snap);
      },
      needSnapshot: (from) => this.#refresher.request(from),
      epoch: () => this.#history.epoch,
      upstreamDownMs: () => this.#status.upstreamDownMs(),
      upstreamFullSync: () => this.#link.fullSyncPending,
    };
  }

  #commandHost(): CommandHost {
    return {
      password: this.config.listen.password,
      users: this.config.listen.users,
      pubsub: new PubSub(),
      info: (sections) => formatInfo(statsSince(this.status(), this.#infoBase), sections, REDIS_VERSION),
      resetStats: () => {
        this.#infoBase = infoStatsBase(this.status());
      },
      role: () => ({ host: this.#link.host, port: this.#link.port, linkState: this.#link.state, offset: this.#history.log.endOffset }),
      startSync: (client, replid, offset) => this.#downstream.startSync(client, replid, offset),
      replicaOf: (host, port) => {
        this.#follow(host, port, 'REPLICAOF');
        return null;
      },
      clients: (): Iterable<ClientConnection> => this.#server.clients,
      configRewrite: () => this.#configRewrite(),
      shutdown: (now) => {
        this.onShutdown(now);
        return null;
      },
      pitr: this.#pitr,
    };
  }

  /**
   * What SHUTDOWN does. main.ts runs SIGTERM's shutdown and exits (NOW: as a second signal). The default, for an
   * embedded relay, is shutdown(), cut short at once for NOW.
   */
  onShutdown: (now: boolean) => void = (now) => {
    void this.shutdown();
    if (now) void this.shutdown();
  };

  /**
   * Follow another upstream (REPLICAOF, or the Sentinels naming a new master): the link PSYNCs it with our replid
   * and offset + 1. The same address again is a no-op, as in Redis ("Already connected to specified master"):
   * Sentinel's SLAVEOF and its +switch-master event both name the new master.
   */
  #follow(host: string, port: number, how: string): void {
    if (host === this.#link.host && port === this.#link.port) return;
    this.#logger.info({ from: `${this.#link.host}:${this.#link.port}`, to: `${host}:${port}`, how }, 'following a new upstream');
    this.#refresher.abort('following a new upstream');
    this.#link.setUpstream(host, port);
  }

  /**
   * The temp files of CONFIG REWRITEs a crash interrupted, beside the config file: removed at start, as the storage
   * modules remove theirs. One that cannot be (a read-only config directory) is only logged: it is never read.
   */
  #removeRewriteTemps(): void {
    const file = this.config.configFile;
    if (!file) return;
    const { removed, failed } = removeRewriteTemps(file);
    if (removed.length > 0) this.#logger.info({ file, removed }, 'unfinished CONFIG REWRITE removed');
    for (const { name, err } of failed) {
      this.#logger.warn({ err, file, temp: name }, 'could not remove an unfinished CONFIG REWRITE; it is not used');
    }
  }

  /** CONFIG REWRITE (Sentinel sends it after SLAVEOF): persist the current upstream in the config file. */
  #configRewrite(): string | null {
    const file = this.config.configFile;
    if (!file) {
      this.#logger.info('CONFIG REWRITE: no config file, nothing persisted');
      return null;
    }
    try {
      rewriteUpstream(file, this.#link.host, this.#link.port);
      this.#logger.info({ file, upstream: `${this.#link.host}:${this.#link.port}` }, 'CONFIG REWRITE: upstream persisted');
      return null;
    } catch (err) {
      this.#logger.error({ err, file }, 'CONFIG REWRITE failed');
      return `ERR Rewriting config file: ${(err as Error).message}`;
    }
  }
}
