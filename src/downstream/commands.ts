import { createHash, timingSafeEqual } from 'node:crypto';
import { arrayReply, bulkReply, errorReply, integerReply, OK, PONG, simpleString } from '../resp/writer.js';
import type { ClientConnection } from './client.js';
import type { ListenUser } from '../config/types.js';
import { WRITE_COMMANDS } from './write-commands.js';
import { SUBSCRIBED_MODE_COMMANDS, subscribedPong, subscriptionCount, type PubSub } from './pubsub.js';
import { authRequired, channelAllowed, channelArgs, roleAllows } from './roles.js';
import { clip, validClientName, validHost } from '../util/text.js';
import { parseCompressionCapa } from '../compression.js';
import { parseRdbFromCapa } from '../rdb-from.js';
import { RELAY_CAPA } from '../upstream/handshake.js';
import type { PitrApi } from '../pitr/api.js';
import { relayCommand } from './relay-command.js';
import { droppedArgs } from '../resp/request-parser.js';
import { string2ll } from '../resp/integer.js';
import type { AccessDenial } from '../observability/telemetry.js';
import { byName } from '../util/by-name.js';

/** ROLE of a replica: its upstream, the link's state (LinkState), master_repl_offset. */
export interface ReplicaRole {
  readonly host: string | null;
  readonly port: number;
  readonly linkState: string;
  readonly offset: number;
}

/** ROLE of a listener that serves as a master (a point-in-time one). */
export interface MasterRole {
  readonly offset: number;
  /** Online replicas: the address each announced (or its connection's), its listening port, its acknowledged offset. */
  readonly replicas: ReadonlyArray<{ readonly ip: string; readonly port: number; readonly offset: number }>;
}

/** What commands need from the rest of the relay. */
export interface CommandHost {
  /** listen.password: the `default` user's password (that user is an admin); null = no default password. */
  readonly password: string | null;
  /** listen.users: named users with a role. */
  readonly users: ReadonlyArray<ListenUser>;
  /** The relay's pub/sub among its own clients (Sentinel's hello channel). */
  readonly pubsub: PubSub;
  info(sections: string[]): string;
  /** What ROLE reports. */
  role(): ReplicaRole | MasterRole;
  /** PSYNC (`replid`, `offset`) or SYNC (`replid` null). */
  startSync(client: ClientConnection, replid: string | null, offset: number): void;
  /** REPLICAOF host port; returns an error text, or null on success. */
  replicaOf(host: string, port: number): string | null;
  clients(): Iterable<ClientConnection>;
  /** CONFIG REWRITE: persist the upstream in the config file; returns an error text, or null. */
  configRewrite(): string | null;
  /** CONFIG RESETSTAT: INFO's stats counters start again from 0. */
  resetStats(): void;
  /** SHUTDOWN: the graceful shutdown (`now`: without waiting for replicas); returns an error text, or null. */
  shutdown(now: boolean): string | null;
  /** Point-in-time replicas (RELAY PITR, RELAY HISTORY); null: not here. */
  readonly pitr: PitrApi | null;
}

type Handler = (host: CommandHost, client: ClientConnection, args: Buffer[]) => void;

interface CommandSpec {
  /** Redis arity: positive = exact, negative = at least. */
  readonly arity: number;
  readonly handler: Handler;
  /** Allowed before AUTH. */
  readonly noAuth?: boolean;
  /** Answered asynchronously: refused inside MULTI (EXEC gathers replies synchronously). */
  readonly noMulti?: boolean;
  /** A variadic command's most arguments (args[0] included) that the relay reads; VARIADIC_KEPT when absent. */
  readonly maxArgs?: number;
}

/**
 * Most arguments a variadic command may have here. None of the relay's needs more than a few (REPLCONF's pairs,
 * CLIENT KILL's filters, INFO's sections); a client's unfinished command with a million of them held a million
 * Buffers, past listen.max-clients-memory (request-parser.ts argsKept).
 */
const VARIADIC_KEPT = 64;
/** (P)(UN)SUBSCRIBE's channels: Sentinel subscribes to one; an admin's client may watch more. */
const SUBSCRIBE_KEPT = 1024;
/** An unknown command's arguments its error shows: at most 128 characters of them, each `'x' ` at least 3. */
const UNKNOWN_KEPT = 1 + Math.ceil(128 / 3);

const str = (b: Buffer | undefined): string => (b ? b.toString('utf8') : '');
/** Client bytes as they are (one character per byte), for echoing them in an error as Redis does. */
const raw = (b: Buffer | undefined): string => (b ? b.toString('latin1') : '');
const lower = (b: Buffer | undefined): string => str(b).toLowerCase();
/** Client input shown in an error reply: at most 128 characters, as Redis does. */
const echo = (b: Buffer | undefined): string => clip(raw(b));

/** Compares SHA-256 digests, so the time taken tells nothing about the password, its length included (as Redis's ACL). */
export function passwordMatches(expected: string, given: string): boolean {
  return timingSafeEqual(digest(expected), digest(given));
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

const WRONGPASS = errorReply('WRONGPASS invalid username-password pair or user is disabled.');


/** AUTH / HELLO AUTH: `default` with listen.password, or a listen.users entry. */
function auth(host: CommandHost, client: ClientConnection, user: string, pass: string): boolean {
  if (!authRequired(host)) {
    client.reply(errorReply('ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?'));
    return false;
  }
  const named = host.users.find((u) => u.name === user);
  const expected = user === 'default' ? host.password : (named?.password ?? null);
  // An unknown user is compared too, so the time taken does not tell which users exist.
  if (!passwordMatches(expected ?? '', pass) || expected === null) {
    client.warn({ user: clip(user) }, 'auth failed');
    client.accessDenied('auth');
    client.reply(WRONGPASS);
    return false;
  }
  client.authenticated = true;
  client.user = user;
  client.role = named?.role ?? 'admin';
  return true;
}

function infoLines(text: string): Buffer {
  return bulkReply(text);
}

const COMMANDS = byName<CommandSpec>({
  // Not before AUTH: Redis 7.0 answers PING with NOAUTH too (replicas and Sentinel take that as a live link).
  ping: {
    arity: -1,
    handler: (_h, c, a) => {
      if (a.length > 2) return c.reply(errorReply("ERR wrong number of arguments for 'ping' command"));
      if (subscriptionCount(c) > 0) return c.reply(subscribedPong(a[1]));
      if (a.length > 1) c.replyBulk(a[1]!);
      else c.reply(PONG);
    },
  },
  echo: { arity: 2, handler: (_h, c, a) => c.replyBulk(a[1]!) },
  quit: {
    arity: -1,
    noAuth: true,
    handler: (_h, c) => {
      c.reply(OK);
      c.closeAfterWrite();
    },
  },
  auth: {
    arity: -2,
    noAuth: true,
    handler: (h, c, a) => {
      if (a.length > 3) return c.reply(errorReply('ERR syntax error'));
      if (auth(h, c, a.length === 3 ? str(a[1]) : 'default', str(a[a.length - 1]))) c.reply(OK);
    },
  },
  hello: {
    arity: -1,
    noAuth: true,
    handler: (h, c, a) => {
      let i = 1;
      let resp3 = false;
      if (a.length > 1) {
        const ver = integerArg(a[1]);
        if (ver === null) return c.reply(errorReply('ERR Protocol version is not an integer or out of range'));
        if (ver !== 2 && ver !== 3) return c.reply(errorReply('NOPROTO unsupported protocol version'));
        resp3 = ver === 3;
        i = 2;
      }
      // As Redis helloCommand: options first, then AUTH, then (authenticated only) SETNAME with CLIENT SETNAME's rules.
      let creds: [string, string] | null = null;
      let name: string | null = null;
      for (; i < a.length; i++) {
        const opt = lower(a[i]);
        if (opt === 'auth' && i + 2 < a.length) {
          creds = [str(a[i + 1]), str(a[i + 2])];
          i += 2;
        } else if (opt === 'setname' && i + 1 < a.length) {
          name = str(a[++i]);
        } else {
          return c.reply(errorReply(`ERR Syntax error in HELLO option '${echo(a[i])}'`));
        }
      }
      if (creds && !auth(h, c, creds[0], creds[1])) return;
      if (!c.authenticated) return c.reply(errorReply('NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time'));
      // Redis checks the version first and answers NOAUTH to HELLO 3 before AUTH; the relay speaks RESP2 only.
      if (resp3) return c.reply(errorReply('NOPROTO unsupported protocol version'));
      if (name !== null && !setName(c, name)) return;
      c.reply(
        arrayReply([
          bulkReply('server'), bulkReply('redis'),
          bulkReply('version'), bulkReply(REDIS_VERSION),
          bulkReply('proto'), integerReply(2),
          bulkReply('id'), integerReply(c.id),
          bulkReply('mode'), bulkReply('standalone'),
          bulkReply('role'), bulkReply('replica'),
          bulkReply('modules'), arrayReply([]),
        ]),
      );
    },
  },
  select: {
    arity: 2,
    handler: (_h, c, a) => {
      const db = integerArg(a[1]);
      if (db === null) return c.reply(errorReply('ERR value is not an integer or out of range'));
      if (db < 0 || db > 15) return c.reply(errorReply('ERR DB index is out of range'));
      c.reply(OK);
    },
  },
  replconf: { arity: -1, handler: replconf },
  // As Redis 7 (no-multi): run at EXEC they turned the client into a replica with the transaction's reply unsent.
  psync: {
    arity: -3,
    noMulti: true,
    handler: (h, c, a) => {
      const offset = integerArg(a[2]);
      if (offset === null) return c.reply(errorReply('ERR value is not an integer or out of range'));
      // `PSYNC <replid> <offset> FAILOVER` is a master's FAILOVER asking its replica to take over. Accepted, it left the
      // master a read-only replica of this relay, which follows it: a loop, no writable master. Refused, the master
      // aborts its failover and goes on as the master (Redis: "Failover target rejected psync request").
      if (a.length > 3 && lower(a[3]) === 'failover') {
        c.warn({ command: 'PSYNC FAILOVER' }, 'refused to be promoted by a master FAILOVER; it aborts and stays the master');
        return c.reply(errorReply('ERR psync-relay holds no dataset and can never become a master; PSYNC FAILOVER refused (use FAILOVER TO a redis-server replica)'));
      }
      h.startSync(c, str(a[1]), offset);
    },
  },
  sync: { arity: 1, handler: (h, c) => h.startSync(c, null, -1), noMulti: true },
  info: {
    arity: -1,
    handler: (h, c, a) => c.reply(infoLines(h.info(a.slice(1).map((x) => lower(x))))),
  },
  role: { arity: 1, handler: (h, c) => c.reply(roleReply(h.role())) },
  command: {
    arity: -1,
    handler: (_h, c, a) => {
      const sub = lower(a[1]);
      if (sub === 'count') return c.reply(integerReply(0));
      // redis-cli asks COMMAND DOCS for hints; an empty answer is enough.
      c.reply(arrayReply([]));
    },
  },
  client: { arity: -2, handler: client },
  replicaof: { arity: 3, handler: replicaof },
  shutdown: { arity: -1, handler: shutdown, noMulti: true },
  relay: { arity: -2, handler: (h, c, a) => relayCommand(h.pitr, c, a.slice(1).map(str)), noMulti: true },
  slaveof: { arity: 3, handler: replicaof },
  config: {
    arity: -2,
    handler: (h, c, a) => {
      const sub = lower(a[1]);
      if (sub === 'rewrite') {
        const err = h.configRewrite();
        return c.reply(err === null ? OK : errorReply(err));
      }
      if (sub === 'get') return c.reply(arrayReply([]));
      if (sub === 'set') return c.reply(errorReply('ERR CONFIG SET is not supported by psync-relay; edit the config file'));
      if (sub === 'resetstat') {
        h.resetStats();
        return c.reply(OK);
      }
      c.reply(errorReply(`ERR unknown subcommand '${echo(a[1])}'. Try CONFIG HELP.`));
    },
  },
  multi: {
    arity: 1,
    handler: (_h, c) => {
      if (c.multi) return c.reply(errorReply('ERR MULTI calls can not be nested'));
      c.multi = [];
      c.multiError = false;
      c.reply(OK);
    },
  },
  discard: {
    arity: 1,
    handler: (_h, c) => {
      if (!c.multi) return c.reply(errorReply('ERR DISCARD without MULTI'));
      c.multi = null;
      c.reply(OK);
    },
  },
  exec: { arity: 1, handler: () => undefined /* handled in dispatch */ },
  // Pub/sub among the relay's own clients (Sentinel's hello channel): see pubsub.ts.
  subscribe: { arity: -2, handler: (h, c, a) => h.pubsub.subscribe(c, a.slice(1)), maxArgs: SUBSCRIBE_KEPT },
  unsubscribe: { arity: -1, handler: (h, c, a) => h.pubsub.unsubscribe(c, a.slice(1)), maxArgs: SUBSCRIBE_KEPT },
  psubscribe: { arity: -2, handler: (h, c, a) => h.pubsub.psubscribe(c, a.slice(1)), maxArgs: SUBSCRIBE_KEPT },
  punsubscribe: { arity: -1, handler: (h, c, a) => h.pubsub.punsubscribe(c, a.slice(1)), maxArgs: SUBSCRIBE_KEPT },
  publish: { arity: 3, handler: (h, c, a) => c.reply(integerReply(h.pubsub.publish(a[1]!, a[2]!))) },
  pubsub: { arity: -2, handler: (h, c, a) => h.pubsub.introspect(c, a) },
  reset: {
    arity: 1,
    noAuth: true,
    handler: (h, c) => {
      // Redis clearClientConnectionState: leave MULTI and pub/sub, forget the name, back to the default user.
      c.multi = null;
      c.multiError = false;
      h.pubsub.drop(c);
      c.name = '';
      c.replyOff = false;
      c.skipNextReply = false;
      c.user = 'default';
      c.role = 'admin';
      c.authenticated = !authRequired(h);
      c.reply(simpleString('RESET'));
    },
  },
});

/**
 * ROLE as a Redis replica answers it: `slave`, its master, the link state in Redis's words, its offset; or as a
 * master does: `master`, its offset, and [ip, port, offset] of each online replica, as bulk strings.
 */
function roleReply(r: ReplicaRole | MasterRole): Buffer {
  if ('replicas' in r) {
    const replicas = r.replicas.map((x) => arrayReply([bulkReply(x.ip), bulkReply(String(x.port)), bulkReply(String(x.offset))]));
    return arrayReply([bulkReply('master'), integerReply(r.offset), arrayReply(replicas)]);
  }
  const state = r.linkState === 'connected' ? 'connected' : r.linkState === 'transfer' ? 'sync' : r.linkState === 'connecting' ? 'connecting' : 'connect';
  return arrayReply([bulkReply('slave'), bulkReply(r.host ?? '?'), integerReply(r.port), bulkReply(state), integerReply(r.offset)]);
}

export const REDIS_VERSION = '7.0.0';

function replconf(_h: CommandHost, c: ClientConnection, a: Buffer[]): void {
  if (a.length % 2 === 0) return c.reply(errorReply('ERR syntax error'));
  for (let i = 1; i < a.length; i += 2) {
    const opt = lower(a[i]);
    const val = str(a[i + 1]);
    switch (opt) {
      case 'listening-port': {
        const port = integerArg(a[i + 1]);
        if (port === null || port < 0 || port > 65535) return c.reply(errorReply('ERR value is not an integer or out of range'));
        c.replconf.listeningPort = port;
        break;
      }
      case 'ip-address':
        // Shown in INFO's slaveN: lines (which Sentinel parses) and /status: only a real address or host name.
        if (val.length >= 256) return c.reply(errorReply(`ERR REPLCONF ip-address provided by replica instance is too long: ${val.length} bytes`));
        if (!validHost(val)) return c.reply(errorReply('ERR REPLCONF ip-address provided by replica instance is not a valid IP address or host name'));
        c.replconf.ipAddress = val;
        break;
      case 'capa':
        // Unknown capabilities (dual-channel, ...) are ignored, so newer replicas fall back cleanly.
        if (val.toLowerCase() === 'eof') c.replconf.capaEof = true;
        else if (val.toLowerCase() === 'psync2') c.replconf.capaPsync2 = true;
        else if (val.toLowerCase() === RELAY_CAPA) c.replconf.capaRelay = true;
        else {
          const from = parseRdbFromCapa(val);
          if (from !== null) c.replconf.rdbFrom = from;
          else c.capaCompression = parseCompressionCapa(val) ?? c.capaCompression;
        }
        break;
      case 'ack':
      case 'fack': {
        if (c.replica && opt === 'ack') {
          // As Redis: an offset that is not an integer is ignored. A Redis 7.2+ replica with an AOF adds
          // `FACK <offset>`: what it fsynced (WAITAOF).
          // Past 2^53 a number is inexact (INFO showed 2^63 - 1 as 9223372036854778000) and no stream gets there
          // (the relay refuses such an offset upstream): ignored too.
          const off = offsetArg(a[i + 1]);
          const aof = lower(a[i + 2]) === 'fack' ? offsetArg(a[i + 3]) : null;
          if (off !== null) c.replica.acknowledged(off, aof ?? -1);
        }
        // ACK never gets a reply.
        return;
      }
      case 'getack':
        // Only a master asks this; we are its master, so there is nothing to answer.
        return;
      case 'version':
        if (!/^[0-9A-Za-z.+-]{1,32}$/.test(val)) return c.reply(errorReply('ERR REPLCONF version is not a version number'));
        c.replconf.version = val;
        break;
      case 'rdb-only': {
        // As Redis: 0 or 1, anything else an error (`2` was taken as 0, a full replica sync the client did not ask for).
        const v = integerArg(a[i + 1]);
        if (v === null) return c.reply(errorReply('ERR value is not an integer or out of range'));
        if (v !== 0 && v !== 1) return c.reply(errorReply('ERR value is out of range, value must between 0 and 1'));
        c.replconf.rdbOnly = v === 1;
        break;
      }
      case 'rdb-filter-only':
        // We cannot filter a snapshot; an empty filter (redis-cli --replica) means "no keys".
        if (val.trim() !== '') return c.reply(errorReply('ERR psync-relay supports only an empty rdb-filter-only'));
        c.replconf.rdbFilterEmpty = true;
        break;
      default:
        c.logger.debug({ option: clip(opt) }, 'unknown REPLCONF option accepted');
    }
  }
  c.reply(OK);
}

/**
 * SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT], as an operator stops a Redis replica: the relay's graceful shutdown
 * (SIGTERM's), whose connection closes with it. The relay has no dataset to save or not: it always keeps its log
 * and state, so NOSAVE, SAVE and FORCE change nothing. NOW does not wait for replicas. Its shutdown cannot be aborted.
 */
function shutdown(h: CommandHost, c: ClientConnection, a: Buffer[]): void {
  let now = false;
  let abort = false;
  for (const arg of a.slice(1)) {
    const opt = lower(arg);
    if (opt === 'now') now = true;
    else if (opt === 'abort') abort = true;
    else if (opt !== 'nosave' && opt !== 'save' && opt !== 'force') return c.reply(errorReply('ERR syntax error'));
  }
  if (abort) return c.reply(errorReply(a.length === 2 ? 'ERR No shutdown in progress.' : 'ERR syntax error'));
  const err = h.shutdown(now);
  if (err !== null) return c.reply(errorReply(err));
  c.logger.warn({ now, user: c.user }, 'SHUTDOWN: shutting down');
}

function replicaof(h: CommandHost, c: ClientConnection, a: Buffer[]): void {
  const host = str(a[1]);
  const portText = str(a[2]);
  if (host.toLowerCase() === 'no' && portText.toLowerCase() === 'one') {
    return c.reply(errorReply('ERR psync-relay holds no dataset and can never become a master; REPLICAOF NO ONE refused'));
  }
  const port = integerArg(a[2]);
  if (port === null || port < 1 || port > 65535) return c.reply(errorReply('ERR Invalid master port'));
  // The host shows in INFO (master_host): it must never carry a line of its own.
  if (!validHost(host)) return c.reply(errorReply('ERR Invalid master host: not an IP address or host name'));
  const err = h.replicaOf(host, port);
  c.reply(err === null ? OK : errorReply(err));
}

function client(h: CommandHost, c: ClientConnection, a: Buffer[]): void {
  const sub = lower(a[1]);
  switch (sub) {
    case 'setname':
      if (a.length !== 3) return c.reply(errorReply("ERR wrong number of arguments for 'client|setname' command"));
      if (setName(c, str(a[2]))) c.reply(OK);
      return;
    case 'getname':
      return c.reply(bulkReply(c.name === '' ? null : c.name));
    case 'id':
      return c.reply(integerReply(c.id));
    case 'list':
      return clientList(h, c, a);
    case 'info':
      return c.reply(bulkReply(clientLine(c)));
    case 'kill':
      return clientKill(h, c, a);
    case 'reply':
      return clientReply(c, a);
    case 'setinfo':
    case 'no-evict':
    case 'no-touch':
      return c.reply(OK);
    default:
      return c.reply(errorReply(`ERR unknown subcommand '${echo(a[1])}'. Try CLIENT HELP.`));
  }
}

/** CLIENT REPLY ON|OFF|SKIP, as Redis: OFF and SKIP are not answered themselves. */
function clientReply(c: ClientConnection, a: Buffer[]): void {
  if (a.length !== 3) return c.reply(errorReply("ERR unknown subcommand or wrong number of arguments for 'reply'. Try CLIENT HELP."));
  const mode = lower(a[2]);
  if (mode === 'on') {
    c.replyOff = false;
    c.skipNextReply = false;
    return c.reply(OK);
  }
  if (mode === 'off') {
    c.replyOff = true;
    return;
  }
  if (mode === 'skip') {
    if (!c.replyOff) c.skipNextReply = true;
    return;
  }
  c.reply(errorReply('ERR syntax error'));
}

/** Redis clientSetName: '' clears the name; otherwise printable ASCII without spaces, so CLIENT LIST stays one line per client. */
function setName(c: ClientConnection, name: string): boolean {
  if (!validClientName(name)) {
    c.reply(errorReply('ERR Client names cannot contain spaces, newlines or special characters.'));
    return false;
  }
  c.name = name;
  return true;
}

function clientLine(c: ClientConnection): string {
  const now = Date.now();
  const flags = c.replica ? 'S' : subscriptionCount(c) > 0 ? 'P' : 'N';
  return (
    `id=${c.id} addr=${c.addr} laddr=${c.socket.localAddress}:${c.socket.localPort} fd=0 name=${c.name} ` +
    `age=${Math.floor((now - c.createdAt) / 1000)} idle=${Math.floor((now - c.lastInteraction) / 1000)} flags=${flags} ` +
    `db=0 sub=${c.channels.size} psub=${c.patterns.size} ssub=0 multi=${c.multi ? c.multi.length : -1} qbuf=${c.queryBuffered} qbuf-free=0 argv-mem=${c.argvMemory} multi-mem=${c.multiMemory()} rbs=0 rbp=0 ` +
    `obl=0 oll=${c.queuedWrites} omem=${c.outputMemory()} tot-mem=${c.memoryUsage()} events=r cmd=${c.lastCommand || 'NULL'} user=${c.user} redir=-1 resp=2\n`
  );
}

/** CLIENT KILL ip:port | CLIENT KILL [ID id] [TYPE normal|replica|slave|pubsub|master] [ADDR ip:port] [SKIPME yes|no]. */
function clientKill(h: CommandHost, c: ClientConnection, a: Buffer[]): void {
  let id: number | null = null;
  let type: string | null = null;
  let addr: string | null = null;
  let skipme = true;
  if (a.length === 3) {
    addr = str(a[2]);
  } else {
    if (a.length % 2 !== 0) return c.reply(errorReply('ERR syntax error'));
    for (let i = 2; i < a.length; i += 2) {
      const k = lower(a[i]);
      const v = str(a[i + 1]);
      if (k === 'id') id = Number(v);
      else if (k === 'type') type = v.toLowerCase();
      else if (k === 'addr') addr = v;
      else if (k === 'skipme') skipme = v.toLowerCase() !== 'no';
      else if (k === 'laddr' || k === 'user' || k === 'maxage') continue;
      else return c.reply(errorReply('ERR syntax error'));
    }
    if (type !== null && !CLIENT_TYPES.has(type)) return c.reply(errorReply(`ERR Unknown client type '${clip(type)}'`));
  }
  const victims = [...h.clients()].filter((x) => {
    if (id !== null && x.id !== id) return false;
    if (addr !== null && x.addr !== addr) return false;
    if (type !== null && !isClientType(x, type)) return false;
    if (skipme && x === c && a.length !== 3) return false;
    return true;
  });
  if (a.length === 3) {
    if (victims.length === 0) return c.reply(errorReply('ERR No such client'));
    c.reply(OK);
  } else {
    c.reply(integerReply(victims.length));
  }
  for (const v of victims) v.kill();
}

/** CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id [id ...]], as Redis 7.0. */
function clientList(h: CommandHost, c: ClientConnection, a: Buffer[]): void {
  let clients = [...h.clients()];
  if (a.length === 4 && lower(a[2]) === 'type') {
    const type = lower(a[3]);
    if (!CLIENT_TYPES.has(type)) return c.reply(errorReply(`ERR Unknown client type '${clip(str(a[3]))}'`));
    clients = clients.filter((x) => isClientType(x, type));
  } else if (a.length > 3 && lower(a[2]) === 'id') {
    // In the order asked, as Redis lists them; an id no client has lists nothing.
    const byId = new Map(clients.map((x) => [x.id, x]));
    clients = [];
    for (const v of a.slice(3)) {
      if (!/^-?(0|[1-9]\d{0,18})$/.test(str(v))) return c.reply(errorReply('ERR Invalid client ID'));
      const x = byId.get(Number(str(v)));
      if (x) clients.push(x);
    }
  } else if (a.length !== 2) {
    return c.reply(errorReply('ERR syntax error'));
  }
  c.reply(bulkReply(clients.map(clientLine).join('')));
}

const CLIENT_TYPES: ReadonlySet<string> = new Set(['normal', 'replica', 'slave', 'pubsub', 'master']);

/**
 * Redis getClientType: a replica, else pubsub (it has subscriptions), else normal. No connection accepted here is a
 * master link (the relay's own is outgoing), so `master` matches none.
 */
function isClientType(x: ClientConnection, type: string): boolean {
  const kind = x.replica ? 'replica' : subscriptionCount(x) > 0 ? 'pubsub' : 'normal';
  return type === kind || (type === 'slave' && kind === 'replica');
}

/** Commands whose permission is per subcommand, with the subcommands their handlers know. */
const SUBCOMMANDS = byName<ReadonlySet<string>>({
  client: new Set(['setname', 'getname', 'id', 'list', 'info', 'kill', 'setinfo', 'reply', 'no-evict', 'no-touch']),
  config: new Set(['get', 'set', 'rewrite', 'resetstat']),
  relay: new Set(['pitr', 'history']),
});

/**
 * The ACL check, as Redis 7.0 words it: null when `c`'s role may run the command (roles.ts). Unknown commands, wrong
 * arities and unknown subcommands are left to the usual errors.
 */
function permissionError(c: ClientConnection, name: string, spec: CommandSpec | undefined, args: Buffer[]): Denied | null {
  if (c.role === 'admin') return null;
  if (spec ? !arityOk(spec, args) : !WRITE_COMMANDS.has(name)) return null;
  const subs = SUBCOMMANDS[name];
  if (subs && !subs.has(lower(args[1]))) return null;
  const full = subs ? `${name}|${lower(args[1])}` : name;
  if (!roleAllows(c.role, full)) return { reason: 'cmd', error: `NOPERM this user has no permissions to run the '${full}' command` };
  const channels = channelArgs(name, args);
  if (channels && !channels.every((ch) => channelAllowed(c.role, ch))) {
    return { reason: 'channel', error: 'NOPERM this user has no permissions to access one of the channels used as arguments' };
  }
  return null;
}

interface Denied {
  readonly reason: Exclude<AccessDenial, 'auth'>;
  readonly error: string;
}

/** Answers a refused command (counted, as Redis's acl_access_denied_*). */
function refuse(c: ClientConnection, denied: Denied): void {
  c.accessDenied(denied.reason);
  c.reply(errorReply(denied.error));
}

/**
 * Redis registers `POST` and `Host:` as commands that close the connection: an HTTP request sent to the RESP port
 * by a browser (a cross-protocol attack) is cut at its first line, before any command in its body runs.
 */
function securityWarning(c: ClientConnection): void {
  c.warn(
    {},
    'Possible SECURITY ATTACK detected. It looks like somebody is sending POST or Host: commands to the relay. This is likely due to an attacker attempting to use Cross Protocol Scripting to compromise it. Connection aborted.',
    1,
  );
  c.kill();
}

/**
 * How many arguments of a command named `name` the parser keeps (RequestParser's argsKept): past them the relay
 * refuses the command whatever they say, so they are read and dropped, not held.
 */
export function argsKept(name: Buffer): number {
  const spec = COMMANDS[lower(name)];
  if (!spec) return UNKNOWN_KEPT;
  return spec.arity > 0 ? spec.arity : (spec.maxArgs ?? VARIADIC_KEPT);
}

/** Runs one command: auth check, permission check, arity, MULTI queueing, then the handler. */
export function dispatch(host: CommandHost, c: ClientConnection, args: Buffer[]): void {
  const name = lower(args[0]);
  if (name === 'post' || name === 'host:') return securityWarning(c);
  const spec = COMMANDS[name];
  if (spec) c.lastCommand = name;
  if (!c.authenticated && !spec?.noAuth) {
    // Redis answers an EXEC it rejects with EXECABORT and the reason.
    c.reply(errorReply(name === 'exec' ? 'EXECABORT Transaction discarded because of: NOAUTH Authentication required.' : 'NOAUTH Authentication required.'));
    return;
  }
  const denied = permissionError(c, name, spec, args);
  if (denied) {
    // A relay below asks `CLIENT LIST TYPE master` in its handshake (upstream/handshake.ts) and takes a refusal in
    // silence: with the replication role it is refused at every reconnection, which is no news (and used up the
    // warning's rate limit).
    const expected = name === 'client' && lower(args[1]) === 'list' && c.replconf.capaRelay;
    if (!expected) c.warn({ user: c.user, role: c.role, command: name }, 'command refused: no permission');
    if (c.multi) c.multiError = true;
    return refuse(c, denied);
  }
  if (subscriptionCount(c) > 0 && !SUBSCRIBED_MODE_COMMANDS.has(name)) {
    return c.reply(
      errorReply(`ERR Can't execute '${clip(name)}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context`),
    );
  }
  // RESET runs at once, as in Redis, and leaves the transaction: queued, it logged the client out inside EXEC and
  // the rest of the transaction ran as the default user (admin) without a password.
  if (c.multi && name !== 'exec' && name !== 'discard' && name !== 'multi' && name !== 'quit' && name !== 'reset') return queue(c, name, spec, args);
  if (name === 'exec') return exec(host, c);
  const err = checkCommand(name, spec, args);
  if (err) return c.reply(errorReply(err));
  spec!.handler(host, c, args);
}

/**
 * Inside MULTI: queue the command. A transaction that already failed is only acknowledged (EXEC will refuse it
 * anyway), and one that reaches listen.max-multi-commands is aborted and its queue freed.
 */
function queue(c: ClientConnection, name: string, spec: CommandSpec | undefined, args: Buffer[]): void {
  const err = spec?.noMulti ? 'ERR Command not allowed inside a transaction' : checkCommand(name, spec, args);
  if (err) {
    c.multiError = true;
    return c.reply(errorReply(err));
  }
  if (c.multiError) return c.reply(simpleString('QUEUED'));
  if (c.multi!.length >= c.maxMultiCommands) {
    c.warn({ limit: 'listen.max-multi-commands', value: c.maxMultiCommands }, 'MULTI queue full, transaction aborted');
    c.multi = [];
    c.multiError = true;
    return c.reply(errorReply(`ERR MULTI queue full: listen.max-multi-commands is ${c.maxMultiCommands}; the transaction is aborted (EXEC will answer EXECABORT)`));
  }
  c.multi!.push(own(args));
  c.reply(simpleString('QUEUED'));
}

/**
 * A copy of `args` in memory of their own, one block for the command. A parsed argument is a view of the read it came
 * in (up to 64 KiB): kept in a MULTI queue, a one-byte argument kept the whole read alive while multi-mem counted one
 * byte, so a client could hold 64 MB per 1000 queued commands outside listen.max-clients-memory.
 */
function own(args: Buffer[]): Buffer[] {
  let total = 0;
  for (const a of args) total += a.length;
  const block = Buffer.allocUnsafeSlow(total);
  let at = 0;
  return args.map((a) => {
    a.copy(block, at);
    at += a.length;
    return block.subarray(at - a.length, at);
  });
}

/** An integer argument as Redis reads one (string2ll: no hex, exponent, `+`, spaces or leading zeros); null if not. */
function integerArg(arg: Buffer | undefined): number | null {
  return arg === undefined ? null : string2ll(arg, 0);
}

/** An integer a JS number holds exactly (|n| <= 2^53 - 1): a replication offset; null for anything else. */
function offsetArg(arg: Buffer | undefined): number | null {
  const n = integerArg(arg);
  return n !== null && Math.abs(n) <= Number.MAX_SAFE_INTEGER ? n : null;
}

function checkCommand(name: string, spec: CommandSpec | undefined, args: Buffer[]): string | null {
  if (!spec) {
    if (WRITE_COMMANDS.has(name)) return "READONLY You can't write against a read only replica.";
    // Redis: the name cut to 128 characters, then arguments until 128 characters of them are shown.
    let shown = '';
    for (let i = 1; i < args.length && shown.length < 128; i++) shown += `'${raw(args[i]).slice(0, 128 - shown.length)}' `;
    return `ERR unknown command '${raw(args[0]).slice(0, 128)}', with args beginning with: ${shown}`;
  }
  if (spec.arity < 0 && droppedArgs(args) > 0) {
    return `ERR too many arguments for '${name}' command: psync-relay reads at most ${spec.maxArgs ?? VARIADIC_KEPT}`;
  }
  if (!arityOk(spec, args)) return `ERR wrong number of arguments for '${name}' command`;
  return null;
}

function arityOk(spec: CommandSpec, args: Buffer[]): boolean {
  if (droppedArgs(args) > 0) return false;
  return spec.arity > 0 ? args.length === spec.arity : args.length >= -spec.arity;
}

/** EXEC: run the queued commands, their replies gathered into one array (Sentinel's failover uses MULTI). */
function exec(host: CommandHost, c: ClientConnection): void {
  if (!c.multi) return c.reply(errorReply('ERR EXEC without MULTI'));
  const queued = c.multi;
  c.multi = null;
  if (c.multiError) {
    c.multiError = false;
    return c.reply(errorReply('EXECABORT Transaction discarded because of previous errors.'));
  }
  const replies = c.gatherReplies(() => {
    for (const args of queued) {
      // Checked again at EXEC, as Redis does: an AUTH queued earlier in the transaction may have changed the user.
      const name = lower(args[0]);
      const denied = permissionError(c, name, COMMANDS[name], args);
      if (denied) refuse(c, denied);
      else COMMANDS[name]!.handler(host, c, args);
    }
  });
  c.reply(arrayReply(replies));
}
