import { HandshakeError } from '../errors.js';
import { redact } from '../util/text.js';
import { Z1, compressionCapa } from '../compression.js';
import { rdbFromCapa } from '../rdb-from.js';

/**
 * The replica side of the replication handshake as a pure state machine: no sockets, no timers.
 * States are ordered like Redis's REPL_STATE_*; like Redis 7.0, AUTH and the REPLCONFs are pipelined
 * after PONG and their replies read in order; only PSYNC waits for all of them. Before PSYNC the relay also asks
 * `INFO replication`, pipelined last: upstream's own replid, replid2 and second_repl_offset, which can tell how far our
 * old history and its new one agree if it answers `+CONTINUE <new id>` (see ReplIds.shift), and, from an upstream
 * psync-relay, its `relay_id` and `relay_chain` (the relays above it): a chain naming us is a replication loop,
 * refused. Then `CLIENT LIST TYPE master`: the upstream's own master link, as its two ends; when our listener holds
 * that very connection, the upstream replicates from us (a Redis replica of this relay named as its upstream), also a
 * loop. Any answer to either but a bulk string (an ACL user without INFO: -NOPERM) only means no information.
 */
export const HandshakeState = {
  Connecting: 'connecting',
  ReceivePong: 'receive-pong',
  ReceiveAuth: 'receive-auth',
  ReceivePort: 'receive-port',
  ReceiveIp: 'receive-ip',
  ReceiveRdbOnly: 'receive-rdb-only',
  ReceiveCapa: 'receive-capa',
  ReceiveInfo: 'receive-info',
  ReceiveMasterLinks: 'receive-master-links',
  ReceivePsync: 'receive-psync',
  Done: 'done',
} as const;
export type HandshakeState = (typeof HandshakeState)[keyof typeof HandshakeState];

export interface HandshakeContext {
  readonly user: string | null;
  readonly password: string | null;
  /** Our downstream port, announced so the master's INFO lists us (and Sentinel finds us). */
  readonly listeningPort: number;
  /** Sent as its own `REPLCONF ip-address <ip>` after listening-port (Redis replica-announce-ip); null = not sent. */
  readonly announceIp: string | null;
  /** Ask only for the RDB (a snapshot refresh connection), Redis 7's `REPLCONF rdb-only 1`. */
  readonly rdbOnly: boolean;
  /** `?` on first contact. */
  readonly psyncReplid: string;
  /** Our offset + 1, or -1 on first contact. */
  readonly psyncOffset: number;
  /** Announce `capa psync-relay-z1:<level>` (upstream.compression); null/absent = not announced. */
  readonly compression?: number | null;
  /** With rdbOnly: announce `capa psync-relay-rdb-from:<offset>` (src/rdb-from.ts); null/absent = not announced. */
  readonly rdbFrom?: number | null;
  /** This relay's id (INFO `relay_id`): an upstream whose relay chain names it follows us. Null/absent = not checked. */
  readonly relayId?: string | null;
}

export type PsyncOutcome =
  | { readonly kind: 'full'; readonly replid: string; readonly offset: number; readonly compressed?: true }
  | { readonly kind: 'continue'; readonly replid: string | null; readonly compressed?: true }
  /** Upstream does not know PSYNC: we sent SYNC and the payload follows without a +FULLRESYNC line. */
  | { readonly kind: 'sync'; readonly refusal: string }
  /** -NOMASTERLINK / -LOADING: upstream cannot serve us now. */
  | { readonly kind: 'try-later'; readonly reply: string };

/**
 * What upstream's `INFO replication` says of its ids (Redis master_replid, master_replid2, second_repl_offset) and, for
 * an upstream psync-relay, of the relays it follows.
 */
export interface UpstreamReplInfo {
  readonly replid: string;
  readonly replid2: string;
  readonly secondReplOffset: number;
  /** An upstream relay's `relay_id` then its `relay_chain`, nearest first (at most RELAY_CHAIN_MAX); empty for Redis. */
  readonly relayChain: readonly string[];
}

/** `REPLCONF capa psync-relay`: the replica is a psync-relay, which learns the relays above it at each handshake. */
export const RELAY_CAPA = 'psync-relay';

/** Relays named in `relay_chain`: deeper chains are cut, so a loop through more relays than this goes unseen. */
export const RELAY_CHAIN_MAX = 32;

/**
 * A reply line; for a bulk string reply (`$<len>`, only read in receive-info), `bulk` is its payload (latin1), read
 * by the caller, or null when the caller skipped it (too long).
 */
export type HandshakeInput = { readonly type: 'connected' } | { readonly type: 'reply'; readonly line: string; readonly bulk?: string | null };

export interface StepResult {
  readonly next: HandshakeState;
  /** Commands to send, in order. */
  readonly send?: ReadonlyArray<ReadonlyArray<string>>;
  readonly outcome?: PsyncOutcome;
  /** Upstream's ids from its INFO reply (receive-info), when it gave them. */
  readonly info?: UpstreamReplInfo;
  /** Upstream's own master links (receive-master-links), empty when it has none or did not say. */
  readonly masterLinks?: readonly MasterLink[];
  /** A reply worth a log line that does not stop the handshake (e.g. an old master refusing REPLCONF). */
  readonly warning?: string;
  readonly error?: HandshakeError;
}

/** How much of a reply errors and warnings quote: a line from upstream may be 64 KiB of anything, logged per retry. */
const QUOTED = 128;

function quote(line: string): string {
  return line.length <= QUOTED ? line : `${line.slice(0, QUOTED)}... (${line.length} bytes)`;
}

function fail(state: HandshakeState, line: string, message?: string): StepResult {
  return { next: state, error: new HandshakeError(state, quote(line), message) };
}

function afterCapa(ctx: HandshakeContext): StepResult {
  return {
    next: HandshakeState.ReceivePsync,
    send: [['PSYNC', ctx.psyncReplid, String(ctx.psyncOffset)]],
  };
}

/** INFO replication and the master links are asked before the streaming link's PSYNC, not by a snapshot fetch. */
function asksInfo(ctx: HandshakeContext): boolean {
  return !ctx.rdbOnly;
}

/** The reply a handshake step waits for after `state`, skipping the optional steps. */
function nextAfter(state: HandshakeState, ctx: HandshakeContext): HandshakeState {
  const order: HandshakeState[] = [
    HandshakeState.ReceiveAuth,
    HandshakeState.ReceivePort,
    HandshakeState.ReceiveIp,
    HandshakeState.ReceiveRdbOnly,
    HandshakeState.ReceiveCapa,
    HandshakeState.ReceiveInfo,
    HandshakeState.ReceiveMasterLinks,
  ];
  const present = order.filter(
    (s) =>
      (s !== HandshakeState.ReceiveAuth || ctx.password !== null) &&
      (s !== HandshakeState.ReceiveIp || ctx.announceIp !== null) &&
      (s !== HandshakeState.ReceiveRdbOnly || ctx.rdbOnly) &&
      ((s !== HandshakeState.ReceiveInfo && s !== HandshakeState.ReceiveMasterLinks) || asksInfo(ctx)),
  );
  const i = state === HandshakeState.ReceivePong ? 0 : present.indexOf(state) + 1;
  return present[i] ?? HandshakeState.ReceivePsync;
}

export function step(state: HandshakeState, input: HandshakeInput, ctx: HandshakeContext): StepResult {
  const r = stepReplies(state, input, ctx);
  if (ctx.password === null || (!r.error && !r.warning && r.outcome?.kind !== 'try-later')) return r;
  // Replies are parsed as they came; only the text that goes into logs, errors and /status loses the password.
  const pw = ctx.password;
  return {
    ...r,
    ...(r.warning !== undefined && { warning: redact(r.warning, pw) }),
    ...(r.error && { error: new HandshakeError(r.error.state, redact(r.error.reply, pw), redact(r.error.message, pw)) }),
    ...(r.outcome?.kind === 'try-later' && { outcome: { kind: 'try-later', reply: redact(r.outcome.reply, pw) } }),
  };
}

function stepReplies(state: HandshakeState, input: HandshakeInput, ctx: HandshakeContext): StepResult {
  if (state === HandshakeState.Connecting) {
    if (input.type !== 'connected') return fail(state, input.line, 'reply before connect');
    return { next: HandshakeState.ReceivePong, send: [['PING']] };
  }
  if (input.type !== 'reply') return fail(state, '', 'unexpected connect event');
  const line = input.line;
  const isError = line.startsWith('-');

  switch (state) {
    case HandshakeState.ReceivePong: {
      // Like Redis: an auth error to PING is fine, AUTH comes next.
      if (isError && !/^-(NOAUTH|NOPERM|ERR operation not permitted)/.test(line)) return fail(state, line, `error reply to PING: ${quote(line)}`);
      const send: string[][] = [];
      if (ctx.password !== null) send.push(ctx.user !== null ? ['AUTH', ctx.user, ctx.password] : ['AUTH', ctx.password]);
      send.push(['REPLCONF', 'listening-port', String(ctx.listeningPort)]);
      // Redis 7.0 syncWithMaster: a command of its own, only when replica-announce-ip is set.
      if (ctx.announceIp !== null) send.push(['REPLCONF', 'ip-address', ctx.announceIp]);
      if (ctx.rdbOnly) send.push(['REPLCONF', 'rdb-only', '1']);
      send.push([
        'REPLCONF', 'capa', 'eof', 'capa', 'psync2',
        ...(ctx.compression ? ['capa', compressionCapa(ctx.compression)] : []),
        // Marks a relay below (Redis ignores it): it is reconnected when the relays above it change (INFO relay_chain).
        ...(ctx.relayId ? ['capa', RELAY_CAPA] : []),
        ...(ctx.rdbOnly && ctx.rdbFrom != null ? ['capa', rdbFromCapa(ctx.rdbFrom)] : []),
      ]);
      if (asksInfo(ctx)) send.push(['INFO', 'replication'], ['CLIENT', 'LIST', 'TYPE', 'master']);
      return { next: nextAfter(state, ctx), send };
    }
    case HandshakeState.ReceiveAuth:
      if (isError) return fail(state, line, `upstream refused AUTH: ${quote(line)}`);
      return { next: nextAfter(state, ctx) };
    case HandshakeState.ReceivePort:
      if (isError) return { next: nextAfter(state, ctx), warning: `upstream refused REPLCONF listening-port: ${quote(line)}` };
      return { next: nextAfter(state, ctx) };
    case HandshakeState.ReceiveIp:
      // Like Redis: non critical, the master lists us under the connection's address instead.
      if (isError) return { next: nextAfter(state, ctx), warning: `upstream refused REPLCONF ip-address: ${quote(line)}` };
      return { next: nextAfter(state, ctx) };
    case HandshakeState.ReceiveRdbOnly:
      // An upstream older than 7.0 refuses rdb-only: it will keep streaming after the RDB, which we ignore.
      if (isError) return { next: nextAfter(state, ctx), warning: `upstream refused REPLCONF rdb-only: ${quote(line)}` };
      return { next: nextAfter(state, ctx) };
    case HandshakeState.ReceiveCapa: {
      const r = asksInfo(ctx) ? { next: HandshakeState.ReceiveInfo } : afterCapa(ctx);
      return isError ? { ...r, warning: `upstream refused REPLCONF capa: ${quote(line)}` } : r;
    }
    case HandshakeState.ReceiveInfo: {
      // Never fatal: without the ids, a failover shift keeps Redis's conservative second_repl_offset.
      const r = { next: HandshakeState.ReceiveMasterLinks };
      if (isError) return { ...r, warning: `upstream refused INFO replication (no upstream ids): ${quote(line)}` };
      const info = input.bulk ? parseReplInfo(input.bulk) : null;
      if (!info) return { ...r, warning: `no upstream ids in the reply to INFO replication: ${quote(line)}` };
      const id = ctx.relayId;
      if (id && info.relayChain.includes(id)) {
        const chain = info.relayChain.map((r) => (r === id ? `${r} (this relay)` : r)).join(' -> ');
        return fail(state, '', `upstream follows this relay (relays above it: ${chain}): following it would be a replication loop`);
      }
      return { ...r, info };
    }
    case HandshakeState.ReceiveMasterLinks:
      // No warning when refused: a replication user's ACL rarely allows CLIENT, and Redis before 5.0 knows no TYPE.
      return { ...afterCapa(ctx), masterLinks: !isError && input.bulk ? parseMasterLinks(input.bulk) : [] };
    case HandshakeState.ReceivePsync:
      return psyncReply(line, !!ctx.compression);
    default:
      return fail(state, line, 'handshake already finished');
  }
}

/**
 * master_replid, master_replid2 and second_repl_offset of an `INFO replication` text, or null unless all three are
 * there and well formed.
 */
export function parseReplInfo(text: string): UpstreamReplInfo | null {
  const field = (name: string) => new RegExp(`^${name}:(.*?)\\r?$`, 'm').exec(text)?.[1];
  const replid = field('master_replid');
  const replid2 = field('master_replid2');
  const second = field('second_repl_offset');
  if (replid === undefined || replid2 === undefined || second === undefined) return null;
  if (!/^[0-9a-zA-Z]{40}$/.test(replid) || !/^[0-9a-zA-Z]{40}$/.test(replid2) || !/^-?\d+$/.test(second)) return null;
  const secondReplOffset = Number(second);
  if (!Number.isSafeInteger(secondReplOffset)) return null;
  // A psync-relay's identity and the relays it follows; ids that are not 40 hex digits are no information.
  const relayId = field('relay_id');
  const relayChain: string[] = [];
  if (relayId !== undefined && RELAY_ID.test(relayId)) {
    relayChain.push(relayId);
    for (const r of (field('relay_chain') ?? '').split(',')) if (RELAY_ID.test(r) && relayChain.length < RELAY_CHAIN_MAX) relayChain.push(r);
  }
  return { replid, replid2, secondReplOffset, relayChain };
}

const RELAY_ID = /^[0-9a-f]{40}$/;

/** One end of a TCP connection as CLIENT LIST prints it (`ip:port`, `[ipv6]:port`). */
export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

/** A connection an upstream lists as its master link: `local` is the upstream's end (laddr), `remote` its master's (addr). */
export interface MasterLink {
  readonly local: Endpoint;
  readonly remote: Endpoint;
}

/** The connections of a `CLIENT LIST` reply that have both ends on TCP (unix sockets have no port). */
export function parseMasterLinks(text: string): MasterLink[] {
  const links: MasterLink[] = [];
  for (const line of text.split('\n')) {
    const remote = endpoint(ADDR.exec(line)?.[1]);
    const local = endpoint(LADDR.exec(line)?.[1]);
    if (remote && local) links.push({ local, remote });
  }
  return links;
}

const ADDR = /(?:^| )addr=(\S+)/;
const LADDR = /(?:^| )laddr=(\S+)/;

function endpoint(text: string | undefined): Endpoint | null {
  const m = text === undefined ? null : /^\[?([^\]]*?)\]?:(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : 0;
  return m && m[1] !== '' && port > 0 && port < 65536 ? { address: m[1]!, port } : null;
}

/**
 * Parses the reply to PSYNC (Redis slaveTryPartialResynchronization). With `compressionAnnounced`, a trailing
 * `psync-relay-z1` token says everything after the line is compressed (src/compression.ts); without it, the token
 * is a malformed reply.
 */
export function psyncReply(line: string, compressionAnnounced = false): StepResult {
  const state = HandshakeState.ReceivePsync;
  const marked = compressionAnnounced && line.endsWith(` ${Z1}`);
  const text = marked ? line.slice(0, -(Z1.length + 1)) : line;
  const z = marked ? ({ compressed: true } as const) : {};
  if (text.startsWith('+FULLRESYNC')) {
    const m = /^\+FULLRESYNC ([0-9a-zA-Z]{40}) (-?\d+)\s*$/.exec(text);
    if (!m) return fail(state, line, `malformed +FULLRESYNC reply: ${quote(line)}`);
    // A master's offset is a non-negative int64; past 2^53 a JS number cannot count bytes (offset + n === offset), and
    // -1 means "no snapshot" in the relay: refuse, rather than take a history whose offsets cannot be kept.
    const offset = Number(m[2]);
    if (!Number.isSafeInteger(offset) || offset < 0) return fail(state, line, `+FULLRESYNC offset out of range: ${quote(line)}`);
    return { next: HandshakeState.Done, outcome: { kind: 'full', replid: m[1]!, offset, ...z } };
  }
  if (text.startsWith('+CONTINUE')) {
    const id = text.slice('+CONTINUE'.length).trim();
    if (id !== '' && !/^[0-9a-zA-Z]{40}$/.test(id)) return fail(state, line, `malformed +CONTINUE reply: ${quote(line)}`);
    // A compressing relay always names its replid (src/compression.ts).
    if (marked && id === '') return fail(state, line, `malformed +CONTINUE reply: ${quote(line)}`);
    return { next: HandshakeState.Done, outcome: { kind: 'continue', replid: id === '' ? null : id, ...z } };
  }
  if (line.startsWith('-NOMASTERLINK') || line.startsWith('-LOADING')) {
    return { next: HandshakeState.Done, outcome: { kind: 'try-later', reply: quote(line) } };
  }
  if (line.startsWith('-ERR')) {
    return { next: HandshakeState.Done, send: [['SYNC']], outcome: { kind: 'sync', refusal: quote(line) }, warning: `upstream refused PSYNC, falling back to SYNC: ${quote(line)}` };
  }
  return fail(state, line, `unexpected reply to PSYNC: ${quote(line)}`);
}
