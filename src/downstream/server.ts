import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import type { Logger } from '../log.js';
import { loadListenerTls, type ListenerTls } from './listener-tls.js';
import type { ListenConfig } from '../config/types.js';
import type { Telemetry } from '../observability/telemetry.js';
import { ClientConnection } from './client.js';
import { argsKept, dispatch, type CommandHost } from './commands.js';
import { ClientMemory } from './client-memory.js';
import { DENIED, isLocalPeer, protectedModeOn, protectedModeWarning } from './protected-mode.js';
import { LogLimiter } from '../util/log-limiter.js';
import { authRequired } from './roles.js';
import { backlogCapWarning, somaxconn } from './tcp-backlog.js';

/**
 * The downstream RESP listeners: plain TCP on `listen.port` (none when 0) and TLS on `listen.tls.port`; both serve
 * the same commands to the same client set. Accepts connections, enforces protected mode and maxclients (TLS
 * connections still in their handshake count), tracks clients and their memory.
 */
export class ReplicaServer {
  #config: ListenConfig;
  #logger: Logger;
  #telemetry: Telemetry;
  #host: CommandHost;
  #server: Server | null = null;
  #tlsServer: ReturnType<typeof createTlsServer> | null = null;
  #tlsPort = 0;
  #clients = new Set<ClientConnection>();
  /** Raw TCP sockets of the TLS listener, open (in their handshake, or under a TLS client). */
  #tlsRaw = new Set<Socket>();
  /** Clients in #clients that came over TLS (their raw sockets are in #tlsRaw too). */
  #tlsClients = 0;
  readonly #memory: ClientMemory;
  readonly #warnings = new LogLimiter();
  /** A port the system picks, one listener only (the plain one when listen.port is set, else TLS): point-in-time listeners. */
  readonly #ephemeral: boolean;

  /**
   * `memory`: the listen.max-clients-memory budget, shared with the relay's other listeners (point-in-time ones);
   * absent = one of its own.
   */
  constructor(config: ListenConfig, logger: Logger, telemetry: Telemetry, host: CommandHost, opts: { ephemeral?: boolean; memory?: ClientMemory } = {}) {
    this.#config = config;
    this.#ephemeral = opts.ephemeral ?? false;
    this.#logger = logger;
    this.#telemetry = telemetry;
    this.#host = host;
    this.#memory = opts.memory ?? new ClientMemory(config.maxClientsMemory);
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
    const tls = this.#ephemeral && this.#server ? null : this.#config.tls;
    if (tls !== null) {
      // Certificate files are read here (and again on SIGHUP: setSecureContext): a missing or bad one fails the start,
      // naming the key. Node's own default handshake timeout is 120 s; listen.handshake-timeout bounds the handshake too.
      const handshakeTimeout = this.#config.handshakeTimeoutMs > 0 ? this.#config.handshakeTimeoutMs : undefined;
      const server = createTlsServer({ ...loadListenerTls(tls).options, handshakeTimeout }, (socket) => {
        this.#tlsClients++;
        socket.once('close', () => this.#tlsClients--);
        this.#accept(socket, true);
      });
      server.on('error', (err) => this.#logger.error({ err }, 'TLS listener error'));
      // Before the handshake: a connection in it holds a slot of listen.max-clients.
      server.on('connection', (raw: Socket) => {
        if (this.#refuseAtCapacity(raw, false)) return;
        this.#tlsRaw.add(raw);
        raw.once('close', () => this.#tlsRaw.delete(raw));
      });
      server.on('tlsClientError', (err, socket) => {
        const timeout = (err as NodeJS.ErrnoException).code === 'ERR_TLS_HANDSHAKE_TIMEOUT';
        this.#warnings.warn(
          this.#logger,
          { err: err.message, ...(timeout && { limit: 'listen.handshake-timeout', value: this.#config.handshakeTimeoutMs }) },
          timeout ? 'TLS handshake not finished within the handshake timeout, closing it' : 'TLS handshake with a client failed',
        );
        // Node leaves a socket whose handshake timed out open: close it.
        socket.destroy();
      });
      this.#tlsServer = server;
    }
    const plain = this.#server ? await this.#listenOn(this.#server, this.#ephemeral ? 0 : this.#config.port, 'listening for replicas') : 0;
    if (this.#tlsServer && tls !== null) this.#tlsPort = await this.#listenOn(this.#tlsServer, this.#ephemeral ? 0 : tls.port, 'listening for replicas over TLS');
    const warning = this.#ephemeral ? null : protectedModeWarning(this.#config);
    if (warning) this.#logger.warn({ bind: this.#config.bind, protectedMode: this.#config.protectedMode }, warning);
    const capped = this.#ephemeral ? null : backlogCapWarning(this.#config.tcpBacklog);
    if (capped) this.#logger.warn({ limit: 'listen.tcp-backlog', value: this.#config.tcpBacklog, somaxconn: somaxconn() }, capped);
    return plain || this.#tlsPort;
  }

  /**
   * Serves `tls` (listen.tls's files, read again and checked) to TLS connections from now on; those already open keep
   * the session they have. False when this server has no TLS listener (none configured, or a point-in-time listener
   * beside a plain port).
   */
  setSecureContext(tls: ListenerTls): boolean {
    if (this.#tlsServer === null) return false;
    this.#tlsServer.setSecureContext(tls.options);
    return true;
  }

  #listenOn(server: Server, wanted: number, what: string): Promise<number> {
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port: wanted, host: this.#config.bind, backlog: this.#config.tcpBacklog }, () => {
        server.off('error', reject);
        const addr = server.address();
        const port = typeof addr === 'object' && addr ? addr.port : wanted;
        this.#logger.info({ bind: this.#config.bind, port }, what);
        resolve(port);
      });
    });
  }

  /** listen.max-clients slots not taken: connections the RESP port may still accept. */
  get freeSlots(): number {
    return Math.max(0, this.#config.maxClients - this.#connections);
  }

  /** Connections counted against listen.max-clients: clients, and TLS connections still in their handshake. */
  get #connections(): number {
    return this.#clients.size + this.#tlsRaw.size - this.#tlsClients;
  }

  /** listen.max-clients: refuses `socket` when every slot is taken (`plain`: it can read the error; a TLS handshake cannot). */
  #refuseAtCapacity(socket: Socket, plain: boolean): boolean {
    if (this.#connections < this.#config.maxClients) return false;
    this.#telemetry.emit('connection', { result: 'max-clients', peer: `${socket.remoteAddress}:${socket.remotePort}` });
    this.#warnings.warn(
      this.#logger,
      { limit: 'listen.max-clients', value: this.#config.maxClients, peer: `${socket.remoteAddress}:${socket.remotePort}` },
      'max clients reached, connection refused',
    );
    this.#refuse(socket, plain ? '-ERR max number of clients reached\r\n' : null);
    return true;
  }

  #refuse(socket: Socket, error: string | null): void {
    socket.on('error', () => {});
    if (error === null) return void socket.destroy();
    // Closed as soon as the error is written, as Redis closes a refused connection: ending it only half-closed it, and
    // a flood of clients that never close their side held a descriptor each (for 5 s), past the open files limit.
    socket.end(error, () => socket.destroy());
    // A peer that never reads must not keep the refused socket open either.
    setTimeout(() => socket.destroy(), 5000).unref();
  }

  /** A new client; `tls`: its slot was taken when its handshake began. */
  #accept(socket: Socket, tls = false): void {
    if (!tls && this.#refuseAtCapacity(socket, true)) return;
    const refused = protectedModeOn(this.#config) && !isLocalPeer(socket.remoteAddress);
    this.#telemetry.emit('connection', { result: refused ? 'protected-mode' : 'accepted', peer: `${socket.remoteAddress}:${socket.remotePort}` });
    if (refused) {
      this.#warnings.warn(
        this.#logger,
        { limit: 'listen.protected-mode', value: true, peer: `${socket.remoteAddress}:${socket.remotePort}` },
        'protected mode: connection from a non-loopback address refused (no listen.password or listen.users set)',
      );
      this.#refuse(socket, DENIED);
      return;
    }
    const client = new ClientConnection(
      socket,
      this.#logger,
      this.#telemetry,
      this.#config,
      {
        dispatch: (c, args) => dispatch(this.#host, c, args),
        argsKept,
        closed: (c) => {
          this.#clients.delete(c);
          c.replica?.closed();
        },
        memory: this.#memory,
        warnings: this.#warnings,
      },
      authRequired(this.#config),
    );
    this.#clients.add(client);
  }

  /**
   * Whether a connection accepted here comes from `address`:`port`, i.e. the relay's own upstream link whose socket has
   * that local address (the relay told to follow itself).
   */
  hasPeer(address: string, port: number): boolean {
    const want = unmapped(address);
    return this.#anySocket((s) => s.remotePort === port && unmapped(s.remoteAddress ?? '') === want);
  }

  /** Whether a connection our listener accepted runs from `remote` to `local` (both ends, as its peer names them). */
  hasConnection(remote: { address: string; port: number }, local: { address: string; port: number }): boolean {
    const [r, l] = [unmapped(remote.address), unmapped(local.address)];
    return this.#anySocket(
      (s) => s.remotePort === remote.port && s.localPort === local.port && unmapped(s.remoteAddress ?? '') === r && unmapped(s.localAddress ?? '') === l,
    );
  }

  /** Whether any accepted connection (a client, or a TLS one still in its handshake) passes `is`. */
  #anySocket(is: (s: Socket) => boolean): boolean {
    for (const c of this.#clients) if (is(c.socket)) return true;
    for (const raw of this.#tlsRaw) if (is(raw)) return true;
    return false;
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

/** `::ffff:127.0.0.1` (an IPv4 peer on a dual-stack listener) as `127.0.0.1`. */
function unmapped(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}
