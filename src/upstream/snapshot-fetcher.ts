import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import type { Logger } from '../log.js';
import type { ClientTlsConfig } from '../config/types.js';
import { HandshakeError } from '../errors.js';
import { openReplicationConnection } from './connection.js';
import { RdbReceiver } from './rdb-receiver.js';
import { receiveRdb } from './receive-rdb.js';
import { payloadSource } from './decompress-stream.js';

export interface FetchOptions {
  readonly host: string;
  readonly port: number;
  readonly user: string | null;
  readonly password: string | null;
  /** upstream.tls; null/absent = plain TCP. */
  readonly tls?: ClientTlsConfig | null;
  readonly listeningPort: number;
  readonly connectTimeoutMs: number;
  readonly timeoutMs: number;
  /** Ask an upstream relay to compress the RDB (upstream.compression); null/absent = plain. */
  readonly compression?: number | null;
  /** The offset the snapshot must reach, asked of an upstream relay (src/rdb-from.ts); null/absent = any. */
  readonly rdbFrom?: number | null;
  readonly log: Logger;
}

export interface FetchedSnapshot {
  readonly replid: string;
  readonly offset: number;
}

/**
 * Fetches a fresh RDB on a second connection (`REPLCONF rdb-only 1`, `PSYNC ? -1`) without touching the
 * streaming link: used when the log no longer holds the byte after the current snapshot. Upstream closes
 * an rdb-only connection after the payload. `onStart` learns the snapshot's offset as soon as upstream names it,
 * so the caller can keep the log from that offset while the RDB arrives. `sink`: where the RDB goes instead of
 * `tempPath` (memory, when the disk has no room).
 */
export async function fetchSnapshot(
  opts: FetchOptions,
  tempPath: string,
  onStart: (snap: FetchedSnapshot) => void,
  signal: { socket: Socket | null },
  sink?: Writable,
): Promise<FetchedSnapshot> {
  const opened = await openReplicationConnection({
    ...opts,
    announceIp: null,
    rdbOnly: true,
    psyncReplid: '?',
    psyncOffset: -1,
    replyTimeoutMs: opts.timeoutMs,
    onSocket: (s) => {
      signal.socket = s;
    },
  });
  const { socket, outcome } = opened;
  try {
    if (outcome.kind !== 'full') {
      // The upstream's own words when it refused (an upstream relay's reason: passed down to an RDB-only client).
      if (outcome.kind === 'continue') throw new HandshakeError('receive-psync', outcome.kind, 'snapshot fetch expected +FULLRESYNC, got +CONTINUE');
      throw new HandshakeError('receive-psync', outcome.kind, `snapshot fetch refused: ${outcome.kind === 'sync' ? outcome.refusal : outcome.reply}`);
    }
    const snap = { replid: outcome.replid, offset: outcome.offset };
    onStart(snap);
    const receiver = new RdbReceiver(tempPath, sink ? { sink } : {});
    const { source, rest } = payloadSource(opened);
    await receiveRdb(source, rest, receiver, { timeoutMs: opts.timeoutMs, log: opts.log, peer: `${opts.host}:${opts.port}` });
    return snap;
  } finally {
    socket.destroy();
  }
}
