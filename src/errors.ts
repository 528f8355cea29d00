/** Errors with stable, greppable codes. Tests assert `code`, never message text. */
export class RelayError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
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
