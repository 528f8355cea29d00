import { ProtocolError } from '../errors.js';
import { ChunkList } from './chunk-list.js';

export interface RequestParserOptions {
  /** longest bulk argument (redis `proto-max-bulk-len`) */
  maxBulkLen: number;
  /** most bytes an unfinished command may hold (redis `client-query-buffer-limit`) */
  maxQueryBuffer: number;
  /** most arguments in a multibulk; default 1024*1024 (Redis 6; Redis 7 allows INT_MAX) */
  maxMultibulkLen?: number;
  /**
   * How many arguments of a command named `name` (its args[0]) are worth keeping, args[0] included; asked only of
   * commands with more than KEPT_ALWAYS. Past it the rest are read and dropped: the command is refused whatever they
   * say (droppedArgs tells how many). Absent: all are kept.
   */
  argsKept?: (name: Buffer) => number;
}

const CR = 13;
const LF = 10;
const STAR = 0x2a;
const DOLLAR = 0x24;
const DQUOTE = 0x22;
const SQUOTE = 0x27;
const BACKSLASH = 0x5c;
/** PROTO_INLINE_MAX_SIZE: also bounds the wait for a multibulk or bulk header's CR */
const INLINE_MAX = 64 * 1024;
const INT_MAX = 2 ** 31 - 1;
/** Redis 7 processMultibulkBuffer: before AUTH (auth on), at most 10 arguments and 16 KiB per bulk. */
const UNAUTH_MAX_ARGS = 10;
const UNAUTH_MAX_BULK = 16 * 1024;
/**
 * Memory one parsed argument costs besides its payload: its Buffer and its slot in the args array. Measured as RSS
 * per argument on Node 20 (200,000 kept): a view of a read 212 bytes, a Buffer of its own (a MULTI copy) 202-227,
 * an empty one 280 (each has its ArrayBuffer); 256 before, it was 200, and 20 clients holding unfinished commands of
 * a million empty arguments took the relay to 1.2 GB under a 256 MB listen.max-clients-memory.
 */
export const ARG_OVERHEAD = 256;
/**
 * A bulk this long or longer whose bytes have not all arrived is gathered into a Buffer of its own length as they
 * come (Redis PROTO_MBULK_BIG_ARG, whose query buffer grows to the announced length).
 */
const BIG_ARG = 32 * 1024;
/** Commands with at most this many arguments keep them all without asking argsKept (no string made per command). */
const KEPT_ALWAYS = 8;
const ARGC = Symbol('argc');
type Parsed = Buffer[] & { [ARGC]?: number };

/**
 * How many arguments the parser read past and dropped from `args` (argsKept): 0 for a command kept whole. A command
 * with dropped arguments must be refused, never run.
 */
export function droppedArgs(args: Buffer[]): number {
  const argc = (args as Parsed)[ARGC];
  return argc === undefined ? 0 : argc - args.length;
}

const ReqType = { Unknown: 0, Inline: 1, Multibulk: 2 } as const;
type ReqType = (typeof ReqType)[keyof typeof ReqType];

/**
 * Server-side parser of client requests with redis networking.c semantics (`processMultibulkBuffer`,
 * `processInlineBuffer`, `sdssplitargs`), error texts included. Bulk args inside one chunk are subarrays.
 *
 * Like Redis, the byte after a header's CR and the two bytes after a bulk payload are skipped unchecked:
 * a client that works against Redis works against us.
 */
export class RequestParser {
  #buf = new ChunkList();
  readonly #maxBulkLen: number;
  readonly #maxQueryBuffer: number;
  readonly #maxMultibulkLen: number;
  #reqType: ReqType = ReqType.Unknown;
  /** args still to read in the current multibulk; 0 = its header is not read yet */
  #multibulkLen = 0;
  /** length of the bulk whose header is read, -1 = none */
  #bulkLen = -1;
  #args: Buffer[] = [];
  /** Of the current multibulk: its argument count, and how many of them are kept (argsKept). */
  #argc = 0;
  #kept = Infinity;
  /** The length of the last header read (#header), for the offset of an error about it. */
  #headerLen = 0;
  /** The big argument being gathered (BIG_ARG), and how many of its bytes it has; null = none. */
  #big: Buffer | null = null;
  #bigFill = 0;
  /** The length of a big argument whose header was read and whose Buffer is not made yet (#gather); 0 = none. */
  #announced = 0;
  /** Bytes of the unfinished command #buf let go of while a big argument was gathered (still counted in `buffered`). */
  #released = 0;
  readonly #argsKept: ((name: Buffer) => number) | null;
  #error: ProtocolError | null = null;
  /** The client must still AUTH: Redis 7's unauthenticated limits apply to the next commands. */
  unauthenticated = false;

  constructor(opts: RequestParserOptions) {
    this.#maxBulkLen = opts.maxBulkLen;
    this.#maxQueryBuffer = opts.maxQueryBuffer;
    this.#maxMultibulkLen = Math.min(opts.maxMultibulkLen ?? 1024 * 1024, INT_MAX);
    this.#argsKept = opts.argsKept ?? null;
  }

  push(chunk: Buffer): void {
    this.#buf.push(chunk);
  }

  /** Drops everything pushed and not returned: the client is closing, its unfinished input goes now, not with it. */
  discard(): void {
    this.#buf = new ChunkList();
    this.#big = null;
    this.#bigFill = 0;
    this.#announced = 0;
    this.#released = 0;
    this.#args = [];
    this.#multibulkLen = 0;
    this.#bulkLen = -1;
    this.#reqType = ReqType.Unknown;
  }

  /** Bytes pushed and not yet returned as part of a command (the unfinished command's bytes included). */
  get buffered(): number {
    return this.#buf.retained + this.#released;
  }

  /**
   * Memory the unfinished input holds: its bytes and chunks, the argument objects parsed so far (Redis argv-mem), and
   * the whole length of a big argument being gathered, as Redis counts its query buffer grown to it.
   */
  get memory(): number {
    const unfilled = this.#big === null ? this.#announced : this.#big.length - this.#bigFill;
    return this.#buf.held + this.#released + unfilled + this.argvMemory;
  }

  /** The memory of the argument objects the unfinished command has so far (their bytes are in `buffered`). */
  get argvMemory(): number {
    return this.#args.length * ARG_OVERHEAD;
  }

  /** One complete command's args, or undefined when more bytes are needed. Throws ProtocolError, then again on every call. */
  next(): Buffer[] | undefined {
    if (this.#error) throw this.#error;
    try {
      const args = this.#next();
      if (args === undefined && this.buffered > this.#maxQueryBuffer) {
        throw limitError(new ProtocolError('Protocol error: query buffer limit exceeded', this.#buf.offset), 'listen.max-query-buffer');
      }
      return args;
    } catch (err) {
      if (err instanceof ProtocolError) this.#error = err;
      throw err;
    }
  }

  #next(): Buffer[] | undefined {
    const buf = this.#buf;
    for (;;) {
      if (this.#reqType === ReqType.Unknown) {
        if (buf.ahead === 0) return undefined;
        this.#reqType = buf.peek(0) === STAR ? ReqType.Multibulk : ReqType.Inline;
      }
      const args = this.#reqType === ReqType.Inline ? this.#inline() : this.#multibulk();
      if (args === undefined) return undefined;
      this.#reqType = ReqType.Unknown;
      buf.mark();
      // Empty lines, `*0` and `*-1` are no command.
      if (args.length > 0) return args;
    }
  }

  #inline(): Buffer[] | undefined {
    const buf = this.#buf;
    const lf = buf.indexOf(LF, true);
    if (lf === -1) {
      if (buf.ahead > INLINE_MAX) throw this.#fail('Protocol error: too big inline request');
      return undefined;
    }
    // strchr stops at a NUL: a line with one waits for 64 KiB, then fails, as in Redis.
    const len = lf > 0 && buf.peek(lf - 1) === CR ? lf - 1 : lf;
    const line = buf.take(len);
    buf.skip(lf + 1 - len);
    const args = splitArgs(line);
    if (args === null) throw new ProtocolError('Protocol error: unbalanced quotes in request', buf.offset - lf - 1);
    if (args.length <= KEPT_ALWAYS || this.#argsKept === null) return args;
    return this.#done(args.slice(0, Math.max(1, this.#argsKept(args[0]!))), args.length);
  }

  #multibulk(): Buffer[] | undefined {
    const buf = this.#buf;
    if (this.#multibulkLen === 0) {
      const n = this.#header('Protocol error: too big mbulk count string');
      if (n === undefined) return undefined;
      if (n === null || n > this.#maxMultibulkLen) throw this.#fail('Protocol error: invalid multibulk length', this.#headerLen);
      if (this.unauthenticated && n > UNAUTH_MAX_ARGS) {
        throw limitError(this.#fail('Protocol error: unauthenticated multibulk length', this.#headerLen), 'unauthenticated-multibulk-len');
      }
      buf.skip(2);
      if (n <= 0) return [];
      this.#multibulkLen = n;
      this.#argc = n;
      this.#kept = Infinity;
      this.#args = [];
    }
    while (this.#multibulkLen > 0) {
      if (this.#bulkLen === -1) {
        const first = buf.ahead > 0 ? buf.peek(0) : -1;
        const len = this.#header('Protocol error: too big bulk count string');
        if (len === undefined) return undefined;
        const back = this.#headerLen;
        if (first !== DOLLAR) {
          // addReplyErrorFormat turns CR and LF into spaces.
          const got = first === CR || first === LF ? ' ' : String.fromCharCode(first);
          throw this.#fail(`Protocol error: expected '$', got '${got}'`, back);
        }
        if (len === null || len < 0) throw this.#fail('Protocol error: invalid bulk length', back);
        // Redis gives the same error for a bulk past proto-max-bulk-len.
        if (len > this.#maxBulkLen) throw limitError(this.#fail('Protocol error: invalid bulk length', back), 'listen.max-bulk-len');
        if (this.unauthenticated && len > UNAUTH_MAX_BULK) {
          throw limitError(this.#fail('Protocol error: unauthenticated bulk length', back), 'unauthenticated-bulk-len');
        }
        buf.skip(2);
        this.#bulkLen = len;
      }
      const keep = this.#args.length < this.#kept;
      if (keep && this.#bulkLen >= BIG_ARG && (this.#big !== null || this.#announced > 0 || buf.ahead < this.#bulkLen + 2)) {
        if (!this.#gather()) return undefined;
      } else {
        if (buf.ahead < this.#bulkLen + 2) return undefined;
        // A dropped argument's bytes stay held, and counted, until the command ends; it costs no Buffer.
        if (keep) this.#args.push(buf.take(this.#bulkLen));
        else buf.skip(this.#bulkLen);
        buf.skip(2);
      }
      this.#bulkLen = -1;
      this.#multibulkLen--;
      if (this.#args.length === 1 && this.#kept === Infinity && this.#argc > KEPT_ALWAYS && this.#argsKept !== null) {
        this.#kept = Math.max(1, this.#argsKept(this.#args[0]!));
      }
    }
    return this.#done(this.#args, this.#argc);
  }

  /**
   * Copies what has come of the big argument into a Buffer of its length and lets #buf release the reads it copied:
   * taken whole once complete, its reads and the copy of them were held together, twice its size (a client could
   * make the relay hold twice what listen.max-clients-memory counted). True once it is whole, with its CRLF, and
   * pushed to the args.
   */
  #gather(): boolean {
    const buf = this.#buf;
    if (this.#big === null) {
      // Counted from its header, made at the next call (after the client's memory was checked): a client the count
      // puts past listen.max-clients-memory is closed before a buffer of the length it announced is made.
      if (this.#announced === 0) {
        this.#announced = this.#bulkLen;
        return false;
      }
      this.#big = Buffer.allocUnsafeSlow(this.#bulkLen);
      this.#announced = 0;
    }
    const n = Math.min(buf.ahead, this.#big.length - this.#bigFill);
    buf.copyTo(this.#big, this.#bigFill, n);
    this.#bigFill += n;
    if (this.#bigFill < this.#big.length || buf.ahead < 2) {
      this.#released += buf.retained - buf.ahead;
      buf.mark();
      return false;
    }
    buf.skip(2);
    this.#args.push(this.#big);
    this.#big = null;
    this.#bigFill = 0;
    return true;
  }

  /** The command's args, marked with its argument count when some were dropped (droppedArgs). */
  #done(args: Buffer[], argc: number): Buffer[] {
    this.#released = 0;
    this.#args = [];
    if (args.length < argc) (args as Parsed)[ARGC] = argc;
    return args;
  }

  /**
   * Consume a header up to (not including) its CR, once the CR and one more byte have arrived, and return its number
   * (after its `*` or `$`; null when it is none); undefined when it has not arrived. #headerLen: its length.
   * Redis searches for CR only (with strchr, so a NUL hides it), and `tooBig` fires when 64 KiB arrive without one.
   */
  #header(tooBig: string): number | null | undefined {
    const buf = this.#buf;
    const cr = buf.indexOf(CR, true);
    if (cr === -1) {
      if (buf.ahead > INLINE_MAX) throw this.#fail(tooBig);
      return undefined;
    }
    if (cr > buf.ahead - 2) return undefined;
    this.#headerLen = cr;
    return buf.takeInteger(cr);
  }

  /** A ProtocolError at the cursor minus `back` bytes already consumed. */
  #fail(message: string, back = 0): ProtocolError {
    return new ProtocolError(message, this.#buf.offset - back);
  }
}

/** The fixed limits that have no config key, by the name ProtocolError.limit gives them. */
export const FIXED_LIMITS: Readonly<Record<string, number>> = {
  'unauthenticated-multibulk-len': UNAUTH_MAX_ARGS,
  'unauthenticated-bulk-len': UNAUTH_MAX_BULK,
};

function limitError(err: ProtocolError, limit: string): ProtocolError {
  err.limit = limit;
  return err;
}

/** C `isspace` */
function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

/** Bytes that end an unquoted token in `sdssplitargs` (fewer than isspace: no \v, \f). */
function endsToken(c: number): boolean {
  return c === 0x20 || c === LF || c === CR || c === 0x09;
}

function hexValue(c: number | undefined): number {
  if (c === undefined) return -1;
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

const ESCAPES: Record<number, number> = { 0x6e: LF, 0x72: CR, 0x74: 0x09, 0x62: 0x08, 0x61: 0x07 };

/**
 * redis `sdssplitargs`: blank-separated tokens; "double quotes" with \n \r \t \b \a \xHH and \<char>
 * escapes; 'single quotes' with \' only; a closing quote must be followed by a blank or the end.
 * Returns null for unbalanced quotes. Unquoted tokens are subarrays of `line`.
 */
export function splitArgs(line: Buffer): Buffer[] | null {
  // Redis runs it on a C string: a NUL ends the line.
  const nul = line.indexOf(0);
  if (nul !== -1) line = line.subarray(0, nul);
  const n = line.length;
  const args: Buffer[] = [];
  let p = 0;
  for (;;) {
    while (p < n && isSpace(line[p]!)) p++;
    if (p >= n) return args;
    const start = p;
    while (p < n && !endsToken(line[p]!) && line[p] !== DQUOTE && line[p] !== SQUOTE) p++;
    if (p >= n || endsToken(line[p]!)) {
      args.push(line.subarray(start, p));
      continue; // the blank is skipped by the loop head
    }
    // A quote: the token is the unquoted prefix plus the quoted part.
    const bytes: number[] = [];
    for (let i = start; i < p; i++) bytes.push(line[i]!);
    const quote = line[p++];
    for (;;) {
      if (p >= n) return null;
      const c = line[p]!;
      if (quote === DQUOTE && c === BACKSLASH && line[p + 1] === 0x78 && hexValue(line[p + 2]) >= 0 && hexValue(line[p + 3]) >= 0) {
        bytes.push(hexValue(line[p + 2]) * 16 + hexValue(line[p + 3]));
        p += 4;
      } else if (quote === DQUOTE && c === BACKSLASH && p + 1 < n) {
        const e = line[p + 1]!;
        bytes.push(ESCAPES[e] ?? e);
        p += 2;
      } else if (quote === SQUOTE && c === BACKSLASH && line[p + 1] === SQUOTE) {
        bytes.push(SQUOTE);
        p += 2;
      } else if (c === quote) {
        if (p + 1 < n && !isSpace(line[p + 1]!)) return null;
        p++;
        break;
      } else {
        bytes.push(c);
        p++;
      }
    }
    args.push(Buffer.from(bytes));
  }
}
