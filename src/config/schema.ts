import { dirname, resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import type {
  AckPolicy,
  ClientTlsConfig,
  ListenConfig,
  ListenUser,
  LoggingConfig,
  OutputBufferLimit,
  RelayConfig,
  SentinelConfig,
  ServerTlsConfig,
  WebConfig,
} from './types.js';
import { parseDuration, parseSize, show } from './units.js';
import { DEFAULT_COMPRESSION_LEVEL } from '../compression.js';

/**
 * Defaults in the YAML shape (kebab-case keys, unit strings). The key set here is also the set of allowed keys:
 * anything else in a config file is an error. config/relay.yaml mirrors this object (a test keeps them equal).
 */
export const DEFAULTS = deepFreeze({
  upstream: {
    host: null,
    port: 6379,
    user: null,
    password: null,
    timeout: 60,
    'connect-timeout': 10,
    'backoff-min': '100ms',
    'backoff-max': '5s',
    sentinel: null,
    tls: null,
    compression: 'on',
    'compression-level': DEFAULT_COMPRESSION_LEVEL,
  },
  listen: {
    bind: '127.0.0.1',
    port: 6380,
    password: null,
    'max-clients': 10000,
    'max-bulk-len': '512mb',
    'max-query-buffer': '1gb',
    'handshake-timeout': '10s',
    'announce-ip': null,
    users: [],
    tls: null,
    'protected-mode': true,
    'max-clients-memory': '256mb',
    'max-multi-commands': 1000,
    'client-output-buffer-limit': {
      normal: { hard: 0, soft: 0, 'soft-seconds': 0 },
      pubsub: { hard: '32mb', soft: '8mb', 'soft-seconds': 60 },
    },
  },
  log: {
    memory: '64mb',
    disk: '1gb',
    'disk-queue': '128mb',
    'refresh-hold': '256mb',
  },
  replication: {
    'replica-max-lag': '256mb',
    'replica-timeout': 60,
    'ahead-wait': '5s',
    'replica-soft-lag': '64mb',
    'replica-soft-seconds': 60,
    'ack-policy': 'self',
    'snapshot-refresh-min-interval': '60s',
    compression: 'on',
  },
  web: {
    bind: '127.0.0.1',
    port: 8080,
    token: null,
    'allow-insecure': false,
    'max-buffered': '16mb',
    'slow-client': 'disconnect',
    'max-subscribers': 100,
    'allowed-hosts': [],
    'allowed-origins': [],
  },
  logging: {
    level: 'info',
  },
  dir: './data',
  'shutdown-timeout': 10,
});

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const SLOW_CLIENT_POLICIES = ['disconnect', 'drop'] as const;

/** Smallest accepted `log.memory` (16kb). */
const MIN_LOG_MEMORY = 16 * 1024;

type Parse<T> = (value: unknown, path: string) => T;
type Read = <T>(key: string, parse: Parse<T>) => T;

/**
 * Validates a parsed config file (or `{}`), fills in defaults and returns a deep-frozen RelayConfig.
 * `configFile` is the file `raw` came from; a relative `dir` is resolved against its directory (cwd when null).
 * Throws ConfigError whose `path` is the dotted YAML key (`listen.port`); `''` for the document itself.
 */
export function validateConfig(raw: unknown, configFile: string | null): RelayConfig {
  const file = configFile === null ? null : resolve(configFile);
  const base = file === null ? process.cwd() : dirname(file);
  const top = reader(raw, '', DEFAULTS);
  const section = (name: keyof typeof DEFAULTS & string): Read => reader(top(name, (v) => v), name, DEFAULTS[name] as object);

  const up = section('upstream');
  const upstream = {
    host: up('host', nullableString),
    port: up('port', integer(1, 65535)),
    user: up('user', nullableString),
    password: up('password', nullableString),
    timeoutMs: up('timeout', duration(1)),
    connectTimeoutMs: up('connect-timeout', duration(1)),
    backoffMinMs: up('backoff-min', duration(0)),
    backoffMaxMs: up('backoff-max', duration(1)),
    sentinel: up('sentinel', sentinelConfig),
    tls: up('tls', clientTls(base)),
    compression: up('compression', onOff),
    compressionLevel: up('compression-level', integer(1, 9)),
  };
  if (upstream.sentinel?.tls && upstream.tls === null) {
    throw new ConfigError('upstream.sentinel.tls', 'needs upstream.tls (its ca, cert and key are used for the Sentinels)');
  }
  if (upstream.backoffMaxMs < upstream.backoffMinMs) {
    throw new ConfigError('upstream.backoff-max', 'must not be less than upstream.backoff-min');
  }

  const li = section('listen');
  const listen = {
    bind: li('bind', nonEmptyString),
    port: li('port', integer(0, 65535)),
    password: li('password', nullableString),
    users: li('users', listenUsers),
    tls: li('tls', serverTls(base)),
    maxClients: li('max-clients', integer(1, 1_000_000)),
    maxBulkLen: li('max-bulk-len', size(1)),
    maxQueryBuffer: li('max-query-buffer', size(1)),
    handshakeTimeoutMs: li('handshake-timeout', duration(0)),
    announceIp: li('announce-ip', nullableString),
    protectedMode: li('protected-mode', boolean),
    maxClientsMemory: li('max-clients-memory', size(0)),
    maxMultiCommands: li('max-multi-commands', integer(1, 1_000_000)),
    clientOutputBufferLimit: li('client-output-buffer-limit', outputBufferLimits),
  };
  if (listen.port === 0 && listen.tls === null) throw new ConfigError('listen.port', '0 (no plain listener) needs listen.tls');
  if (listen.tls !== null && listen.tls.port === listen.port) throw new ConfigError('listen.tls.port', 'must differ from listen.port');

  const lg = section('log');
  const log = {
    memory: lg('memory', size(MIN_LOG_MEMORY)),
    disk: lg('disk', size(0)),
    diskQueue: lg('disk-queue', size(1024 * 1024)),
    refreshHold: lg('refresh-hold', size(0)),
  };

  const re = section('replication');
  const replication = {
    replicaMaxLag: re('replica-max-lag', size(1)),
    replicaTimeoutMs: re('replica-timeout', duration(1)),
    aheadWaitMs: re('ahead-wait', duration(0)),
    replicaSoftLag: re('replica-soft-lag', size(0)),
    replicaSoftMs: re('replica-soft-seconds', duration(0)),
    ackPolicy: re('ack-policy', ackPolicy),
    snapshotRefreshMinIntervalMs: re('snapshot-refresh-min-interval', duration(0)),
    compression: re('compression', onOff),
  };

  const we = section('web');
  const web = {
    bind: we('bind', nonEmptyString),
    port: we('port', integer(0, 65535)),
    token: we('token', nullableString),
    allowInsecure: we('allow-insecure', boolean),
    maxBuffered: we('max-buffered', size(1024)),
    slowClient: we('slow-client', oneOf(SLOW_CLIENT_POLICIES)) satisfies WebConfig['slowClient'],
    maxSubscribers: we('max-subscribers', integer(1, 100_000)),
    allowedHosts: we('allowed-hosts', stringList(hostPattern)),
    allowedOrigins: we('allowed-origins', stringList(originPattern)),
  };
  if (web.port !== 0 && web.token === null && !web.allowInsecure && !isLoopback(web.bind)) {
    throw new ConfigError('web.token', `required when web.bind (${web.bind}) is not a loopback address; set a token or web.allow-insecure: true`);
  }

  const logging = { level: section('logging')('level', oneOf(LOG_LEVELS)) satisfies LoggingConfig['level'] };

  const dir = resolve(base, top('dir', nonEmptyString));

  const shutdownTimeoutMs = top('shutdown-timeout', duration(0));

  const config: RelayConfig = { upstream, listen, log, replication, web, logging, dir, shutdownTimeoutMs, configFile: file };
  return deepFreeze(config);
}

/**
 * Checks that `raw` is a mapping whose keys all appear in `defaults` and returns a reader that parses one key
 * (the default when absent). `null`/absent means an empty mapping, so `upstream:` with every key commented out is fine.
 */
function reader(raw: unknown, path: string, defaults: object): Read {
  if (raw !== null && raw !== undefined && (typeof raw !== 'object' || Array.isArray(raw))) {
    throw new ConfigError(path, `expected a mapping, got ${show(raw)}`);
  }
  const obj = (raw ?? {}) as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!Object.hasOwn(defaults, key)) throw new ConfigError(join(path, key), 'unknown key');
  }
  return (key, parse) => {
    const value = Object.hasOwn(obj, key) ? obj[key] : (defaults as Record<string, unknown>)[key];
    return parse(value, join(path, key));
  };
}

function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

// Neither string check echoes the value: they also check passwords and tokens.
function nonEmptyString(value: unknown, path: string): string {
  if (typeof value === 'string' && value !== '') return value;
  throw new ConfigError(path, `expected a non-empty string, got ${value === '' ? 'an empty string' : typeOf(value)}`);
}

function nullableString(value: unknown, path: string): string | null {
  if (value === null || (typeof value === 'string' && value !== '')) return value;
  throw new ConfigError(path, `expected a non-empty string or null, got ${value === '' ? 'an empty string' : typeOf(value)}`);
}

/** `on`/`off` (also true/false: YAML 1.1 habits). */
function onOff(value: unknown, path: string): boolean {
  if (value === 'on' || value === true) return true;
  if (value === 'off' || value === false) return false;
  throw new ConfigError(path, `expected on or off, got ${show(value)}`);
}

function boolean(value: unknown, path: string): boolean {
  if (typeof value === 'boolean') return value;
  throw new ConfigError(path, `expected true or false, got ${show(value)}`);
}

/** 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) and localhost. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

/**
 * `listen.client-output-buffer-limit`: `{normal, pubsub}`, each `{hard, soft, soft-seconds}` as in Redis's
 * `client-output-buffer-limit <class> <hard> <soft> <soft-seconds>` (0 = no limit).
 */
function outputBufferLimits(value: unknown, path: string): ListenConfig['clientOutputBufferLimit'] {
  const defaults = DEFAULTS.listen['client-output-buffer-limit'];
  const r = reader(value, path, defaults);
  const one = (cls: keyof typeof defaults): Parse<OutputBufferLimit> => (v, p) => {
    const c = reader(v, p, defaults[cls]);
    return { hard: c('hard', size(0)), soft: c('soft', size(0)), softMs: c('soft-seconds', duration(0)) };
  };
  return { normal: r('normal', one('normal')), pubsub: r('pubsub', one('pubsub')) };
}

/** A list of strings, each checked by `item`. */
function stringList(item: (s: string) => boolean): Parse<string[]> {
  return (value, path) => {
    if (!Array.isArray(value)) throw new ConfigError(path, `expected a list of strings, got ${typeOf(value)}`);
    return value.map((v, i) => {
      if (typeof v !== 'string' || !item(v)) throw new ConfigError(`${path}.${i}`, `not allowed here: ${show(v)}`);
      return v.toLowerCase();
    });
  };
}

/** `web.allowed-hosts` entries: a host name or IP as a browser sends it in Host (no port), or `*` for any. */
function hostPattern(s: string): boolean {
  return s === '*' || /^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)$/i.test(s);
}

/** `web.allowed-origins` entries: `scheme://host[:port]` exactly as browsers send Origin, or `*` for any. */
function originPattern(s: string): boolean {
  return s === '*' || /^https?:\/\/(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:\d{1,5})?$/i.test(s);
}

/** `upstream.sentinel`: null, or `{nodes: [host:port, ...], master-name, password}`. */
function sentinelConfig(value: unknown, path: string): SentinelConfig | null {
  if (value === null) return null;
  const r = reader(value, path, { nodes: null, 'master-name': null, password: null, tls: false });
  return {
    nodes: r('nodes', sentinelNodes),
    masterName: r('master-name', nonEmptyString),
    password: r('password', nullableString),
    tls: r('tls', boolean),
  };
}

/** A file path (PEM) resolved against `base` (the config file's directory); not read here. */
function filePath(base: string): Parse<string> {
  return (value, path) => resolve(base, nonEmptyString(value, path));
}

function nullableFilePath(base: string): Parse<string | null> {
  return (value, path) => (value === null ? null : filePath(base)(value, path));
}

/** `upstream.tls`: null, or `{ca, cert, key, servername, verify}` (`{}` = TLS with Node's CAs). */
function clientTls(base: string): Parse<ClientTlsConfig | null> {
  return (value, path) => {
    if (value === null) return null;
    const r = reader(value, path, { ca: null, cert: null, key: null, servername: null, verify: true });
    const tls = {
      ca: r('ca', nullableFilePath(base)),
      cert: r('cert', nullableFilePath(base)),
      key: r('key', nullableFilePath(base)),
      servername: r('servername', nullableString),
      verify: r('verify', boolean),
    };
    if ((tls.cert === null) !== (tls.key === null)) throw new ConfigError(join(path, tls.cert === null ? 'cert' : 'key'), 'cert and key go together');
    return tls;
  };
}

/** `listen.tls`: null, or `{port, cert, key, ca, verify-clients}`. */
function serverTls(base: string): Parse<ServerTlsConfig | null> {
  return (value, path) => {
    if (value === null) return null;
    const r = reader(value, path, { port: null, cert: null, key: null, ca: null, 'verify-clients': false });
    const tls = {
      port: r('port', integer(1, 65535)),
      cert: r('cert', filePath(base)),
      key: r('key', filePath(base)),
      ca: r('ca', nullableFilePath(base)),
      verifyClients: r('verify-clients', boolean),
    };
    if (tls.verifyClients && tls.ca === null) throw new ConfigError(join(path, 'ca'), 'required with verify-clients: true');
    return tls;
  };
}

export const USER_ROLES = ['replication', 'sentinel', 'admin'] as const;

/** `listen.users`: a list of `{name, password, role}`; names unique, not `default` (that is listen.password). */
function listenUsers(value: unknown, path: string): ListenUser[] {
  if (!Array.isArray(value)) throw new ConfigError(path, `expected a list of {name, password, role}, got ${typeOf(value)}`);
  const seen = new Set<string>();
  return value.map((item, i) => {
    const at = `${path}.${i}`;
    if (item === null || item === undefined) throw new ConfigError(at, 'expected a mapping {name, password, role}');
    const r = reader(item, at, { name: null, password: null, role: 'replication' });
    const name = r('name', nonEmptyString);
    if (/[\s]/.test(name)) throw new ConfigError(`${at}.name`, 'must not contain spaces');
    if (name === 'default') throw new ConfigError(`${at}.name`, 'the default user is listen.password');
    if (seen.has(name)) throw new ConfigError(`${at}.name`, `duplicate user ${name}`);
    seen.add(name);
    return { name, password: r('password', nonEmptyString), role: r('role', oneOf(USER_ROLES)) };
  });
}

/** A non-empty list of `host:port` (`[v6]:port`; port 26379 when omitted). */
function sentinelNodes(value: unknown, path: string): SentinelConfig['nodes'] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new ConfigError(path, `expected a non-empty list of host:port, got ${value === null || value === undefined ? 'nothing' : typeOf(value)}`);
  }
  return value.map((item, i) => {
    const m = typeof item === 'string' ? (/^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(item) ?? /^([^:[\]]+)(?::(\d{1,5}))?$/.exec(item)) : null;
    const port = m?.[2] === undefined ? 26379 : Number(m[2]);
    if (!m || port < 1 || port > 65535) throw new ConfigError(`${path}.${i}`, `expected host:port, got ${show(item)}`);
    return { host: m[1]!, port };
  });
}

/** `self`, `min` or `quorum:N` (N ≥ 1). */
function ackPolicy(value: unknown, path: string): AckPolicy {
  if (value === 'self' || value === 'min') return { kind: value };
  const m = typeof value === 'string' ? /^quorum:([1-9]\d{0,5})$/.exec(value) : null;
  if (m) return { kind: 'quorum', n: Number(m[1]) };
  throw new ConfigError(path, `expected self, min or quorum:N (N an integer from 1), got ${show(value)}`);
}

function integer(min: number, max: number): Parse<number> {
  return (value, path) => {
    if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max) return value;
    throw new ConfigError(path, `expected an integer in ${min}..${max}, got ${show(value)}`);
  };
}

function size(min: number): Parse<number> {
  return (value, path) => {
    const bytes = parseSize(value, path);
    if (bytes < min) throw new ConfigError(path, `must be at least ${min} bytes, got ${bytes}`);
    return bytes;
  };
}

function duration(minMs: number): Parse<number> {
  return (value, path) => {
    const ms = parseDuration(value, path);
    if (ms < minMs) throw new ConfigError(path, `must be at least ${minMs}ms, got ${ms}ms`);
    return ms;
  };
}

function oneOf<const T extends readonly string[]>(allowed: T): Parse<T[number]> {
  return (value, path) => {
    if (typeof value === 'string' && (allowed as readonly string[]).includes(value)) return value as T[number];
    throw new ConfigError(path, `expected one of ${allowed.join(', ')}; got ${show(value)}`);
  };
}

function typeOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'a mapping' : typeof value;
}

type DeepReadonly<T> = T extends object ? { readonly [K in keyof T]: DeepReadonly<T[K]> } : T;

function deepFreeze<T>(value: T): DeepReadonly<T> {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value as DeepReadonly<T>;
}
