import os from 'node:os';
import type { RelayStatus } from './status.js';
import { byName } from '../util/by-name.js';

const DEFAULT_SECTIONS = ['server', 'clients', 'memory', 'persistence', 'stats', 'replication', 'cpu', 'keyspace'];

/** INFO in Redis's format, so Sentinel, redis-cli and monitoring scripts read the relay like a replica. */
export function formatInfo(s: RelayStatus, requested: string[], redisVersion: string): string {
  let sections = requested.length === 0 || requested.includes('default') ? DEFAULT_SECTIONS : requested;
  if (requested.includes('all') || requested.includes('everything')) sections = DEFAULT_SECTIONS;
  const out: string[] = [];
  for (const name of sections) {
    const lines = SECTIONS[name]?.(s, redisVersion);
    if (!lines) continue;
    if (out.length) out.push('');
    out.push(`# ${name[0]!.toUpperCase()}${name.slice(1)}`, ...lines);
  }
  // No section asked for exists: Redis answers an empty string.
  return out.length === 0 ? '' : out.join('\r\n') + '\r\n';
}

/** The counters CONFIG RESETSTAT starts INFO's stats section from. */
export interface InfoStatsBase {
  readonly stats: RelayStatus['stats'];
  readonly upstream: Pick<RelayStatus['upstream'], 'fullSyncs' | 'partialSyncs' | 'bytesIn'>;
}

export function infoStatsBase(s: RelayStatus): InfoStatsBase {
  const { fullSyncs, partialSyncs, bytesIn } = s.upstream;
  return { stats: s.stats, upstream: { fullSyncs, partialSyncs, bytesIn } };
}

/**
 * CONFIG RESETSTAT: INFO's stats section counts from `base`, as Redis's counters do from a reset (harnesses reset,
 * then read `sync_full`). /metrics and /status keep counting from the start: a Prometheus counter never goes back.
 */
export function statsSince(s: RelayStatus, base: InfoStatsBase | null): RelayStatus {
  if (base === null) return s;
  const stats: Record<string, unknown> = { ...s.stats };
  for (const [k, v] of Object.entries(s.stats)) {
    const b = (base.stats as unknown as Record<string, unknown>)[k];
    if (typeof v === 'number' && typeof b === 'number') stats[k] = v - b;
  }
  const denied = s.stats.accessDenied;
  const bd = base.stats.accessDenied;
  stats['accessDenied'] = { auth: denied.auth - bd.auth, cmd: denied.cmd - bd.cmd, channel: denied.channel - bd.channel };
  const u = s.upstream;
  const bu = base.upstream;
  return {
    ...s,
    stats: stats as unknown as RelayStatus['stats'],
    upstream: { ...u, fullSyncs: u.fullSyncs - bu.fullSyncs, partialSyncs: u.partialSyncs - bu.partialSyncs, bytesIn: u.bytesIn - bu.bytesIn },
  };
}

const SECTIONS = byName<(s: RelayStatus, v: string) => string[]>({
  server: (s, v) => [
    `redis_version:${v}`,
    `psync_relay_version:${s.version}`,
    'redis_mode:standalone',
    `os:${os.type()} ${os.release()} ${os.arch()}`,
    'arch_bits:64',
    `process_id:${s.pid}`,
    `run_id:${s.runId}`,
    `tcp_port:${s.tcpPort}`,
    `uptime_in_seconds:${s.uptimeSeconds}`,
    `uptime_in_days:${Math.floor(s.uptimeSeconds / 86400)}`,
    `executable:${process.argv[1] ?? ''}`,
    `config_file:${s.configFile}`,
  ],
  clients: (s) => [`connected_clients:${s.connectedClients}`, `maxclients:${s.maxClients}`, 'blocked_clients:0'],
  memory: (s) => [
    `used_memory:${s.memory.heapUsed + s.memory.external}`,
    `used_memory_rss:${s.memory.rss}`,
    `mem_replication_log:${s.log.size}`,
  ],
  persistence: () => ['loading:0', 'async_loading:0', 'rdb_bgsave_in_progress:0', 'aof_enabled:0'],
  stats: (s) => [
    `total_connections_received:${s.stats.totalConnectionsReceived}`,
    `total_commands_processed:${s.stats.totalCommandsProcessed}`,
    `total_net_input_bytes:${s.stats.netInputBytes}`,
    `total_net_output_bytes:${s.stats.netOutputBytes}`,
    `total_net_repl_input_bytes:${s.upstream.bytesIn}`,
    `total_net_repl_output_bytes:${s.stats.replOutputBytes}`,
    `rejected_connections:${s.stats.rejectedConnections}`,
    `sync_full:${s.stats.syncFull}`,
    `sync_partial_ok:${s.stats.syncPartialOk}`,
    `sync_partial_err:${s.stats.syncPartialErr}`,
    'total_forks:0',
    // Redis 7.2's names; a relay has no keys, so no key is ever denied.
    `acl_access_denied_auth:${s.stats.accessDenied.auth}`,
    `acl_access_denied_cmd:${s.stats.accessDenied.cmd}`,
    'acl_access_denied_key:0',
    `acl_access_denied_channel:${s.stats.accessDenied.channel}`,
    `relay_upstream_full_syncs:${s.upstream.fullSyncs}`,
    `relay_upstream_partial_syncs:${s.upstream.partialSyncs}`,
    `relay_replicas_dropped_lag:${s.stats.replicasDroppedLag}`,
    `relay_replicas_dropped_timeout:${s.stats.replicasDroppedTimeout}`,
    `relay_protocol_errors:${s.stats.protocolErrors}`,
    `relay_disk_read_bytes:${s.stats.diskReadBytes}`,
    `relay_compressed_raw_bytes:${s.stats.compressedRawBytes}`,
    `relay_compressed_wire_bytes:${s.stats.compressedWireBytes}`,
  ],
  replication: (s) => {
    const u = s.upstream;
    const lines = ['role:slave'];
    if (u.host !== null) {
      lines.push(
        `master_host:${u.host}`,
        `master_port:${u.port}`,
        `master_link_status:${u.linkUp ? 'up' : 'down'}`,
        `master_last_io_seconds_ago:${u.lastIoSecondsAgo}`,
        `master_sync_in_progress:${u.syncInProgress ? 1 : 0}`,
        `slave_read_repl_offset:${s.masterReplOffset}`,
        `slave_repl_offset:${s.masterReplOffset}`,
      );
      if (u.syncInProgress) {
        const total = u.syncTotalBytes ?? -1;
        lines.push(
          `master_sync_total_bytes:${total}`,
          `master_sync_read_bytes:${u.syncReceivedBytes}`,
          `master_sync_left_bytes:${total < 0 ? -1 : total - u.syncReceivedBytes}`,
          `master_sync_perc:${total > 0 ? ((u.syncReceivedBytes / total) * 100).toFixed(2) : '0.00'}`,
          `master_sync_last_io_seconds_ago:${u.syncLastIoSecondsAgo}`,
        );
      }
      if (!u.linkUp) lines.push(`master_link_down_since_seconds:${u.linkDownSinceSeconds}`);
    }
    lines.push(
      // 0: Sentinel never promotes the relay, which holds no dataset.
      'slave_priority:0',
      'replica_priority:0',
      'slave_read_only:1',
      'replica_announced:1',
      `connected_slaves:${s.replicas.length}`,
    );
    s.replicas.forEach((r, i) => {
      lines.push(`slave${i}:ip=${r.ip},port=${r.port},state=${r.state},offset=${r.ackOffset},lag=${r.lagSeconds}`);
    });
    lines.push(
      'master_failover_state:no-failover',
      `master_replid:${s.replid}`,
      `master_replid2:${s.replid2}`,
      `master_repl_offset:${s.masterReplOffset}`,
      `second_repl_offset:${s.secondReplOffset}`,
      'repl_backlog_active:1',
      `repl_backlog_size:${s.log.limit}`,
      `repl_backlog_first_byte_offset:${s.log.firstOffset}`,
      `repl_backlog_histlen:${s.log.endOffset - s.log.firstOffset + 1}`,
      // Read by a relay below before its PSYNC: one named here, or this relay itself, would close a loop (handshake.ts).
      `relay_id:${s.runId}`,
      `relay_chain:${s.upstream.relayChain.join(',')}`,
      `relay_log_memory_bytes:${s.log.size}`,
      `relay_log_memory_first_byte_offset:${s.log.memFirstOffset}`,
      `relay_log_disk_bytes:${s.log.diskBytes}`,
      `relay_log_disk_limit:${s.log.diskLimit}`,
      `relay_log_disk_segments:${s.log.diskSegments}`,
      `relay_snapshot_offset:${s.snapshot ? s.snapshot.offset : -1}`,
      `relay_snapshot_size:${s.snapshot ? s.snapshot.size : 0}`,
      `relay_snapshot_usable:${s.snapshot?.usable ? 1 : 0}`,
      `relay_snapshot_refreshes:${s.snapshotRefreshes}`,
      `relay_snapshots_given_up:${s.snapshotsGivenUp}`,
      `relay_full_syncs_waiting:${s.fullSyncsWaiting}`,
      `relay_full_syncs_active:${s.fullSyncsActive}`,
      `relay_snapshot_refresh_in_progress:${s.snapshotRefreshInProgress ? 1 : 0}`,
      `relay_snapshot_waiting_for_room:${s.snapshotWaitingForRoom}`,
      `relay_snapshot_disk_refused:${s.snapshotDiskRefused ?? ''}`,
      `relay_log_disk_state:${s.log.diskState}`,
      `relay_log_disk_direct:${s.log.diskDirect ? 1 : 0}`,
      `relay_log_disk_pending_bytes:${s.log.diskPendingBytes}`,
      `relay_log_disk_write_errors:${s.log.diskWriteErrors}`,
      `relay_log_disk_detaches:${s.log.diskDetaches}`,
      `relay_log_disk_read_errors:${s.log.diskReadErrors}`,
      `relay_log_disk_read_waits:${s.log.diskReadWaits}`,
      `relay_log_disk_read_wait_ms:${Math.round(s.log.diskReadWaitSeconds * 1000)}`,
    );
    // The cause is free text from the OS: keep it on one line with no separators INFO parsers split on.
    if (s.log.diskProblem !== null) lines.push(`relay_log_disk_problem:${s.log.diskProblem.replace(/[\r\n:,]+/g, ' ').slice(0, 200)}`);
    return lines;
  },
  cpu: () => {
    const u = process.cpuUsage();
    return [`used_cpu_sys:${(u.system / 1e6).toFixed(6)}`, `used_cpu_user:${(u.user / 1e6).toFixed(6)}`];
  },
  keyspace: () => [],
});
