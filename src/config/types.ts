/**
 * The validated, frozen configuration. YAML keys are kebab-case (`max-bulk-len`); fields here are camelCase.
 * Sizes are bytes, durations are milliseconds.
 */
export interface UpstreamConfig {
  /** null: no upstream configured yet (the relay waits for REPLICAOF). */
  readonly host: string | null;
  readonly port: number;
  /** masteruser: ACL user for AUTH; null for password-only AUTH. */
  readonly user: string | null;
  /** masterauth. */
  readonly password: string | null;
  /** repl-timeout: a link with no data for this long is dead. */
  readonly timeoutMs: number;
  /** Give up a TCP connect / handshake step after this long. */
  readonly connectTimeoutMs: number;
  /** Reconnect backoff, capped exponential with jitter. */
  readonly backoffMinMs: number;
  readonly backoffMaxMs: number;
  /** Sentinel mode: the Sentinels name the master (host/port above are then not used); null = off. */
  readonly sentinel: SentinelConfig | null;
}

export interface SentinelConfig {
  /** Sentinels to ask, in order (`host:port`, port 26379 when omitted). */
  readonly nodes: ReadonlyArray<{ readonly host: string; readonly port: number }>;
  /** The name the Sentinels monitor the master under (`sentinel monitor <name> ...`). */
  readonly masterName: string;
  /** AUTH password for the Sentinels (their requirepass); null = none. */
  readonly password: string | null;
}

export interface ListenConfig {
  readonly bind: string;
  /** Downstream RESP port. */
  readonly port: number;
  /** requirepass for downstream clients; null = no auth. */
  readonly password: string | null;
  readonly maxClients: number;
  /** proto-max-bulk-len. */
  readonly maxBulkLen: number;
  /** client-query-buffer-limit. */
  readonly maxQueryBuffer: number;
  /** The IP the relay reports for itself in INFO/ROLE; null = the socket's. */
  readonly announceIp: string | null;
}

export interface LogConfig {
  /** In-memory replication log (backlog) size. */
  readonly memory: number;
  /** Disk-backed log size (segment files in `dir/log`); 0 = memory only. */
  readonly disk: number;
}

export interface ReplicationConfig {
  /** A downstream replica further than this behind the log head is disconnected. */
  readonly replicaMaxLag: number;
  /** A downstream replica silent (no REPLCONF ACK) this long is disconnected. */
  readonly replicaTimeoutMs: number;
  /** A replica asking for an offset ahead of the relay (same replid) is held this long for the stream to reach it; 0 = full sync at once. */
  readonly aheadWaitMs: number;
}

export interface WebConfig {
  readonly bind: string;
  /** 0 = web server off. */
  readonly port: number;
  /** Bearer token for /status, /metrics and /stream; null = no auth (only allowed on loopback unless allowInsecure). */
  readonly token: string | null;
  /** Serve a non-loopback bind without a token. */
  readonly allowInsecure: boolean;
  /** Most bytes a /stream subscriber may have buffered before the slowClient policy applies. */
  readonly maxBuffered: number;
  /** What happens to a /stream subscriber past maxBuffered: closed (4008), or its messages dropped and counted. */
  readonly slowClient: 'disconnect' | 'drop';
}

export interface LoggingConfig {
  readonly level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
}

export interface RelayConfig {
  readonly upstream: UpstreamConfig;
  readonly listen: ListenConfig;
  readonly log: LogConfig;
  readonly replication: ReplicationConfig;
  readonly web: WebConfig;
  readonly logging: LoggingConfig;
  /** Data directory: snapshot.rdb, state. */
  readonly dir: string;
  /** The file the config was loaded from (for CONFIG REWRITE); null when built from defaults/flags only. */
  readonly configFile: string | null;
}
