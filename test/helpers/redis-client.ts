import { connect, type Socket } from 'node:net';
import { ReplyReader, RespErrorValue, type RespValue } from '../../src/resp/reply-reader.js';
import { encodeCommand } from '../../src/resp/writer.js';

export type RedisArg = string | number | Buffer;

/** One outstanding request: a single call, or a pipeline collecting `count` replies. */
interface Pending {
  count: number;
  replies: RespValue[];
  resolve: (replies: RespValue[]) => void;
  reject: (err: Error) => void;
}

/**
 * Minimal promise-based Redis client for tests, built on the project's RESP reader and writer.
 * Replies are matched to requests in FIFO order. No reconnects: a closed socket rejects everything outstanding.
 */
export class RedisClient {
  readonly #socket: Socket;
  readonly #reader = new ReplyReader();
  readonly #queue: Pending[] = [];
  #closedError: Error | undefined;
  #closed: Promise<void>;

  private constructor(socket: Socket, readonly port: number, readonly host: string) {
    this.#socket = socket;
    this.#closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err) => this.#fail(err));
    socket.on('close', () => this.#fail(new Error(`connection to ${host}:${port} closed`)));
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RedisClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host });
      socket.setNoDelay(true);
      const onError = (err: Error): void => {
        socket.destroy();
        reject(err);
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.off('error', onError);
        resolve(new RedisClient(socket, port, host));
      });
    });
  }

  /** Send one command. Rejects with `Error(<redis error text>)` (property `reply` = the RespErrorValue) on an error reply. */
  async call(...args: RedisArg[]): Promise<RespValue> {
    const [reply] = await this.#send([args]);
    if (reply instanceof RespErrorValue) {
      throw Object.assign(new Error(reply.message), { reply, command: String(args[0]) });
    }
    return reply as RespValue;
  }

  /** Like call(), for replies that are a simple or bulk string; anything else (nil included) rejects. */
  async callString(...args: RedisArg[]): Promise<string> {
    const reply = await this.call(...args);
    if (typeof reply === 'string') return reply;
    if (Buffer.isBuffer(reply)) return reply.toString('utf8');
    throw new Error(`${String(args[0])}: expected a string reply, got ${reply === null ? 'nil' : typeof reply}`);
  }

  /** INFO [section] parsed into key -> value (section headers and blank lines dropped). */
  async info(section?: string): Promise<Record<string, string>> {
    const text = await (section === undefined ? this.callString('INFO') : this.callString('INFO', section));
    const out: Record<string, string> = {};
    for (const line of text.split('\r\n')) {
      if (line === '' || line.startsWith('#')) continue;
      const i = line.indexOf(':');
      if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
    }
    return out;
  }

  /** Write all commands in one go; resolves with every reply in order. Error replies are RespErrorValue values. */
  pipeline(cmds: RedisArg[][]): Promise<RespValue[]> {
    if (cmds.length === 0) return Promise.resolve([]);
    return this.#send(cmds);
  }

  /** QUIT-free close: end our side and wait for the socket to close. Idempotent. */
  async close(): Promise<void> {
    if (!this.#socket.destroyed) this.#socket.end();
    // A server that never FINs back must not hang a test teardown.
    const timer = setTimeout(() => this.#socket.destroy(), 1000);
    await this.#closed;
    clearTimeout(timer);
  }

  #send(cmds: RedisArg[][]): Promise<RespValue[]> {
    if (this.#closedError !== undefined) return Promise.reject(this.#closedError);
    return new Promise((resolve, reject) => {
      this.#queue.push({ count: cmds.length, replies: [], resolve, reject });
      const payload = cmds.length === 1 ? encodeCommand(cmds[0]!) : Buffer.concat(cmds.map((c) => encodeCommand(c)));
      this.#socket.write(payload);
    });
  }

  #onData(chunk: Buffer): void {
    try {
      this.#reader.push(chunk);
      for (let v = this.#reader.next(); v !== undefined; v = this.#reader.next()) {
        const head = this.#queue[0];
        if (head === undefined) throw new Error(`unexpected reply with no request outstanding: ${String(v)}`);
        head.replies.push(v);
        if (head.replies.length === head.count) {
          this.#queue.shift();
          head.resolve(head.replies);
        }
      }
    } catch (err) {
      this.#fail(err instanceof Error ? err : new Error(String(err)));
      this.#socket.destroy();
    }
  }

  #fail(err: Error): void {
    this.#closedError ??= err;
    for (const p of this.#queue.splice(0)) p.reject(err);
  }
}
