import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { RelayStatus, ReplicaStatus } from '../observability/status.js';
import { TurnMemo } from '../util/turn-memo.js';

/** Prometheus text exposition format 0.0.4. */
export const METRICS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

type Labels = Readonly<Record<string, string | number>>;

/** One psync_relay_* family: name (without the prefix), type, help, label names, and how to read it from a status. */
interface Family {
  readonly name: string;
  readonly type: 'gauge' | 'counter';
  readonly help: string;
  readonly labels?: readonly string[];
  /** One value, or one per label set. */
  readonly read?: (s: RelayStatus) => number | readonly (readonly [Labels, number])[];
  /** A per-replica gauge (labels replica and id): all of them are filled in one pass over the replicas. */
  readonly replica?: (r: ReplicaStatus) => number;
}

const LINK_STATES = ['none', 'connecting', 'transfer', 'connected', 'backoff', 'stopped'] as const;
const REPLICA_LABELS = ['replica', 'id'] as const;
const flag = (b: boolean | undefined): number => (b ? 1 : 0);
/** One series per reason of a counter kept by reason (every reason, zeros included). */
const byReason = (counts: Readonly<Record<string, number>>): Array<readonly [Labels, number]> => Object.entries(counts).map(([reason, n]) => [{ reason }, n] as const);

/** Every psync_relay_ family, in exposition order. The README's metrics table documents the same list. */
const FAMILIES: readonly Family[] = [
  { name: 'info', type: 'gauge', help: 'Relay build and identity; always 1.', labels: ['version', 'run_id', 'replid'], read: (s) => [[{ version: s.version, run_id: s.runId, replid: s.replid }, 1]] },
  { name: 'uptime_seconds', type: 'gauge', help: 'Seconds since the relay started.', read: (s) => s.uptimeSeconds },
  // Upstream link
  { name: 'upstream_link_up', type: 'gauge', help: '1 while the upstream link is streaming (master_link_status:up).', read: (s) => flag(s.upstream.linkUp) },
  {
    name: 'upstream_link_state',
    type: 'gauge',
    help: 'Upstream link state: 1 for the current state, 0 for the others.',
    labels: ['state'],
    read: (s) => LINK_STATES.map((st) => [{ state: st }, flag(s.upstream.state === st)] as const),
  },
  { name: 'upstream_last_io_seconds', type: 'gauge', help: 'Seconds since the last byte from upstream (-1: never).', read: (s) => s.upstream.lastIoSecondsAgo },
  { name: 'upstream_link_down_seconds', type: 'gauge', help: 'Seconds the upstream link has been down (0 while up).', read: (s) => s.upstream.linkDownSinceSeconds },
  { name: 'upstream_sync_in_progress', type: 'gauge', help: '1 while an RDB is being received from upstream.', read: (s) => flag(s.upstream.syncInProgress) },
  { name: 'upstream_sync_received_bytes', type: 'gauge', help: 'RDB bytes received in the transfer in progress.', read: (s) => s.upstream.syncReceivedBytes },
  { name: 'upstream_full_syncs_total', type: 'counter', help: 'Full resyncs the relay received from upstream.', read: (s) => s.upstream.fullSyncs },
  { name: 'upstream_partial_syncs_total', type: 'counter', help: 'Partial resyncs (+CONTINUE) upstream accepted.', read: (s) => s.upstream.partialSyncs },
  { name: 'upstream_bytes_total', type: 'counter', help: 'Bytes received from upstream (bytes in).', read: (s) => s.upstream.bytesIn },
  // Offsets, log, snapshot
  { name: 'master_repl_offset', type: 'gauge', help: 'Offset of the last stream byte held (master_repl_offset).', read: (s) => s.masterReplOffset },
  { name: 'second_repl_offset', type: 'gauge', help: 'second_repl_offset: replid2 is valid up to here (-1: none).', read: (s) => s.secondReplOffset },
  { name: 'log_first_offset', type: 'gauge', help: 'Offset of the first byte the replication log holds (backlog_first_byte_offset).', read: (s) => s.log.firstOffset },
  { name: 'log_size_bytes', type: 'gauge', help: 'Bytes of the replication log held in memory (log.memory bounds it).', read: (s) => s.log.size },
  { name: 'log_limit_bytes', type: 'gauge', help: 'Configured in-memory log size (log.memory).', read: (s) => s.log.limit },
  { name: 'log_memory_first_offset', type: 'gauge', help: 'Offset of the first byte the log holds in memory (older bytes are on disk).', read: (s) => s.log.memFirstOffset },
  { name: 'log_disk_bytes', type: 'gauge', help: 'Bytes of the replication log in segment files on disk.', read: (s) => s.log.diskBytes },
  { name: 'log_disk_limit_bytes', type: 'gauge', help: 'Disk log size limit in use (log.disk, or half of a smaller filesystem; 0 = no disk log).', read: (s) => s.log.diskLimit },
  { name: 'log_disk_segments', type: 'gauge', help: 'Segment files of the disk log.', read: (s) => s.log.diskSegments },
  {
    name: 'log_disk_failing',
    type: 'gauge',
    help: '1 when the disk log cannot take writes (failing or detached): the relay forwards from memory only.',
    read: (s) => flag(s.log.diskState === 'failing' || s.log.diskState === 'detached'),
  },
  {
    name: 'log_disk_direct',
    type: 'gauge',
    help: '1 when the disk log writes with O_DIRECT (log.disk-direct, where the filesystem and memory allow it); 0: through the page cache, or no disk log.',
    read: (s) => flag(s.log.diskDirect),
  },
  {
    name: 'log_disk_pending_bytes',
    type: 'gauge',
    help: 'Stream bytes held in memory that the disk log has not taken yet (log.disk-queue bounds it).',
    read: (s) => s.log.diskPendingBytes,
  },
  { name: 'log_blocks_allocated_total', type: 'counter', help: 'Log read blocks allocated (the upstream socket reads into them).', read: (s) => s.log.blocksAllocated },
  { name: 'log_blocks_reused_total', type: 'counter', help: 'Log read blocks reused once dropped and read by nothing any more.', read: (s) => s.log.blocksReused },
  { name: 'log_blocks_prefaulted_total', type: 'counter', help: 'Log read blocks made with their pages written before the stream needed them (log.memory-prefault).', read: (s) => s.log.blocksPrefaulted },
  { name: 'log_blocks_discarded_total', type: 'counter', help: 'Dropped log read blocks left to the garbage collector (a holder stayed behind them, or a new history began).', read: (s) => s.log.blocksDiscarded },
  { name: 'log_disk_write_errors_total', type: 'counter', help: 'Disk log writes that failed (each is retried).', read: (s) => s.log.diskWriteErrors },
  {
    name: 'log_disk_detaches_total',
    type: 'counter',
    help: 'Times the disk log history was given up because the disk fell past log.disk-queue.',
    read: (s) => s.log.diskDetaches,
  },
  {
    name: 'log_disk_read_errors_total',
    type: 'counter',
    help: 'Disk log segments that could not be read back (EIO, removed or cut short): given up with the older ones; replicas that needed them full-sync.',
    read: (s) => s.log.diskReadErrors,
  },
  {
    name: 'log_disk_read_waits_total',
    type: 'counter',
    help: 'Bursts faster than the disk (a relay catching up on its master) that held the upstream reads back so that the disk log keeps its history.',
    read: (s) => s.log.diskReadWaits,
  },
  {
    name: 'log_disk_read_wait_seconds_total',
    type: 'counter',
    help: 'Time those bursts kept the disk more than half of log.disk-queue behind (the upstream reads waiting for it, at most 5 s each).',
    read: (s) => s.log.diskReadWaitSeconds,
  },
  { name: 'snapshot_present', type: 'gauge', help: '1 when the relay holds a snapshot.', read: (s) => flag(s.snapshot !== null) },
  { name: 'snapshot_leases', type: 'gauge', help: 'Snapshot files held open by full syncs and point-in-time listeners.', read: (s) => s.snapshotLeases },
  { name: 'snapshot_usable', type: 'gauge', help: '1 when the snapshot can serve a full sync (its offset is still in the log).', read: (s) => flag(s.snapshot?.usable) },
  { name: 'snapshot_offset', type: 'gauge', help: 'Stream offset the snapshot was taken at (-1: none).', read: (s) => s.snapshot?.offset ?? -1 },
  { name: 'snapshot_size_bytes', type: 'gauge', help: 'Snapshot RDB size.', read: (s) => s.snapshot?.size ?? 0 },
  { name: 'snapshot_refresh_in_progress', type: 'gauge', help: '1 while a fresh snapshot is being fetched.', read: (s) => flag(s.snapshotRefreshInProgress) },
  {
    name: 'snapshot_waiting_for_room_bytes',
    type: 'gauge',
    help: 'Room the next snapshot fetch to disk waits for (the last one ran out of room); 0 when none.',
    read: (s) => s.snapshotWaitingForRoom,
  },
  {
    name: 'snapshot_waiting_for_disk_writes',
    type: 'gauge',
    help: '1 while the next snapshot fetch or full sync from upstream waits for the disk to take writes (the last RDB write was refused: read-only, permissions).',
    read: (s) => flag(s.snapshotDiskRefused !== null),
  },
  { name: 'full_syncs_waiting', type: 'gauge', help: 'Replicas waiting for a full sync (for a snapshot, or their turn under replication.full-sync-concurrency).', read: (s) => s.fullSyncsWaiting },
  { name: 'full_syncs_active', type: 'gauge', help: 'Snapshot transfers to replicas in progress.', read: (s) => s.fullSyncsActive },
  {
    name: 'snapshot_refreshes_total',
    type: 'counter',
    help: 'Fresh snapshots fetched from upstream (each is a fork on the master), started.',
    read: (s) => s.snapshotRefreshes,
  },
  {
    name: 'snapshots_given_up_total',
    type: 'counter',
    help: 'Held snapshots given up: unreadable, or their bytes no longer matching their CRC-64 (damaged on disk).',
    read: (s) => s.snapshotsGivenUp,
  },
  // Stream content
  {
    name: 'stream_commands_total',
    type: 'counter',
    help: 'Commands seen in the upstream replication stream, by lower-case name.',
    labels: ['cmd'],
    read: (s) =>
      Object.entries(s.stats.streamCommands)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([cmd, n]) => [{ cmd }, n] as const),
  },
  // Downstream
  { name: 'connected_clients', type: 'gauge', help: 'Connected downstream clients (replicas included).', read: (s) => s.connectedClients },
  { name: 'connected_replicas', type: 'gauge', help: 'Connected downstream replicas.', read: (s) => s.replicas.length },
  { name: 'online_replicas', type: 'gauge', help: 'Downstream replicas streaming (state online).', read: (s) => s.replicas.filter((r) => r.state === 'online').length },
  { name: 'replica_lag_bytes', type: 'gauge', help: 'Stream bytes a replica has not been sent yet.', replica: (r) => r.lagBytes },
  { name: 'replica_lag_seconds', type: 'gauge', help: 'Seconds since a replica last acknowledged (REPLCONF ACK).', replica: (r) => r.lagSeconds },
  { name: 'replica_offset', type: 'gauge', help: 'Last stream offset handed to a replica socket.', replica: (r) => r.offset },
  { name: 'replica_ack_offset', type: 'gauge', help: 'Last offset a replica acknowledged.', replica: (r) => r.ackOffset },
  { name: 'sync_full_total', type: 'counter', help: 'Full syncs served to downstream replicas (sync_full).', read: (s) => s.stats.syncFull },
  { name: 'sync_partial_ok_total', type: 'counter', help: 'Partial resyncs accepted from downstream replicas (sync_partial_ok).', read: (s) => s.stats.syncPartialOk },
  { name: 'sync_partial_err_total', type: 'counter', help: 'Partial resyncs refused to downstream replicas (sync_partial_err).', read: (s) => s.stats.syncPartialErr },
  { name: 'net_input_bytes_total', type: 'counter', help: 'Bytes read from downstream clients.', read: (s) => s.stats.netInputBytes },
  {
    name: 'net_output_bytes_total',
    type: 'counter',
    help: 'Bytes written to downstream clients (bytes out: replies, RDB, stream).',
    read: (s) => s.stats.netOutputBytes,
  },
  { name: 'repl_output_bytes_total', type: 'counter', help: 'Stream bytes written to downstream replicas.', read: (s) => s.stats.replOutputBytes },
  {
    name: 'disk_read_bytes_total',
    type: 'counter',
    help: 'Stream bytes sent to replicas from the disk log (they were behind the memory tail).',
    read: (s) => s.stats.diskReadBytes,
  },
  {
    name: 'compressed_raw_bytes_total',
    type: 'counter',
    help: 'Bytes (RDB and stream) handed to the compressors of downstream relays that asked for compression.',
    read: (s) => s.stats.compressedRawBytes,
  },
  {
    name: 'compressed_wire_bytes_total',
    type: 'counter',
    help: 'What those compressors sent on the wire (compare with compressed_raw_bytes_total for the ratio).',
    read: (s) => s.stats.compressedWireBytes,
  },
  { name: 'connections_received_total', type: 'counter', help: 'Downstream connections accepted.', read: (s) => s.stats.totalConnectionsReceived },
  { name: 'rejected_connections_total', type: 'counter', help: 'Downstream connections refused (max-clients).', read: (s) => s.stats.rejectedConnections },
  { name: 'commands_processed_total', type: 'counter', help: 'Commands processed from downstream clients.', read: (s) => s.stats.totalCommandsProcessed },
  { name: 'protocol_errors_total', type: 'counter', help: 'Protocol errors from downstream clients.', read: (s) => s.stats.protocolErrors },
  {
    name: 'access_denied_total',
    type: 'counter',
    help: 'Downstream clients refused, by reason (auth: a wrong password; cmd, channel: not allowed to their role).',
    labels: ['reason'],
    read: (s) => byReason(s.stats.accessDenied),
  },
  {
    name: 'replicas_dropped_total',
    type: 'counter',
    help: 'Downstream replicas disconnected, by reason (lag: replica-max-lag, timeout: replica-timeout).',
    labels: ['reason'],
    read: (s) => [
      [{ reason: 'lag' }, s.stats.replicasDroppedLag],
      [{ reason: 'timeout' }, s.stats.replicasDroppedTimeout],
    ],
  },
  // Process
  { name: 'memory_rss_bytes', type: 'gauge', help: 'Resident set size of the relay process.', read: (s) => s.memory.rss },
  { name: 'memory_heap_used_bytes', type: 'gauge', help: 'V8 heap in use.', read: (s) => s.memory.heapUsed },
  // WebSocket /stream
  {
    name: 'web_subscribers',
    type: 'gauge',
    help: 'Connected /stream WebSocket subscribers, by format.',
    labels: ['format'],
    read: (s) => [
      [{ format: 'json' }, s.web.jsonSubscribers],
      [{ format: 'raw' }, s.web.rawSubscribers],
    ],
  },
  { name: 'web_subscribers_total', type: 'counter', help: '/stream subscriptions accepted.', read: (s) => s.web.subscribersTotal },
  { name: 'web_messages_sent_total', type: 'counter', help: 'WebSocket messages sent to /stream subscribers.', read: (s) => s.web.messagesSent },
  {
    name: 'web_bytes_sent_total',
    type: 'counter',
    help: 'Payload bytes sent to /stream subscribers (JSON characters or raw bytes).',
    read: (s) => s.web.bytesSent,
  },
  {
    name: 'web_dropped_messages_total',
    type: 'counter',
    help: 'Messages dropped for slow /stream subscribers (web.slow-client: drop).',
    read: (s) => s.web.droppedMessages,
  },
  {
    name: 'web_slow_disconnects_total',
    type: 'counter',
    help: 'Slow /stream subscribers disconnected (web.slow-client: disconnect).',
    read: (s) => s.web.slowDisconnects,
  },
  {
    name: 'web_buffered_bytes',
    type: 'gauge',
    help: 'Bytes queued for /stream subscribers (socket buffers), bounded by web.max-buffered each and web.max-buffered-total in all.',
    read: (s) => s.web.bufferedBytes,
  },
  {
    name: 'web_refused_total',
    type: 'counter',
    help: 'Web requests refused, by reason (host, origin: web.allowed-hosts/-origins; token: a wrong web.token; subscribers: web.max-subscribers; answers: past the answers a turn may write).',
    labels: ['reason'],
    read: (s) => byReason(s.web.refused),
  },
  { name: 'web_decoding', type: 'gauge', help: '1 while stream commands are decoded for JSON subscribers.', read: (s) => flag(s.web.decoding) },
];

/** How old the process and Node.js families a scrape gets may be. */
export const PROCESS_METRICS_MAX_AGE_MS = 1000;

/**
 * prom-client's standard process and Node.js metrics (CPU, memory, file descriptors, event-loop lag, GC, heap
 * spaces, handles), rendered at most once per PROCESS_METRICS_MAX_AGE_MS. One set per process, shared by every
 * relay in it: they describe the process, and collecting them starts a GC observer and an event-loop delay monitor
 * that must not run twice.
 *
 * Why not on every scrape: they cost ~0.6 ms a rendering, most of a scrape (the event-loop delay histogram's
 * statistics, a listing of /proc/self/fd that grows with the connections). 200 clients scraping in a loop kept the
 * relay's loop busy with them: PING answered in 420 ms (median). A scrape gets the last rendering while it is younger than the limit, else renders anew (answering the
 * last one and rendering for the next scrape left a Prometheus scraping every 15 s with values 15 s old).
 */
export class ProcessMetrics {
  readonly #render: () => Promise<string>;
  readonly #now: () => number;
  #text: string | null = null;
  #renderedAt = -Infinity;
  #rendering: Promise<string> | null = null;

  constructor(render: () => Promise<string>, now: () => number = () => performance.now()) {
    this.#render = render;
    this.#now = now;
  }

  /**
   * The last rendering while it is younger than the limit; else a new one, which the scrapes until it is done share
   * (prom-client's collectors are synchronous: it is done in the microtasks after the scrape's handler, as uWS's
   * synchronous pipelining needs). A rendering that fails leaves the last one, if any.
   */
  text(): string | Promise<string> {
    if (this.#text !== null && this.#now() - this.#renderedAt < PROCESS_METRICS_MAX_AGE_MS) return this.#text;
    if (this.#rendering === null) {
      const rendering = this.#refresh();
      this.#rendering = rendering;
      const done = (): void => {
        if (this.#rendering === rendering) this.#rendering = null;
      };
      rendering.then(done, done);
    }
    return this.#rendering;
  }

  async #refresh(): Promise<string> {
    const started = this.#now();
    try {
      const text = await this.#render();
      this.#text = text;
      this.#renderedAt = started;
      return text;
    } catch (err) {
      if (this.#text === null) throw err;
      return this.#text;
    }
  }
}

let processMetrics: ProcessMetrics | null = null;

function sharedProcessMetrics(): ProcessMetrics {
  if (processMetrics === null) {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    processMetrics = new ProcessMetrics(() => registry.metrics());
  }
  return processMetrics;
}

/**
 * GET /metrics: the psync_relay_* families read from one status (the stats model through the status builder), and
 * the process families (ProcessMetrics), in prom-client's exposition. A scrape builds the status once: the first
 * family's collect() fills every family (prom-client collects in registration order, synchronously), the
 * per-replica gauges in one pass over the replicas.
 *
 * Scrapes handled in one turn of the event loop share one rendering of the psync_relay_* families (TurnMemo): a
 * client pipelining 10,000 GET /metrics, or 200 clients scraping in a loop, would otherwise each build the status and
 * render it (and reset and refill the same gauges under each other); a scrape in a later turn renders afresh.
 */
export class RelayMetrics {
  readonly #status: () => RelayStatus;
  readonly #own: Registry;
  readonly #process: ProcessMetrics;
  readonly #metrics = new Map<Family, Gauge | Counter>();
  readonly #ownText = new TurnMemo(() => this.#own.metrics());

  constructor(status: () => RelayStatus, processFamilies: ProcessMetrics = sharedProcessMetrics()) {
    this.#status = status;
    this.#process = processFamilies;
    this.#own = new Registry();
    FAMILIES.forEach((f, i) => {
      const config = {
        name: `psync_relay_${f.name}`,
        help: f.help,
        labelNames: f.replica ? REPLICA_LABELS : (f.labels ?? []),
        registers: [this.#own],
        ...(i === 0 && { collect: () => this.#fill() }),
      };
      this.#metrics.set(f, f.type === 'gauge' ? new Gauge(config) : new Counter(config));
    });
  }

  /** The exposition text: the relay's families, then the process ones (as one merged prom-client registry orders them). */
  async render(): Promise<string> {
    const own = this.#ownText.get();
    const processText = this.#process.text();
    return `${await own}\n${typeof processText === 'string' ? processText : await processText}`;
  }

  #fill(): void {
    const s = this.#status();
    const replicaGauges: [Gauge, (r: ReplicaStatus) => number][] = [];
    for (const [f, m] of this.#metrics) {
      m.reset();
      if (f.replica) replicaGauges.push([m as Gauge, f.replica]);
      const v = f.read?.(s);
      if (v === undefined) continue;
      // Counters are totals kept by the stats model: after reset(), inc() writes the total.
      const write = (labels: Labels, n: number): void => (m instanceof Gauge ? m.set(labels, n) : m.inc(labels, n));
      if (typeof v === 'number') write({}, v);
      else for (const [labels, n] of v) write(labels, n);
    }
    for (const r of s.replicas) {
      const labels = { replica: `${r.ip}:${r.port}`, id: r.id };
      for (const [g, read] of replicaGauges) g.set(labels, read(r));
    }
  }
}
