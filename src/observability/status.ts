import type { StatsSnapshot } from './stats.js';

/** A point-in-time picture of the relay: formatted by INFO, served as /status JSON, exported as metrics. */
export interface ReplicaStatus {
  readonly id: number;
  readonly ip: string;
  /** REPLCONF listening-port. */
  readonly port: number;
  readonly state: string;
  /** Last stream byte handed to its socket. */
  readonly offset: number;
  readonly ackOffset: number;
  /** Seconds since its last REPLCONF ACK. */
  readonly lagSeconds: number;
  /** Bytes of stream it has not been sent. */
  readonly lagBytes: number;
  readonly version: string;
}

export interface WebStatus {
  readonly jsonSubscribers: number;
  readonly rawSubscribers: number;
  readonly subscribersTotal: number;
  readonly messagesSent: number;
  readonly bytesSent: number;
  readonly droppedMessages: number;
  readonly slowDisconnects: number;
  readonly refused: StatsSnapshot['web']['refused'];
  /** Stream commands are decoded (a JSON subscriber is connected). */
  readonly decoding: boolean;
  /** Bytes queued in the subscribers' socket buffers. */
  readonly bufferedBytes: number;
}

export interface RelayStatus {
  readonly version: string;
  readonly runId: string;
  readonly pid: number;
  readonly uptimeSeconds: number;
  readonly tcpPort: number;
  readonly configFile: string;
  readonly upstream: {
    readonly host: string | null;
    readonly port: number;
    /** LinkState. */
    readonly state: string;
    readonly linkUp: boolean;
    readonly lastIoSecondsAgo: number;
    readonly linkDownSinceSeconds: number;
    readonly syncInProgress: boolean;
    readonly syncReceivedBytes: number;
    readonly syncTotalBytes: number | null;
    readonly syncLastIoSecondsAgo: number;
    readonly fullSyncs: number;
    readonly partialSyncs: number;
    readonly bytesIn: number;
    readonly lastError: string;
    /** The psync-relays above this one, nearest first, as the upstream named them at the last handshake (INFO relay_chain). */
    readonly relayChain: readonly string[];
  };
  readonly replid: string;
  readonly replid2: string;
  readonly masterReplOffset: number;
  readonly secondReplOffset: number;
  readonly log: {
    /** First byte held, in memory or on disk. */
    readonly firstOffset: number;
    readonly endOffset: number;
    /** Bytes held in memory, and the memory limit (log.memory). */
    readonly size: number;
    readonly limit: number;
    readonly memFirstOffset: number;
    /** Disk log: bytes in segment files, the limit (log.disk, 0 = off), segment count. */
    readonly diskBytes: number;
    readonly diskLimit: number;
    readonly diskSegments: number;
    /** ok | failing | detached | closed | off (no disk log). */
    readonly diskState: string;
    /** Whether the disk log writes with O_DIRECT (log.disk-direct, where the filesystem and memory allow it). */
    readonly diskDirect: boolean;
    /** Why the disk log is failing or detached (null when ok). */
    readonly diskProblem: string | null;
    readonly diskProblemSinceSeconds: number;
    /** Stream bytes in memory the disk has not taken yet. */
    readonly diskPendingBytes: number;
    readonly diskWriteErrors: number;
    /** Times the disk history was given up (the disk fell past log.disk-queue). */
    readonly diskDetaches: number;
    /** Disk log segments that could not be read back (given up with the older ones; replicas there full-sync). */
    readonly diskReadErrors: number;
    /** Bursts faster than the disk that held the upstream reads back (DiskWait), and for how long in all (s). */
    readonly diskReadWaits: number;
    readonly diskReadWaitSeconds: number;
    /** Read blocks the upstream socket read into: newly allocated, reused once dropped, left to the garbage collector. */
    readonly blocksAllocated: number;
    readonly blocksReused: number;
    readonly blocksDiscarded: number;
    /** Read blocks made at start with their pages written (log.memory-prefault). */
    readonly blocksPrefaulted: number;
  };
  /** The snapshot a full sync is served from (usable), else the newest one held (not usable); null when none. */
  readonly snapshot: { readonly replid: string; readonly offset: number; readonly size: number; readonly rdbVersion: number; readonly usable: boolean } | null;
  /** Snapshot files held open by full syncs and point-in-time listeners (leases). */
  readonly snapshotLeases: number;
  readonly snapshotRefreshInProgress: boolean;
  /**
   * Bytes of room the next RDB to disk waits for (a snapshot fetch, or the relay's own full sync from upstream: the
   * last one ran out of room); 0 when none.
   */
  readonly snapshotWaitingForRoom: number;
  /**
   * The error code (EROFS, EACCES, EPERM) the disk refused the last RDB write with, while it still refuses: the next
   * snapshot fetch or full sync from upstream waits for it to take writes. Null when none.
   */
  readonly snapshotDiskRefused: string | null;
  /** Snapshot fetches from upstream started (each a fork on the master), and those that failed. */
  readonly snapshotRefreshes: number;
  /** Replicas waiting for a full sync (for a snapshot, or their turn under replication.full-sync-concurrency). */
  readonly fullSyncsWaiting: number;
  /** Snapshot transfers to replicas in progress. */
  readonly fullSyncsActive: number;
  readonly snapshotRefreshFailures: number;
  /** Held snapshots given up: unreadable, or their bytes no longer matching their CRC-64 (damaged on disk). */
  readonly snapshotsGivenUp: number;
  readonly connectedClients: number;
  readonly maxClients: number;
  readonly replicas: ReadonlyArray<ReplicaStatus>;
  /** The downstream counters (stats.ts). */
  readonly stats: StatsSnapshot['downstream'];
  /** The /stream WebSocket figures (zeros when the web server is off). */
  readonly web: WebStatus;
  readonly memory: { readonly rss: number; readonly heapUsed: number; readonly external: number };
}
