import { subscribe, type Telemetry, type TelemetryEvent, type TelemetryMessage } from './telemetry.js';

/** Every counter of one relay, as INFO, /status and /metrics show them (through the status builder). */
export interface StatsSnapshot {
  readonly downstream: {
    readonly totalConnectionsReceived: number;
    readonly totalCommandsProcessed: number;
    readonly rejectedConnections: number;
    readonly syncFull: number;
    readonly syncPartialOk: number;
    readonly syncPartialErr: number;
    readonly netInputBytes: number;
    readonly netOutputBytes: number;
    readonly replOutputBytes: number;
    readonly replicasDroppedLag: number;
    readonly replicasDroppedTimeout: number;
    readonly protocolErrors: number;
    /** Clients refused: wrong passwords, commands and channels their role does not allow. */
    readonly accessDenied: { readonly auth: number; readonly cmd: number; readonly channel: number };
    readonly diskReadBytes: number;
    /** Stream and RDB bytes handed to compressing replicas' compressors (psync-relay-z1), and what went on the wire. */
    readonly compressedRawBytes: number;
    readonly compressedWireBytes: number;
    /** Commands seen in the upstream stream, by lower-case name. */
    readonly streamCommands: Readonly<Record<string, number>>;
  };
  readonly upstream: { readonly fullSyncs: number; readonly partialSyncs: number; readonly bytesIn: number; readonly lastError: string };
  readonly snapshotRefreshes: { readonly started: number; readonly committed: number; readonly failed: number };
  /** Held snapshots given up because they could not be read or no longer matched their checksum. */
  readonly snapshotsGivenUp: number;
  readonly disk: {
    readonly writeErrors: number;
    readonly detaches: number;
    /** Segments that could not be read back (given up with the older ones). */
    readonly readErrors: number;
    /** Bursts that held the upstream reads back for the disk (DiskWait), and how long they were over its mark. */
    readonly readWaits: number;
    readonly readWaitMs: number;
  };
  readonly web: {
    readonly subscribersTotal: number;
    readonly messagesSent: number;
    readonly bytesSent: number;
    readonly droppedMessages: number;
    readonly slowDisconnects: number;
    /** Requests refused: Host or Origin not allowed, a wrong web.token, /stream full, past the answer budget. */
    readonly refused: { readonly host: number; readonly origin: number; readonly token: number; readonly subscribers: number; readonly answers: number };
  };
}

/**
 * The one stats model of a relay: counts its telemetry messages (telemetry.ts) and reads the hot-path counters the
 * modules bump in place (Traffic). Nothing else holds a counter.
 */
export class RelayStats {
  readonly #telemetry: Telemetry;
  readonly #off: (() => void)[] = [];
  #connections = 0;
  #rejected = 0;
  #protocolErrors = 0;
  readonly #accessDenied = { auth: 0, cmd: 0, channel: 0 };
  readonly #webRefused = { host: 0, origin: 0, token: 0, subscribers: 0, answers: 0 };
  #syncFull = 0;
  #syncPartialOk = 0;
  #syncPartialErr = 0;
  #droppedLag = 0;
  #droppedTimeout = 0;
  #upstreamFull = 0;
  #upstreamPartial = 0;
  #upstreamError = '';
  #diskWriteErrors = 0;
  #diskDetaches = 0;
  #diskReadErrors = 0;
  #diskReadWaits = 0;
  #diskReadWaitMs = 0;
  #refreshes = { started: 0, committed: 0, failed: 0 };
  #snapshotsGivenUp = 0;
  #webSubscribers = 0;
  #webSlowDisconnects = 0;

  constructor(telemetry: Telemetry) {
    this.#telemetry = telemetry;
    this.#on('connection', (m) => {
      this.#connections++;
      if (m.result === 'max-clients') this.#rejected++;
    });
    this.#on('protocol-error', () => this.#protocolErrors++);
    this.#on('access-denied', (m) => this.#accessDenied[m.reason]++);
    this.#on('web.refused', (m) => this.#webRefused[m.reason]++);
    this.#on('replica.sync', (m) => (m.kind === 'full' ? this.#syncFull++ : this.#syncPartialOk++));
    this.#on('replica.partial-refused', () => this.#syncPartialErr++);
    this.#on('replica.dropped', (m) => (m.reason === 'lag' ? this.#droppedLag++ : this.#droppedTimeout++));
    this.#on('upstream.sync', (m) => (m.kind === 'full' ? this.#upstreamFull++ : this.#upstreamPartial++));
    this.#on('upstream.error', (m) => (this.#upstreamError = m.message));
    this.#on('disk.write-error', () => this.#diskWriteErrors++);
    this.#on('disk.detached', () => this.#diskDetaches++);
    this.#on('disk.read-error', () => this.#diskReadErrors++);
    this.#on('disk.read-wait', (m) => {
      this.#diskReadWaits++;
      this.#diskReadWaitMs += m.ms;
    });
    this.#on('snapshot.refresh', (m) => this.#refreshes[m.phase]++);
    this.#on('snapshot.given-up', () => this.#snapshotsGivenUp++);
    this.#on('stream.subscribed', () => this.#webSubscribers++);
    this.#on('stream.slow-disconnect', () => this.#webSlowDisconnects++);
  }

  #on<E extends TelemetryEvent>(event: E, fn: (msg: TelemetryMessage<E>) => void): void {
    const relay = this.#telemetry.relay;
    this.#off.push(subscribe(event, (msg) => msg.relay === relay && fn(msg)));
  }

  snapshot(): StatsSnapshot {
    const t = this.#telemetry.traffic;
    return {
      downstream: {
        totalConnectionsReceived: this.#connections,
        totalCommandsProcessed: t.commandsProcessed,
        rejectedConnections: this.#rejected,
        syncFull: this.#syncFull,
        syncPartialOk: this.#syncPartialOk,
        syncPartialErr: this.#syncPartialErr,
        netInputBytes: t.netInputBytes,
        netOutputBytes: t.netOutputBytes,
        replOutputBytes: t.replOutputBytes,
        replicasDroppedLag: this.#droppedLag,
        replicasDroppedTimeout: this.#droppedTimeout,
        protocolErrors: this.#protocolErrors,
        accessDenied: { ...this.#accessDenied },
        diskReadBytes: t.diskReadBytes,
        compressedRawBytes: t.compressedRawBytes,
        compressedWireBytes: t.compressedWireBytes,
        streamCommands: Object.fromEntries(t.streamCommands),
      },
      upstream: { fullSyncs: this.#upstreamFull, partialSyncs: this.#upstreamPartial, bytesIn: t.upstreamBytesIn, lastError: this.#upstreamError },
      snapshotRefreshes: { ...this.#refreshes },
      snapshotsGivenUp: this.#snapshotsGivenUp,
      disk: {
        writeErrors: this.#diskWriteErrors,
        detaches: this.#diskDetaches,
        readErrors: this.#diskReadErrors,
        readWaits: this.#diskReadWaits,
        readWaitMs: this.#diskReadWaitMs,
      },
      web: {
        subscribersTotal: this.#webSubscribers,
        messagesSent: t.webMessagesSent,
        bytesSent: t.webBytesSent,
        droppedMessages: t.webDroppedMessages,
        slowDisconnects: this.#webSlowDisconnects,
        refused: { ...this.#webRefused },
      },
    };
  }

  /** Stops counting (the relay closed): the channels are process-wide and would keep this model alive. */
  close(): void {
    for (const off of this.#off.splice(0)) off();
  }
}
