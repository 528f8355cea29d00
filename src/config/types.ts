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
  /** Connect to the master over TLS (like Redis tls-replication); null = plain TCP. */
  readonly tls: ClientTlsConfig | null;
  /** Ask an upstream psync-relay to compress the RDB and stream (capa psync-relay-z1); a Redis upstream ignores it. */
  readonly compression: boolean;
  /** The zlib level 1-9 the upstream relay compresses at. */
  readonly compressionLevel: number;
}

/** TLS client side (upstream.tls). File paths are absolute (resolved against the config file's directory). */
export interface ClientTlsConfig {
  /** CA bundle (PEM) to verify the server with; null = Node's default CAs. */
  readonly ca: string | null;
  /** Client certificate and key (PEM) for servers that require one (tls-auth-clients); both or neither. */
  readonly cert: string | null;
  readonly key: string | null;
  /** SNI name and the name the certificate must match; null = the host connected to. */
  readonly servername: string | null;
  /** Verify the server certificate (chain and name); false = encrypt only. */
  readonly verify: boolean;
}

/** The TLS RESP listener (listen.tls), like Redis tls-port / tls-cert-file / tls-key-file / tls-ca-cert-file / tls-auth-clients. */
export interface ServerTlsConfig {
  readonly port: number;
  readonly cert: string;
  readonly key: string;
  /** CA bundle (PEM) client certificates must chain to; null = none (then verifyClients must be false). */
  readonly ca: string | null;
  /** Require a client certificate signed by `ca`. */
  readonly verifyClients: boolean;
}

/** A named downstream user (listen.users): `AUTH <name> <password>`. */
export interface ListenUser {
  readonly name: string;
  readonly password: string;
  /** replication: what a replica or sync tool sends; sentinel: what Sentinel sends to a replica; admin: everything. */
  readonly role: 'replication' | 'sentinel' | 'admin';
}

export interface SentinelConfig {
  /** Sentinels to ask, in order (`host:port`, port 26379 when omitted). */
  readonly nodes: ReadonlyArray<{ readonly host: string; readonly port: number }>;
  /** The name the Sentinels monitor the master under (`sentinel monitor <name> ...`). */
  readonly masterName: string;
  /** AUTH password for the Sentinels (their requirepass); null = none. */
  readonly password: string | null;
  /** Connect to the Sentinels over TLS with upstream.tls's settings. */
  readonly tls: boolean;
}

export interface ListenConfig {
  readonly bind: string;
  /** Downstream RESP port (plain TCP); 0 = no plain listener (listen.tls must be set). */
  readonly port: number;
  /** requirepass for downstream clients (user `default`, admin); null = no auth for `default`. */
  readonly password: string | null;
  /** Named users; when any is set, every client must AUTH (the default user needs `password`). */
  readonly users: ReadonlyArray<ListenUser>;
  /** The TLS listener, beside the plain one; null = none. */
  readonly tls: ServerTlsConfig | null;
  readonly maxClients: number;
  /** proto-max-bulk-len. */
  readonly maxBulkLen: number;
  /** client-query-buffer-limit. */
  readonly maxQueryBuffer: number;
  /** A connection that has sent nothing, or has not authenticated when auth is on, this long is closed; 0 = off. */
  readonly handshakeTimeoutMs: number;
  /** The IP the relay reports for itself in INFO/ROLE; null = the socket's. */
  readonly announceIp: string | null;
  /** Redis protected-mode: with no password and no users, only loopback clients (127.0.0.1, ::1) may connect. */
  readonly protectedMode: boolean;
  /** Most bytes all clients' query and output buffers may hold together (Redis maxmemory-clients); 0 = no cap. */
  readonly maxClientsMemory: number;
  /** Most commands one MULTI may queue; past it the transaction is aborted (EXECABORT at EXEC). */
  readonly maxMultiCommands: number;
  /** Redis client-output-buffer-limit for normal and pub/sub clients (replicas have replication.replica-*-lag). */
  readonly clientOutputBufferLimit: { readonly normal: OutputBufferLimit; readonly pubsub: OutputBufferLimit };
}

/** One class of Redis's client-output-buffer-limit: bytes, and how long the soft limit may be exceeded; 0 = none. */
export interface OutputBufferLimit {
  readonly hard: number;
  readonly soft: number;
  readonly softMs: number;
}

export interface LogConfig {
  /** In-memory replication log (backlog) size. */
  readonly memory: number;
  /** Disk-backed log size (segment files in `dir/log`); 0 = memory only. */
  readonly disk: number;
  /** Most stream bytes held in memory that the disk has not taken; past it the disk history is dropped. */
  readonly diskQueue: number;
  /** Most bytes the log keeps beyond its limit for a snapshot being fetched; past it the fetch is abandoned. */
  readonly refreshHold: number;
}

/**
 * self: the offset the relay holds (a Redis replica's ACK); min: the smallest offset acknowledged by the online
 * downstream replicas; quorum: the n-th highest of them. With too few replicas online, nothing new is acknowledged.
 */
export type AckPolicy = { readonly kind: 'self' } | { readonly kind: 'min' } | { readonly kind: 'quorum'; readonly n: number };

export interface ReplicationConfig {
  /** A downstream replica further than this behind the log head is disconnected. */
  readonly replicaMaxLag: number;
  /** A downstream replica silent (no REPLCONF ACK) this long is disconnected. */
  readonly replicaTimeoutMs: number;
  /** A replica asking for an offset ahead of the relay (same replid) is held this long for the stream to reach it; 0 = full sync at once. */
  readonly aheadWaitMs: number;
  /** Soft lag limit: a replica continuously further behind than this for replicaSoftMs is disconnected; 0 = off. */
  readonly replicaSoftLag: number;
  readonly replicaSoftMs: number;
  /** What the relay acknowledges upstream (REPLCONF ACK, GETACK answers): see AckPolicy. */
  readonly ackPolicy: AckPolicy;
  /** At most one snapshot refresh from upstream (a fork on the master) per this interval. */
  readonly snapshotRefreshMinIntervalMs: number;
  /** Compress for downstream relays that ask (upstream.compression on their side); false = always plain. */
  readonly compression: boolean;
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
  /** Most /stream subscribers at once. */
  readonly maxSubscribers: number;
  /** Host names (lower case) requests may carry in Host besides the same-host defaults; `*` = any. */
  readonly allowedHosts: ReadonlyArray<string>;
  /** Origins (lower case) allowed besides the relay's own; `*` = any. */
  readonly allowedOrigins: ReadonlyArray<string>;
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
  /** On SIGTERM/SIGINT, how long to wait for online replicas to acknowledge everything before closing (Redis shutdown-timeout). */
  readonly shutdownTimeoutMs: number;
  /** The file the config was loaded from (for CONFIG REWRITE); null when built from defaults/flags only. */
  readonly configFile: string | null;
}
