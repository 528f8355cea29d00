/** Every error code the relay raises: stable and greppable. */
export type ErrorCode =
  | 'RELAY_ERR_CONFIG'
  | 'RELAY_ERR_PROTOCOL'
  | 'RELAY_ERR_HANDSHAKE'
  | 'RELAY_ERR_SNAPSHOT'
  | 'RELAY_ERR_TIMEOUT'
  | 'RELAY_ERR_WEB_LISTEN'
  | 'RELAY_ERR_STREAM_OPTIONS'
  | 'RELAY_ERR_WEB_REQUEST'
  | 'RELAY_ERR_LINK'
  | 'RELAY_ERR_LOG_RANGE'
  | 'RELAY_ERR_STORAGE'
  | 'RELAY_ERR_REPLICA_GONE'
  | 'RELAY_ERR_PITR'
  | 'RELAY_ERR_INTERNAL';

/** Errors with stable, greppable codes. Tests assert `code`, never message text. `cause` is passed on. */
export class RelayError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The upstream link ended: closed by the peer, refused for now, cut on purpose. */
export class LinkError extends RelayError {
  constructor(message: string, options?: ErrorOptions) {
    super('RELAY_ERR_LINK', message, options);
  }
}

/** An offset the log (memory or disk) does not hold. */
export class LogRangeError extends RelayError {
  readonly offset: number;
  constructor(offset: number, message: string) {
    super('RELAY_ERR_LOG_RANGE', message);
    this.offset = offset;
  }
}

/** Files on disk that are not what they must be (a short segment, a malformed state file, not an RDB). */
export class StorageError extends RelayError {
  constructor(message: string, options?: ErrorOptions) {
    super('RELAY_ERR_STORAGE', message, options);
  }
}

/** A downstream replica went away during its transfer. */
export class ReplicaGoneError extends RelayError {
  constructor(message: string) {
    super('RELAY_ERR_REPLICA_GONE', message);
  }
}

/** A state the code believes impossible. */
export class InternalError extends RelayError {
  constructor(message: string) {
    super('RELAY_ERR_INTERNAL', message);
  }
}

/** A config value is missing, unknown or of the wrong type; `path` names the YAML key (`listen.port`). */
export class ConfigError extends RelayError {
  readonly path: string;
  constructor(path: string, message: string, options?: ErrorOptions) {
    super('RELAY_ERR_CONFIG', path ? `${path}: ${message}` : message, options);
    this.path = path;
  }
}

/**
 * A TLS file (certificate, key, CA) named by config key `path` that cannot be read or used. `file` is its path, for
 * the log; the message never quotes the file's content (a key file's would be key material).
 */
export class TlsFileError extends ConfigError {
  readonly file: string;
  constructor(path: string, file: string, message: string, options?: ErrorOptions) {
    super(path, message, options);
    this.file = file;
  }
}

/** Malformed RESP. `offset` is the byte position in the peer's input where it was detected. */
export class ProtocolError extends RelayError {
  readonly offset: number;
  /** The configured limit the input went past (`listen.max-bulk-len`, `listen.max-query-buffer`), when that is the cause. */
  limit: string | null = null;
  constructor(message: string, offset = -1, options?: ErrorOptions) {
    super('RELAY_ERR_PROTOCOL', message, options);
    this.offset = offset;
  }
}

/** The upstream refused or garbled a handshake step. */
export class HandshakeError extends RelayError {
  readonly state: string;
  readonly reply: string;
  constructor(state: string, reply: string, message?: string) {
    super('RELAY_ERR_HANDSHAKE', message ?? `upstream replied ${JSON.stringify(reply)} in state ${state}`);
    this.state = state;
    this.reply = reply;
  }
}

/** The snapshot is corrupt or incomplete. */
export class SnapshotError extends RelayError {
  constructor(message: string, options?: ErrorOptions) {
    super('RELAY_ERR_SNAPSHOT', message, options);
  }
}

/** An I/O timeout on a link. */
export class TimeoutError extends RelayError {
  constructor(message: string) {
    super('RELAY_ERR_TIMEOUT', message);
  }
}
