/**
 * What downstream clients may send the relay, for the fuzz tests: fast-check generators of valid, mutated and
 * garbage requests (multibulk and inline), a socket stand-in for in-process connections, and a splitter of the
 * replies written back into whole RESP values.
 */
import fc from 'fast-check';
import { SocketStandIn } from './fake-socket.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { TurnBudget } from '../../src/downstream/turn-budget.js';

/** No time limit per turn: these tests feed a connection synchronously and read its replies at once. */
export const unlimitedTurn = new TurnBudget(Infinity);

/** Enough of a net.Socket for ClientConnection: records what is written, never blocks. */
export class FakeSocket extends SocketStandIn {
  readonly localAddress = '127.0.0.1';
  readonly localPort = 6380;
  ended = false;
  readonly out: Buffer[] = [];
  /** Takes the bytes at once, so the write is done at once: `done` runs before this returns. */
  write(buf: Buffer | string, done?: () => void): boolean {
    if (!this.destroyed && !this.ended) this.out.push(Buffer.from(buf));
    done?.();
    return true;
  }
  /** As net.Socket's: `end(cb)` or `end(data, cb)`; `cb` runs once ended (at once: nothing waits). */
  override end(buf?: Buffer | string | (() => void), cb?: () => void): void {
    if (typeof buf === 'function') [buf, cb] = [undefined, buf];
    if (buf !== undefined) this.write(buf);
    this.ended = true;
    cb?.();
  }
  get closed(): boolean {
    return this.ended || this.destroyed;
  }
}

// --- generators --------------------------------------------------------------------------------------

export const NAMES = [
  'ping', 'echo', 'quit', 'auth', 'hello', 'select', 'replconf', 'psync', 'sync', 'info', 'role', 'command', 'client',
  'replicaof', 'slaveof', 'config', 'multi', 'discard', 'exec', 'subscribe', 'unsubscribe', 'psubscribe', 'punsubscribe',
  'publish', 'pubsub', 'reset', 'set', 'del', 'get', 'flushall', 'debug', 'shutdown', 'wait', 'nosuch',
];
export const WORDS = [
  'list', 'kill', 'id', 'type', 'replica', 'slave', 'normal', 'pubsub', 'master', 'addr', '127.0.0.1:50000', 'skipme',
  'no', 'yes', 'one', 'setname', 'getname', 'info', 'setinfo', 'ack', 'fack', 'getack', 'capa', 'eof', 'psync2',
  'listening-port', 'ip-address', 'rdb-only', 'rdb-filter-only', 'version', '', '*', '?', '0', '1', '2', '3', '-1',
  '65536', '99999999999999999999', '1e3', 'default', 'repl', 'secret', 'pw', 'auth', 'rewrite', 'get', 'set',
  'resetstat', 'channels', 'numsub', 'numpat', 'ch', 'h*', 'h?llo', '[a-z]', '\\', 'docs', 'count', 'replication',
  'all', 'a b', 'x\r\ny', '\x00', 'ü',
];

export const word = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...WORDS) },
  { weight: 1, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 12 }).map((a) => Buffer.from(a).toString('latin1')) },
);
const name = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...NAMES) },
  { weight: 2, arbitrary: fc.constantFrom(...NAMES).map((n) => n.toUpperCase()) },
  { weight: 1, arbitrary: word },
);
export const command = fc.tuple(name, fc.array(word, { maxLength: 6 })).map(([n, args]) => [n, ...args]);

/** Inline form: words joined by blanks, some quoted (sdssplitargs syntax), some quotes left open. */
export const inline = fc.tuple(command, fc.constantFrom('\r\n', '\n', ''), fc.boolean()).map(([cmd, end, quote]) => {
  const parts = cmd.map((w, i) => (quote && i % 2 === 1 ? `"${w.replace(/"/g, '\\"')}"` : w));
  return Buffer.from(parts.join(' ') + end, 'latin1');
});
export const multibulk = command.map((cmd) => encodeCommand(cmd.map((w) => Buffer.from(w, 'latin1'))));
export const request = fc.oneof({ weight: 4, arbitrary: multibulk }, { weight: 1, arbitrary: inline });
/** One to eight requests back to back, as a pipelining client sends them. */
export const session = fc.array(request, { minLength: 1, maxLength: 8 }).map((r) => Buffer.concat(r));

/** A valid session with a few bytes flipped, dropped, inserted or duplicated, or cut short. */
const mutation = fc.tuple(fc.nat(), fc.constantFrom('flip', 'drop', 'insert', 'dup', 'cut'), fc.integer({ min: 0, max: 255 }));
export const mutated = fc.tuple(session, fc.array(mutation, { minLength: 1, maxLength: 4 })).map(([buf, muts]) => {
  let b = Buffer.from(buf);
  for (const [at, kind, byte] of muts) {
    if (b.length === 0) break;
    const i = at % b.length;
    if (kind === 'flip') b[i] = byte;
    else if (kind === 'drop') b = Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]);
    else if (kind === 'insert') b = Buffer.concat([b.subarray(0, i), Buffer.from([byte]), b.subarray(i)]);
    else if (kind === 'dup') b = Buffer.concat([b.subarray(0, i), b.subarray(i, i + 8), b.subarray(i)]);
    else b = b.subarray(0, i);
  }
  return b;
});

const RESPISH = [0x2a, 0x24, 0x0d, 0x0a, 0x20, 0x22, 0x27, 0x5c, 0x78, 0x2d, 0x30, 0x31, 0x32, 0x39, 0x41, 0x00, 0xff];
export const garbage = fc.oneof(
  fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
  fc.array(fc.constantFrom(...RESPISH), { maxLength: 200 }).map((a) => Buffer.from(a)),
);

// --- replies -----------------------------------------------------------------------------------------

/**
 * Splits `text` (latin1) into whole top-level RESP2/RESP3 replies, each as its raw text; `rest` is an unfinished
 * tail. Throws on bytes that are not RESP. RESP3 attributes (`|`) are kept with the reply they annotate.
 */
export function splitReplies(text: string): { replies: string[]; rest: string } {
  const replies: string[] = [];
  let pos = 0;
  for (;;) {
    const end = skipValue(text, pos);
    if (end === -1) return { replies, rest: text.slice(pos) };
    replies.push(text.slice(pos, end));
    pos = end;
  }
}

/** The index after the value starting at `pos`, or -1 when it is not complete. */
function skipValue(text: string, pos: number): number {
  if (pos >= text.length) return -1;
  const crlf = text.indexOf('\r\n', pos);
  if (crlf === -1) return -1;
  const type = text[pos]!;
  const line = text.slice(pos + 1, crlf);
  const after = crlf + 2;
  const count = (): number => {
    if (!/^-?\d+$/.test(line)) throw new Error(`bad RESP length ${JSON.stringify(line)} at ${pos}`);
    return Number(line);
  };
  switch (type) {
    case '+': case '-': case ':': case '_': case ',': case '#': case '(':
      return after;
    case '$': case '!': case '=': {
      const n = count();
      if (n < 0) return after;
      if (text.length < after + n + 2) return -1;
      if (text.slice(after + n, after + n + 2) !== '\r\n') throw new Error(`bulk without CRLF at ${after + n}`);
      return after + n + 2;
    }
    case '*': case '~': case '>': case '%': case '|': {
      const n = count();
      const items = type === '%' || type === '|' ? 2 * n : n;
      let p = after;
      for (let i = 0; i < Math.max(0, items); i++) {
        p = skipValue(text, p);
        if (p === -1) return -1;
      }
      // An attribute annotates the value after it.
      return type === '|' ? skipValue(text, p) : p;
    }
    default:
      throw new Error(`not RESP: ${JSON.stringify(text.slice(pos, pos + 20))} at ${pos}`);
  }
}
