import type { RelayConfig } from '../config/types.js';
import type { History } from '../backlog/history.js';
import type { ClientConnection } from '../downstream/client.js';
import type { ReplicaSession } from '../downstream/replica-session.js';
import { LinkState, type UpstreamLink } from '../upstream/link.js';
import type { RelayStats } from './stats.js';
import type { RelayStatus, ReplicaStatus } from './status.js';

/** What the status is read from: the relay's modules (their state) and its stats model (every counter). */
export interface StatusSources {
  readonly version: string;
  readonly runId: string;
  readonly config: RelayConfig;
  readonly link: Pick<UpstreamLink, 'state' | 'host' | 'port' | 'lastIoAgoMs' | 'syncProgress' | 'relayChain' | 'on' | 'waitingForRoom' | 'diskRefusedBy'>;
  readonly history: Pick<History, 'usableSnapshot' | 'newestSnapshot' | 'diskStatus' | 'diskLimit' | 'ids' | 'log' | 'store'>;
  readonly refresher: { readonly inProgress: boolean; readonly waitingForRoom: number; readonly diskRefusedBy: string | null };
  readonly clients: () => ReadonlySet<ClientConnection>;
  readonly sessions: () => ReadonlySet<ReplicaSession>;
  /** Replicas waiting for a full sync (a snapshot, or their turn), and snapshot transfers in progress. */
  readonly fullSyncs: () => { readonly waiting: number; readonly active: number };
  readonly stats: RelayStats;
  /** The RESP port, once listening. */
  readonly port: () => number;
  /** The /stream figures only the web server knows; null when it is off. */
  readonly web: () => { jsonSubscribers: number; rawSubscribers: number; decoding: boolean; bufferedBytes: number } | null;
}

/** Builds the RelayStatus that INFO formats, /status serves and /metrics exports. */
export class StatusBuilder {
  readonly #src: StatusSources;
  readonly #startedAt = Date.now();
  #linkDownSince = Date.now();

  constructor(src: StatusSources) {
    this.#src = src;
    src.link.on('state', (_to: LinkState, from: LinkState) => {
      if (from === LinkState.Connected) this.#linkDownSince = Date.now();
    });
  }

  /** How long the upstream has been out of reach (ms): 0 while it streams or sends a snapshot. */
  upstreamDownMs(): number {
    const state = this.#src.link.state;
    return state === LinkState.Connected || state === LinkState.Transfer ? 0 : Date.now() - this.#linkDownSince;
  }

  build(): RelayStatus {
    const { link, history, config } = this.#src;
    const counters = this.#src.stats.snapshot();
    const progress = link.syncProgress;
    // The snapshot a full sync would be served from; else the newest held (not usable: the log dropped its next byte).
    const usable = history.usableSnapshot();
    const shown = usable ?? history.newestSnapshot();
    const disk = history.diskStatus();
    const log = history.log;
    const now = Date.now();
    const mem = process.memoryUsage();
    const clients = this.#src.clients();
    const web = this.#src.web();
    return {
      version: this.#src.version,
      runId: this.#src.runId,
      pid: process.pid,
      uptimeSeconds: Math.floor((now - this.#startedAt) / 1000),
      tcpPort: this.#src.port(),
      configFile: config.configFile ?? '',
      upstream: {
        host: link.host,
        port: link.port,
        state: link.state,
        linkUp: link.state === LinkState.Connected,
        lastIoSecondsAgo: link.lastIoAgoMs < 0 ? -1 : Math.floor(link.lastIoAgoMs / 1000),
        linkDownSinceSeconds: link.state === LinkState.Connected ? 0 : Math.floor((now - this.#linkDownSince) / 1000),
        syncInProgress: progress !== null,
        syncReceivedBytes: progress?.received ?? 0,
        syncTotalBytes: progress?.total ?? null,
        syncLastIoSecondsAgo: link.lastIoAgoMs < 0 ? -1 : Math.floor(link.lastIoAgoMs / 1000),
        relayChain: link.relayChain,
        ...counters.upstream,
      },
      replid: history.ids.replid,
      replid2: history.ids.replid2,
      masterReplOffset: log.endOffset,
      secondReplOffset: history.ids.secondReplOffset,
      log: {
        firstOffset: log.firstOffset,
        endOffset: log.endOffset,
        size: log.size,
        limit: log.limit,
        memFirstOffset: log.memFirstOffset,
        diskBytes: log.disk?.active ? log.disk.size : 0,
        diskLimit: history.diskLimit,
        diskSegments: log.disk?.segmentCount ?? 0,
        diskState: disk.state,
        diskDirect: disk.direct,
        diskProblem: disk.cause,
        diskProblemSinceSeconds: disk.since > 0 ? Math.floor((now - disk.since) / 1000) : 0,
        diskPendingBytes: disk.pending,
        diskWriteErrors: counters.disk.writeErrors,
        diskDetaches: counters.disk.detaches,
        diskReadErrors: counters.disk.readErrors,
        diskReadWaits: counters.disk.readWaits,
        diskReadWaitSeconds: counters.disk.readWaitMs / 1000,
        blocksAllocated: log.blockStats.allocated,
        blocksReused: log.blockStats.reused,
        blocksDiscarded: log.blockStats.discarded,
        blocksPrefaulted: log.blockStats.prefaulted,
      },
      snapshot: shown ? { replid: shown.replid, offset: shown.offset, size: shown.size, rdbVersion: shown.rdbVersion, usable: shown === usable } : null,
      snapshotLeases: history.store.leases,
      snapshotRefreshInProgress: this.#src.refresher.inProgress,
      snapshotWaitingForRoom: Math.max(this.#src.refresher.waitingForRoom, this.#src.link.waitingForRoom),
      snapshotDiskRefused: this.#src.refresher.diskRefusedBy ?? this.#src.link.diskRefusedBy,
      snapshotRefreshes: counters.snapshotRefreshes.started,
      snapshotRefreshFailures: counters.snapshotRefreshes.failed,
      snapshotsGivenUp: counters.snapshotsGivenUp,
      fullSyncsWaiting: this.#src.fullSyncs().waiting,
      fullSyncsActive: this.#src.fullSyncs().active,
      connectedClients: clients.size,
      maxClients: config.listen.maxClients,
      replicas: this.#replicas(clients, now),
      stats: counters.downstream,
      web: { jsonSubscribers: 0, rawSubscribers: 0, decoding: false, bufferedBytes: 0, ...web, ...counters.web },
      memory: { rss: mem.rss, heapUsed: mem.heapUsed, external: mem.external },
    };
  }

  /** One pass over the clients, one over the sessions: no per-replica search (1,000 replicas stay cheap). */
  #replicas(clients: ReadonlySet<ClientConnection>, now: number): ReplicaStatus[] {
    const clientOf = new Map<ReplicaSession, ClientConnection>();
    for (const c of clients) if (c.replica) clientOf.set(c.replica, c);
    return [...this.#src.sessions()].map((s) => {
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
  }
}
