import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../log.js';
import type { ListenConfig } from '../config/types.js';
import type { RelayStats } from '../observability/stats.js';
import { ClientConnection } from './client.js';
import { dispatch, type CommandHost } from './commands.js';

/** The downstream RESP listener: accepts connections, enforces maxclients, tracks clients. */
export class ReplicaServer {
  #config: ListenConfig;
  #logger: Logger;
  #stats: RelayStats;
  #host: CommandHost;
  #server: Server;
  #clients = new Set<ClientConnection>();

  constructor(config: ListenConfig, logger: Logger, stats: RelayStats, host: CommandHost) {
    this.#config = config;
    this.#logger = logger;
    this.#stats = stats;
    this.#host = host;
    this.#server = createServer((socket) => this.#accept(socket));
    this.#server.on('error', (err) => this.#logger.error({ err }, 'listener error'));
  }

  get clients(): ReadonlySet<ClientConnection> {
    return this.#clients;
  }

  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#config.port, this.#config.bind, () => {
        this.#server.off('error', reject);
        const addr = this.#server.address();
        const port = typeof addr === 'object' && addr ? addr.port : this.#config.port;
        this.#logger.info({ bind: this.#config.bind, port }, 'listening for replicas');
        resolve(port);
      });
    });
  }

  #accept(socket: Socket): void {
    this.#stats.totalConnectionsReceived++;
    if (this.#clients.size >= this.#config.maxClients) {
      this.#stats.rejectedConnections++;
      this.#logger.warn({ peer: `${socket.remoteAddress}:${socket.remotePort}`, maxClients: this.#config.maxClients }, 'max clients reached, connection refused');
      socket.end('-ERR max number of clients reached\r\n');
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
      this.#config.password !== null,
    );
    this.#clients.add(client);
  }

  /** Stop accepting, close every client. */
  close(): Promise<void> {
    for (const c of this.#clients) c.socket.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}
