import type { Readable } from 'node:stream';
import { createInflateRaw } from 'node:zlib';
import type { OpenedLink } from './connection.js';
import { ProtocolError } from '../errors.js';

/**
 * Where a replication connection's payload and stream are read from once the PSYNC reply is in: the socket itself,
 * or, when the upstream relay compresses (psync-relay-z1, src/compression.ts), an inflater fed by the socket, which
 * yields exactly the bytes the master sent. Backpressure carries through: a paused inflater stops reading the
 * socket. The socket stays the caller's for ACKs (never compressed) and teardown; destroying either ends both, a
 * corrupt stream surfaces as an 'error' of the returned source, and the upstream's close as its 'close'.
 */
export function payloadSource(opened: Pick<OpenedLink, 'socket' | 'outcome' | 'rest'>): { source: Readable; rest: Buffer } {
  const o = opened.outcome;
  if ((o.kind !== 'full' && o.kind !== 'continue') || o.compressed !== true) return { source: opened.socket, rest: opened.rest };
  const inflate = createInflateRaw({ chunkSize: 64 * 1024 });
  if (opened.rest.length > 0) inflate.write(opened.rest);
  const socket = opened.socket;
  // Not pipeline(): it ends the inflater when the socket ends, and a stream flushed per batch and never finished then
  // fails with Z_BUF_ERROR "unexpected end of file": an upstream relay that closed its connection was logged as a
  // corrupt stream. At the socket's end what arrived is inflated, then the source closes without an error, as a plain
  // socket does; the bytes of a block cut in the middle never come out (the link resumes after the last it appended).
  // Its output is ended, not the inflater destroyed: bytes not read yet (the reader paused, writing the RDB's bytes
  // before them) are still read, then 'end', then 'close'.
  socket.pipe(inflate, { end: false });
  socket.once('end', () => inflate.flush(() => inflate.push(null)));
  socket.on('error', (err: Error) => inflate.destroy(err));
  socket.once('close', () => socket.readableEnded || inflate.destroy());
  inflate.once('close', () => socket.destroy());
  // The stream only ends with the connection. Finished (a final block) while the socket is open, the inflater ends
  // its output and drops every later byte without an error: the link would sit up, silent, until its timeout.
  inflate.once('end', () => {
    if (!socket.readableEnded && !socket.destroyed) inflate.destroy(new ProtocolError('the upstream relay ended its compressed stream while the connection stays open'));
    else inflate.destroy();
  });
  return { source: inflate, rest: Buffer.alloc(0) };
}
