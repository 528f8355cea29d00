import type { Socket } from 'node:net';
import type { Logger } from '../log.js';
import { RequestParser } from '../resp/request-parser.js';
import { errorReply } from '../resp/writer.js';
import { ProtocolError } from '../errors.js';
import type { RelayStats } from '../observability/stats.js';
import type { ReplicaSession } from './replica-session.js';

let nextClientId = 1;

export interface ClientLimits {
  readonly maxBulkLen: number;
  readonly maxQueryBuffer: number;
  /** Close a connection that has sent nothing, or not authenticated (auth on), this long after it opened; 0 = off. */
  readonly handshakeTimeoutMs?: number;
}

/** What a command handler may do with the connection that sent it. */
export interface ClientHandlers {
  dispatch(client: ClientConnection, args: Buffer[]): void;
  closed(client: ClientConnection): void;
}

/**
 * One downstream TCP connection: parses requests (multibulk and inline), hands each to the command table,
 * writes replies. Once it sends PSYNC/SYNC it carries a ReplicaSession; replies to a replica are never
 * written (they would corrupt its stream), as in Redis.
 */
export class ClientConnection {
  readonly id = nextClientId++;
  readonly socket: Socket;
  readonly addr: string;
  readonly createdAt = Date.now();
  readonly logger: Logger;
  name = '';
  authenticated: boolean;
  user = 'default';
  lastCommand = '';
  lastInteraction = Date.now();
  /** From REPLCONF before PSYNC. */
  replconf = { listeningPort: 0, ipAddress: '', capaEof: false, capaPsync2: false, rdbOnly: false, rdbFilterEmpty: false, version: '' };
  replica: ReplicaSession | null = null;
  /** MULTI state: queued commands, or null outside a transaction. */
  multi: Buffer[][] | null = null;
  multiError = false;
  /** Pub/sub subscriptions (pubsub.ts), names as latin1 strings. */
  readonly channels = new Set<string>();
  readonly patterns = new Set<string>();
  #parser: RequestParser;
  #stats: RelayStats;
  #handlers: ClientHandlers;
  #closing = false;
  #limits: ClientLimits;
  #bytesIn = 0;
  #handshakeTimer: NodeJS.Timeout | null = null;

  constructor(socket: Socket, logger: Logger, stats: RelayStats, limits: ClientLimits, handlers: ClientHandlers, needsAuth: boolean) {
    this.socket = socket;
    this.addr = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.logger = logger.child({ peer: this.addr, client: this.id });
    this.#stats = stats;
    this.#handlers = handlers;
    this.authenticated = !needsAuth;
    this.#limits = limits;
    this.#parser = new RequestParser({ maxBulkLen: limits.maxBulkLen, maxQueryBuffer: limits.maxQueryBuffer });
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err) => this.logger.debug({ err }, 'client socket error'));
    socket.on('close', () => {
      if (this.#handshakeTimer) clearTimeout(this.#handshakeTimer);
      this.#handlers.closed(this);
    });
    const handshakeMs = limits.handshakeTimeoutMs ?? 0;
    if (handshakeMs > 0) {
      this.#handshakeTimer = setTimeout(() => this.#handshakeExpired(handshakeMs), handshakeMs);
      this.#handshakeTimer.unref();
    }
  }

  /** listen.handshake-timeout: a connection that never spoke, or never authenticated, is closed. */
  #handshakeExpired(ms: number): void {
    this.#handshakeTimer = null;
    if (this.#handshakeDone() || this.socket.destroyed) return;
    this.logger.warn(
      { limit: 'listen.handshake-timeout', value: ms, bytesIn: this.#bytesIn, authenticated: this.authenticated },
      this.#bytesIn === 0 ? 'client sent nothing within the handshake timeout, closing it' : 'client did not authenticate within the handshake timeout, closing it',
    );
    this.#closing = true;
    this.socket.destroy();
  }

  #handshakeDone(): boolean {
    return this.#bytesIn > 0 && this.authenticated;
  }

  get ip(): string {
    return this.socket.remoteAddress ?? '';
  }

  #onData(chunk: Buffer): void {
    if (this.#closing) return;
    this.#stats.netInputBytes += chunk.length;
    this.#bytesIn += chunk.length;
    this.lastInteraction = Date.now();
    this.#parser.push(chunk);
    for (;;) {
      let args: Buffer[] | undefined;
      try {
        args = this.#parser.next();
      } catch (err) {
        this.#stats.protocolErrors++;
        const e = err as Error;
        const limit = err instanceof ProtocolError ? err.limit : null;
        if (limit !== null) {
          const value = limit === 'listen.max-bulk-len' ? this.#limits.maxBulkLen : this.#limits.maxQueryBuffer;
          this.logger.warn({ limit, value, buffered: this.#parser.buffered, err: e.message }, 'client went past a limit, closing it');
        } else if (err instanceof ProtocolError) {
          this.logger.warn({ err: e.message }, 'protocol error from client, closing it');
        } else {
          this.logger.error({ err }, 'request parser failed, closing the client');
        }
        this.reply(errorReply(`ERR ${err instanceof ProtocolError ? e.message : 'Protocol error'}`), true);
        this.closeAfterWrite();
        return;
      }
      if (!args) break;
      this.#stats.totalCommandsProcessed++;
      try {
        this.#handlers.dispatch(this, args);
      } catch (err) {
        // A bug in a command must not take the relay down: answer an error, as for any failed command.
        this.logger.error({ err, command: args[0]?.toString('latin1').slice(0, 64) }, 'command failed');
        this.reply(errorReply('ERR internal error'));
      }
      if (this.#closing) return;
    }
    if (this.#handshakeTimer && this.#handshakeDone()) {
      clearTimeout(this.#handshakeTimer);
      this.#handshakeTimer = null;
    }
  }

  /** Writes a reply unless this connection is a replica (its socket carries only the stream). */
  reply(buf: Buffer, force = false): void {
    if ((this.replica && !force) || this.socket.destroyed) return;
    this.#stats.netOutputBytes += buf.length;
    this.socket.write(buf);
  }

  closeAfterWrite(): void {
    this.#closing = true;
    this.socket.end();
    // A peer that never reads must not keep a half-closed socket forever.
    setTimeout(() => this.socket.destroy(), 5000).unref();
  }

  kill(): void {
    this.#closing = true;
    if (this.replica) this.replica.close('killed');
    else this.socket.destroy();
  }
}
