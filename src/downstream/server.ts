import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import type { Logger } from '../log.js';
import { serverTlsOptions } from '../tls.js';
import type { ListenConfig } from '../config/types.js';
import type { RelayStats } from '../observability/stats.js';
import { ClientConnection } from './client.js';
import { dispatch, type CommandHost } from './commands.js';

/**
 * The downstream RESP listeners: plain TCP on `listen.port` (none when 0) and TLS on `listen.tls.port`; both serve
 * the same commands to the same client set. Accepts connections, enforces maxclients, tracks clients.
 */
export class ReplicaServer {
  #config: ListenConfig;
  #logger: Logger;
  #stats: RelayStats;
  #host: CommandHost;
  #server: Server | null = null;
  #tlsServer: ReturnType<typeof createTlsServer> | null = null;
  #tlsPort = 0;
  #clients = new Set<ClientConnection>();

  constructor(config: ListenConfig, logger: Logger, stats: RelayStats, host: CommandHost) {
    this.#config = config;
    this.#logger = logger;
    this.#stats = stats;
    this.#host = host;
    if (config.port !== 0) {
      this.#server = createServer((socket) => this.#accept(socket));
      this.#server.on('error', (err) => this.#logger.error({ err }, 'listener error'));
    }
  }

  get clients(): ReadonlySet<ClientConnection> {
    return this.#clients;
  }

  /** The TLS listener's port; 0 when there is none. */
  get tlsPort(): number {
    return this.#tlsPort;
  }

  /** Starts the listeners; resolves with the plain port, or the TLS port when there is no plain listener. */
  async listen(): Promise<number> {
    const tls = this.#config.tls;
    if (tls !== null) {
      // Certificate files are read here: a missing or bad one fails the start, naming the key.
      const server = createTlsServer(serverTlsOptions(tls), (socket) => this.#accept(socket));
      server.on('error', (err) => this.#logger.error({ err }, 'TLS listener error'));
      server.on('tlsClientError', (err, socket) =>
        this.#logger.warn({ err: err.message, peer: `${socket.remoteAddress}:${socket.remotePort}` }, 'TLS handshake with a client failed'),
      );
      this.#tlsServer = server;
    }
    const plain = this.#server ? await this.#listenOn(this.#server, this.#config.port, 'listening for replicas') : 0;
    if (this.#tlsServer && tls !== null) this.#tlsPort = await this.#listenOn(this.#tlsServer, tls.port, 'listening for replicas over TLS');
    return plain || this.#tlsPort;
  }

  #listenOn(server: Server, wanted: number, what: string): Promise<number> {
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(wanted, this.#config.bind, () => {
        server.off('error', reject);
        const addr = server.address();
        const port = typeof addr === 'object' && addr ? addr.port : wanted;
        this.#logger.info({ bind: this.#config.bind, port }, what);
        resolve(port);
      });
    });
  }

  #accept(socket: Socket): void {
    this.#stats.totalConnectionsReceived++;
    if (this.#clients.size >= this.#config.maxClients) {
      this.#stats.rejectedConnections++;
      this.#logger.warn(
        { limit: 'listen.max-clients', value: this.#config.maxClients, peer: `${socket.remoteAddress}:${socket.remotePort}` },
        'max clients reached, connection refused',
      );
      socket.on('error', () => {});
      socket.end('-ERR max number of clients reached\r\n');
      // A peer that never reads must not keep the refused socket open.
      setTimeout(() => socket.destroy(), 5000).unref();
      return;
    }
    const client = new ClientConnection(
      socket,
      this.#logger,
      this.#stats,
      this.#config,
      {
        dispatch: (c, args) => dispatch(this.#host, c, args),
        closed: (c) => {
          this.#clients.delete(c);
          c.replica?.closed();
        },
      },
      this.#config.password !== null || this.#config.users.length > 0,
    );
    this.#clients.add(client);
  }

  /** Stop accepting new connections; clients already connected stay (graceful shutdown). */
  stopAccepting(): void {
    for (const s of [this.#server, this.#tlsServer]) if (s?.listening) s.close();
  }

  /** Stop accepting, close every client. */
  async close(): Promise<void> {
    for (const c of this.#clients) c.socket.destroy();
    const closing = [this.#server, this.#tlsServer].map((s) => (s?.listening ? new Promise<void>((resolve) => s.close(() => resolve())) : undefined));
    await Promise.all(closing);
  }
}
