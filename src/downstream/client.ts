import type { Socket } from 'node:net';
import type { Logger } from '../log.js';
import { ARG_OVERHEAD, FIXED_LIMITS, RequestParser } from '../resp/request-parser.js';
import { bulkReply, errorReply } from '../resp/writer.js';
import { ProtocolError } from '../errors.js';
import type { OutputBufferLimit } from '../config/types.js';
import type { AccessDenial, Telemetry } from '../observability/telemetry.js';
import { LogLimiter } from '../util/log-limiter.js';
import type { ReplicaSession } from './replica-session.js';
import type { ClientMemory, MemoryUser } from './client-memory.js';
import { checkOutputLimit } from './output-limit.js';
import type { Role } from './roles.js';
import { clientTurn, type TurnBudget } from './turn-budget.js';

let nextClientId = 1;

/**
 * Most commands, and most input bytes, of one client run in one turn of the event loop. Redis reads 16 KiB of a
 * client's input per event, so a long pipeline is run a read at a time and the other clients are served in between;
 * a Node read is up to 64 KiB, and a busy socket gives up to 32 of them in a row, so a pipeline of INFOs (or of
 * failing AUTHs, or of empty lines, before AUTH) held every other client, replica and timer for seconds. Past either
 * count the client's reading pauses and its commands go on at the next turn (an INFO costs ~50 us, 64 KiB of empty
 * lines ~30 ms to parse).
 */
const COMMANDS_PER_TURN = 128;
/** Replies past this size are written by reference, not copied into one Buffer with the turn's others. */
const LARGE_REPLY = 64 * 1024;
const CRLF_BUF = Buffer.from('\r\n');
const BYTES_PER_TURN = 64 * 1024;
/**
 * Heap bytes a reply queued on the socket costs besides its payload (Node's entry for the write: about 60 on Node
 * 20). Counted with the payload: a client pipelining PINGs it never read held 9 bytes of heap per byte counted, and
 * grew past listen.max-clients-memory ten times over.
 */
const WRITE_OVERHEAD = 64;

export interface ClientLimits {
  readonly maxBulkLen: number;
  readonly maxQueryBuffer: number;
  /** Close a connection that has sent nothing, or not authenticated (auth on), this long after it opened; 0 = off. */
  readonly handshakeTimeoutMs?: number;
  /** Redis client-output-buffer-limit for normal and pub/sub clients; absent = none. */
  readonly clientOutputBufferLimit?: { readonly normal: OutputBufferLimit; readonly pubsub: OutputBufferLimit };
  /** Most commands one MULTI may queue; absent = no cap. */
  readonly maxMultiCommands?: number;
}

/** What a command handler may do with the connection that sent it, and what the server shares among clients. */
export interface ClientHandlers {
  dispatch(client: ClientConnection, args: Buffer[]): void;
  /** How many arguments of a command the parser keeps (RequestParserOptions.argsKept); absent = all. */
  readonly argsKept?: (name: Buffer) => number;
  closed(client: ClientConnection): void;
  /** listen.max-clients-memory; absent = not counted. */
  readonly memory?: ClientMemory;
  /** Rate limit for the warnings a client can trigger; absent = one of its own. */
  readonly warnings?: LogLimiter;
  /** The time all clients' commands share per turn of the event loop; absent = the process's (clientTurn). */
  readonly turn?: TurnBudget;
}

/**
 * One downstream TCP connection: parses requests (multibulk and inline), hands each to the command table,
 * writes replies. Once it sends PSYNC/SYNC it carries a ReplicaSession; replies to a replica are never
 * written (they would corrupt its stream), as in Redis.
 */
export class ClientConnection implements MemoryUser {
  readonly id = nextClientId++;
  readonly socket: Socket;
  readonly addr: string;
  readonly createdAt = Date.now();
  readonly logger: Logger;
  name = '';
  user = 'default';
  /** The logged-in user's role (roles.ts); `default` is an admin. */
  role: Role = 'admin';
  lastCommand = '';
  lastInteraction = Date.now();
  /**
   * From REPLCONF before PSYNC; `rdbFrom`: `capa psync-relay-rdb-from:<offset>` (src/rdb-from.ts), -1 = not asked;
   * `capaRelay`: `capa psync-relay`, a relay below.
   */
  replconf = { listeningPort: 0, ipAddress: '', capaEof: false, capaPsync2: false, rdbOnly: false, rdbFilterEmpty: false, rdbFrom: -1, capaRelay: false, version: '' };
  /** `REPLCONF capa psync-relay-z1:<level>`: a relay asking for a compressed stream at that level (src/compression.ts); null = not asked. */
  capaCompression: number | null = null;
  #replica: ReplicaSession | null = null;
  /** MULTI state: queued commands, or null outside a transaction. */
  multi: Buffer[][] | null = null;
  multiError = false;
  /** CLIENT REPLY OFF: no replies until CLIENT REPLY ON or RESET (pub/sub pushes still go, as in Redis 7.2+). */
  replyOff = false;
  /** CLIENT REPLY SKIP: the next command's replies are dropped. */
  skipNextReply = false;
  #skippingReply = false;
  /** Pub/sub subscriptions (pubsub.ts), names as latin1 strings. */
  readonly channels = new Set<string>();
  readonly patterns = new Set<string>();
  readonly maxMultiCommands: number;
  #authenticated: boolean;
  #parser: RequestParser;
  #telemetry: Telemetry;
  #handlers: ClientHandlers;
  #warnings: LogLimiter;
  #closing = false;
  #limits: ClientLimits;
  #bytesIn = 0;
  /** A whole command of this client's was run (listen.handshake-timeout). */
  #ranCommand = false;
  /** A command is being answered asynchronously (suspend()). */
  #suspended = false;
  /** It had its turn (COMMANDS_PER_TURN, BYTES_PER_TURN): the next commands wait for the next turn of the event loop. */
  #yielded = false;
  /** Commands run and bytes read since the last yield. */
  #turnCommands = 0;
  #turnBytes = 0;
  /** The budget cut it off last time with input left (turn-budget.ts): it waits behind the light clients. */
  #heavy = false;
  #handshakeTimer: NodeJS.Timeout | null = null;
  /** Destroys a closing socket the peer has not closed within 5 s (#destroySoon). */
  #closeTimer: NodeJS.Timeout | null = null;
  /** Replies being gathered for EXEC (gatherReplies), or null. */
  #gathered: Buffer[] | null = null;
  readonly #softLimit = { softSince: 0 };
  readonly #turn: TurnBudget;
  /** Replies handed to the socket whose write has not completed (each holds WRITE_OVERHEAD besides its bytes). */
  #queuedWrites = 0;
  /** Replies of the turn being run (#process), written together at its end; null outside it. */
  #batch: Buffer[] | null = null;
  readonly #written = (): void => {
    this.#queuedWrites--;
  };

  constructor(socket: Socket, logger: Logger, telemetry: Telemetry, limits: ClientLimits, handlers: ClientHandlers, needsAuth: boolean) {
    this.socket = socket;
    this.addr = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.logger = logger.child({ peer: this.addr, client: this.id });
    this.#telemetry = telemetry;
    this.#handlers = handlers;
    this.#warnings = handlers.warnings ?? new LogLimiter();
    this.#turn = handlers.turn ?? clientTurn;
    this.#limits = limits;
    this.maxMultiCommands = limits.maxMultiCommands ?? Infinity;
    this.#parser = new RequestParser({ maxBulkLen: limits.maxBulkLen, maxQueryBuffer: limits.maxQueryBuffer, argsKept: handlers.argsKept });
    this.#authenticated = !needsAuth;
    this.#parser.unauthenticated = needsAuth;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('drain', () => this.#updateMemory());
    socket.on('error', (err) => this.logger.debug({ err }, 'client socket error'));
    socket.on('close', () => {
      if (this.#handshakeTimer) clearTimeout(this.#handshakeTimer);
      if (this.#closeTimer) clearTimeout(this.#closeTimer);
      this.#handlers.memory?.remove(this);
      this.#handlers.closed(this);
    });
    const handshakeMs = limits.handshakeTimeoutMs ?? 0;
    if (handshakeMs > 0) {
      this.#handshakeTimer = setTimeout(() => this.#handshakeExpired(handshakeMs), handshakeMs);
      this.#handshakeTimer.unref();
    }
  }

  /** Logged in (always true when no auth is configured). Until then Redis 7's unauthenticated input limits apply. */
  get authenticated(): boolean {
    return this.#authenticated;
  }
  set authenticated(v: boolean) {
    this.#authenticated = v;
    this.#parser.unauthenticated = !v;
  }

  /** A warning this client caused, rate limited per message (a client must not be able to flood the log). */
  warn(obj: Record<string, unknown>, msg: string, burst?: number): void {
    this.#warnings.warn(this.logger, obj, msg, burst);
  }

  /** This client was refused: a wrong password, or a command or channel its role does not allow (counted by reason). */
  accessDenied(reason: AccessDenial): void {
    this.#telemetry.emit('access-denied', { reason, peer: this.addr });
  }

  /**
   * listen.handshake-timeout: a connection that never sent a whole command, or never authenticated, is closed. A whole
   * command, not a byte: without auth, one that trickled a byte every few seconds held its max-clients slot for ever
   * (2,000 of them, in the security audit; 10,000 would have locked replicas out).
   */
  #handshakeExpired(ms: number): void {
    this.#handshakeTimer = null;
    if (this.#handshakeDone() || this.socket.destroyed) return;
    this.warn(
      { limit: 'listen.handshake-timeout', value: ms, bytesIn: this.#bytesIn, authenticated: this.authenticated },
      this.#bytesIn === 0
        ? 'client sent nothing within the handshake timeout, closing it'
        : !this.#ranCommand
          ? 'client sent no whole command within the handshake timeout, closing it'
          : 'client did not authenticate within the handshake timeout, closing it',
    );
    this.#closing = true;
    this.#destroy();
  }

  #handshakeDone(): boolean {
    return this.#ranCommand && this.authenticated;
  }

  get ip(): string {
    return this.socket.remoteAddress ?? '';
  }

  /**
   * Query buffer (with parsed arguments), queued MULTI commands, the client's name and output buffer, as Redis's tot-mem. A replica's
   * output is left out (what it has not read is the shared log, bounded by replication.replica-*-lag), its input is
   * not: a replica sends only REPLCONF, and one that sends more must not hold up to listen.max-query-buffer uncounted.
   */
  memoryUsage(): number {
    // The name too: CLIENT SETNAME takes up to listen.max-bulk-len, kept as long as the client (printable ASCII: a byte a character).
    let input = this.#parser.memory + this.multiMemory() + this.name.length;
    return this.replica ? input : input + this.outputMemory();
  }

  /** Input received and not yet run (Redis's qbuf): the unfinished command's bytes and the commands behind it. */
  get queryBuffered(): number {
    return this.#parser.buffered;
  }

  /** The memory of the unfinished command's parsed arguments (Redis's argv-mem; their bytes are in queryBuffered). */
  get argvMemory(): number {
    return this.#parser.argvMemory;
  }

  /** The replica this connection became (PSYNC/SYNC); null for a client. */
  get replica(): ReplicaSession | null {
    return this.#replica;
  }

  /**
   * From here on the socket carries `session`'s stream, written straight to it (+CONTINUE, +FULLRESYNC, the RDB).
   * The replies of this turn gathered so far (a handshake pipelined with its PSYNC) go first: they answer the
   * commands before it.
   */
  becomeReplica(session: ReplicaSession): void {
    this.#flushBatch();
    this.#replica = session;
  }

  /** Writes handed to the socket and not completed (Redis's oll: the length of the output list). */
  get queuedWrites(): number {
    return this.#queuedWrites;
  }

  /** The replies not yet taken by the kernel: their bytes and their entries (Redis omem). */
  outputMemory(): number {
    return this.socket.writableLength + this.#queuedWrites * WRITE_OVERHEAD;
  }

  /** Bytes the queued MULTI commands hold (Redis multi-mem). */
  multiMemory(): number {
    let n = 0;
    for (const args of this.multi ?? []) for (const a of args) n += a.length + ARG_OVERHEAD;
    return n;
  }

  evictForMemory(limit: number, used: number): void {
    this.warn({ limit: 'listen.max-clients-memory', value: limit, used }, 'clients past their memory cap: closing the client holding the most');
    this.#closing = true;
    // A replica's socket carries the stream: an error reply there would be read as a command.
    if (this.replica) return this.replica.close('evicted: listen.max-clients-memory');
    this.#dropInput();
    this.socket.end(errorReply(`ERR client evicted: the clients' buffers went past listen.max-clients-memory (${limit} bytes) and this client held the most (${used} bytes)`), () => this.#destroy());
    // A peer that does not read would keep its output buffer: drop it now rather than hold the memory.
    if (this.socket.writableLength > 0) this.#destroy();
    else this.#destroySoon();
  }

  /**
   * A closing client's input will not run: dropped now. It is no longer counted (ClientMemory), and a client
   * evicted at the cap that reconnected at once held its buffers (hundreds of MB each) for as long as its close
   * took: eight such clients held 3.4 GB under a 256 MB cap.
   */
  #dropInput(): void {
    this.#parser.discard();
    this.multi = null;
  }

  /** Destroys the socket in 5 s if it has not closed by then (a peer that never reads keeps a half-closed one). */
  #destroySoon(): void {
    if (this.#closeTimer === null) this.#closeTimer = setTimeout(() => this.#destroy(), 5000).unref();
  }

  #updateMemory(): void {
    if (!this.#closing) this.#handlers.memory?.update(this, this.memoryUsage());
  }

  #onData(chunk: Buffer): void {
    if (this.#closing) return;
    this.#telemetry.traffic.netInputBytes += chunk.length;
    this.#bytesIn += chunk.length;
    this.lastInteraction = Date.now();
    this.#parser.push(chunk);
    this.#turnBytes += chunk.length;
    this.#process();
    if (this.#turnBytes >= BYTES_PER_TURN) {
      this.#heavy = true;
      this.#yield();
    }
  }

  /**
   * Runs the commands parsed so far, in order. A command answered later (suspend()) stops this until it has
   * replied: the replies of a pipeline keep the order of its commands. `owed`: the client's turn in the line of
   * waiting clients (turn-budget.ts) has come, so it runs at least one command whatever the time.
   */
  #process(owed = false): void {
    // The replies to one turn leave in one write, as Redis writes a client's replies once per turn (a replica's
    // handshake sent at once: four replies, one syscall; a thousand replicas connecting cost 3,000 writes before).
    // One Buffer, not a corked write per reply: each write queued on a socket that does not drain is an entry of its
    // own, and a client that never read its PINGs queued millions of them (see WRITE_OVERHEAD and #destroy).
    this.#batch = [];
    let first = true;
    try {
      while (!this.#suspended && !this.#yielded) {
        // The turn's time is spent, or other clients wait for it: this client's input waits behind them, unparsed.
        // Parsing costs time too, whether a command comes of it or not (a multibulk that never ends, 64 KiB of empty
        // arguments a read, costs ~0.5 ms): it counts against the turn's time.
        if (first && !owed && this.#parser.buffered > 0 && this.#turn.mustWait(this.#heavy)) {
          this.#yield();
          break;
        }
        if (first) this.#turn.begin();
        let args: Buffer[] | undefined;
        try {
          args = this.#parser.next();
        } catch (err) {
          this.#protocolError(err);
          return;
        }
        if (!args) {
          // It ran to the end of its input: a light client (turn-budget.ts).
          if (!first) this.#heavy = false;
          break;
        }
        first = false;
        this.#telemetry.traffic.commandsProcessed++;
        this.#ranCommand = true;
        this.#skippingReply = this.skipNextReply;
        this.skipNextReply = false;
        try {
          this.#handlers.dispatch(this, args);
        } catch (err) {
          // A bug in a command must not take the relay down: answer an error, as for any failed command.
          this.logger.error({ err, command: args[0]?.toString('latin1').slice(0, 64) }, 'command failed');
          this.reply(errorReply('ERR internal error'));
        }
        if (this.#closing) return;
        if (++this.#turnCommands >= COMMANDS_PER_TURN || this.#turn.spent()) {
          // Cut off by the budget with input left: a heavy client, behind the others next time.
          this.#heavy = this.#parser.buffered > 0;
          this.#yield();
        }
      }
    } finally {
      this.#flushBatch();
    }
    if (this.#handshakeTimer && this.#handshakeDone()) {
      clearTimeout(this.#handshakeTimer);
      this.#handshakeTimer = null;
    }
    this.#updateMemory();
  }

  /** The client had its turn: stop reading (the parser holds what came) and go on when the line reaches it. */
  #yield(): void {
    if (this.#yielded || this.#closing) return;
    this.#yielded = true;
    this.socket.pause();
    this.#turn.wait(() => {
      this.#yielded = false;
      this.#turnCommands = 0;
      this.#turnBytes = 0;
      if (this.#closing || this.socket.destroyed) return;
      this.socket.resume();
      this.#process(true);
    }, this.#heavy);
  }

  /** The command being run replies when `work` settles; the client's next commands wait for it. */
  suspend(work: Promise<unknown>): void {
    this.#suspended = true;
    void work
      .catch(() => {})
      .finally(() => {
        this.#suspended = false;
        if (!this.#closing && !this.socket.destroyed) this.#process();
      });
  }

  #protocolError(err: unknown): void {
    const e = err as Error;
    const limit = err instanceof ProtocolError ? err.limit : null;
    this.#telemetry.emit('protocol-error', { peer: this.addr, limit });
    if (limit !== null) {
      const value = limit === 'listen.max-bulk-len' ? this.#limits.maxBulkLen : limit === 'listen.max-query-buffer' ? this.#limits.maxQueryBuffer : FIXED_LIMITS[limit];
      this.warn({ limit, value, buffered: this.#parser.buffered, err: e.message }, 'client went past a limit, closing it');
    } else if (err instanceof ProtocolError) {
      this.warn({ err: e.message }, 'protocol error from client, closing it');
    } else {
      this.logger.error({ err }, 'request parser failed, closing the client');
    }
    this.reply(errorReply(`ERR ${err instanceof ProtocolError ? e.message : 'Protocol error'}`), true);
    this.closeAfterWrite();
  }

  /** Writes a reply unless this connection is a replica (its socket carries only the stream); then checks the output limits. */
  /**
   * Runs `fn` with replies gathered instead of written (EXEC answers its queued commands as one array), and
   * returns them.
   */
  gatherReplies(fn: () => void): Buffer[] {
    const outer = this.#gathered;
    const replies: Buffer[] = [];
    this.#gathered = replies;
    try {
      fn();
    } finally {
      this.#gathered = outer;
    }
    return replies;
  }

  reply(buf: Buffer, force = false): void {
    // Inside EXEC every reply is gathered, so its array stays whole; the EXEC reply itself is what is dropped.
    if (!force && this.#gathered === null && (this.replyOff || this.#skippingReply)) return;
    this.#send(buf, force);
  }

  /**
   * A bulk reply of `payload` (ECHO, PING's argument). A large one is sent by reference, its header and CRLF around
   * it: copied into one Buffer (bulkReply), then into the turn's batch, an ECHO of 250 MB took 850 MB at its peak.
   */
  replyBulk(payload: Buffer): void {
    if (payload.length < LARGE_REPLY || this.#gathered !== null) return this.reply(bulkReply(payload));
    this.reply(Buffer.from(`$${payload.length}\r\n`, 'latin1'));
    this.reply(payload);
    this.reply(CRLF_BUF);
  }

  /** A pub/sub message or (un)subscribe confirmation: sent whatever CLIENT REPLY says, as Redis 7.2+ sends pushes. */
  push(buf: Buffer): void {
    this.#send(buf, false);
  }

  #send(buf: Buffer, force: boolean): void {
    if (this.#gathered !== null && !force) {
      this.#gathered.push(buf);
      return;
    }
    if ((this.replica && !force) || this.socket.destroyed || (this.#closing && !force)) return;
    this.#telemetry.traffic.netOutputBytes += buf.length;
    if (this.#batch !== null) {
      this.#batch.push(buf);
      return;
    }
    this.#write(buf);
  }

  /** Writes the replies gathered in this turn: as one Buffer, or, past LARGE_REPLY, each by reference in one writev. */
  #flushBatch(): void {
    const batch = this.#batch;
    this.#batch = null;
    if (batch === null || batch.length === 0 || this.socket.destroyed) return;
    if (batch.length === 1) return this.#write(batch[0]!);
    let total = 0;
    for (const b of batch) total += b.length;
    if (total < LARGE_REPLY) return this.#write(Buffer.concat(batch, total));
    this.socket.cork();
    for (const b of batch) this.#write(b);
    this.socket.uncork();
  }

  /** Hands `buf` to the socket, then checks the output limits (not for a replica: its output is the stream). */
  #write(buf: Buffer): void {
    this.#queuedWrites++;
    this.socket.write(buf, this.#written);
    if (this.replica) return;
    const limits = this.#limits.clientOutputBufferLimit;
    if (limits) {
      const cls = this.channels.size + this.patterns.size > 0 ? 'pubsub' : 'normal';
      const used = this.outputMemory();
      const hit = checkOutputLimit(cls, limits[cls], used, Date.now(), this.#softLimit);
      if (hit) {
        this.warn({ ...hit, used }, 'client past its output buffer limit, closing it');
        // Like Redis: what it did not read is dropped with it.
        this.kill();
        return;
      }
    }
    this.#updateMemory();
  }

  closeAfterWrite(): void {
    this.#closing = true;
    this.#flushBatch();
    // Closed once the replies are written, as Redis closes a client after its last reply: ended only, the socket
    // stayed half-open, a descriptor held until the peer closed (a flood of clients sending garbage held thousands).
    this.#dropInput();
    this.socket.end(() => this.#destroy());
    // A peer that never reads must not keep a half-closed socket forever.
    this.#destroySoon();
  }

  kill(): void {
    this.#closing = true;
    if (this.replica) this.replica.close('killed');
    else this.#destroy();
  }

  /**
   * Closes the socket, dropping what it has not sent. With an error: Node fails each write still queued with the
   * stream's error, or, without one, with a new Error each (a stack trace apiece: 3.6 million queued replies took
   * the event loop 13 s).
   */
  #destroy(): void {
    if (!this.socket.destroyed) this.socket.destroy(new Error('closed by the relay'));
  }
}
