import { performance } from 'node:perf_hooks';
import type { ReplLog } from '../backlog/repl-log.js';
import { LogCursor } from '../backlog/log-cursor.js';
import type { Logger } from '../log.js';
import { Telemetry } from '../observability/telemetry.js';
import { ClientMemory, type MemoryUser } from '../downstream/client-memory.js';
import { TurnBudget } from '../downstream/turn-budget.js';
import { checkTransition, type Transitions } from '../util/transitions.js';
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
 *
 * No subscriber's socket is handed more than `pace` (256 KiB) beyond what it read: a live subscriber's later
 * messages wait in its queue as the strings every live subscriber shares, so a hundred that never read hold
 * one copy of the stream's JSON, not a hundred in native buffers, and cost no send each. All subscribers' work
 * (scanning, sending) shares one turn budget, so the relay answers its clients while they are many.
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

/** What the hub needs from the relay (the relay builds one from its history; see WebSource). */
export interface StreamSource {
  readonly log: ReplLog;
  readonly ids: { readonly replid: string; accepts(replid: string, offset: number): boolean };
  /** The history counter (History.epoch): a new value means a full sync from upstream, offsets restart. */
  readonly epoch: number;
  /** `fn` runs when a new history starts; returns the unsubscribe function. */
  onNewHistory(fn: () => void): () => void;
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
  /** web.max-buffered-total: all subscribers' queues together; past it the largest is closed. 0 or absent = no cap. */
  readonly maxBufferedTotal?: number;
  readonly slowClient: 'disconnect' | 'drop';
  readonly logger: Logger;
  /** Where subscriptions and slow disconnects are published and messages counted; absent (standalone use): a relay id of ''. */
  readonly telemetry?: Telemetry;
  /** Time all subscribers' work may take in one turn of the event loop; default SUBSCRIBERS_TURN_MS of it. */
  readonly turn?: TurnBudget;
  /** Wall clock (ms) the share of live delivery earns with; default performance.now. */
  readonly now?: () => number;
  /** The process's CPU time (ms) live delivery is charged with; default process.cpuUsage. */
  readonly cpu?: () => number;
  /** That share; default LIVE_SHARE. */
  readonly liveShare?: number;
}

const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** Milliseconds of a turn of the event loop all /stream subscribers' work may take together (as the RESP clients'). */
const SUBSCRIBERS_TURN_MS = 5;

const Phase = { Seek: 'seek', CatchUp: 'catch-up', Live: 'live', Raw: 'raw', Closed: 'closed' } as const;
type Phase = (typeof Phase)[keyof typeof Phase];

/** Seek → catch-up → live for JSON (live at once when there is nothing to seek from); raw for raw; any may end. */
const PHASES: Transitions<Phase> = {
  seek: ['catch-up', 'live', 'closed'],
  'catch-up': ['live', 'closed'],
  live: ['closed'],
  raw: ['closed'],
  closed: [],
};

/**
 * Live delivery (decoding, filtering and formatting every replicated command for the live subscribers) runs in the
 * upstream link's data handler, for every command. It may take this share of the relay's time on average, and this
 * much more in a burst (a short one costs nothing: only a sustained overload is cut); past it, the live subscribers
 * miss the next commands, as a subscriber too slow to read does (closed,
 * or the messages dropped and counted: web.slow-client). A hundred subscribers under a busy master took a whole core
 * and turns of 65 ms and more: a replica catching up was sent a disk chunk a turn, fell hundreds of MB behind and was
 * given a full sync. It is charged in CPU time, once per upstream read (the data handler that decoded and delivered
 * its commands), so that a relay descheduled on a busy machine is not taken for one whose subscribers cost too much.
 */
const LIVE_SHARE = 0.5;
const LIVE_BURST_MS = 250;

/** Log bytes scanned per turn of the event loop while catching up. */
const PUMP_BUDGET = 1024 * 1024;
/** Bytes per raw message. */
const RAW_SLICE = 256 * 1024;
/**
 * Bytes a subscriber's socket may hold unread in the relay (past the kernel's buffers, several MiB of their own) before
 * it waits for a drain: enough to keep any reader busy, and a hundred that never read hold 25 MiB.
 */
const PACE = 256 * 1024;
/** A live checkpoint (known boundary + db) is recorded at most this often. */
const CHECKPOINT_EVERY = 1024 * 1024;
/**
 * A subscriber without `from=` seeks from a known boundary (to learn its db) at most this far back: further would mean
 * reading the disk log for a long time. A `from=` is always checked from one, at any distance.
 */
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
  /** The client sent a ping, and the socket queued its pong: past maxBuffered, closed as a slow consumer. */
  pinged(): void;
  readonly stats: { readonly sent: number; readonly dropped: number };
}

/** What a subscriber shares with its hub. */
interface HubContext {
  readonly log: ReplLog;
  readonly logger: Logger;
  readonly telemetry: Telemetry;
  readonly maxBuffered: number;
  readonly slowClient: 'disconnect' | 'drop';
  /** The subscribers' queues together (web.max-buffered-total). */
  readonly memory: ClientMemory;
  /** Bytes a socket may hold unread before the subscriber waits for it to drain. */
  readonly pace: number;
  /** The time all subscribers' work may take in one turn of the event loop. */
  readonly turn: TurnBudget;
  /** log.endOffset when live decoding began: a command starting after it arrives decoded. */
  decodeSince(): number;
  /** The db at the live head, when known; a subscriber going live may teach it. */
  headDb(): number | null;
  learnHeadDb(db: number): void;
  /** Queue a live subscriber's messages for the flush after the link's chunk is appended. */
  queueFlush(sub: Subscriber): void;
  /** The subscriber ended (any reason): forget it. */
  removed(sub: Subscriber): void;
}

/**
 * One /stream subscriber: its position in the log (a LogCursor: memory views or shared disk reads), its private
 * scanner while seeking and catching up, its db, its queued messages and its pacing. All of it is private; the
 * phase changes only through #setState.
 */
class Subscriber implements Subscription, MemoryUser {
  readonly stats = { sent: 0, dropped: 0 };
  readonly #ctx: HubContext;
  readonly #sink: StreamSink;
  readonly #opts: StreamOptions;
  readonly #pos: LogCursor;
  #phase: Phase;
  #scanner: StreamScanner | null = null;
  /** Commands ending at or before this are only tracked for db, not delivered. */
  #seekTo = 0;
  #requireBoundary = false;
  /** A command past seekTo was scanned: the start point was a command boundary. */
  #startConfirmed = false;
  /** Live: deliver commands starting after this. */
  #liveAfter = 0;
  #db: number | null = null;
  /** Messages not handed to the socket yet: `#out[#outHead..]`, `#outBytes` of them. */
  #out: string[] = [];
  #outHead = 0;
  #outBytes = 0;
  /** The socket's buffered amount at the last flush or drain: what a live message is checked against (no native call each). */
  #socketBuffered = 0;
  /** Waiting for drain. */
  #paused = false;
  /** A pump is queued with setImmediate. */
  #scheduled = false;
  /** A read from the disk log is in flight. */
  #reading = false;

  constructor(ctx: HubContext, sink: StreamSink, opts: StreamOptions, phase: Phase) {
    this.#ctx = ctx;
    this.#sink = sink;
    this.#opts = opts;
    this.#phase = phase;
    this.#pos = new LogCursor(ctx.log, ctx.log.endOffset);
  }

  get live(): boolean {
    return this.#phase === Phase.Live;
  }
  get ended(): boolean {
    return this.#phase === Phase.Closed;
  }
  /** Bytes queued: in the socket's buffer and not yet handed to it. */
  get buffered(): number {
    return this.#sink.bufferedAmount() + this.#outBytes;
  }

  // MemoryUser (web.max-buffered-total)
  memoryUsage(): number {
    return this.buffered;
  }
  evictForMemory(limit: number, used: number): void {
    this.#ctx.logger.warn({ limit: 'web.max-buffered-total', value: limit, used }, '/stream subscribers past their memory cap: closing the one holding the most');
    this.#ctx.telemetry.emit('stream.slow-disconnect', { buffered: used });
    this.close(CloseCode.SlowConsumer, `slow consumer: the subscribers' queues went past ${limit} bytes in all and this one held the most`);
  }
  /** Its queue changed: the hub's total follows (and past web.max-buffered-total, the largest queue goes). */
  #measured(): void {
    if (this.#phase !== Phase.Closed) this.#ctx.memory.update(this, this.buffered);
  }

  #setState(next: Phase): void {
    if (this.#phase === next) return;
    checkTransition(PHASES, 'stream subscriber', this.#phase, next);
    this.#phase = next;
  }

  // Subscription (socket events)
  drain(): void {
    this.#socketBuffered = this.#sink.bufferedAmount();
    this.#measured();
    if (!this.#paused) return;
    this.#paused = false;
    if (this.#reading) return; // the read in flight pumps when it completes
    if (this.#phase === Phase.Live) this.#ctx.queueFlush(this);
    else this.wake();
  }
  closed(): void {
    this.#end();
  }
  /**
   * uWS answers every ping with a pong queued like a message, which the hub does not send and cannot drop: a client
   * that pings without reading grew its queue to uWS's own limit (1 GiB), whatever the filters and slow-client say.
   * Past maxBuffered it is closed as a slow consumer under either policy.
   */
  pinged(): void {
    if (this.#phase === Phase.Closed) return;
    const buffered = this.#sink.bufferedAmount();
    if (buffered <= this.#ctx.maxBuffered) return this.#measured();
    this.#ctx.telemetry.emit('stream.slow-disconnect', { buffered });
    this.close(CloseCode.SlowConsumer, `slow consumer: more than ${this.#ctx.maxBuffered} bytes buffered`);
  }

  /** Raw: the offset line, then bytes from `after + 1`. */
  startRaw(after: number, replid: string): void {
    this.#pos.seek(after);
    this.#sink.send(JSON.stringify({ offset: after + 1, replid }), false);
    this.#pumpRaw();
  }

  /** JSON from a known boundary `anchor` (db known there): scan quietly up to `target`, then deliver. */
  startSeek(anchor: { offset: number; db: number | null }, target: number, requireBoundary: boolean): void {
    this.#seekTo = target;
    this.#requireBoundary = requireBoundary;
    this.#db = anchor.db;
    this.#pos.seek(anchor.offset);
    this.#scanner = this.#newScanner(anchor.offset, false);
    this.#pump();
  }

  /** Live from the commands starting after `after`. */
  goLive(after: number): void {
    this.#setState(Phase.Live);
    this.#liveAfter = after;
    this.#scanner = null;
    // The hub saw no SELECT since decoding started; the subscriber's db holds at the head too.
    const head = this.#ctx.headDb();
    if (head === null && this.#db !== null) this.#ctx.learnHeadDb(this.#db);
    else if (this.#db === null) this.#db = head;
  }

  /** The log grew: a subscriber working from the log carries on. */
  wake(): void {
    if (this.#paused || this.#reading || this.#scheduled) return;
    if (this.#phase === Phase.Raw) this.#pumpRaw();
    else if (this.#phase === Phase.Seek || this.#phase === Phase.CatchUp) this.#pump();
  }

  /** The turn's budget is spent: carry on next turn. */
  #later(): void {
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      if (!this.#paused) this.wake();
    });
  }

  /** A command the upstream link just decoded; `cache` shares the JSON text between live subscribers. */
  onLive(cmd: ScannedCommand, name: string, cache: Map<number | null, string>): void {
    if (this.#phase !== Phase.Live || cmd.start <= this.#liveAfter) return;
    this.#liveAfter = cmd.end;
    this.#deliver(cmd, name, cache);
  }

  #newScanner(offset: number, decode: boolean): StreamScanner {
    const sc = new StreamScanner((cmd) => this.#onScanned(cmd));
    sc.reset(offset);
    sc.decodeArgs = decode;
    return sc;
  }

  /** A command from this subscriber's own scan of the log. */
  #onScanned(cmd: ScannedCommand): void {
    const name = commandName(cmd.args);
    if (cmd.end <= this.#seekTo) {
      const db = selectedDb(name, cmd.argc, cmd.args[1]);
      if (db !== null) this.#db = db;
      return;
    }
    this.#startConfirmed = true;
    this.#deliver(cmd, name, null);
  }

  /** Filter, format and queue one command. */
  #deliver(cmd: ScannedCommand, name: string, cache: Map<number | null, string> | null): void {
    const db = selectedDb(name, cmd.argc, cmd.args[1]);
    if (db !== null) this.#db = db;
    const internal = isInternal(name);
    if (!matches(this.#opts, name, cmd.args, this.#db, internal)) return;
    if (cmd.args.length !== cmd.argc) {
      this.#ctx.logger.error({ offset: cmd.end, argc: cmd.argc, decoded: cmd.args.length }, 'stream command not fully decoded');
      this.close(CloseCode.Internal, 'internal error: command not decoded');
      return;
    }
    let msg = cache?.get(this.#db);
    if (msg === undefined) {
      msg = formatCommand(cmd.end, this.#db, name, cmd.args, internal);
      cache?.set(this.#db, msg);
    }
    if (this.#phase === Phase.Live && this.#socketBuffered + this.#outBytes + msg.length > this.#ctx.maxBuffered) {
      // The socket may have drained since it was last measured (a large message read): measured again, only here.
      this.#socketBuffered = this.#sink.bufferedAmount();
      const held = this.#socketBuffered + this.#outBytes;
      if (held > 0 && held + msg.length > this.#ctx.maxBuffered) {
        this.#tooSlow();
        return;
      }
    }
    this.#out.push(msg);
    this.#outBytes += msg.length;
    if (this.#phase === Phase.Live) this.#ctx.queueFlush(this);
  }

  /** Live delivery had no time left for a command (LIVE_SHARE): closed, or the message dropped and counted. */
  missed(cmd: ScannedCommand): void {
    if (this.#phase !== Phase.Live || cmd.start <= this.#liveAfter) return;
    this.#liveAfter = cmd.end;
    if (this.#ctx.slowClient === 'disconnect') {
      this.#ctx.telemetry.emit('stream.slow-disconnect', { buffered: this.buffered });
      this.close(CloseCode.SlowConsumer, 'slow consumer: following the stream would take more than half of the relay\'s time');
      return;
    }
    this.stats.dropped++;
    this.#ctx.telemetry.traffic.webDroppedMessages++;
  }

  /** A live message does not fit under maxBuffered: closed, or the message dropped and counted (web.slow-client). */
  #tooSlow(): void {
    const { telemetry } = this.#ctx;
    if (this.#ctx.slowClient === 'disconnect') {
      telemetry.emit('stream.slow-disconnect', { buffered: this.buffered });
      this.close(CloseCode.SlowConsumer, `slow consumer: more than ${this.#ctx.maxBuffered} bytes buffered`);
      return;
    }
    this.stats.dropped++;
    telemetry.traffic.webDroppedMessages++;
  }

  /** Scan the log while seeking / catching up, paced by the socket, then switch to live. */
  #pump(): void {
    const log = this.#ctx.log;
    let budget = PUMP_BUDGET;
    this.#ctx.turn.begin();
    for (;;) {
      if ((this.#phase !== Phase.Seek && this.#phase !== Phase.CatchUp) || this.#reading) return;
      const scanner = this.#scanner!;
      if (this.#phase === Phase.CatchUp && this.#outBytes + this.#sink.bufferedAmount() > this.#ctx.pace) {
        this.flush();
        if (this.#sink.bufferedAmount() > this.#ctx.pace) {
          this.#paused = true;
          return;
        }
        continue;
      }
      const stop = this.#phase === Phase.Seek ? this.#seekTo : log.endOffset;
      if (this.#pos.offset >= stop) {
        if (this.#phase === Phase.Seek) {
          this.#endSeek(scanner);
          continue;
        }
        break;
      }
      if (this.#pos.lost) {
        this.close(CloseCode.FellBehind, 'fell behind: the log no longer holds the next offset');
        return;
      }
      if (budget <= 0 || this.#ctx.turn.spent()) {
        this.flush();
        this.#later();
        return;
      }
      const chunk = this.#next();
      if (chunk === null) return; // a disk read is under way; it pumps again
      const n = Math.min(chunk.length, stop - this.#pos.offset, budget);
      const { error } = scanner.scan(n === chunk.length ? chunk : chunk.subarray(0, n));
      this.#pos.advance(n);
      budget -= n;
      if (error !== null) {
        if (this.#requireBoundary && !this.#startConfirmed) {
          this.close(CloseCode.NotBoundary, `offset ${this.#seekTo + 1} is not the start of a command`);
        } else {
          this.#ctx.logger.error({ error, offset: this.#pos.offset }, 'stream subscriber cannot scan the log');
          this.close(CloseCode.Internal, 'internal error: unreadable log');
        }
        return;
      }
    }
    this.flush();
    // At the head; live takes over if the command in progress (if any) is one the link decodes in full.
    const boundary = this.#scanner?.boundary ?? -1;
    if (this.#phase === Phase.CatchUp && this.#pos.offset === log.endOffset && boundary >= this.#ctx.decodeSince()) this.goLive(boundary);
  }

  /** The scan reached the start point. */
  #endSeek(scanner: StreamScanner): void {
    if (scanner.boundary !== this.#seekTo) {
      if (this.#requireBoundary) {
        this.close(CloseCode.NotBoundary, `offset ${this.#seekTo + 1} is not the start of a command`);
        return;
      }
      // Joined mid-command: rescan that command from its start, decoded.
      this.#pos.seek(scanner.boundary);
      scanner.reset(scanner.boundary);
    }
    scanner.decodeArgs = true;
    this.#setState(Phase.CatchUp);
  }

  /**
   * Hands queued messages to the socket while it holds at most `pace` unread (the rest waits for its drain); a live
   * subscriber whose socket and queue together pass maxBuffered is closed, or its oldest messages dropped.
   */
  flush(): void {
    if (this.#phase === Phase.Closed) return;
    const out = this.#out;
    const live = this.#phase === Phase.Live;
    const { maxBuffered: max, pace, telemetry } = this.#ctx;
    let slow = false;
    if (this.#outHead < out.length) {
      this.#sink.cork(() => {
        while (this.#outHead < out.length) {
          const buffered = this.#sink.bufferedAmount();
          const msg = out[this.#outHead]!;
          if (live && buffered > 0 && buffered + this.#outBytes > max) {
            if (this.#ctx.slowClient === 'disconnect') {
              slow = true;
              return;
            }
            this.#taken(msg);
            this.stats.dropped++;
            telemetry.traffic.webDroppedMessages++;
            continue;
          }
          if (buffered > pace) return; // full: the rest waits for the socket's drain
          this.#taken(msg);
          this.#sink.send(msg, false);
          this.stats.sent++;
          telemetry.traffic.webMessagesSent++;
          telemetry.traffic.webBytesSent += msg.length;
        }
      });
      if (this.#outHead === out.length) {
        this.#out = [];
        this.#outHead = 0;
      } else {
        this.#paused = true;
        // Sent messages are let go of (the strings may be all another subscriber still holds).
        if (this.#outHead >= 1024 && this.#outHead * 2 >= out.length) {
          this.#out = out.slice(this.#outHead);
          this.#outHead = 0;
        }
      }
    }
    if (slow) {
      telemetry.emit('stream.slow-disconnect', { buffered: this.buffered });
      this.close(CloseCode.SlowConsumer, `slow consumer: more than ${max} bytes buffered`);
      return;
    }
    this.#socketBuffered = this.#sink.bufferedAmount();
    this.#measured();
  }

  /** The next queued message leaves the queue (sent or dropped). */
  #taken(msg: string): void {
    this.#out[this.#outHead++] = '';
    this.#outBytes -= msg.length;
  }

  /**
   * The bytes after the position (held by the log: the caller checked `lost`): a view of memory, or of a disk chunk
   * read for any reader. null when they are on disk and not read yet: a read starts and pumps again.
   */
  #next(): Buffer | null {
    const v = this.#pos.peek();
    if (v === null || Buffer.isBuffer(v)) return v;
    this.#reading = true;
    v.then(
      () => {
        this.#reading = false;
        if (!this.#paused) this.wake();
      },
      (err: Error) => {
        this.#reading = false;
        this.close(CloseCode.FellBehind, `fell behind: reading the disk log failed: ${err.message}`);
      },
    );
    return null;
  }

  /** Send raw log bytes while the socket has room. */
  #pumpRaw(): void {
    if (this.#phase !== Phase.Raw || this.#reading) return;
    const log = this.#ctx.log;
    if (this.#pos.offset >= log.endOffset) return;
    const { traffic } = this.#ctx.telemetry;
    const turn = this.#ctx.turn;
    if (turn.spent()) return this.#later();
    turn.begin();
    this.#sink.cork(() => {
      while (this.#pos.offset < log.endOffset) {
        if (this.#sink.bufferedAmount() >= this.#ctx.pace) {
          this.#paused = true;
          return;
        }
        if (this.#pos.lost) return;
        const chunk = this.#next();
        if (chunk === null) return;
        const n = Math.min(chunk.length, RAW_SLICE);
        this.#sink.send(n === chunk.length ? chunk : chunk.subarray(0, n), true);
        this.#pos.advance(n);
        this.stats.sent++;
        traffic.webMessagesSent++;
        traffic.webBytesSent += n;
      }
    });
    if (this.#pos.lost) this.close(CloseCode.FellBehind, 'fell behind: the log no longer holds the next offset');
    else this.#measured();
  }

  /** Ends the subscription with a close code (the socket is told why). */
  close(code: number, reason: string): void {
    if (this.#phase === Phase.Closed) return;
    this.#ctx.logger.debug({ code, reason, sent: this.stats.sent, dropped: this.stats.dropped }, 'stream subscriber closed');
    this.#end();
    this.#sink.end(code, reason);
  }

  #end(): void {
    if (this.#phase === Phase.Closed) return;
    this.#setState(Phase.Closed);
    this.#scanner = null;
    this.#out = [];
    this.#outHead = 0;
    this.#outBytes = 0;
    this.#ctx.memory.remove(this);
    this.#ctx.removed(this);
  }
}

export class StreamHub {
  readonly #src: StreamSource;
  readonly #ctx: HubContext;
  readonly #json = new Set<Subscriber>();
  readonly #raw = new Set<Subscriber>();
  #unsubCommands: (() => void) | null = null;
  #unsubAppend: (() => void) | null = null;
  readonly #unsubHistory: () => void;
  /** log.endOffset when live decoding was turned on: commands starting after it arrive fully decoded. */
  #decodeSince = 0;
  /** The db at the live head, as far as known. */
  #db: number | null = null;
  #checkpoints: Checkpoint[] = [];
  #epoch: number;
  #flushQueued = false;
  readonly #dirty = new Set<Subscriber>();
  readonly #now: () => number;
  readonly #cpu: () => number;
  readonly #share: number;
  /** Milliseconds live delivery may still take (LIVE_SHARE), as of #creditAt. */
  #credit = LIVE_BURST_MS;
  #creditAt: number;
  /** CPU time when the current upstream read's first live command came; -1 when none is being charged. */
  #chargeFrom = -1;

  constructor(src: StreamSource, opts: StreamHubOptions) {
    this.#src = src;
    this.#now = opts.now ?? (() => performance.now());
    this.#cpu = opts.cpu ?? cpuMs;
    this.#share = opts.liveShare ?? LIVE_SHARE;
    this.#creditAt = this.#now();
    this.#epoch = src.epoch;
    this.#ctx = {
      log: src.log,
      logger: opts.logger,
      telemetry: opts.telemetry ?? new Telemetry(''),
      maxBuffered: opts.maxBuffered,
      slowClient: opts.slowClient,
      memory: new ClientMemory(opts.maxBufferedTotal ?? 0),
      pace: Math.min(opts.maxBuffered, PACE),
      turn: opts.turn ?? new TurnBudget(SUBSCRIBERS_TURN_MS),
      decodeSince: () => this.#decodeSince,
      headDb: () => this.#db,
      learnHeadDb: (db) => {
        this.#db = db;
      },
      queueFlush: (sub) => this.#queueFlush(sub),
      removed: (sub) => this.#removed(sub),
    };
    this.#unsubHistory = src.onNewHistory(() => this.#checkHistory());
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
    for (const sub of this.#json) n += sub.buffered;
    for (const sub of this.#raw) n += sub.buffered;
    return n;
  }
  /** Live decoding is on (someone subscribes to JSON). */
  get decoding(): boolean {
    return this.#unsubCommands !== null;
  }

  subscribe(sink: StreamSink, opts: StreamOptions): Subscription {
    this.#checkHistory();
    this.#ctx.telemetry.emit('stream.subscribed', { format: opts.format });
    const log = this.#src.log;
    const raw = opts.format === StreamFormat.Raw;
    if (opts.from !== null) {
      const from = opts.from;
      if (!log.holds(from)) {
        return this.#refuse(sink, opts, CloseCode.OffsetGone, `offset ${from} is not in the log (${log.firstOffset}..${log.endOffset + 1})`);
      }
      if (opts.replid !== null && !this.#src.ids.accepts(opts.replid, from)) {
        return this.#refuse(sink, opts, CloseCode.OffsetGone, `replid ${opts.replid} is not this history (${this.#src.ids.replid})`);
      }
    }
    if (this.#unsubAppend === null) this.#unsubAppend = log.onAppend(() => this.#onAppend());
    const target = opts.from === null ? log.endOffset : opts.from - 1;
    if (raw) {
      const sub = new Subscriber(this.#ctx, sink, opts, Phase.Raw);
      this.#raw.add(sub);
      sub.startRaw(target, this.#src.ids.replid);
      return sub;
    }
    if (this.#unsubCommands === null) {
      this.#decodeSince = log.endOffset;
      this.#db = null;
      this.#unsubCommands = this.#src.onCommand((cmd) => this.#onLive(cmd));
    }
    const sub = new Subscriber(this.#ctx, sink, opts, Phase.Seek);
    this.#json.add(sub);
    const anchor = this.#anchor(target, opts.from !== null);
    if (anchor !== null) sub.startSeek(anchor, target, opts.from !== null);
    // `from` cannot be checked: scanned from there, a value that holds RESP would read as commands the master never ran.
    else if (opts.from !== null) sub.close(CloseCode.NotBoundary, `offset ${opts.from} cannot be checked to be the start of a command: the log holds no known command boundary before it`);
    // Nothing to seek from: start with the next command to begin.
    else sub.goLive(target);
    return sub;
  }

  /** Close every subscriber (server shutting down) and let go of the relay. */
  close(): void {
    for (const sub of [...this.#json, ...this.#raw]) sub.close(CloseCode.GoingAway, 'relay shutting down');
    this.#unsubHistory();
  }

  #removed(sub: Subscriber): void {
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

  #refuse(sink: StreamSink, opts: StreamOptions, code: number, reason: string): Subscription {
    const sub = new Subscriber(this.#ctx, sink, opts, opts.format === StreamFormat.Raw ? Phase.Raw : Phase.Seek);
    sub.close(code, reason);
    return sub;
  }

  /** A full sync from upstream started a new history: offsets restart, so every subscriber is told to start over. */
  #checkHistory(): void {
    if (this.#src.epoch === this.#epoch) return;
    this.#epoch = this.#src.epoch;
    this.#checkpoints = [];
    this.#db = null;
    for (const sub of [...this.#json, ...this.#raw]) sub.close(CloseCode.NewHistory, 'new history: upstream full resync, offsets restart');
  }

  /**
   * The latest known command boundary at or before `offset` still held by the log, preferring one with a known db,
   * within MAX_SEEK of it; `far` (a `from=` to check): else the latest one held at any distance (the seek is paced and
   * shares the subscribers' turn budget), as a `from=` is only trusted once a scan from a boundary reaches it.
   */
  #anchor(offset: number, far: boolean): Checkpoint | null {
    const log = this.#src.log;
    while (this.#checkpoints.length > 0 && this.#checkpoints[0]!.offset + 1 < log.firstOffset) this.#checkpoints.shift();
    const held = (o: number): boolean => o <= offset && o + 1 >= log.firstOffset;
    const candidates: Checkpoint[] = this.#checkpoints.filter((c) => held(c.offset));
    const snap = this.#src.usableSnapshot();
    if (snap !== null && held(snap.offset)) candidates.push({ offset: snap.offset, db: null });
    let best: Checkpoint | null = null;
    let latest: Checkpoint | null = null;
    for (const c of candidates) {
      if (latest === null || c.offset > latest.offset) latest = c;
      if (offset - c.offset > MAX_SEEK) continue;
      if (best === null) best = c;
      else if ((c.db !== null) !== (best.db !== null)) best = c.db !== null ? c : best;
      else if (c.offset > best.offset) best = c;
    }
    return best ?? (far ? latest : null);
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
      if (!sub.live) continue;
      if (cache === null) {
        if (this.#credit <= 0) {
          const now = this.#now();
          this.#credit = Math.min(LIVE_BURST_MS, this.#credit + (now - this.#creditAt) * this.#share);
          this.#creditAt = now;
          if (this.#credit <= 0) return this.#missed(cmd);
        }
        if (this.#chargeFrom < 0) {
          this.#chargeFrom = this.#cpu();
          // After the link's data handler: the whole read's decoding and delivery is charged at once.
          queueMicrotask(() => this.#charge());
        }
        cache = new Map();
      }
      sub.onLive(cmd, name, cache);
    }
  }

  /** Charges the CPU time live delivery took since #chargeFrom, and credits the wall time since the last charge. */
  #charge(): void {
    const now = this.#now();
    this.#credit = Math.min(LIVE_BURST_MS, this.#credit + (now - this.#creditAt) * this.#share) - (this.#cpu() - this.#chargeFrom);
    this.#creditAt = now;
    this.#chargeFrom = -1;
  }

  /** No time left for live delivery: every live subscriber misses `cmd`. */
  #missed(cmd: ScannedCommand): void {
    // A Set may lose its current member while iterated: one closed here is removed from it.
    for (const sub of this.#json) if (sub.live) sub.missed(cmd);
  }

  #onAppend(): void {
    for (const sub of this.#json) sub.wake();
    for (const sub of this.#raw) sub.wake();
  }

  #queueFlush(sub: Subscriber): void {
    this.#dirty.add(sub);
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    // After the link's data handler: it appends the chunk whose commands were just decoded.
    queueMicrotask(() => this.#flushDirty());
  }

  /** Flushes the subscribers with messages queued, in the order they got them, while the turn's budget lasts. */
  #flushDirty(): void {
    const turn = this.#ctx.turn;
    turn.begin();
    for (const sub of this.#dirty) {
      this.#dirty.delete(sub);
      sub.flush();
      if (turn.spent()) break;
    }
    if (this.#dirty.size > 0) setImmediate(() => this.#flushDirty());
    else this.#flushQueued = false;
  }
}
