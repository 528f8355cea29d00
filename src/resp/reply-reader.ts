import { constants } from 'node:buffer';
import { ProtocolError } from '../errors.js';
import { ChunkList } from './chunk-list.js';

/** An error reply (`-ERR ...`); `message` is the text without the leading `-`. */
export class RespErrorValue {
  constructor(readonly message: string) {}
}

/** simple string | error | integer | bulk | nil (bulk or array) | array */
export type RespValue = string | RespErrorValue | number | Buffer | null | RespValue[];

export interface ReplyReaderOptions {
  /** longest type line (simple string, error, integer, length header) accepted, CRLF excluded; default 64 KiB */
  maxLineLength?: number;
}

const CR = 13;
const LF = 10;
const NO_BULK = -1;

interface Frame {
  items: RespValue[];
  remaining: number;
}

/**
 * Incremental RESP2 reply reader, for our side of a connection to a Redis server.
 * Unfinished arrays and bulks are continued on the next push, never re-parsed from their start, and a
 * bulk lying inside one chunk is returned as a subarray of it (only a straddling one is copied).
 * Integers beyond 2^53 lose precision: Redis replies we read (offsets, counts) stay far below.
 */
export class ReplyReader {
  readonly #buf = new ChunkList();
  /** arrays being filled, innermost last */
  #stack: Frame[] = [];
  /** length of a bulk whose `$len` header is consumed and whose payload has not fully arrived */
  #bulkLen = NO_BULK;
  #error: ProtocolError | null = null;
  readonly #maxLine: number;

  constructor(opts: ReplyReaderOptions = {}) {
    this.#maxLine = opts.maxLineLength ?? 64 * 1024;
  }

  push(chunk: Buffer): void {
    this.#buf.push(chunk);
  }

  /** Bytes pushed and not yet returned as part of a complete value (what `takeRest()` would return). */
  get buffered(): number {
    return this.#buf.retained;
  }

  /** The next complete reply, or undefined when more bytes are needed. Throws ProtocolError on malformed input, and again on every later call. */
  next(): RespValue | undefined {
    if (this.#error) throw this.#error;
    try {
      return this.#next();
    } catch (err) {
      if (err instanceof ProtocolError) this.#error = err;
      throw err;
    }
  }

  /**
   * Return and remove every byte not yet returned as part of a value, and reset the reader (also after an error).
   * For a connection that switches from replies to a raw stream (after `+FULLRESYNC` the RDB follows): the
   * bytes of a value whose header `next()` already parsed are included, so nothing is lost.
   */
  takeRest(): Buffer {
    this.#stack = [];
    this.#bulkLen = NO_BULK;
    this.#error = null;
    return this.#buf.takeRest();
  }

  #next(): RespValue | undefined {
    const buf = this.#buf;
    for (;;) {
      let value: RespValue;
      if (this.#bulkLen !== NO_BULK) {
        const len = this.#bulkLen;
        if (buf.ahead < len + 2) return undefined;
        value = buf.take(len);
        if (buf.peek(0) !== CR || buf.peek(1) !== LF) throw this.#fail('Protocol error: bulk not terminated by CRLF', 0);
        buf.skip(2);
        this.#bulkLen = NO_BULK;
      } else {
        const line = this.#readLine();
        if (line === undefined) return undefined;
        const back = line.length + 2;
        const type = line[0];
        if (type === 0x2b /* + */) value = line.toString('utf8', 1);
        else if (type === 0x2d /* - */) value = new RespErrorValue(line.toString('utf8', 1));
        else if (type === 0x3a /* : */) value = this.#int(line, 'Protocol error: invalid integer reply');
        else if (type === 0x24 /* $ */) {
          const len = this.#int(line, 'Protocol error: invalid bulk length');
          if (len === -1) value = null;
          else if (len < -1 || len > constants.MAX_LENGTH) throw this.#fail('Protocol error: invalid bulk length', back);
          else {
            this.#bulkLen = len;
            continue;
          }
        } else if (type === 0x2a /* * */) {
          const n = this.#int(line, 'Protocol error: invalid multibulk length');
          if (n === -1) value = null;
          else if (n < -1) throw this.#fail('Protocol error: invalid multibulk length', back);
          else if (n === 0) value = [];
          else {
            this.#stack.push({ items: [], remaining: n });
            continue;
          }
        } else {
          throw this.#fail(`Protocol error: invalid reply type '${String.fromCharCode(type!)}'`, back);
        }
      }
      // Fold the value into the open arrays; a filled array is in turn a value of its parent.
      for (;;) {
        const top = this.#stack[this.#stack.length - 1];
        if (!top) {
          buf.mark();
          return value;
        }
        top.items.push(value);
        if (--top.remaining > 0) break;
        this.#stack.pop();
        value = top.items;
      }
    }
  }

  /** Consume one line and return it without its CRLF, or undefined when its LF has not arrived. */
  #readLine(): Buffer | undefined {
    const buf = this.#buf;
    const lf = buf.indexOf(LF);
    if (lf === -1) {
      if (buf.ahead > this.#maxLine + 1) throw this.#fail('Protocol error: too big reply line', 0);
      return undefined;
    }
    if (lf > this.#maxLine + 1) throw this.#fail('Protocol error: too big reply line', 0);
    if (lf < 2 || buf.peek(lf - 1) !== CR) throw this.#fail('Protocol error: reply line not terminated by CRLF', 0);
    const line = buf.take(lf - 1);
    buf.skip(2);
    return line;
  }

  /** Parse the `-?digits` after the type byte of `line` (CRLF excluded). */
  #int(line: Buffer, message: string): number {
    let i = 1;
    const neg = line[1] === 0x2d;
    if (neg) i++;
    if (i >= line.length) throw this.#fail(message, line.length + 2);
    let n = 0;
    for (; i < line.length; i++) {
      const d = line[i]! - 0x30;
      if (d < 0 || d > 9) throw this.#fail(message, line.length + 2);
      n = n * 10 + d;
    }
    return neg ? -n : n;
  }

  /** A ProtocolError whose offset is the start of the offending line: the cursor minus `back` bytes already consumed. */
  #fail(message: string, back: number): ProtocolError {
    return new ProtocolError(message, this.#buf.offset - back);
  }
}
