import dc from 'node:diagnostics_channel';
import { CommandCounter } from '../resp/command-names.js';

/**
 * What happens in the relay, as typed messages on node:diagnostics_channel channels named `psync-relay:<event>`.
 * The modules where things happen publish them; the stats model (stats.ts) counts them; anything else in the
 * process (a test, an APM agent, a preload script) can subscribe by name without the relay knowing. Every message
 * carries `relay` (the run id) because channels are process-wide and a process may run several relays.
 */
export interface TelemetryEvents {
  /** A downstream connection arrived (total_connections_received): served, or refused at listen.max-clients (rejected_connections) or by protected mode. */
  connection: { readonly result: 'accepted' | 'max-clients' | 'protected-mode'; readonly peer: string };
  /**
   * A downstream client was refused: a wrong password (AUTH, HELLO AUTH), or a command or a channel its role does not
   * allow (-NOPERM). Redis 7.2's acl_access_denied_auth / _cmd / _channel.
   */
  'access-denied': { readonly reason: AccessDenial; readonly peer: string };
  /**
   * A web request or /stream upgrade was refused: its Host or Origin is not allowed (403), it carried a wrong
   * web.token (401), /stream had web.max-subscribers already (503), or its answer was past the answers a
   * connection or the process may write in a turn (503, answer-budget.ts).
   */
  'web.refused': { readonly reason: WebRefusal; readonly peer: string };
  /** A downstream client broke the protocol or went past an input limit (`limit`: its config key); it is closed. */
  'protocol-error': { readonly peer: string; readonly limit: string | null };
  /** A replica is served: a full sync (+FULLRESYNC, or SYNC) or a partial one (+CONTINUE). */
  'replica.sync': { readonly kind: 'full' | 'partial'; readonly peer: string };
  /** A replica's PSYNC could not be continued: a full sync follows. */
  'replica.partial-refused': { readonly peer: string; readonly replid: string; readonly offset: number };
  /** The relay disconnected a replica: over a lag limit or behind the log (`lag`), or silent past replica-timeout (`timeout`). */
  'replica.dropped': { readonly reason: 'lag' | 'timeout'; readonly peer: string; readonly detail: string };
  /** Upstream continued the relay (partial), or a full sync from it is committed (full). */
  'upstream.sync': { readonly kind: 'full' | 'partial'; readonly replid: string | null; readonly offset: number };
  /** The upstream link failed; it reconnects with backoff. */
  'upstream.error': { readonly message: string };
  /** The disk log changed state: ok, failing, detached, closed. */
  'disk.state': { readonly from: string; readonly to: string; readonly cause: string | null };
  /** A disk log write failed (it is retried). */
  'disk.write-error': { readonly cause: string };
  /** The disk log gave its history up (the disk fell past log.disk-queue). */
  'disk.detached': { readonly cause: string };
  /** A disk log segment could not be read back; it and older segments were given up (or the history, if it was the last). */
  'disk.read-error': { readonly cause: string };
  /** A burst faster than the disk held the upstream reads back (DiskWait); ms: how long it was over the mark. */
  'disk.read-wait': { readonly ms: number };
  /**
   * A held snapshot could not be served and is no longer offered: its file could not be opened or had the wrong size
   * (unreadable), or its bytes no longer match its CRC-64 (damaged).
   */
  'snapshot.given-up': { readonly reason: 'unreadable' | 'damaged'; readonly cause: string };
  /** A snapshot fetch started, was committed, or failed: from the master (a fork on it) or from upstream.snapshot-source. */
  'snapshot.refresh': { readonly phase: 'started' | 'committed' | 'failed'; readonly from: 'master' | 'snapshot-source'; readonly reason: string | null };
  /** A /stream WebSocket subscriber was accepted. */
  'stream.subscribed': { readonly format: 'json' | 'raw' };
  /** A slow /stream subscriber was disconnected (web.slow-client: disconnect). */
  'stream.slow-disconnect': { readonly buffered: number };
}

export type AccessDenial = 'auth' | 'cmd' | 'channel';
export type WebRefusal = 'host' | 'origin' | 'token' | 'subscribers' | 'answers';

export type TelemetryEvent = keyof TelemetryEvents;
export type TelemetryMessage<E extends TelemetryEvent> = TelemetryEvents[E] & { readonly relay: string };

export const TELEMETRY_EVENTS = [
  'connection',
  'access-denied',
  'web.refused',
  'protocol-error',
  'replica.sync',
  'replica.partial-refused',
  'replica.dropped',
  'upstream.sync',
  'upstream.error',
  'disk.state',
  'disk.write-error',
  'disk.detached',
  'disk.read-error',
  'disk.read-wait',
  'snapshot.given-up',
  'snapshot.refresh',
  'stream.subscribed',
  'stream.slow-disconnect',
] as const satisfies readonly TelemetryEvent[];

/** The diagnostics_channel name of an event. */
export function channelName(event: TelemetryEvent): string {
  return `psync-relay:${event}`;
}

// Held here: Node 20 may collect a channel object nobody references.
const channels = new Map(TELEMETRY_EVENTS.map((e) => [e, dc.channel(channelName(e))]));

/**
 * Counters bumped in place on the hot path (per socket write, per read, per stream command): a message per write
 * would allocate on the relay's busiest loop and charge it for every subscriber anyone attaches. Read by the stats model.
 */
export class Traffic {
  /** Bytes read from downstream clients, and the commands parsed from them. */
  netInputBytes = 0;
  commandsProcessed = 0;
  /** Bytes written to downstream clients: replies, RDB payloads, stream. */
  netOutputBytes = 0;
  /** Stream bytes written to replicas, and those of them read from the disk log. */
  replOutputBytes = 0;
  diskReadBytes = 0;
  /** Bytes received from upstream. */
  upstreamBytesIn = 0;
  /** /stream: messages and payload bytes sent, messages dropped for slow subscribers (web.slow-client: drop). */
  webMessagesSent = 0;
  webBytesSent = 0;
  webDroppedMessages = 0;
  /** Bytes handed to compressing replicas' compressors (psync-relay-z1), and what they sent on the wire. */
  compressedRawBytes = 0;
  compressedWireBytes = 0;
  readonly #names = new CommandCounter();

  /** Commands seen in the upstream stream, by lower-case name (a new map on each call). */
  get streamCommands(): Map<string, number> {
    return this.#names.counts();
  }

  /** One command named by these bytes (any case): counted without making a string per command. */
  streamCommand(name: Uint8Array): void {
    this.#names.count(name);
  }
}

/** One relay's handle for publishing: the modules get it instead of a counters object. */
export class Telemetry {
  constructor(
    /** Names the relay in every message (its run id). */
    readonly relay: string,
    readonly traffic: Traffic = new Traffic(),
  ) {}

  emit<E extends TelemetryEvent>(event: E, data: TelemetryEvents[E]): void {
    const ch = channels.get(event)!;
    // relay first: V8 copies `{ ...data, relay }` on a slow path (~30x slower, measured).
    if (ch.hasSubscribers) ch.publish({ relay: this.relay, ...data });
  }
}

/** Subscribes to one event (of every relay in the process); returns the unsubscribe function. */
export function subscribe<E extends TelemetryEvent>(event: E, fn: (msg: TelemetryMessage<E>) => void): () => void {
  const name = channelName(event);
  const listener = (msg: unknown) => fn(msg as TelemetryMessage<E>);
  dc.subscribe(name, listener);
  return () => void dc.unsubscribe(name, listener);
}
