import { pipeline, type Readable } from 'node:stream';
import { createInflateRaw } from 'node:zlib';
import type { OpenedLink } from './connection.js';

/**
 * Where a replication connection's payload and stream are read from once the PSYNC reply is in: the socket itself,
 * or, when the upstream relay compresses (psync-relay-z1, src/compression.ts), an inflater fed by the socket, which
 * yields exactly the bytes the master sent. Backpressure carries through: a paused inflater stops reading the
 * socket. The socket stays the caller's for ACKs (never compressed) and teardown; destroying either ends both, and
 * a corrupt stream surfaces as an 'error' of the returned source.
 */
export function payloadSource(opened: Pick<OpenedLink, 'socket' | 'outcome' | 'rest'>): { source: Readable; rest: Buffer } {
  const o = opened.outcome;
  if ((o.kind !== 'full' && o.kind !== 'continue') || o.compressed !== true) return { source: opened.socket, rest: opened.rest };
  const inflate = createInflateRaw({ chunkSize: 64 * 1024 });
  if (opened.rest.length > 0) inflate.write(opened.rest);
  // Errors reach the caller as the inflater's 'error' and 'close'; the callback only keeps pipeline quiet.
  pipeline(opened.socket, inflate, () => undefined);
  return { source: inflate, rest: Buffer.alloc(0) };
}
