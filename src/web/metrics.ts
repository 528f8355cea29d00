import type { RelayStatus } from '../observability/status.js';

type Labels = Readonly<Record<string, string | number>>;
type Sample = readonly [labels: Labels, value: number];

/** Prometheus text exposition format 0.0.4. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Every metric: name (without the psync_relay_ prefix), type and help. The README documents the same list. */
class Exposition {
  #out: string[] = [];

  metric(name: string, type: 'counter' | 'gauge', help: string, samples: number | readonly Sample[]): void {
    const full = `psync_relay_${name}`;
    this.#out.push(`# HELP ${full} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${full} ${type}`);
    const list: readonly Sample[] = typeof samples === 'number' ? [[{}, samples]] : samples;
    for (const [labels, value] of list) this.#out.push(`${full}${formatLabels(labels)} ${formatValue(value)}`);
  }

  toString(): string {
    return this.#out.join('\n') + '\n';
  }
}

function formatLabels(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${String(v).replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

const LINK_STATES = ['none', 'connecting', 'transfer', 'connected', 'backoff', 'stopped'] as const;

/** The /metrics body for one status snapshot. */
export function formatMetrics(s: RelayStatus): string {
  const e = new Exposition();
  const web = s.web;
  const up = s.upstream;
  e.metric('info', 'gauge', 'Relay build and identity; always 1.', [[{ version: s.version, run_id: s.runId, replid: s.replid }, 1]]);
  e.metric('uptime_seconds', 'gauge', 'Seconds since the relay started.', s.uptimeSeconds);
  // Upstream link
  e.metric('upstream_link_up', 'gauge', '1 while the upstream link is streaming (master_link_status:up).', up.linkUp ? 1 : 0);
  e.metric(
    'upstream_link_state',
    'gauge',
    'Upstream link state: 1 for the current state, 0 for the others.',
    LINK_STATES.map((st) => [{ state: st }, up.state === st ? 1 : 0] as const),
  );
  e.metric('upstream_last_io_seconds', 'gauge', 'Seconds since the last byte from upstream (-1: never).', up.lastIoSecondsAgo);
  e.metric('upstream_link_down_seconds', 'gauge', 'Seconds the upstream link has been down (0 while up).', up.linkDownSinceSeconds);
  e.metric('upstream_sync_in_progress', 'gauge', '1 while an RDB is being received from upstream.', up.syncInProgress ? 1 : 0);
  e.metric('upstream_sync_received_bytes', 'gauge', 'RDB bytes received in the transfer in progress.', up.syncReceivedBytes);
  e.metric('upstream_full_syncs_total', 'counter', 'Full resyncs the relay received from upstream.', up.fullSyncs);
  e.metric('upstream_partial_syncs_total', 'counter', 'Partial resyncs (+CONTINUE) upstream accepted.', up.partialSyncs);
  e.metric('upstream_bytes_total', 'counter', 'Bytes received from upstream (bytes in).', up.bytesIn);
  // Offsets, log, snapshot
  e.metric('master_repl_offset', 'gauge', 'Offset of the last stream byte held (master_repl_offset).', s.masterReplOffset);
  e.metric('second_repl_offset', 'gauge', 'second_repl_offset: replid2 is valid up to here (-1: none).', s.secondReplOffset);
  e.metric('log_first_offset', 'gauge', 'Offset of the first byte the replication log holds (backlog_first_byte_offset).', s.log.firstOffset);
  e.metric('log_size_bytes', 'gauge', 'Bytes of the replication log held in memory (log.memory bounds it).', s.log.size);
  e.metric('log_limit_bytes', 'gauge', 'Configured in-memory log size (log.memory).', s.log.limit);
  e.metric('log_memory_first_offset', 'gauge', 'Offset of the first byte the log holds in memory (older bytes are on disk).', s.log.memFirstOffset);
  e.metric('log_disk_bytes', 'gauge', 'Bytes of the replication log in segment files on disk.', s.log.diskBytes);
  e.metric('log_disk_limit_bytes', 'gauge', 'Configured disk log size (log.disk; 0 = no disk log).', s.log.diskLimit);
  e.metric('log_disk_segments', 'gauge', 'Segment files of the disk log.', s.log.diskSegments);
  e.metric('log_disk_failing', 'gauge', '1 when the disk log cannot take writes (failing or detached): the relay forwards from memory only.', s.log.diskState === 'failing' || s.log.diskState === 'detached' ? 1 : 0);
  e.metric('log_disk_pending_bytes', 'gauge', 'Stream bytes held in memory that the disk log has not taken yet (log.disk-queue bounds it).', s.log.diskPendingBytes);
  e.metric('log_disk_write_errors_total', 'counter', 'Disk log writes that failed (each is retried).', s.log.diskWriteErrors);
  e.metric('log_disk_detaches_total', 'counter', 'Times the disk log history was given up because the disk fell past log.disk-queue.', s.log.diskDetaches);
  e.metric('snapshot_present', 'gauge', '1 when the relay holds a snapshot.', s.snapshot ? 1 : 0);
  e.metric('snapshot_usable', 'gauge', '1 when the snapshot can serve a full sync (its offset is still in the log).', s.snapshot?.usable ? 1 : 0);
  e.metric('snapshot_offset', 'gauge', 'Stream offset the snapshot was taken at (-1: none).', s.snapshot?.offset ?? -1);
  e.metric('snapshot_size_bytes', 'gauge', 'Snapshot RDB size.', s.snapshot?.size ?? 0);
  e.metric('snapshot_refresh_in_progress', 'gauge', '1 while a fresh snapshot is being fetched.', s.snapshotRefreshInProgress ? 1 : 0);
  e.metric('snapshot_refreshes_total', 'counter', 'Fresh snapshots fetched from upstream (each is a fork on the master), started.', s.snapshotRefreshes);
  // Stream content
  e.metric(
    'stream_commands_total',
    'counter',
    'Commands seen in the upstream replication stream, by lower-case name.',
    Object.entries(s.stats.streamCommands).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([cmd, n]) => [{ cmd }, n] as const),
  );
  // Downstream
  e.metric('connected_clients', 'gauge', 'Connected downstream clients (replicas included).', s.connectedClients);
  e.metric('connected_replicas', 'gauge', 'Connected downstream replicas.', s.replicas.length);
  e.metric('online_replicas', 'gauge', 'Downstream replicas streaming (state online).', s.replicas.filter((r) => r.state === 'online').length);
  const rl = (r: RelayStatus['replicas'][number]): Labels => ({ replica: `${r.ip}:${r.port}`, id: r.id });
  e.metric('replica_lag_bytes', 'gauge', 'Stream bytes a replica has not been sent yet.', s.replicas.map((r) => [rl(r), r.lagBytes] as const));
  e.metric('replica_lag_seconds', 'gauge', 'Seconds since a replica last acknowledged (REPLCONF ACK).', s.replicas.map((r) => [rl(r), r.lagSeconds] as const));
  e.metric('replica_offset', 'gauge', 'Last stream offset handed to a replica socket.', s.replicas.map((r) => [rl(r), r.offset] as const));
  e.metric('replica_ack_offset', 'gauge', 'Last offset a replica acknowledged.', s.replicas.map((r) => [rl(r), r.ackOffset] as const));
  const st = s.stats;
  e.metric('sync_full_total', 'counter', 'Full syncs served to downstream replicas (sync_full).', st.syncFull);
  e.metric('sync_partial_ok_total', 'counter', 'Partial resyncs accepted from downstream replicas (sync_partial_ok).', st.syncPartialOk);
  e.metric('sync_partial_err_total', 'counter', 'Partial resyncs refused to downstream replicas (sync_partial_err).', st.syncPartialErr);
  e.metric('net_input_bytes_total', 'counter', 'Bytes read from downstream clients.', st.netInputBytes);
  e.metric('net_output_bytes_total', 'counter', 'Bytes written to downstream clients (bytes out: replies, RDB, stream).', st.netOutputBytes);
  e.metric('repl_output_bytes_total', 'counter', 'Stream bytes written to downstream replicas.', st.replOutputBytes);
  e.metric('disk_read_bytes_total', 'counter', 'Stream bytes sent to replicas from the disk log (they were behind the memory tail).', st.diskReadBytes);
  e.metric('connections_received_total', 'counter', 'Downstream connections accepted.', st.totalConnectionsReceived);
  e.metric('rejected_connections_total', 'counter', 'Downstream connections refused (max-clients).', st.rejectedConnections);
  e.metric('commands_processed_total', 'counter', 'Commands processed from downstream clients.', st.totalCommandsProcessed);
  e.metric('protocol_errors_total', 'counter', 'Protocol errors from downstream clients.', st.protocolErrors);
  e.metric('replicas_dropped_total', 'counter', 'Downstream replicas disconnected, by reason (lag: replica-max-lag, timeout: replica-timeout).', [
    [{ reason: 'lag' }, st.replicasDroppedLag],
    [{ reason: 'timeout' }, st.replicasDroppedTimeout],
  ]);
  // Process
  e.metric('memory_rss_bytes', 'gauge', 'Resident set size of the relay process.', s.memory.rss);
  e.metric('memory_heap_used_bytes', 'gauge', 'V8 heap in use.', s.memory.heapUsed);
  // WebSocket /stream
  e.metric('web_subscribers', 'gauge', 'Connected /stream WebSocket subscribers, by format.', [
    [{ format: 'json' }, web.jsonSubscribers],
    [{ format: 'raw' }, web.rawSubscribers],
  ]);
  e.metric('web_subscribers_total', 'counter', '/stream subscriptions accepted.', web.subscribersTotal);
  e.metric('web_messages_sent_total', 'counter', 'WebSocket messages sent to /stream subscribers.', web.messagesSent);
  e.metric('web_bytes_sent_total', 'counter', 'Payload bytes sent to /stream subscribers (JSON characters or raw bytes).', web.bytesSent);
  e.metric('web_dropped_messages_total', 'counter', 'Messages dropped for slow /stream subscribers (web.slow-client: drop).', web.droppedMessages);
  e.metric('web_slow_disconnects_total', 'counter', 'Slow /stream subscribers disconnected (web.slow-client: disconnect).', web.slowDisconnects);
  e.metric('web_buffered_bytes', 'gauge', 'Bytes queued for /stream subscribers (socket buffers), bounded by web.max-buffered each.', web.bufferedBytes);
  e.metric('web_decoding', 'gauge', '1 while stream commands are decoded for JSON subscribers.', web.decoding ? 1 : 0);
  return e.toString();
}
