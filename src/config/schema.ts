import { dirname, resolve } from 'node:path';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import { key, mapping, optionalSection, REQUIRED, section } from './section.js';
import type { DeepReadonly, RelayConfig } from './types.js';
import {
  ackPolicy,
  boolean,
  duration,
  filePath,
  host,
  hostPort,
  integer,
  listOf,
  matching,
  nullableFilePath,
  nullableHost,
  nullableText,
  oneOf,
  onOff,
  size,
  text,
} from './value-types.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const SLOW_CLIENT_POLICIES = ['disconnect', 'drop'] as const;
export const USER_ROLES = ['replication', 'sentinel', 'admin'] as const;

/**
 * Where relative paths (dir, TLS files) resolve during one validateConfig call: the config file's directory, else
 * the cwd. Set before each (synchronous) parse because zod passes a transform no context, and building the schema
 * per call costs about ten times the parse.
 */
let base = process.cwd();
const baseDir = () => base;

/**
 * The config schema: every key with its type (and so its unit), its default as written in YAML and what it means.
 * config/relay.yaml and the README's configuration table document these keys; tests hold them to this schema.
 */
export const relaySchema = section(
  {
    upstream: section(
      {
        host: key(nullableHost(), null, 'master host or IP; null = no master yet, wait for REPLICAOF'),
        port: key(integer(1, 65535), 6379, 'master port'),
        user: key(nullableText(), null, 'ACL user for AUTH, like Redis masteruser; null = password-only AUTH'),
        password: key(nullableText(), null, 'AUTH password, like Redis masterauth; null = no AUTH'),
        timeout: key(duration(1), 60, 'a link with no data for this long is dead, like Redis repl-timeout'),
        'connect-timeout': key(duration(1), 10, 'give up a TCP connect or handshake step after this long'),
        'backoff-min': key(duration(0), '100ms', 'first reconnect delay; doubles per failure, with jitter'),
        'backoff-max': key(duration(1), '1s', 'cap on the reconnect delay (a Redis replica retries every second)'),
        sentinel: optionalSection(
          {
            nodes: key(
              listOf(hostPort(26379), 'host:port').min(1, { error: 'must be a non-empty list of host:port' }),
              REQUIRED,
              'the Sentinels, asked in turn; port 26379 when omitted',
            ),
            'master-name': key(text(), REQUIRED, "the name in the Sentinels' `sentinel monitor <name> ...`"),
            password: key(nullableText(), null, "AUTH password for the Sentinels (their requirepass); null = none"),
            tls: key(boolean(), false, "connect to the Sentinels over TLS, with upstream.tls's ca, cert and key"),
          },
          'Sentinel mode: ask these Sentinels for the master instead of using host/port, and follow their failovers; null = off',
        ),
        'snapshot-source': optionalSection(
          {
            host: key(host(), REQUIRED, 'host or IP of a replica of the same master'),
            port: key(integer(1, 65535), 6379, 'its port'),
            user: key(nullableText(), null, 'ACL user for AUTH there; null = password-only AUTH'),
            password: key(nullableText(), null, 'AUTH password there; null = no AUTH'),
            tls: key(boolean(), false, "connect over TLS, with upstream.tls's ca, cert and key"),
          },
          'a replica of the same master to fetch fresh snapshots from, so the master never forks for the relay after its first sync; null = fetch from the master',
        ),
        tls: optionalSection(
          {
            ca: key(nullableFilePath(baseDir), null, "CA bundle to verify the master with, like tls-ca-cert-file; null = Node's default CAs"),
            cert: key(nullableFilePath(baseDir), null, 'client certificate, for a master with tls-auth-clients yes (with key)'),
            key: key(nullableFilePath(baseDir), null, 'its private key, like tls-key-file'),
            servername: key(nullableText(), null, "SNI and the name the master's certificate must match (Sentinels and the snapshot source are checked against their own address); null = the master's address"),
            verify: key(boolean(), true, "check the master's certificate (chain and name); false = encrypt only"),
          },
          'TLS to the master, like a Redis replica with tls-replication yes; null = plain TCP; paths relative to the config file',
          (tls, report) => {
            if ((tls.cert === null) !== (tls.key === null)) report(tls.cert === null ? 'cert' : 'key', 'cert and key go together');
          },
        ),
        compression: key(onOff(), 'on', 'when the upstream is another psync-relay, ask it to compress the RDB and the stream (a redis-server or Valkey upstream ignores the request)'),
        'compression-level': key(integer(1, 9), 1, 'zlib level 1-9 the upstream relay compresses at: 1 = fastest, 9 = smallest'),
      },
      'The master the relay replicates from (the relay is its replica)',
      (upstream, report) => {
        if (upstream.snapshotSource?.tls && upstream.tls === null) {
          report('snapshot-source.tls', 'needs upstream.tls (its ca, cert and key are used for the snapshot source)');
        }
        if (upstream.sentinel?.tls && upstream.tls === null) {
          report('sentinel.tls', 'needs upstream.tls (its ca, cert and key are used for the Sentinels)');
        }
        if (upstream.backoffMaxMs < upstream.backoffMinMs) report('backoff-max', 'must not be less than upstream.backoff-min');
      },
    ),

    listen: section(
      {
        bind: key(text(), '127.0.0.1', 'address to listen on, like Redis bind'),
        port: key(integer(0, 65535), 6380, 'port to listen on, like Redis port; 0 = no plain TCP listener (needs tls)'),
        password: key(nullableText(), null, 'password clients must AUTH with, like Redis requirepass (user `default`, an admin)'),
        'max-clients': key(integer(1, 1_000_000), 10000, 'most connected clients, like Redis maxclients'),
        'tcp-backlog': key(integer(1, 65535), 4096, 'queue of connections the kernel completed and the relay has not accepted yet, like Redis tcp-backlog (capped by net.core.somaxconn)'),
        'max-bulk-len': key(size(1), '512mb', 'largest bulk string a client may send, like Redis proto-max-bulk-len'),
        'max-query-buffer': key(size(1), '1gb', 'most unparsed input per client, like Redis client-query-buffer-limit'),
        'handshake-timeout': key(duration(0), '10s', 'close a connection that sent no whole command (or has not authenticated, with auth on) this long; 0 = off'),
        'announce-ip': key(nullableText(), null, 'IP the relay tells its upstream master (REPLCONF ip-address), like Redis replica-announce-ip'),
        users: key(
          listOf(
            mapping(
              {
                name: key(text(), REQUIRED, 'the user name in AUTH <name> <password>'),
                password: key(text(), REQUIRED, 'its password'),
                role: key(oneOf(USER_ROLES), 'replication', 'replication (what replicas send), sentinel (what Sentinel sends) or admin'),
              },
              (user, report) => {
                if (/\s/.test(user.name)) report('name', 'must not contain spaces');
                else if (user.name === 'default') report('name', 'the default user is listen.password');
              },
              'a mapping {name, password, role}',
            ),
            '{name, password, role}',
          ).superRefine((users, ctx) => {
            const seen = new Set<string>();
            users.forEach(({ name }, i) => {
              if (seen.has(name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], input: name, message: `duplicate user ${name}` });
              seen.add(name);
            });
          }),
          [],
          'named users (AUTH <name> <password>); with any set, every client must AUTH',
        ),
        tls: optionalSection(
          {
            port: key(integer(1, 65535), REQUIRED, 'the TLS port, like tls-port'),
            cert: key(filePath(baseDir), REQUIRED, 'server certificate (PEM), like tls-cert-file'),
            key: key(filePath(baseDir), REQUIRED, 'its private key, like tls-key-file'),
            ca: key(nullableFilePath(baseDir), null, 'CA bundle client certificates must chain to, like tls-ca-cert-file'),
            'verify-clients': key(boolean(), false, 'require a client certificate signed by ca, like tls-auth-clients yes'),
          },
          'a TLS listener beside the plain one, like Redis tls-port; null = none',
          (tls, report) => {
            if (tls.verifyClients && tls.ca === null) report('ca', 'required with verify-clients: true');
          },
        ),
        'protected-mode': key(boolean(), true, 'like Redis protected-mode: with no password and no users, only 127.0.0.1 and ::1 may connect'),
        'max-clients-memory': key(size(0), '256mb', "most bytes all clients' buffers may hold together, like Redis maxmemory-clients; 0 = no cap"),
        'max-multi-commands': key(integer(1, 1_000_000), 1000, 'most commands one MULTI may queue; past it EXEC answers EXECABORT'),
        'client-output-buffer-limit': section(
          {
            normal: section(outputBufferLimit(0, 0, 0), 'clients without subscriptions (Redis: 0 0 0)'),
            pubsub: section(outputBufferLimit('32mb', '8mb', 60), 'subscribers (Redis: 32mb 8mb 60)'),
          },
          'like Redis client-output-buffer-limit <class> <hard> <soft> <soft-seconds>; 0 = no limit',
        ),
      },
      'The RESP server replicas connect to (the relay is their master)',
      (listen, report) => {
        if (listen.port === 0 && listen.tls === null) report('port', '0 (no plain listener) needs listen.tls');
        if (listen.tls !== null && listen.tls.port === listen.port) report('tls.port', 'must differ from listen.port');
      },
    ),

    log: section(
      {
        memory: key(size(16 * 1024), '64mb', 'in-memory tail of the log, like Redis repl-backlog-size (at least 16kb)'),
        'memory-prefault': key(boolean(), true, 'at start, before listening, allocate the memory tail (log.memory, its first 256mb at most) and write its pages'),
        disk: key(size(0), '1gb', 'segment files in <dir>/log behind the memory tail; 0 = memory only'),
        'disk-queue': key(size(1024 * 1024), '128mb', 'most stream bytes held in memory that the disk has not taken yet; past it the disk history is dropped'),
        'disk-direct': key(boolean(), true, 'write the disk log with O_DIRECT, past the page cache (falls back where the filesystem refuses it)'),
        'refresh-hold': key(size(0), '256mb', 'while a fresh snapshot is fetched, how far past its limit the log may grow; past it the fetch is abandoned'),
      },
      'The replication log that replicas resume from with PSYNC',
    ),

    replication: section(
      {
        'replica-max-lag': key(size(1), '256mb', 'disconnect a replica this far behind the log head'),
        'replica-timeout': key(duration(1), 60, 'disconnect a replica silent (no REPLCONF ACK), or reading none of its snapshot, this long'),
        'ahead-wait': key(duration(0), '5s', 'hold a replica asking for an offset the relay has not received yet this long; 0 = full sync at once'),
        'replica-soft-lag': key(size(0), '64mb', 'disconnect a replica further behind than this for replica-soft-seconds in a row; 0 = off'),
        'replica-soft-seconds': key(duration(0), 60, 'how long a replica may stay past replica-soft-lag'),
        'ack-policy': key(ackPolicy(), 'self', 'what the relay ACKs upstream: self, min (every online replica) or quorum:N (N of them)'),
        'snapshot-refresh-min-interval': key(duration(0), '60s', 'at most one snapshot fetch from upstream (a fork on the master) per interval; an RDB-only SYNC (redis-cli --rdb) waiting for one may wait this long'),
        'full-sync-concurrency': key(integer(0, 100000), 0, 'at most this many replicas receive a snapshot at once, the others wait in arrival order; 0 = no limit'),
        'full-sync-rate': key(size(0), 0, 'bytes per second per snapshot transfer; 0 = no limit'),
        'full-sync-memory': key(size(0), '256mb', 'with no room on the disk for a fresh snapshot, fetch it into memory when its RDB is no larger than this and serve waiting replicas from there; 0 = off'),
        compression: key(onOff(), 'on', 'compress for downstream psync-relays that ask (their upstream.compression); off = always plain'),
      },
      'Downstream replicas',
    ),

    history: section(
      {
        'keep-snapshots': key(integer(1, 1000), 3, 'snapshots of the current history kept on disk (the newest ones); older points in time start from them'),
        'snapshot-interval': key(duration(0), '30m', 'take a fresh snapshot this often (from upstream.snapshot-source when set, else the master: a fork there); 0 = only when a replica needs one'),
        'pitr-idle-timeout': key(duration(1000), '10m', 'a point-in-time listener with no replica connected this long is closed'),
        'pitr-max-listeners': key(integer(0, 1000), 4, 'point-in-time listeners open at once; 0 = RELAY PITR off'),
      },
      'Point-in-time replicas: the snapshots and stream times kept to serve them',
    ),

    web: section(
      {
        bind: key(text(), '127.0.0.1', 'address to listen on'),
        port: key(integer(0, 65535), 8080, 'port to listen on; 0 = web server off'),
        token: key(nullableText(), null, 'bearer token for /status, /metrics, /stream, /history and /pitr; null = no auth'),
        'allow-insecure': key(boolean(), false, 'allow a non-loopback bind without a token'),
        'max-buffered': key(size(1024), '16mb', 'most bytes a /stream subscriber may have queued before slow-client applies'),
        'slow-client': key(oneOf(SLOW_CLIENT_POLICIES), 'disconnect', 'past max-buffered: disconnect (close code 4008) or drop (messages dropped, counted)'),
        'max-buffered-total': key(size(0), '256mb', "most bytes all /stream subscribers' queues may hold together; past it the one holding the most is closed (4008); 0 = no cap"),
        'max-subscribers': key(integer(1, 100_000), 100, 'most /stream subscribers at once; more get 503'),
        'allowed-hosts': key(
          listOf(matching(/^(\*|\[[0-9a-f:.]+\]|[a-z0-9.-]+)$/i, 'a host name or IP as sent in Host (no port), or *'), 'host names'),
          [],
          "Host names requests may carry besides IP addresses, localhost and this machine's name; * = any",
        ),
        'allowed-origins': key(
          listOf(matching(/^(\*|https?:\/\/(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:\d{1,5})?)$/i, 'scheme://host[:port] as sent in Origin, or *'), 'origins'),
          [],
          "origins allowed besides the relay's own page; * = any",
        ),
      },
      'HTTP status, metrics and dashboard',
      (web, report) => {
        if (web.port !== 0 && web.token === null && !web.allowInsecure && !isLoopback(web.bind)) {
          report('token', `required when web.bind (${web.bind}) is not a loopback address; set a token or web.allow-insecure: true`);
        }
      },
    ),

    logging: section({ level: key(oneOf(LOG_LEVELS), 'info', 'pino log level') }, 'Logging'),

    dir: key(filePath(baseDir), './data', 'data directory (snapshot, state, log segments), relative to the config file'),

    'shutdown-timeout': key(duration(0), 10, 'on SIGTERM/SIGINT, how long online replicas get to acknowledge the stream, like Redis shutdown-timeout'),
  },
  'psync-relay configuration',
);

/** One class of `listen.client-output-buffer-limit`. */
function outputBufferLimit(hard: number | string, soft: number | string, softSeconds: number) {
  return {
    hard: key(size(0), hard, 'unsent reply bytes that close the client at once; 0 = no limit'),
    soft: key(size(0), soft, 'unsent reply bytes a client may hold for soft-seconds; 0 = no limit'),
    'soft-seconds': key(duration(0), softSeconds, 'how long a client may stay past soft'),
  };
}

/** 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) and localhost. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

/**
 * Validates a parsed config file (or `{}`), fills in defaults and returns a deep-frozen RelayConfig.
 * `configFile` is the file `raw` came from; relative paths resolve against its directory (cwd when null).
 * Throws ConfigError whose `path` is the dotted YAML key (`listen.port`); `''` for the document itself.
 */
export function validateConfig(raw: unknown, configFile: string | null): RelayConfig {
  const file = configFile === null ? null : resolve(configFile);
  base = file === null ? process.cwd() : dirname(file);
  const result = relaySchema.schema.safeParse(raw);
  if (!result.success) throw configError(result.error.issues);
  return deepFreeze({ ...result.data, configFile: file });
}

/** The first problem as a ConfigError; an unknown key first, as it is often the cause of the rest (a typo). */
function configError(issues: readonly z.core.$ZodIssue[]): ConfigError {
  const issue = issues.find((i) => i.code === 'unrecognized_keys') ?? issues[0]!;
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    const [first, ...more] = issue.keys;
    return new ConfigError([...path, first].join('.'), more.length === 0 ? 'unknown key' : `unknown key (also unknown: ${more.join(', ')})`);
  }
  return new ConfigError(path.join('.'), issue.message);
}

function deepFreeze<T>(value: T): DeepReadonly<T> {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value as DeepReadonly<T>;
}
