import type { OnReadOpts, Socket } from 'node:net';
import type { Logger } from '../log.js';
import type { ClientTlsConfig } from '../config/types.js';
import { dial } from '../tls.js';
import { encodeCommand } from '../resp/writer.js';
import { HandshakeError, ProtocolError, TimeoutError } from '../errors.js';
import { HandshakeState, step, type HandshakeContext, type MasterLink, type PsyncOutcome, type UpstreamReplInfo } from './handshake.js';

export interface OpenOptions extends HandshakeContext {
  readonly host: string;
  readonly port: number;
  /** Talk TLS to upstream (upstream.tls); null/absent = plain TCP. */
  readonly tls?: ClientTlsConfig | null;
  readonly connectTimeoutMs: number;
  /** How long to wait for the PSYNC reply (upstream may be busy forking): repl-timeout. */
  readonly replyTimeoutMs: number;
  readonly log: Logger;
  /** Called with the socket as soon as it exists, so a caller can abort by destroying it. */
  readonly onSocket?: (socket: Socket) => void;
  /** net's `onread` for a plain TCP socket (a ReadTap; it keeps emitting 'data' until streaming). */
  readonly onread?: OnReadOpts;
  /** Asked once the upstream first answers (it has accepted us): whether this socket is the relay's own, looped back. */
  readonly isSelf?: (socket: Socket) => boolean;
  /** Whether our listener holds one of these connections, which the upstream lists as its master links (handshake.ts). */
  readonly isOwnConnection?: (link: MasterLink) => boolean;
}

export interface OpenedLink {
  readonly socket: Socket;
  readonly outcome: PsyncOutcome;
  /** Bytes received after the PSYNC reply line (RDB payload header or stream). */
  readonly rest: Buffer;
  /** Upstream's ids, read from `INFO replication` before PSYNC; null when not asked or not answered. */
  readonly upstreamInfo: UpstreamReplInfo | null;
}

const MAX_LINE = 64 * 1024;
/**
 * A longer `INFO replication` reply (over ~700 replicas listed) is skipped, not read: no upstream ids then. As for a
 * line, what is kept while it arrives stays small: a peer dribbling it byte by byte costs one copy of it per byte.
 */
const MAX_INFO = MAX_LINE;

/**
 * Connects to upstream and runs the handshake (handshake.ts) up to the PSYNC reply. Resolves with the socket
 * paused, so the caller attaches its own reader without losing a byte.
 */
export function openReplicationConnection(opts: OpenOptions): Promise<OpenedLink> {
  return new Promise((resolve, reject) => {
    const { socket, ready } = dial(opts.host, opts.port, opts.tls, opts.onread);
    opts.onSocket?.(socket);
    let state: HandshakeState = HandshakeState.Connecting;
    let pending: Buffer = Buffer.alloc(0);
    let settled = false;
    let upstreamInfo: UpstreamReplInfo | null = null;
    /** Bytes of a skipped INFO or CLIENT LIST reply still to come. */
    let skip = 0;
    let timer: NodeJS.Timeout | undefined;

    const armTimer = (ms: number, what: string) => {
      clearTimeout(timer);
      timer = setTimeout(() => finish(new TimeoutError(`upstream ${opts.host}:${opts.port}: timeout ${what}`)), ms);
    };
    const finish = (err: Error | null, result?: OpenedLink) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      if (err) {
        socket.destroy();
        reject(err);
      } else {
        resolve(result!);
      }
    };
    const send = (cmds: ReadonlyArray<ReadonlyArray<string>> | undefined) => {
      if (!cmds || cmds.length === 0) return;
      socket.write(cmds.length === 1 ? encodeCommand(cmds[0]!) : Buffer.concat(cmds.map((c) => encodeCommand(c))));
    };
    const advance = (input: Parameters<typeof step>[1]): boolean => {
      const r = step(state, input, opts);
      if (r.warning) opts.log.warn({ state, peer: `${opts.host}:${opts.port}` }, r.warning);
      if (r.error) {
        finish(r.error);
        return false;
      }
      const own = r.masterLinks?.find((l) => opts.isOwnConnection?.(l));
      if (own) {
        const ours = `${own.remote.address}:${own.remote.port}`;
        finish(new HandshakeError(state, '', `upstream ${opts.host}:${opts.port} replicates from this relay (its master link is our connection on ${ours}): following it would be a replication loop`));
        return false;
      }
      opts.log.debug({ from: state, to: r.next }, 'handshake step');
      state = r.next;
      if (r.info) upstreamInfo = r.info;
      send(r.send);
      if (r.outcome) {
        socket.pause();
        finish(null, { socket, outcome: r.outcome, rest: pending, upstreamInfo });
        return false;
      }
      armTimer(state === HandshakeState.ReceivePsync ? opts.replyTimeoutMs : opts.connectTimeoutMs, `in ${state}`);
      return true;
    };
    let answered = false;
    const onData = (chunk: Buffer) => {
      if (!answered) {
        answered = true;
        // Our own listener answered: by now it has accepted this connection, so it can recognise it.
        if (opts.isSelf?.(socket)) {
          finish(new HandshakeError(state, '', `upstream ${opts.host}:${opts.port} is this relay itself: following it would be a replication loop`));
          return;
        }
      }
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      for (;;) {
        if (skip > 0) {
          const n = Math.min(skip, pending.length);
          skip -= n;
          pending = pending.subarray(n);
          if (skip > 0) return;
        }
        // A run of empty lines is skipped at once: per line, the work below (a string, a regex, a timer) let an
        // upstream sending nothing else hold the event loop for ~1 s per turn.
        let blank = 0;
        for (;;) {
          if (pending[blank] === 0x0a) blank++;
          else if (pending[blank] === 0x0d && pending[blank + 1] === 0x0a) blank += 2;
          else break;
        }
        if (blank > 0) {
          pending = pending.subarray(blank);
          // A master sends them after PSYNC while it prepares the payload: it is alive. Before PSYNC they are no
          // reply, and prove nothing: the step's own timeout stands.
          if (state === HandshakeState.ReceivePsync) armTimer(opts.replyTimeoutMs, `in ${state}`);
          continue;
        }
        const nl = pending.indexOf(0x0a);
        if (nl < 0) {
          if (pending.length > MAX_LINE) finish(new ProtocolError('upstream handshake reply too long'));
          return;
        }
        const line = pending.toString('latin1', 0, nl).replace(/\r$/, '');
        const bulkLen = (state === HandshakeState.ReceiveInfo || state === HandshakeState.ReceiveMasterLinks) && /^\$\d+$/.test(line) ? Number(line.slice(1)) : -1;
        if (bulkLen >= 0) {
          // The INFO or CLIENT LIST reply's payload and its CRLF; the step sees it whole (or null when skipped).
          if (bulkLen > MAX_INFO) {
            skip = bulkLen + 2;
            pending = pending.subarray(nl + 1);
            if (!advance({ type: 'reply', line, bulk: null })) return;
            continue;
          }
          if (pending.length < nl + 1 + bulkLen + 2) return;
          const bulk = pending.toString('latin1', nl + 1, nl + 1 + bulkLen);
          pending = pending.subarray(nl + 1 + bulkLen + 2);
          if (!advance({ type: 'reply', line, bulk })) return;
          continue;
        }
        pending = pending.subarray(nl + 1);
        if (!advance({ type: 'reply', line })) return;
      }
    };
    const onError = (err: Error) => finish(err);
    const onClose = () => finish(new HandshakeError(state, '', `upstream closed the connection in ${state}`));

    armTimer(opts.connectTimeoutMs, 'connecting');
    socket.once(ready, () => {
      socket.setKeepAlive(true, 10_000);
      advance({ type: 'connected' });
    });
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
  });
}
