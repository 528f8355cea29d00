import { isUtf8 } from 'node:buffer';
import { RelayError } from '../errors.js';
import { commandKeys as keyArgs } from '../resp/command-keys.js';
import { globBytes, globMatch } from '../util/glob.js';

/**
 * What a /stream subscriber asked for, parsed once from the query string, and how one replicated command
 * becomes a JSON message. Pure functions: no sockets, no relay.
 */
export const StreamFormat = { Json: 'json', Raw: 'raw' } as const;
export type StreamFormat = (typeof StreamFormat)[keyof typeof StreamFormat];

export interface StreamOptions {
  readonly format: StreamFormat;
  /** First stream offset wanted (a command's first byte for json: the `offset` of a message + 1); null = from now. */
  readonly from: number | null;
  /** With `from`: the history it belongs to; refused when the relay cannot continue it. */
  readonly replid: string | null;
  /** Lower-case command names; null = all. */
  readonly cmds: ReadonlySet<string> | null;
  /** Key globs as binary strings; null = all. A command matches when one of its keys matches one glob. */
  readonly keys: readonly string[] | null;
  readonly dbs: ReadonlySet<number> | null;
  /** Show the master's own PING and REPLCONF GETACK (flagged `internal`). */
  readonly internal: boolean;
}

/** A /stream query option is malformed (answered with HTTP 400 before the upgrade). */
export class StreamOptionsError extends RelayError {
  constructor(message: string) {
    super('RELAY_ERR_STREAM_OPTIONS', message);
  }
}

const INT = /^(0|[1-9]\d{0,15})$/;

/**
 * Bounds on a subscriber's filters. Each is checked against every replicated command on the replication path (the
 * upstream link's data handler), so an unbounded list let one subscriber cost the relay as much as thousands:
 * 10 subscribers with 5,000 key globs each slowed 20,000 SETs from 0.6 s to 15 s. Key globs cost the most (matched
 * against every key, O(key × glob) at worst); command names and dbs are set lookups, bounded for their memory.
 */
export const MAX_KEY_GLOBS = 16;
export const MAX_KEY_GLOB_BYTES = 256;
export const MAX_CMD_FILTERS = 64;
export const MAX_DB_FILTERS = 64;

/** Parse `format, from, replid, cmd, key, db, internal` (repeated or comma-separated lists). Throws StreamOptionsError. */
export function parseStreamOptions(query: string): StreamOptions {
  const q = new URLSearchParams(query);
  const list = (name: string): string[] =>
    q
      .getAll(name)
      .flatMap((v) => v.split(','))
      .map((v) => v.trim())
      .filter((v) => v !== '');
  const formatRaw = q.get('format') ?? 'json';
  if (formatRaw !== 'json' && formatRaw !== 'raw') throw new StreamOptionsError('format must be json or raw');
  const format = formatRaw as StreamFormat;
  let from: number | null = null;
  const fromRaw = q.get('from');
  if (fromRaw !== null) {
    if (!INT.test(fromRaw) || Number(fromRaw) < 1) throw new StreamOptionsError('from must be a positive integer offset');
    from = Number(fromRaw);
  }
  const replid = q.get('replid');
  if (replid !== null && !/^[0-9a-f]{40}$/.test(replid)) throw new StreamOptionsError('replid must be 40 hex digits');
  const cmdList = list('cmd').map((c) => c.toLowerCase());
  if (cmdList.length > MAX_CMD_FILTERS) throw new StreamOptionsError(`cmd takes at most ${MAX_CMD_FILTERS} commands`);
  const keyList = list('key').map(globBytes);
  if (keyList.length > MAX_KEY_GLOBS) throw new StreamOptionsError(`key takes at most ${MAX_KEY_GLOBS} globs`);
  if (keyList.some((g) => g.length > MAX_KEY_GLOB_BYTES)) throw new StreamOptionsError(`a key glob is at most ${MAX_KEY_GLOB_BYTES} bytes`);
  const dbList = list('db').map((d) => {
    if (!INT.test(d)) throw new StreamOptionsError('db must be a non-negative integer');
    return Number(d);
  });
  if (dbList.length > MAX_DB_FILTERS) throw new StreamOptionsError(`db takes at most ${MAX_DB_FILTERS} databases`);
  const internalRaw = q.get('internal') ?? '1';
  if (!['0', '1', 'true', 'false'].includes(internalRaw)) throw new StreamOptionsError('internal must be 0 or 1');
  if (format === StreamFormat.Raw && (cmdList.length || keyList.length || dbList.length || q.has('internal'))) {
    throw new StreamOptionsError('cmd, key, db and internal filters apply to format=json only');
  }
  return {
    format,
    from,
    replid,
    cmds: cmdList.length ? new Set(cmdList) : null,
    keys: keyList.length ? keyList : null,
    dbs: dbList.length ? new Set(dbList) : null,
    internal: internalRaw === '1' || internalRaw === 'true',
  };
}

/** The lower-case name of a command (args[0]). */
export function commandName(args: readonly Buffer[]): string {
  return args[0] ? args[0].toString('latin1').toLowerCase() : '';
}

/** The master's own traffic in the stream: PING and REPLCONF (GETACK). */
export function isInternal(name: string): boolean {
  return name === 'ping' || name === 'replconf';
}

/** The db a SELECT switches to, or null when the command (argc args, args[1] decoded or not) is not a valid SELECT. */
export function selectedDb(name: string, argc: number, arg1: Buffer | undefined): number | null {
  if (name !== 'select' || argc !== 2 || arg1 === undefined) return null;
  const s = arg1.toString('latin1');
  return INT.test(s) ? Number(s) : null;
}

/** The key arguments of a command (`name` lower case, args[0] the name), as binary strings: see command-keys.ts. */
export function commandKeys(name: string, args: readonly Buffer[]): string[] {
  return keyArgs(args, name).map((k) => k.toString('latin1'));
}

/** Does a command (name, args with args[0] the name, db it applies to) pass the subscriber's filters? */
export function matches(opts: StreamOptions, name: string, args: readonly Buffer[], db: number | null, internal: boolean): boolean {
  if (internal && !opts.internal) return false;
  if (opts.cmds !== null && !opts.cmds.has(name)) return false;
  if (opts.dbs !== null && (db === null || !opts.dbs.has(db))) return false;
  if (opts.keys !== null) {
    const keys = commandKeys(name, args);
    if (!keys.some((k) => opts.keys!.some((g) => globMatch(g, k)))) return false;
  }
  return true;
}

/**
 * One command as a JSON message: `{"offset","db","cmd","args"}`, plus `"internal":true` for the master's
 * PING/REPLCONF and `"b64":true` when some argument is not valid UTF-8 (then every element of `args` is base64).
 * `offset` is the stream offset of the command's last byte (what a replica's offset is after it); `cmd` is the
 * lower-case name; `args` excludes the name.
 */
/** One /stream JSON message: a replicated command ending at stream offset `offset`. */
export interface StreamMessage {
  readonly offset: number;
  /** The database the command applies to; null until the stream has named one. */
  readonly db: number | null;
  /** Lower-case command name. */
  readonly cmd: string;
  /** UTF-8 text, or base64 of every argument when `b64` is set (some argument is not valid UTF-8). */
  readonly args: string[];
  /** The master's own PING / REPLCONF GETACK. */
  readonly internal?: boolean;
  readonly b64?: boolean;
}

export function formatCommand(end: number, db: number | null, name: string, args: readonly Buffer[], internal: boolean): string {
  let b64 = false;
  for (let i = 1; i < args.length; i++) {
    if (!isUtf8(args[i]!)) {
      b64 = true;
      break;
    }
  }
  const enc = b64 ? 'base64' : 'utf8';
  const rest: string[] = new Array<string>(Math.max(0, args.length - 1));
  for (let i = 1; i < args.length; i++) rest[i - 1] = args[i]!.toString(enc);
  const msg: { -readonly [K in keyof StreamMessage]: StreamMessage[K] } = { offset: end, db, cmd: name, args: rest };
  if (internal) msg.internal = true;
  if (b64) msg.b64 = true;
  return JSON.stringify(msg);
}
