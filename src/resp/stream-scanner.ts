/**
 * Scanner for the replication stream a relay receives from its master: finds command boundaries and
 * offsets without copying the stream. A byte-level state machine (nats.js parser) that survives any
 * chunk split, even inside a length number or a CRLF; bulk payloads are skipped by arithmetic.
 */
import { InternalError } from '../errors.js';

/** Passed to `onCommand`; the scanner reuses one object (and a few args arrays) for every command. */
export interface ScannedCommand {
  /** stream offset of the command's first byte */
  start: number;
  /** stream offset of the command's last byte (after processing it, a replica's offset equals `end`) */
  end: number;
  argc: number;
  /**
   * Decoded args: all of them when `decodeArgs` is true; otherwise a prefix of at most args[0] and
   * args[1], each only when it is ≤ 64 bytes (args[1] only if args[0] is there and `secondArg` wants it), enough to
   * recognise `REPLCONF GETACK`, `PING`, `SELECT`, `MULTI`.
   * With `decodeArgs`, bulks inside one chunk are subarrays of it and bulks that straddle chunks are copied; so are
   * the bulks of a command that continues in a later chunk: once scan() returns, no arg is a view of its chunk.
   * Without it, args[0] and args[1] are views of the scanner's own scratch space, overwritten by the next
   * command: no allocation per command. Either way, copy what you keep, and never modify `args`.
   */
  args: Buffer[];
}

export interface ScanResult {
  validBytes: number;
  error: string | null;
}

export interface StreamScannerOptions {
  /** longest bulk accepted; default 512 MiB (redis proto-max-bulk-len) */
  maxBulkLen?: number;
  /**
   * Without decodeArgs: whether a command named `name` (args[0]) needs its args[1]; default every command. Asked once
   * per command; the key of every SET is not worth copying when only REPLCONF GETACK is looked for.
   */
  secondArg?: (name: Buffer) => boolean;
}

/** args up to this size are decoded even when `decodeArgs` is false */
const SMALL_ARG = 64;
const INT_MAX = 2 ** 31 - 1;
const CR = 13;
const LF = 10;
const STAR = 0x2a;
const DOLLAR = 0x24;
const MINUS = 0x2d;

const Capture = { None: 0, Scratch: 1, Full: 2 } as const;
type Capture = (typeof Capture)[keyof typeof Capture];

// Small integers: compared in the hot loop, never logged.
const State = {
  CmdStart: 0, // '*', or the CR/LF of an empty line
  EmptyLf: 1, // the LF of an empty line
  Count: 2, // argc digits (or a leading '-') until CR
  CountLf: 3,
  Dollar: 4,
  BulkLen: 5, // bulk length digits until CR
  BulkLenLf: 6,
  Payload: 7,
  PayloadCr: 8,
  PayloadLf: 9,
  Failed: 10,
} as const;
type State = (typeof State)[keyof typeof State];

export class StreamScanner {
  /** may be toggled at any time; applies from the next command */
  decodeArgs = false;

  readonly #onCommand: (cmd: ScannedCommand) => void;
  readonly #maxBulkLen: number;
  readonly #secondArg: ((name: Buffer) => boolean) | null;
  /** Without decodeArgs: the current command's args[1] is captured (secondArg said so of its args[0]). */
  #wantSecond = false;
  #state: State = State.CmdStart;
  /** offset of the last byte scanned */
  #offset = 0;
  /** offset of the last byte of the last complete command or empty line */
  #boundary = 0;
  #error: string | null = null;

  // The number being read: digits, first digit, sign.
  #num = 0;
  #digits = 0;
  #firstDigit = 0;
  #neg = false;

  // The command being read. #cmd is reused for every command: no allocation per command.
  readonly #cmd: ScannedCommand = { start: 0, end: 0, argc: 0, args: [] };
  /**
   * Without decodeArgs, #cmd.args is one of three arrays of fixed length 0, 1 and 2, whose elements are set in place.
   * Emptying and refilling one array per command cost a call into V8's Array.prototype.push per arg (emptied, an
   * array drops its backing store, and the next push grows it again).
   */
  readonly #smallArgs: [Buffer[], Buffer[], Buffer[]];
  /** #cmd.args with decodeArgs: emptied and filled per command. */
  readonly #decoded: Buffer[] = [];
  #decode = false;
  #argi = 0;
  /** payload bytes of the current bulk still to come */
  #remaining = 0;
  /** how the current bulk is decoded: not, into scratch (small args[0]/args[1]), or in full */
  #capture: Capture = Capture.None;
  /** a fully decoded bulk's copy when it straddles chunks */
  #capBuf: Buffer | null = null;
  #capFill = 0;
  /** Scratch for args[0] and args[1] without decodeArgs, and views of it by length (made once, on first use). */
  readonly #scratch: [Buffer, Buffer] = [Buffer.allocUnsafeSlow(SMALL_ARG), Buffer.allocUnsafeSlow(SMALL_ARG)];
  readonly #views: [Array<Buffer | undefined>, Array<Buffer | undefined>] = [[], []];

  constructor(onCommand: (cmd: ScannedCommand) => void, opts: StreamScannerOptions = {}) {
    this.#onCommand = onCommand;
    this.#maxBulkLen = opts.maxBulkLen ?? 512 * 1024 * 1024;
    this.#secondArg = opts.secondArg ?? null;
    const [a, b] = this.#scratch;
    this.#smallArgs = [[], [a], [a, b]];
    this.#cmd.args = this.#smallArgs[0];
  }

  /** The next byte scanned has offset `offset + 1` (offset = the relay's master_repl_offset). Clears any partial state. */
  reset(offset: number): void {
    this.#offset = offset;
    this.#boundary = offset;
    this.#state = State.CmdStart;
    this.#error = null;
    this.#capBuf = null;
    this.#cmd.args = this.#smallArgs[0];
  }

  /** offset of the last byte scanned */
  get offset(): number {
    return this.#offset;
  }

  /**
   * Offset of the last byte of the last complete command (or empty line): where a replica's processed
   * offset stands. Less than `offset` while a command is partially scanned; bytes past it are an
   * unfinished command, which Redis discards when the master link drops.
   */
  get boundary(): number {
    return this.#boundary;
  }

  /**
   * Scan one chunk. `validBytes` = bytes that are valid RESP so far: the whole chunk, unless `error` holds a
   * Redis-like protocol error text; the scanner then stays failed (validBytes 0) until `reset()`.
   * `onCommand` is called synchronously for each command that ends in this chunk. It gets the same
   * ScannedCommand object (and args arrays the scanner reuses) every time, so it must copy what it keeps; it must
   * not throw, modify `args`, or call `reset()`.
   */
  scan(chunk: Buffer): ScanResult {
    if (this.#state === State.Failed) return { validBytes: 0, error: this.#error };
    const base = this.#offset + 1; // offset of chunk[0]
    const len = chunk.length;
    let pos = 0;
    let state: State = this.#state;
    // Fast paths handle a header or payload+CRLF lying whole in the chunk; anything else (a split, bad
    // input) goes byte by byte through the states, which also find the exact error position.
    while (pos < len) {
      switch (state) {
        case State.Payload: {
          const rem = this.#remaining;
          const avail = len - pos;
          if (avail >= rem + 2 && chunk[pos + rem] === CR && chunk[pos + rem + 1] === LF) {
            if (this.#capture !== Capture.None) this.#captureEnd(chunk, pos, rem);
            pos += rem + 2;
            state = this.#bulkDone(base + pos - 1);
            break;
          }
          if (avail < rem) {
            if (this.#capture !== Capture.None) this.#capturePart(chunk, pos, len);
            this.#remaining = rem - avail;
            pos = len;
            break;
          }
          if (this.#capture !== Capture.None) this.#captureEnd(chunk, pos, rem);
          pos += rem;
          state = State.PayloadCr;
          break;
        }
        case State.Dollar: {
          const c = chunk[pos]!;
          if (c !== DOLLAR) {
            const got = c === CR || c === LF ? ' ' : String.fromCharCode(c);
            return this.#fail(base, pos, `Protocol error: expected '$', got '${got}'`);
          }
          const next = this.#wholeNumber(chunk, pos + 1, false, this.#maxBulkLen);
          if (next !== -1) {
            this.#bulkHeaderDone();
            pos = next;
            state = State.Payload;
            break;
          }
          this.#startNumber();
          state = State.BulkLen;
          pos++;
          break;
        }
        case State.CmdStart: {
          const c = chunk[pos];
          if (c === STAR) {
            this.#cmd.start = base + pos;
            const next = this.#wholeNumber(chunk, pos + 1, true, INT_MAX);
            if (next !== -1) {
              pos = next;
              state = this.#countDone(base + pos - 1);
              break;
            }
            this.#startNumber();
            state = State.Count;
          } else if (c === LF) {
            this.#boundary = base + pos;
          } else if (c === CR) {
            state = State.EmptyLf;
          } else {
            return this.#fail(base, pos, 'Protocol error: Master using the inline protocol. Desync?');
          }
          pos++;
          break;
        }
        case State.PayloadCr:
          if (chunk[pos] !== CR) return this.#fail(base, pos, 'Protocol error: bulk not terminated by CRLF');
          pos++;
          state = State.PayloadLf;
          break;
        case State.PayloadLf:
          if (chunk[pos] !== LF) return this.#fail(base, pos, 'Protocol error: bulk not terminated by CRLF');
          state = this.#bulkDone(base + pos);
          pos++;
          break;
        case State.EmptyLf:
          if (chunk[pos] !== LF) return this.#fail(base, pos, 'Protocol error: Master using the inline protocol. Desync?');
          this.#boundary = base + pos;
          state = State.CmdStart;
          pos++;
          break;
        case State.Count: {
          const c = chunk[pos]!;
          if (c === CR) {
            if (!this.#numberValid()) return this.#fail(base, pos, 'Protocol error: invalid multibulk length');
            state = State.CountLf;
          } else if (!this.#digit(c, true, INT_MAX)) {
            return this.#fail(base, pos, 'Protocol error: invalid multibulk length');
          }
          pos++;
          break;
        }
        case State.CountLf:
          if (chunk[pos] !== LF) return this.#fail(base, pos, 'Protocol error: invalid multibulk length');
          state = this.#countDone(base + pos);
          pos++;
          break;
        case State.BulkLen: {
          const c = chunk[pos]!;
          if (c === CR) {
            if (!this.#numberValid()) return this.#fail(base, pos, 'Protocol error: invalid bulk length');
            state = State.BulkLenLf;
          } else if (!this.#digit(c, false, this.#maxBulkLen)) {
            return this.#fail(base, pos, 'Protocol error: invalid bulk length');
          }
          pos++;
          break;
        }
        case State.BulkLenLf:
          if (chunk[pos] !== LF) return this.#fail(base, pos, 'Protocol error: invalid bulk length');
          this.#bulkHeaderDone();
          state = State.Payload;
          pos++;
          break;
        /* c8 ignore next 2 */
        default:
          throw new InternalError(`stream scanner in state ${state}`); // Failed is handled on entry
      }
    }
    // Mid-command, decoded args that are views of this chunk are copied: after scan() returns the scanner holds no
    // view of it (the log reuses a block's memory once it dropped it, block-pool.ts).
    if (this.#decode && state !== State.CmdStart) this.#detachArgs(chunk);
    this.#state = state;
    this.#offset = base + len - 1;
    return { validBytes: len, error: null };
  }

  #detachArgs(chunk: Buffer): void {
    const args = this.#cmd.args;
    for (let i = 0; i < args.length; i++) if (args[i]!.buffer === chunk.buffer) args[i] = Buffer.from(args[i]!);
  }

  /**
   * Fast path for `<digits>\r\n` starting at chunk[i] and ending inside the chunk: sets #num and #neg and
   * returns the index after the LF. Returns -1 when the line is split or not canonical (leading zero,
   * `-0`, too big, bad byte): the byte-by-byte states then take it, and report any error where it is.
   */
  #wholeNumber(chunk: Buffer, i: number, allowNeg: boolean, max: number): number {
    const len = chunk.length;
    let neg = false;
    if (allowNeg && i < len && chunk[i] === MINUS) {
      neg = true;
      i++;
    }
    const first = i;
    let n = 0;
    for (; i < len; i++) {
      const d = chunk[i]! - 0x30;
      if (d < 0 || d > 9) break;
      n = n * 10 + d;
    }
    const digits = i - first;
    if (i + 1 >= len || chunk[i] !== CR || chunk[i + 1] !== LF || digits === 0 || digits > 19) return -1;
    if (chunk[first] === 0x30 && (digits > 1 || neg)) return -1;
    if (!neg && n > max) return -1;
    this.#num = n;
    this.#neg = neg;
    return i + 2;
  }

  /** The multibulk header ended at `lf`: the next state. */
  #countDone(lf: number): State {
    if (this.#neg || this.#num === 0) {
      // `*0` and `*-N` are no command, as in Redis.
      this.#boundary = lf;
      return State.CmdStart;
    }
    const cmd = this.#cmd;
    cmd.argc = this.#num;
    this.#argi = 0;
    this.#decode = this.decodeArgs;
    if (this.#decode) {
      // Emptied in place: the array is reused (pop is cheaper than `length = 0`).
      const args = this.#decoded;
      while (args.length > 0) args.pop();
      cmd.args = args;
    } else cmd.args = this.#smallArgs[0];
    return State.Dollar;
  }

  #bulkHeaderDone(): void {
    const n = this.#num;
    this.#remaining = n;
    this.#capFill = 0;
    this.#capBuf = null;
    if (this.#decode) this.#capture = Capture.Full;
    else {
      const argi = this.#argi;
      const wanted = argi === 0 || (argi === 1 && this.#wantSecond);
      this.#capture = wanted && n <= SMALL_ARG && this.#cmd.args.length === argi ? Capture.Scratch : Capture.None;
    }
  }

  /** A bulk's final LF at `lf`: emit the command if it was the last arg; the next state. */
  #bulkDone(lf: number): State {
    if (++this.#argi < this.#cmd.argc) return State.Dollar;
    const cmd = this.#cmd;
    cmd.end = lf;
    this.#boundary = lf;
    this.#onCommand(cmd);
    return State.CmdStart;
  }

  /** The last `rem` payload bytes of a decoded bulk are chunk[pos, pos + rem). */
  #captureEnd(chunk: Buffer, pos: number, rem: number): void {
    if (this.#capture === Capture.Scratch) {
      const slot = this.#argi as 0 | 1;
      const n = this.#copyScratch(chunk, pos, pos + rem);
      const view = this.#views[slot][n] ?? this.#view(slot, n);
      const small = this.#smallArgs;
      if (slot === 0) {
        small[1][0] = view;
        this.#wantSecond = this.#secondArg === null || this.#secondArg(view);
      }
      small[2][slot] = view;
      this.#cmd.args = small[slot + 1]!;
    } else if (this.#capBuf === null) this.#cmd.args.push(chunk.subarray(pos, pos + rem));
    else {
      this.#capturePart(chunk, pos, pos + rem);
      this.#cmd.args.push(this.#capBuf);
      this.#capBuf = null;
    }
  }

  #view(slot: 0 | 1, n: number): Buffer {
    const v = this.#scratch[slot].subarray(0, n);
    this.#views[slot][n] = v;
    return v;
  }

  #startNumber(): void {
    this.#num = 0;
    this.#digits = 0;
    this.#neg = false;
  }

  /** Take one byte of a number; false if it cannot be part of a valid one no larger than `max`. */
  #digit(c: number, allowNeg: boolean, max: number): boolean {
    if (c === MINUS && allowNeg && this.#digits === 0 && !this.#neg) {
      this.#neg = true;
      return true;
    }
    const d = c - 0x30;
    if (d < 0 || d > 9) return false;
    if (this.#digits === 0) this.#firstDigit = d;
    this.#digits++;
    this.#num = this.#num * 10 + d;
    // Negative counts are no command whatever their size; cap their digits at int64's 19.
    return this.#neg ? this.#digits <= 19 : this.#num <= max;
  }

  /** redis string2ll shape: digits present, no leading zero, no `-0`. */
  #numberValid(): boolean {
    if (this.#digits === 0) return false;
    if (this.#firstDigit === 0) return this.#digits === 1 && !this.#neg;
    return true;
  }

  /** Copy chunk[from, to) of the current bulk into the scratch space, or (in full) into its own buffer when it straddles chunks. */
  #capturePart(chunk: Buffer, from: number, to: number): void {
    if (this.#capture === Capture.Scratch) {
      this.#copyScratch(chunk, from, to);
      return;
    }
    if (this.#capBuf === null) {
      this.#capBuf = Buffer.allocUnsafe(this.#remaining);
      this.#capFill = 0;
    }
    this.#capFill += chunk.copy(this.#capBuf, this.#capFill, from, to);
  }

  /** Appends chunk[from, to) to the scratch of the current arg; returns the bytes it holds now. Kept small so V8 inlines it. */
  #copyScratch(chunk: Buffer, from: number, to: number): number {
    // At most 64 bytes: a loop beats a call into Buffer.copy.
    const dst = this.#scratch[this.#argi as 0 | 1];
    let fill = this.#capFill;
    for (let i = from; i < to; i++) dst[fill++] = chunk[i]!;
    this.#capFill = fill;
    return fill;
  }

  #fail(base: number, pos: number, message: string): ScanResult {
    this.#state = State.Failed;
    this.#error = message;
    this.#offset = base + pos - 1;
    this.#capBuf = null;
    return { validBytes: pos, error: message };
  }
}

/**
 * V8 optimizes scan() while the stream flows, with type feedback only for the branches taken so far; the first chunk
 * that splits a header or a CRLF in a new place then takes a branch without feedback, and V8 throws the optimized
 * code away (four recompiles of the hottest function in the first seconds of a stream, measured with
 * --trace-deopt). Scanning a small stream cut at every byte, once at load, gives every branch its feedback first.
 */
function primeTypeFeedback(): void {
  const sample = Buffer.from('*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n\r\n*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$70\r\n' + 'v'.repeat(70) + '\r\n*0\r\n*-1\r\n', 'latin1');
  for (const decode of [false, true]) {
    const scanner = new StreamScanner(() => {});
    scanner.decodeArgs = decode;
    for (let cut = 0; cut <= sample.length; cut++) {
      scanner.scan(sample.subarray(0, cut));
      scanner.scan(sample.subarray(cut));
    }
    for (let i = 0; i < sample.length; i++) scanner.scan(sample.subarray(i, i + 1));
  }
}
primeTypeFeedback();
