/** Counters read by INFO stats, /status and /metrics. Plain fields: incremented on the hot path. */
export class RelayStats {
  totalConnectionsReceived = 0;
  totalCommandsProcessed = 0;
  rejectedConnections = 0;
  syncFull = 0;
  syncPartialOk = 0;
  syncPartialErr = 0;
  /** Bytes read from downstream clients. */
  netInputBytes = 0;
  /** Bytes written to downstream clients (replies, RDB payloads, stream). */
  netOutputBytes = 0;
  /** Stream bytes written to downstream replicas. */
  replOutputBytes = 0;
  /** Replicas dropped for lagging past replication.replica-max-lag. */
  replicasDroppedLag = 0;
  /** Replicas dropped for not acknowledging within replication.replica-timeout. */
  replicasDroppedTimeout = 0;
  protocolErrors = 0;
  /** Bytes handed to compressing replicas' compressors (psync-relay-z1), and what they sent on the wire. */
  compressedRawBytes = 0;
  compressedWireBytes = 0;
  /** Stream bytes sent to replicas from the disk log (they were behind the memory tail). */
  diskReadBytes = 0;
  /** Commands seen in the upstream stream, by lower-case name. */
  readonly streamCommands = new Map<string, number>();
}
