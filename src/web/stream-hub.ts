import type { ReplLog } from '../backlog/repl-log.js';
import { LogCursor } from '../backlog/log-cursor.js';
import type { Logger } from '../log.js';
import { StreamScanner, type ScannedCommand } from '../resp/stream-scanner.js';
import { commandName, formatCommand, isInternal, matches, selectedDb, StreamFormat, type StreamOptions } from './stream-message.js';

/**
 * Fan-out of the replication stream to /stream subscribers.
 *
 * A JSON subscriber first works from the shared log with a private StreamScanner ("seek" then "catch-up"),
 * paced by its socket, and then goes "live": it is fed the commands the upstream link decodes (relay.onCommand,
 * registered only while a JSON subscriber exists). The switch happens in one synchronous step at the log head,
 * where every command that ends in the log has been seen live and none after it, so there is no gap and no
 * duplicate. The db is tracked from SELECTs; seeking starts at a known command boundary (the snapshot offset
 * or a checkpoint recorded live) so it is known whenever the log shows it.
 *
 * A live subscriber never slows replication: messages past `maxBuffered` close it (4008) or are dropped and
 * counted. A raw subscriber is a cursor in the log, sent bytes while its socket has room; if the log drops
 * bytes it has not been sent, it is closed (4013).
 */

/** Close codes sent to /stream subscribers (4000-4999: application codes). */
export const CloseCode = {
  GoingAway: 1001,
  Internal: 1011,
  /** Live subscriber past web.max-buffered with web.slow-client: disconnect. */
  SlowConsumer: 4008,
  /** `from` (or `replid`) is not in the log held: resync from a fresh start. */
  OffsetGone: 4010,
  /** `from` is not the first byte of a command. */
  NotBoundary: 4011,
  /** The upstream gave the relay a full resync: a new history, offsets restart. */
  NewHistory: 4012,
  /** The log dropped bytes this subscriber had not been sent yet. */
  FellBehind: 4013,
} as const;

/** What the hub needs from the relay (Relay satisfies it). */
export interface StreamSource {
  readonly log: ReplLog;
  readonly ids: { readonly replid: string; readonly replid2: string; accepts(replid: string, offset: number): boolean };
  readonly link: {
    readonly stats: { readonly fullSyncs: number };
    on(event: 'state', fn: () => void): unknown;
    off(event: 'state', fn: () => void): unknown;
  };
  onCommand(fn: (cmd: ScannedCommand) => void): () => void;
  usableSnapshot(): { readonly offset: number } | null;
}

/** The socket side of a subscriber (a uWS WebSocket in production). `end` must not call back synchronously into send. */
export interface StreamSink {
  send(msg: string | Uint8Array, binary: boolean): void;
  bufferedAmount(): number;
  end(code: number, reason: string): void;
  cork(fn: () => void): void;
}

export interface StreamHubOptions {
  readonly maxBuffered: number;
  readonly slowClient: 'disconnect' | 'drop';
  readonly logger: Logger;
}

export interface StreamHubStats {
  subscribersTotal: number;
  messagesSent: number;
  bytesSent: number;
  droppedMessages: number;
  slowDisconnects: number;
}

const Phase = { Seek: 'seek', CatchUp: 'catch-up', Live: 'live', Raw: 'raw', Closed: 'closed' } as const;
type Phase = (typeof Phase)[keyof typeof Phase];

/** Log bytes scanned per turn of the event loop while catching up. */
const PUMP_BUDGET = 1024 * 1024;
/** Bytes per raw message. */
const RAW_SLICE = 256 * 1024;
/** A live checkpoint (known boundary + db) is recorded at most this often. */
const CHECKPOINT_EVERY = 1024 * 1024;
/** Seek from a known boundary at most this far back (further would mean reading the disk log for a long time). */
const MAX_SEEK = 64 * 1024 * 1024;

interface Checkpoint {
  /** Offset of the last byte of a command. */
  readonly offset: number;
  readonly db: number | null;
}

/** A subscriber's handle for its socket's events. */
export interface Subscription {
  /** The socket drained: resume a paced subscriber. */
  drain(): void;
  /** The socket closed (any reason). */
  closed(): void;
  readonly stats: { readonly sent: number; readonly dropped: number };
}

class Subscriber implements Subscription {
  phase: Phase = Phase.Seek;
  readonly opts: StreamOptions;
  readonly sink: StreamSink;
  scanner: StreamScanner | null = null;
  /** Position in the log: the last byte scanned (json) or sent (raw). Shares disk reads with every other reader. */
  readonly pos: LogCursor;
  /** Commands ending at or before this are only tracked for db, not delivered. */
  seekTo = 0;
  requireBoundary = false;
  /** A command past seekTo was scanned: the start point was a command boundary. */
  startConfirmed = false;
  /** Live: deliver commands starting after this. */
  liveAfter = 0;
  db: number | null = null;
  out: string[] = [];
  outBytes = 0;
  /** Waiting for drain. */
  paused = false;
  /** A pump is queued with setImmediate. */
  scheduled = false;
  /** A read from the disk log is in flight. */
  reading = false;
  readonly stats = { sent: 0, dropped: 0 };
  readonly #hub: StreamHub;

  constructor(hub: StreamHub, sink: StreamSink, opts: StreamOptions, log: ReplLog) {
    this.#hub = hub;
    this.sink = sink;
    this.opts = opts;
    this.pos = new LogCursor(log, log.endOffset);
  }
  get cursor(): number {
    return this.pos.offset;
  }
  set cursor(offset: number) {
    this.pos.seek(offset);
  }
  drain(): void {
    this.#hub.drained(this);
  }
  closed(): void {
    this.#hub.remove(this);
  }
}

export class StreamHub {
  readonly stats: StreamHubStats = { subscribersTotal: 0, messagesSent: 0, bytesSent: 0, droppedMessages: 0, slowDisconnects: 0 };
  readonly #src: StreamSource;
  readonly #opts: StreamHubOptions;
  readonly #log: Logger;
  readonly #pace: number;
  readonly #json = new Set<Subscriber>();
  readonly #raw = new Set<Subscriber>();
  #unsubCommands: (() => void) | null = null;
  #unsubAppend: (() => void) | null = null;
  /** log.endOffset when live decoding was turned on: commands starting after it arrive fully decoded. */
  #decodeSince = 0;
  /** The db at the live head, as far as known. */
  #db: number | null = null;
  #checkpoints: Checkpoint[] = [];
  #fullSyncs: number;
  #replid: string;
  #flushQueued = false;
  readonly #dirty = new Set<Subscriber>();
  readonly #onState = (): void => this.#checkHistory();

  constructor(src: StreamSource, opts: StreamHubOptions) {
    this.#src = src;
    this.#opts = opts;
    this.#log = opts.logger;
    this.#pace = Math.min(opts.maxBuffered, 1024 * 1024);
    this.#fullSyncs = src.link.stats.fullSyncs;
    this.#replid = src.ids.replid;
    src.link.on('state', this.#onState);
  }

  get jsonSubscribers(): number {
    return this.#json.size;
  }
  get rawSubscribers(): number {
    return this.#raw.size;
  }
  /** Bytes queued for subscribers: in their sockets' buffers and not yet handed to them. */
  get bufferedBytes(): number {
    let n = 0;
    for (const sub of this.#json) n += sub.sink.bufferedAmount() + sub.outBytes;
    for (const sub of this.#raw) n += sub.sink.bufferedAmount();
    return n;
  }
  /** Live decoding is on (someone subscribes to JSON). */
  get decoding(): boolean {
    return this.#unsubCommands !== null;
  }

  subscribe(sink: StreamSink, opts: StreamOptions): Subscription {
    this.#checkHistory();
    const sub = new Subscriber(this, sink, opts, this.#src.log);
    this.stats.subscribersTotal++;
    const log = this.#src.log;
    if (opts.from !== null) {
      const from = opts.from;
      if (!log.holds(from)) {
        return this.#refuse(sub, CloseCode.OffsetGone, `offset ${from} is not in the log (${log.firstOffset}..${log.endOffset + 1})`);
      }
      if (opts.replid !== null && !this.#src.ids.accepts(opts.replid, from)) {
        return this.#refuse(sub, CloseCode.OffsetGone, `replid ${opts.replid} is not this history (${this.#src.ids.replid})`);
      }
    }
    if (this.#unsubAppend === null) this.#unsubAppend = log.onAppend(() => this.#onAppend());
    if (opts.format === StreamFormat.Raw) {
      sub.phase = Phase.Raw;
      sub.cursor = opts.from === null ? log.endOffset : opts.from - 1;
      this.#raw.add(sub);
      sink.send(JSON.stringify({ offset: sub.cursor + 1, replid: this.#src.ids.replid }), false);
      this.#pumpRaw(sub);
      return sub;
    }
    if (this.#unsubCommands === null) {
      this.#decodeSince = log.endOffset;
      this.#db = null;
      this.#unsubCommands = this.#src.onCommand((cmd) => this.#onLive(cmd));
    }
    this.#json.add(sub);
    const target = opts.from === null ? log.endOffset : opts.from - 1;
    const anchor = this.#anchor(target);
    if (anchor !== null) {
      sub.phase = Phase.Seek;
      sub.seekTo = target;
      sub.requireBoundary = opts.from !== null;
      sub.db = anchor.db;
      sub.cursor = anchor.offset;
      sub.scanner = this.#scannerFor(sub, anchor.offset, false);
      this.#pump(sub);
    } else if (opts.from !== null) {
      // No known boundary before `from`: scan from it directly; the db shows with the next SELECT.
      sub.phase = Phase.CatchUp;
      sub.seekTo = target;
      sub.requireBoundary = true;
      sub.cursor = target;
      sub.scanner = this.#scannerFor(sub, target, true);
      this.#pump(sub);
    } else {
      // Nothing to seek from: start with the next command to begin.
      this.#goLive(sub, target);
    }
    return sub;
  }

  /** Close every subscriber (server shutting down) and let go of the relay. */
  close(): void {
    for (const sub of [...this.#json, ...this.#raw]) this.#close(sub, CloseCode.GoingAway, 'relay shutting down');
    this.#src.link.off('state', this.#onState);
  }

  drained(sub: Subscriber): void {
    if (!sub.paused) return;
    sub.paused = false;
    if (sub.reading) return; // the read in flight pumps when it completes
    if (sub.phase === Phase.Raw) this.#pumpRaw(sub);
    else if (sub.phase === Phase.Seek || sub.phase === Phase.CatchUp) this.#pump(sub);
  }

  remove(sub: Subscriber): void {
    sub.phase = Phase.Closed;
    sub.scanner = null;
    sub.out = [];
    this.#dirty.delete(sub);
    this.#json.delete(sub);
    this.#raw.delete(sub);
    if (this.#json.size === 0 && this.#unsubCommands !== null) {
      this.#unsubCommands();
      this.#unsubCommands = null;
      this.#db = null;
    }
    if (this.#json.size === 0 && this.#raw.size === 0 && this.#unsubAppend !== null) {
      this.#unsubAppend();
      this.#unsubAppend = null;
    }
  }

  #refuse(sub: Subscriber, code: number, reason: string): Subscription {
    sub.phase = Phase.Closed;
    sub.sink.end(code, reason);
    return sub;
  }

  #close(sub: Subscriber, code: number, reason: string): void {
    if (sub.phase === Phase.Closed) return;
    this.#log.debug({ code, reason, sent: sub.stats.sent, dropped: sub.stats.dropped }, 'stream subscriber closed');
    this.remove(sub);
    sub.sink.end(code, reason);
  }

  /** The upstream full-resynced: offsets and history restart, so every subscriber is told to start over. */
  #checkHistory(): void {
    const n = this.#src.link.stats.fullSyncs;
    const ids = this.#src.ids;
    // A failover keeps the history (replid2 = the old id, offsets continue); a full sync starts a new one.
    const sameHistory = ids.replid === this.#replid || ids.replid2 === this.#replid;
    this.#replid = ids.replid;
    if (n === this.#fullSyncs && sameHistory) return;
    this.#fullSyncs = n;
    this.#checkpoints = [];
    this.#db = null;
    for (const sub of [...this.#json, ...this.#raw]) this.#close(sub, CloseCode.NewHistory, 'new history: upstream full resync, offsets restart');
  }

  /** The latest known command boundary at or before `offset` still held by the log, preferring one with a known db. */
  #anchor(offset: number): Checkpoint | null {
    const log = this.#src.log;
    while (this.#checkpoints.length > 0 && this.#checkpoints[0]!.offset + 1 < log.firstOffset) this.#checkpoints.shift();
    const near = (o: number): boolean => o <= offset && offset - o <= MAX_SEEK && o + 1 >= log.firstOffset;
    const candidates: Checkpoint[] = this.#checkpoints.filter((c) => near(c.offset));
    const snap = this.#src.usableSnapshot();
    if (snap !== null && near(snap.offset)) candidates.push({ offset: snap.offset, db: null });
    let best: Checkpoint | null = null;
    for (const c of candidates) {
      if (best === null) best = c;
      else if ((c.db !== null) !== (best.db !== null)) best = c.db !== null ? c : best;
      else if (c.offset > best.offset) best = c;
    }
    return best;
  }

  #scannerFor(sub: Subscriber, offset: number, decode: boolean): StreamScanner {
    const sc = new StreamScanner((cmd) => this.#onScanned(sub, cmd));
    sc.reset(offset);
    sc.decodeArgs = decode;
    return sc;
  }

  /** A command from a subscriber's private scan of the log. */
  #onScanned(sub: Subscriber, cmd: ScannedCommand): void {
    const name = commandName(cmd.args);
    if (cmd.end <= sub.seekTo) {
      const db = selectedDb(name, cmd.argc, cmd.args[1]);
      if (db !== null) sub.db = db;
      return;
    }
    sub.startConfirmed = true;
    this.#deliver(sub, cmd, name, null);
  }

  /** Filter, format and queue one command for a subscriber. `cache` shares the JSON between live subscribers. */
  #deliver(sub: Subscriber, cmd: ScannedCommand, name: string, cache: Map<number | null, string> | null): void {
    const db = selectedDb(name, cmd.argc, cmd.args[1]);
    if (db !== null) sub.db = db;
    const internal = isInternal(name);
    if (!matches(sub.opts, name, cmd.args, sub.db, internal)) return;
    if (cmd.args.length !== cmd.argc) {
      this.#log.error({ offset: cmd.end, argc: cmd.argc, decoded: cmd.args.length }, 'stream command not fully decoded');
      this.#close(sub, CloseCode.Internal, 'internal error: command not decoded');
      return;
    }
    let msg = cache?.get(sub.db);
    if (msg === undefined) {
      msg = formatCommand(cmd.end, sub.db, name, cmd.args, internal);
      cache?.set(sub.db, msg);
    }
    sub.out.push(msg);
    sub.outBytes += msg.length;
    if (sub.phase === Phase.Live) this.#queueFlush(sub);
  }

  /** A command the upstream link just scanned (its bytes are appended to the log right after). */
  #onLive(cmd: ScannedCommand): void {
    const name = commandName(cmd.args);
    const db = selectedDb(name, cmd.argc, cmd.args[1]);
    if (db !== null) this.#db = db;
    const last = this.#checkpoints[this.#checkpoints.length - 1];
    // Only points with a known db: scanning from one tells a subscriber its db at once.
    if (this.#db !== null && (last === undefined || cmd.end - last.offset >= CHECKPOINT_EVERY)) this.#checkpoints.push({ offset: cmd.end, db: this.#db });
    let cache: Map<number | null, string> | null = null;
    for (const sub of this.#json) {
      if (sub.phase !== Phase.Live || cmd.start <= sub.liveAfter) continue;
      sub.liveAfter = cmd.end;
      cache ??= new Map();
      this.#deliver(sub, cmd, name, cache);
    }
  }

  #goLive(sub: Subscriber, after: number): void {
    sub.phase = Phase.Live;
    sub.liveAfter = after;
    sub.scanner = null;
    // The hub saw no SELECT since decoding started; the subscriber's db holds at the head too.
    if (this.#db === null && sub.db !== null) this.#db = sub.db;
    else if (sub.db === null) sub.db = this.#db;
  }

  #onAppend(): void {
    for (const sub of this.#json) {
      if ((sub.phase === Phase.CatchUp || sub.phase === Phase.Seek) && !sub.paused && !sub.scheduled && !sub.reading) this.#pump(sub);
    }
    for (const sub of this.#raw) if (!sub.paused && !sub.reading) this.#pumpRaw(sub);
  }

  /** Scan the log for a seeking / catching-up subscriber, paced by its socket, then switch it to live. */
  #pump(sub: Subscriber): void {
    this.#checkHistory();
    const log = this.#src.log;
    let budget = PUMP_BUDGET;
    for (;;) {
      if ((sub.phase !== Phase.Seek && sub.phase !== Phase.CatchUp) || sub.reading) return;
      const scanner = sub.scanner!;
      if (sub.phase === Phase.CatchUp && sub.outBytes + sub.sink.bufferedAmount() > this.#pace) {
        this.#flush(sub);
        if (sub.sink.bufferedAmount() > this.#pace) {
          sub.paused = true;
          return;
        }
        continue;
      }
      const stop = sub.phase === Phase.Seek ? sub.seekTo : log.endOffset;
      if (sub.cursor >= stop) {
        if (sub.phase === Phase.Seek) {
          this.#endSeek(sub, scanner);
          continue;
        }
        break;
      }
      if (sub.cursor + 1 < log.firstOffset) {
        this.#close(sub, CloseCode.FellBehind, 'fell behind: the log no longer holds the next offset');
        return;
      }
      if (budget <= 0) {
        this.#flush(sub);
        sub.scheduled = true;
        setImmediate(() => {
          sub.scheduled = false;
          if (!sub.paused) this.#pump(sub);
        });
        return;
      }
      const chunk = this.#next(sub);
      if (chunk === null) return; // a disk read is under way; it pumps again
      const n = Math.min(chunk.length, stop - sub.cursor, budget);
      const { error } = scanner.scan(n === chunk.length ? chunk : chunk.subarray(0, n));
      sub.cursor += n;
      budget -= n;
      if (error !== null) {
        if (sub.requireBoundary && !sub.startConfirmed) {
          this.#close(sub, CloseCode.NotBoundary, `offset ${sub.seekTo + 1} is not the start of a command`);
        } else {
          this.#log.error({ error, offset: sub.cursor }, 'stream subscriber cannot scan the log');
          this.#close(sub, CloseCode.Internal, 'internal error: unreadable log');
        }
        return;
      }
    }
    this.#flush(sub);
    // At the head; live takes over if the command in progress (if any) is one the link decodes in full.
    if (sub.phase === Phase.CatchUp && sub.cursor === log.endOffset && sub.scanner!.boundary >= this.#decodeSince) {
      this.#goLive(sub, sub.scanner!.boundary);
    }
  }

  /** The subscriber's scan reached its start point. */
  #endSeek(sub: Subscriber, scanner: StreamScanner): void {
    if (scanner.boundary !== sub.seekTo) {
      if (sub.requireBoundary) {
        this.#close(sub, CloseCode.NotBoundary, `offset ${sub.seekTo + 1} is not the start of a command`);
        return;
      }
      // Joined mid-command: rescan that command from its start, decoded.
      sub.cursor = scanner.boundary;
      scanner.reset(scanner.boundary);
    }
    scanner.decodeArgs = true;
    sub.phase = Phase.CatchUp;
  }

  #queueFlush(sub: Subscriber): void {
    this.#dirty.add(sub);
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    // After the link's data handler: it appends the chunk whose commands were just decoded.
    queueMicrotask(() => {
      this.#flushQueued = false;
      const subs = [...this.#dirty];
      this.#dirty.clear();
      for (const s of subs) this.#flush(s);
    });
  }

  /** Send queued messages; a live subscriber past maxBuffered is closed or has messages dropped. */
  #flush(sub: Subscriber): void {
    if (sub.out.length === 0 || sub.phase === Phase.Closed) return;
    const out = sub.out;
    sub.out = [];
    sub.outBytes = 0;
    const live = sub.phase === Phase.Live;
    const max = this.#opts.maxBuffered;
    let slow = false;
    sub.sink.cork(() => {
      for (const msg of out) {
        if (live) {
          const buffered = sub.sink.bufferedAmount();
          if (buffered > 0 && buffered + msg.length > max) {
            if (this.#opts.slowClient === 'disconnect') {
              slow = true;
              break;
            }
            sub.stats.dropped++;
            this.stats.droppedMessages++;
            continue;
          }
        }
        sub.sink.send(msg, false);
        sub.stats.sent++;
        this.stats.messagesSent++;
        this.stats.bytesSent += msg.length;
      }
    });
    if (slow) {
      this.stats.slowDisconnects++;
      this.#close(sub, CloseCode.SlowConsumer, `slow consumer: more than ${max} bytes buffered`);
    }
  }

  /**
   * The bytes after the subscriber's cursor (held by the log: the caller checked firstOffset): a view of memory, or
   * of a disk chunk read for any reader. null when they are on disk and not read yet: a read starts and pumps again.
   */
  #next(sub: Subscriber): Buffer | null {
    const v = sub.pos.peek();
    if (v === null || Buffer.isBuffer(v)) return v;
    sub.reading = true;
    v.then(
      () => {
        sub.reading = false;
        if (sub.phase === Phase.Closed) return;
        if (sub.phase === Phase.Raw) this.#pumpRaw(sub);
        else if (!sub.paused) this.#pump(sub);
      },
      (err: Error) => {
        sub.reading = false;
        this.#close(sub, CloseCode.FellBehind, `fell behind: reading the disk log failed: ${err.message}`);
      },
    );
    return null;
  }

  /** Send raw log bytes while the socket has room. */
  #pumpRaw(sub: Subscriber): void {
    this.#checkHistory();
    if (sub.phase !== Phase.Raw || sub.reading) return;
    const log = this.#src.log;
    if (sub.cursor >= log.endOffset) return;
    sub.sink.cork(() => {
      while (sub.cursor < log.endOffset) {
        if (sub.sink.bufferedAmount() >= this.#pace) {
          sub.paused = true;
          return;
        }
        if (sub.cursor + 1 < log.firstOffset) return;
        const chunk = this.#next(sub);
        if (chunk === null) return;
        const n = Math.min(chunk.length, RAW_SLICE);
        sub.sink.send(n === chunk.length ? chunk : chunk.subarray(0, n), true);
        sub.cursor += n;
        sub.stats.sent++;
        this.stats.messagesSent++;
        this.stats.bytesSent += n;
      }
    });
    if (sub.cursor + 1 < log.firstOffset) this.#close(sub, CloseCode.FellBehind, 'fell behind: the log no longer holds the next offset');
  }
}
