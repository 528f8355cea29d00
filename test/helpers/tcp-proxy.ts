import { connect, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';

/** How much of each direction of each connection is kept for inspection (the handshake and the payload's start). */
const CAPTURE = 64 * 1024;

/** One proxied connection: bytes in each direction and the first CAPTURE bytes of each. */
export interface ProxiedConnection {
  /** Client → target (a replica's handshake and ACKs). */
  up: Buffer;
  /** Target → client (replies, then the payload and stream). */
  down: Buffer;
  bytesUp: number;
  bytesDown: number;
}

/**
 * A TCP proxy on 127.0.0.1 in front of `targetPort` that counts the bytes of every connection in both directions
 * and keeps their beginnings, so a test can see what crossed a replication link (is it compressed, what did the
 * handshake say). cut() drops every open connection, as a network failure would. hold() keeps what the target
 * sends from its clients until release(), for ordering steps without timing them.
 */
export class TcpProxy {
  readonly connections: ProxiedConnection[] = [];
  #server: Server;
  #open = new Set<Socket>();
  #port = 0;
  #held = false;
  /** While held, lines up to one starting with this are let through (release(through)). */
  #until: string | null = null;
  /** Per open connection, while held: target → client bytes not forwarded yet, where to, and whether `#until` was seen. */
  #pending = new Map<ProxiedConnection, { buf: Buffer; to: Socket; reached: boolean }>();

  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(targetPort: number): Promise<TcpProxy> {
    const server = createServer();
    const proxy = new TcpProxy(server);
    server.on('connection', (client) => proxy.#pair(client, targetPort));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const addr = server.address();
    if (addr === null || typeof addr === 'string') throw new Error('proxy: no port');
    proxy.#port = addr.port;
    return proxy;
  }

  get port(): number {
    return this.#port;
  }
  get bytesUp(): number {
    return this.connections.reduce((n, c) => n + c.bytesUp, 0);
  }
  get bytesDown(): number {
    return this.connections.reduce((n, c) => n + c.bytesDown, 0);
  }
  get last(): ProxiedConnection | undefined {
    return this.connections[this.connections.length - 1];
  }

  /** From now on, what the target sends (replies, payload, stream) waits in the proxy until release(). */
  hold(): void {
    this.#held = true;
    this.#until = null;
  }

  /**
   * Without `through`: forwards everything held and ends the hold. With it: on each connection, forwards whole lines
   * (held ones, and those arriving later) up to and including the first that starts with `through` (a reply line,
   * e.g. `+CONTINUE`), and keeps holding what follows it.
   */
  release(through?: string): void {
    if (through === undefined) this.#held = false;
    else this.#until = through;
    for (const [conn, p] of this.#pending) this.#pump(conn, p);
  }

  #pump(conn: ProxiedConnection, p: { buf: Buffer; to: Socket; reached: boolean }): void {
    let pass = 0;
    if (!this.#held) pass = p.buf.length;
    else if (this.#until !== null && !p.reached) {
      for (let nl = p.buf.indexOf(0x0a); nl >= 0; nl = p.buf.indexOf(0x0a, pass)) {
        const line = p.buf.toString('latin1', pass, nl + 1);
        pass = nl + 1;
        if (line.startsWith(this.#until)) {
          p.reached = true;
          break;
        }
      }
    }
    if (pass > 0 && !p.to.destroyed) p.to.write(p.buf.subarray(0, pass));
    p.buf = p.buf.subarray(pass);
    if (!this.#held) this.#pending.delete(conn);
  }

  /** Drops every open connection (both ends). */
  cut(): void {
    for (const s of this.#open) s.destroy();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #pair(client: Socket, targetPort: number): void {
    const target = connect({ port: targetPort, host: '127.0.0.1' });
    const conn: ProxiedConnection = { up: Buffer.alloc(0), down: Buffer.alloc(0), bytesUp: 0, bytesDown: 0 };
    this.connections.push(conn);
    for (const s of [client, target]) {
      this.#open.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        this.#open.delete(s);
        client.destroy();
        target.destroy();
      });
    }
    client.on('close', () => this.#pending.delete(conn));
    const forward = (from: Socket, to: Socket, dir: 'up' | 'down'): void => {
      from.on('data', (chunk: Buffer) => {
        if (dir === 'up') conn.bytesUp += chunk.length;
        else conn.bytesDown += chunk.length;
        if (conn[dir].length < CAPTURE) conn[dir] = Buffer.concat([conn[dir], chunk.subarray(0, CAPTURE - conn[dir].length)]);
        if (dir === 'down' && this.#held) {
          const p = this.#pending.get(conn) ?? { buf: Buffer.alloc(0), to, reached: false };
          p.buf = Buffer.concat([p.buf, chunk]);
          this.#pending.set(conn, p);
          this.#pump(conn, p);
          return;
        }
        if (!to.write(chunk)) {
          from.pause();
          to.once('drain', () => from.resume());
        }
      });
    };
    forward(client, target, 'up');
    forward(target, client, 'down');
  }
}

/** The PSYNC reply line (`+FULLRESYNC ...` or `+CONTINUE ...`, without CRLF) a proxied replica received, or null. */
export function psyncReplyOf(conn: ProxiedConnection): string | null {
  const text = conn.down.toString('latin1');
  const m = /(?:^|\n)(\+(?:FULLRESYNC|CONTINUE)[^\r\n]*)\r\n/.exec(text);
  return m ? m[1]! : null;
}

/** The bytes a proxied replica received after its PSYNC reply line (as far as captured). */
export function afterPsyncReply(conn: ProxiedConnection): Buffer {
  const line = psyncReplyOf(conn);
  if (line === null) return Buffer.alloc(0);
  const at = conn.down.indexOf(`${line}\r\n`, 0, 'latin1');
  return conn.down.subarray(at + line.length + 2);
}
