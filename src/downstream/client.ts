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

  constructor(socket: Socket, logger: Logger, stats: RelayStats, limits: ClientLimits, handlers: ClientHandlers, needsAuth: boolean) {
    this.socket = socket;
    this.addr = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.logger = logger.child({ peer: this.addr, client: this.id });
    this.#stats = stats;
    this.#handlers = handlers;
    this.authenticated = !needsAuth;
    this.#parser = new RequestParser({ maxBulkLen: limits.maxBulkLen, maxQueryBuffer: limits.maxQueryBuffer });
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err) => this.logger.debug({ err }, 'client socket error'));
    socket.on('close', () => this.#handlers.closed(this));
  }

  get ip(): string {
    return this.socket.remoteAddress ?? '';
  }

  #onData(chunk: Buffer): void {
    if (this.#closing) return;
    this.#stats.netInputBytes += chunk.length;
    this.lastInteraction = Date.now();
    this.#parser.push(chunk);
    for (;;) {
      let args: Buffer[] | undefined;
      try {
        args = this.#parser.next();
      } catch (err) {
        if (err instanceof ProtocolError) {
          this.#stats.protocolErrors++;
          this.logger.warn({ err: err.message }, 'protocol error from client, closing it');
          this.reply(errorReply(`ERR ${err.message}`), true);
          this.closeAfterWrite();
          return;
        }
        throw err;
      }
      if (!args) return;
      this.#stats.totalCommandsProcessed++;
      this.#handlers.dispatch(this, args);
      if (this.#closing) return;
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
