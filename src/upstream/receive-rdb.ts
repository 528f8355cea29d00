import type { Readable } from 'node:stream';
import type { Logger } from '../log.js';
import { LinkError, TimeoutError } from '../errors.js';
import { RdbReceiver } from './rdb-receiver.js';

const PROGRESS_INTERVAL_MS = 2000;

export interface ReceiveOptions {
  readonly timeoutMs: number;
  readonly log: Logger;
  readonly peer: string;
}

/**
 * Reads a full sync's payload from `socket` (the connection, or its inflater; after the PSYNC reply; `first` holds bytes already read) into
 * `receiver`'s file, honouring the file's backpressure, logging progress, failing after `timeoutMs` of silence.
 * Resolves with the bytes after the payload, the file flushed, and the socket paused. On failure the socket is left
 * paused for the caller to destroy.
 */
export function receiveRdb(socket: Readable, first: Buffer, receiver: RdbReceiver, opts: ReceiveOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const startedAt = Date.now();
    let lastIo = startedAt;
    let settled = false;
    const progress = setInterval(() => {
      const secs = (Date.now() - startedAt) / 1000;
      opts.log.info(
        {
          bytes: receiver.received,
          total: receiver.total,
          rateMBs: +(receiver.received / 1048576 / Math.max(secs, 0.001)).toFixed(1),
          peer: opts.peer,
        },
        'rdb transfer progress',
      );
    }, PROGRESS_INTERVAL_MS);
    const watchdog = setInterval(() => {
      if (Date.now() - lastIo > opts.timeoutMs) done(new TimeoutError('timeout receiving the RDB from upstream'));
    }, Math.min(1000, opts.timeoutMs));
    const done = (err: Error | null, rest?: Buffer) => {
      if (settled) return;
      settled = true;
      clearInterval(progress);
      clearInterval(watchdog);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
      if (err) {
        // Paused, not destroyed: the caller destroys it. Destroyed here, its 'close' reached the caller's own close
        // handler before this rejection (the abort waits for the file), which then reported "upstream closed the
        // connection" instead of `err` (a bad payload header, a timeout, a full disk).
        socket.pause();
        void receiver.abort().then(() => reject(err));
      } else {
        receiver.finish().then(() => {
          try {
            receiver.verify();
          } catch (verr) {
            reject(verr as Error);
            return;
          }
          resolve(rest!);
        }, reject);
      }
    };
    const onData = (chunk: Buffer) => {
      lastIo = Date.now();
      let r;
      try {
        r = receiver.push(chunk);
      } catch (err) {
        done(err as Error);
        return;
      }
      if (r.done) {
        socket.pause();
        done(null, r.rest ?? Buffer.alloc(0));
      } else if (r.backpressure) {
        socket.pause();
        void receiver.drained().then(() => {
          if (!settled) socket.resume();
        });
      }
    };
    const onClose = () => done(new LinkError('upstream closed the connection during the RDB transfer'));
    const onError = (err: Error) => done(err);
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('error', onError);
    if (first.length > 0) onData(first);
    if (!settled) socket.resume();
  });
}
