import { resolve } from 'node:path';
import t from 'tap';
import { HELP_TEXT, loadConfig, loadConfigFile } from '../../src/config/load.js';
import { validateConfig } from '../../src/config/schema.js';
import type { RelayConfig } from '../../src/config/types.js';
import { durationToMs, sizeToBytes } from '../../src/config/units.js';
import { configError } from '../helpers/config-error.js';

const EXPECTED_DEFAULTS: RelayConfig = {
  upstream: {
    host: null,
    port: 6379,
    user: null,
    password: null,
    timeoutMs: 60_000,
    connectTimeoutMs: 10_000,
    backoffMinMs: 100,
    backoffMaxMs: 1000,
    sentinel: null,
    compression: true,
    compressionLevel: 1,
    snapshotSource: null,
    tls: null,
  },
  listen: {
    bind: '127.0.0.1',
    port: 6380,
    password: null,
    users: [],
    tls: null,
    maxClients: 10000,
    tcpBacklog: 4096,
    maxBulkLen: 512 * 1024 ** 2,
    maxQueryBuffer: 1024 ** 3,
    handshakeTimeoutMs: 10_000,
    announceIp: null,
    protectedMode: true,
    maxClientsMemory: 256 * 1024 ** 2,
    maxMultiCommands: 1000,
    clientOutputBufferLimit: {
      normal: { hard: 0, soft: 0, softMs: 0 },
      pubsub: { hard: 32 * 1024 ** 2, soft: 8 * 1024 ** 2, softMs: 60_000 },
    },
  },
  log: { memory: 64 * 1024 ** 2, memoryPrefault: true, disk: 1024 ** 3, diskQueue: 128 * 1024 ** 2, diskDirect: true, refreshHold: 256 * 1024 ** 2 },
  replication: {
    replicaMaxLag: 256 * 1024 ** 2,
    replicaTimeoutMs: 60_000,
    aheadWaitMs: 5000,
    replicaSoftLag: 64 * 1024 ** 2,
    replicaSoftMs: 60_000,
    ackPolicy: { kind: 'self' },
    snapshotRefreshMinIntervalMs: 60_000,
    fullSyncConcurrency: 0,
    fullSyncRate: 0,
    fullSyncMemory: 256 * 1024 ** 2,
    compression: true,
  },
  history: { keepSnapshots: 3, snapshotIntervalMs: 1_800_000, pitrIdleTimeoutMs: 600_000, pitrMaxListeners: 4 },
  web: {
    bind: '127.0.0.1',
    port: 8080,
    token: null,
    allowInsecure: false,
    maxBuffered: 16 * 1024 ** 2,
    slowClient: 'disconnect',
    maxBufferedTotal: 256 * 1024 ** 2,
    maxSubscribers: 100,
    allowedHosts: [],
    allowedOrigins: [],
  },
  logging: { level: 'info' },
  dir: resolve(process.cwd(), 'data'),
  shutdownTimeoutMs: 10_000,
  configFile: null,
};

t.test('empty config yields the defaults, deep-frozen', async (t) => {
  const config = validateConfig({}, null);
  t.strictSame(config, EXPECTED_DEFAULTS);
  t.ok(Object.isFrozen(config) && Object.isFrozen(config.upstream) && Object.isFrozen(config.listen));
  t.strictSame(validateConfig(null, null), EXPECTED_DEFAULTS, 'an empty YAML document is {}');
  t.strictSame(validateConfig({ upstream: null }, null), EXPECTED_DEFAULTS, 'an empty section takes defaults');
});

t.test('each invalid key is a ConfigError naming its path', async (t) => {
  const cases: Array<[unknown, string]> = [
    [[], ''],
    ['text', ''],
    [{ bogus: 1 }, 'bogus'],
    [{ listen: { prot: 1 } }, 'listen.prot'],
    [{ listen: 5 }, 'listen'],
    [{ listen: [] }, 'listen'],
    [{ listen: { port: 0 } }, 'listen.port'],
    [{ listen: { port: 65536 } }, 'listen.port'],
    [{ listen: { port: '6380' } }, 'listen.port'],
    [{ listen: { port: null } }, 'listen.port'],
    [{ listen: { bind: '' } }, 'listen.bind'],
    [{ listen: { password: '' } }, 'listen.password'],
    [{ listen: { 'max-clients': 0 } }, 'listen.max-clients'],
    [{ listen: { 'max-bulk-len': '5xb' } }, 'listen.max-bulk-len'],
    [{ listen: { 'max-query-buffer': -1 } }, 'listen.max-query-buffer'],
    [{ listen: { 'announce-ip': 127 } }, 'listen.announce-ip'],
    [{ upstream: { host: 5 } }, 'upstream.host'],
    [{ upstream: { port: 1.5 } }, 'upstream.port'],
    [{ upstream: { port: 0 } }, 'upstream.port'],
    [{ upstream: { user: true } }, 'upstream.user'],
    [{ upstream: { password: { a: 1 } } }, 'upstream.password'],
    [{ upstream: { timeout: '5x' } }, 'upstream.timeout'],
    [{ upstream: { timeout: 0 } }, 'upstream.timeout'],
    [{ upstream: { 'connect-timeout': -1 } }, 'upstream.connect-timeout'],
    [{ upstream: { 'backoff-min': '10s', 'backoff-max': '1s' } }, 'upstream.backoff-max'],
    [{ log: { memory: '1kb' } }, 'log.memory'],
    [{ log: { size: '1mb' } }, 'log.size'],
    [{ replication: { 'replica-max-lag': 'lots' } }, 'replication.replica-max-lag'],
    [{ replication: { 'replica-timeout': 0 } }, 'replication.replica-timeout'],
    [{ replication: { 'ahead-wait': '-1s' } }, 'replication.ahead-wait'],
    [{ replication: { 'replica-soft-lag': -1 } }, 'replication.replica-soft-lag'],
    [{ replication: { 'replica-soft-seconds': '-1s' } }, 'replication.replica-soft-seconds'],
    [{ replication: { 'ack-policy': 'all' } }, 'replication.ack-policy'],
    [{ replication: { 'ack-policy': 'quorum:0' } }, 'replication.ack-policy'],
    [{ replication: { 'ack-policy': 'quorum:' } }, 'replication.ack-policy'],
    [{ replication: { 'ack-policy': 'quorum:1.5' } }, 'replication.ack-policy'],
    [{ replication: { 'ack-policy': 1 } }, 'replication.ack-policy'],
    [{ listen: { 'handshake-timeout': 'soon' } }, 'listen.handshake-timeout'],
    [{ 'shutdown-timeout': -1 }, 'shutdown-timeout'],
    [{ listen: { port: -1 } }, 'listen.port'],
    [{ listen: { users: 'repl' } }, 'listen.users'],
    [{ listen: { users: [null] } }, 'listen.users.0'],
    [{ listen: { users: [{ password: 'p' }] } }, 'listen.users.0.name'],
    [{ listen: { users: [{ name: 'a b', password: 'p' }] } }, 'listen.users.0.name'],
    [{ listen: { users: [{ name: 'default', password: 'p' }] } }, 'listen.users.0.name'],
    [{ listen: { users: [{ name: 'r', password: 'p' }, { name: 'r', password: 'q' }] } }, 'listen.users.1.name'],
    [{ listen: { users: [{ name: 'r' }] } }, 'listen.users.0.password'],
    [{ listen: { users: [{ name: 'r', password: 'p', role: 'root' }] } }, 'listen.users.0.role'],
    [{ listen: { users: [{ name: 'r', password: 'p', acl: '+@all' }] } }, 'listen.users.0.acl'],
    [{ listen: { tls: 'on' } }, 'listen.tls'],
    [{ listen: { tls: { cert: 'c', key: 'k' } } }, 'listen.tls.port'],
    [{ listen: { tls: { port: 6381, key: 'k' } } }, 'listen.tls.cert'],
    [{ listen: { tls: { port: 6381, cert: 'c' } } }, 'listen.tls.key'],
    [{ listen: { tls: { port: 6380, cert: 'c', key: 'k' } } }, 'listen.tls.port'],
    [{ listen: { tls: { port: 6381, cert: 'c', key: 'k', 'verify-clients': true } } }, 'listen.tls.ca'],
    [{ listen: { tls: { port: 6381, cert: 'c', key: 'k', 'verify-clients': 'yes' } } }, 'listen.tls.verify-clients'],
    [{ upstream: { tls: true } }, 'upstream.tls'],
    [{ upstream: { tls: { cert: 'c' } } }, 'upstream.tls.key'],
    [{ upstream: { tls: { key: 'k' } } }, 'upstream.tls.cert'],
    [{ upstream: { tls: { verify: 'no' } } }, 'upstream.tls.verify'],
    [{ upstream: { tls: { ca: '' } } }, 'upstream.tls.ca'],
    [{ upstream: { tls: { sni: 'x' } } }, 'upstream.tls.sni'],
    [{ upstream: { sentinel: { nodes: ['h:1'], 'master-name': 'm', tls: true } } }, 'upstream.sentinel.tls'],
    [{ upstream: { sentinel: 'x' } }, 'upstream.sentinel'],
    [{ upstream: { sentinel: { 'master-name': 'm' } } }, 'upstream.sentinel.nodes'],
    [{ upstream: { sentinel: { nodes: [], 'master-name': 'm' } } }, 'upstream.sentinel.nodes'],
    [{ upstream: { sentinel: { nodes: 'h:1', 'master-name': 'm' } } }, 'upstream.sentinel.nodes'],
    [{ upstream: { sentinel: { nodes: ['h:1', 'h:0'], 'master-name': 'm' } } }, 'upstream.sentinel.nodes.1'],
    [{ upstream: { sentinel: { nodes: ['h:1', 5], 'master-name': 'm' } } }, 'upstream.sentinel.nodes.1'],
    [{ upstream: { sentinel: { nodes: ['::1:26379'], 'master-name': 'm' } } }, 'upstream.sentinel.nodes.0'],
    [{ upstream: { sentinel: { nodes: ['h:1'] } } }, 'upstream.sentinel.master-name'],
    [{ upstream: { sentinel: { nodes: ['h:1'], 'master-name': '' } } }, 'upstream.sentinel.master-name'],
    [{ upstream: { sentinel: { nodes: ['h:1'], 'master-name': 'm', password: '' } } }, 'upstream.sentinel.password'],
    [{ upstream: { sentinel: { nodes: ['h:1'], 'master-name': 'm', quorum: 2 } } }, 'upstream.sentinel.quorum'],
    [{ web: { port: -1 } }, 'web.port'],
    [{ web: { port: 65536 } }, 'web.port'],
    [{ web: { token: '' } }, 'web.token'],
    [{ web: { 'allow-insecure': 'yes' } }, 'web.allow-insecure'],
    [{ web: { 'max-buffered': 'lots' } }, 'web.max-buffered'],
    [{ web: { 'max-buffered': 100 } }, 'web.max-buffered'],
    [{ web: { 'slow-client': 'block' } }, 'web.slow-client'],
    [{ web: { bind: '0.0.0.0' } }, 'web.token'],
    [{ web: { bind: '::' } }, 'web.token'],
    [{ web: { bind: '10.1.2.3' } }, 'web.token'],
    [{ listen: { 'protected-mode': 'no' } }, 'listen.protected-mode'],
    [{ listen: { 'max-clients-memory': 'lots' } }, 'listen.max-clients-memory'],
    [{ listen: { 'max-multi-commands': 0 } }, 'listen.max-multi-commands'],
    [{ listen: { 'client-output-buffer-limit': 'pubsub 32mb 8mb 60' } }, 'listen.client-output-buffer-limit'],
    [{ listen: { 'client-output-buffer-limit': { replica: {} } } }, 'listen.client-output-buffer-limit.replica'],
    [{ listen: { 'client-output-buffer-limit': { pubsub: { hard: 'x' } } } }, 'listen.client-output-buffer-limit.pubsub.hard'],
    [{ listen: { 'client-output-buffer-limit': { normal: { 'soft-seconds': -1 } } } }, 'listen.client-output-buffer-limit.normal.soft-seconds'],
    [{ web: { 'max-subscribers': 0 } }, 'web.max-subscribers'],
    [{ web: { 'allowed-hosts': 'example.com' } }, 'web.allowed-hosts'],
    [{ web: { 'allowed-hosts': ['example.com:8080'] } }, 'web.allowed-hosts.0'],
    [{ web: { 'allowed-hosts': ['evil\r\nx'] } }, 'web.allowed-hosts.0'],
    [{ web: { 'allowed-origins': ['example.com'] } }, 'web.allowed-origins.0'],
    [{ web: { 'allowed-origins': ['https://example.com/'] } }, 'web.allowed-origins.0'],
    [{ logging: { level: 'verbose' } }, 'logging.level'],
    [{ logging: { level: 'INFO' } }, 'logging.level'],
    [{ dir: 5 }, 'dir'],
    [{ dir: '' }, 'dir'],
  ];
  for (const [raw, path] of cases) {
    t.equal(configError(t, () => validateConfig(raw, null))?.path, path, JSON.stringify(raw));
  }
});

t.test('an error names the key and says what it must be, never echoing a secret', async (t) => {
  const message = (raw: unknown) => configError(t, () => validateConfig(raw, null))?.message;
  t.equal(message({ listen: { port: 70000 } }), 'listen.port: must be an integer 0..65535, got number 70000');
  t.equal(message({ listen: { port: '6380' } }), 'listen.port: must be an integer 0..65535, got "6380"');
  t.equal(message({ listen: { prot: 6380 } }), 'listen.prot: unknown key');
  t.equal(message({ web: { tokn: 'x', prot: 1 } }), 'web.tokn: unknown key (also unknown: prot)');
  t.equal(message({ listen: { prot: 1, port: 'x' } }), 'listen.prot: unknown key', 'an unknown key first: a typo is often the cause');
  t.equal(message({ log: { memory: '1kb' } }), 'log.memory: must be at least 16384 bytes, got 1024');
  t.equal(message({ log: { memory: '1tb' } }), 'log.memory: must be a size: bytes (a non-negative integer) or a string like 64mb, 1gb, 500k; got "1tb"');
  t.equal(message({ upstream: { timeout: '5x' } }), 'upstream.timeout: must be a duration: seconds (a number) or a string like 500ms, 10s, 5m, 1h; got "5x"');
  t.equal(message({ logging: { level: 'loud' } }), 'logging.level: must be one of fatal, error, warn, info, debug, trace, silent; got "loud"');
  t.equal(message({ listen: { port: 0 } }), 'listen.port: 0 (no plain listener) needs listen.tls');
  t.equal(message({ listen: { tls: { cert: 'c', key: 'k' } } }), 'listen.tls.port: must be an integer 1..65535, got nothing');
  t.equal(message({ listen: 5 }), 'listen: must be a mapping, got number 5');
  t.equal(message({ listen: { password: 123456 } }), 'listen.password: must be a non-empty string or null, got number');
  t.equal(message({ web: { token: ['s3cret'] } }), 'web.token: must be a non-empty string or null, got a list');
  t.equal(configError(t, () => loadConfig(['--port', '70000']))?.message, '--port: must be an integer 0..65535, got number 70000', 'a flag names the flag');
});

t.test('limits, ack policy and shutdown timeout', async (t) => {
  const c = validateConfig(
    {
      listen: { 'handshake-timeout': 0 },
      replication: { 'replica-soft-lag': 0, 'replica-soft-seconds': '500ms', 'ack-policy': 'quorum:2' },
      'shutdown-timeout': '2s',
    },
    null,
  );
  t.equal(c.listen.handshakeTimeoutMs, 0, 'handshake timeout off');
  t.equal(c.replication.replicaSoftLag, 0, 'soft limit off');
  t.equal(c.replication.replicaSoftMs, 500);
  t.strictSame(c.replication.ackPolicy, { kind: 'quorum', n: 2 });
  t.strictSame(validateConfig({ replication: { 'ack-policy': 'min' } }, null).replication.ackPolicy, { kind: 'min' });
  t.equal(c.shutdownTimeoutMs, 2000);
});

t.test('listen.users, listen.tls and upstream.tls', async (t) => {
  const c = validateConfig(
    {
      listen: {
        port: 0,
        password: 'adm',
        users: [{ name: 'repl', password: 'pw' }, { name: 'ops', password: 'op', role: 'admin' }],
        tls: { port: 6381, cert: 'tls/relay.crt', key: '/etc/tls/relay.key', ca: 'tls/ca.crt', 'verify-clients': true },
      },
      upstream: { tls: { ca: 'tls/ca.crt', cert: 'tls/client.crt', key: 'tls/client.key', servername: 'redis.local' } },
    },
    '/etc/relay/relay.yaml',
  );
  t.strictSame(c.listen.users, [
    { name: 'repl', password: 'pw', role: 'replication' },
    { name: 'ops', password: 'op', role: 'admin' },
  ], 'role defaults to replication');
  t.strictSame(c.listen.tls, { port: 6381, cert: '/etc/relay/tls/relay.crt', key: '/etc/tls/relay.key', ca: '/etc/relay/tls/ca.crt', verifyClients: true }, 'paths resolve against the config file');
  t.equal(c.listen.port, 0, 'no plain listener');
  t.strictSame(c.upstream.tls, { ca: '/etc/relay/tls/ca.crt', cert: '/etc/relay/tls/client.crt', key: '/etc/relay/tls/client.key', servername: 'redis.local', verify: true });
  t.strictSame(validateConfig({ upstream: { tls: {} } }, null).upstream.tls, { ca: null, cert: null, key: null, servername: null, verify: true }, '{} = TLS with the default CAs');
  t.equal(validateConfig({ listen: { tls: { port: 1, cert: 'c', key: 'k' } } }, null).listen.tls?.verifyClients, false);
  const s = validateConfig({ upstream: { tls: { verify: false }, sentinel: { nodes: ['h'], 'master-name': 'm', tls: true } } }, null).upstream;
  t.equal(s.sentinel?.tls, true);
  t.equal(s.tls?.verify, false);
});

t.test('security keys: protected mode, client memory, output buffer limits, web allow-lists, roles', async (t) => {
  const c = validateConfig(
    {
      listen: {
        'protected-mode': false,
        'max-clients-memory': 0,
        'max-multi-commands': 5,
        'client-output-buffer-limit': { pubsub: { hard: '1mb', 'soft-seconds': '500ms' } },
        users: [{ name: 's', password: 'p', role: 'sentinel' }],
      },
      web: { 'max-subscribers': 3, 'allowed-hosts': ['Relay.Example.com', '*'], 'allowed-origins': ['https://Ops.example.com:8443'] },
    },
    null,
  );
  t.equal(c.listen.protectedMode, false);
  t.equal(c.listen.maxClientsMemory, 0, '0 = no cap');
  t.equal(c.listen.maxMultiCommands, 5);
  t.strictSame(c.listen.clientOutputBufferLimit, {
    normal: { hard: 0, soft: 0, softMs: 0 },
    pubsub: { hard: 1024 * 1024, soft: 8 * 1024 * 1024, softMs: 500 },
  }, 'a class given in part takes the rest from its defaults');
  t.equal(c.listen.users[0]?.role, 'sentinel');
  t.equal(c.web.maxSubscribers, 3);
  t.strictSame(c.web.allowedHosts, ['relay.example.com', '*'], 'lower-cased');
  t.strictSame(c.web.allowedOrigins, ['https://ops.example.com:8443']);
});

t.test('a non-loopback web bind needs a token or allow-insecure', async (t) => {
  t.equal(validateConfig({ web: { bind: '0.0.0.0', token: 's3cret' } }, null).web.token, 's3cret');
  t.equal(validateConfig({ web: { bind: '0.0.0.0', 'allow-insecure': true } }, null).web.allowInsecure, true);
  t.equal(validateConfig({ web: { bind: '0.0.0.0', port: 0 } }, null).web.port, 0, 'web off: nothing exposed');
  for (const bind of ['127.0.0.1', '127.9.8.7', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1']) {
    t.equal(validateConfig({ web: { bind } }, null).web.bind, bind, `${bind} is loopback`);
  }
  const c = validateConfig({ web: { 'max-buffered': '1mb', 'slow-client': 'drop' } }, null);
  t.equal(c.web.maxBuffered, 1024 * 1024);
  t.equal(c.web.slowClient, 'drop');
});

t.test('boundary values are accepted', async (t) => {
  const c = validateConfig(
    {
      listen: { port: 65535, 'announce-ip': '10.0.0.1' },
      web: { port: 0 },
      log: { memory: '16kb' },
      upstream: { host: '::1', 'backoff-min': 0, 'backoff-max': 0.001 },
      logging: { level: 'silent' },
    },
    null,
  );
  t.equal(c.listen.port, 65535);
  t.equal(c.web.port, 0);
  t.equal(c.log.memory, 16384);
  t.equal(c.upstream.backoffMaxMs, 1);
  t.equal(c.logging.level, 'silent');
});

t.test('upstream.sentinel lists the Sentinels and the master name', async (t) => {
  const c = validateConfig(
    { upstream: { sentinel: { nodes: ['10.0.0.1:26380', 's2', '[::1]:26381', '[fe80::1]'], 'master-name': 'mymaster', password: 'pw' } } },
    null,
  );
  t.strictSame(c.upstream.sentinel, {
    nodes: [
      { host: '10.0.0.1', port: 26380 },
      { host: 's2', port: 26379 },
      { host: '::1', port: 26381 },
      { host: 'fe80::1', port: 26379 },
    ],
    masterName: 'mymaster',
    password: 'pw',
    tls: false,
  });
  t.ok(Object.isFrozen(c.upstream.sentinel?.nodes[0]));
  t.equal(validateConfig({ upstream: { sentinel: { nodes: ['h'], 'master-name': 'm' } } }, null).upstream.sentinel?.password, null);
  t.equal(validateConfig({ replication: { 'ahead-wait': 0 } }, null).replication.aheadWaitMs, 0);
});

t.test('dir resolves against the config file directory, else cwd', async (t) => {
  t.equal(validateConfig({ dir: 'x' }, '/etc/relay/relay.yaml').dir, '/etc/relay/x');
  t.equal(validateConfig({ dir: '/abs' }, '/etc/relay/relay.yaml').dir, '/abs');
  t.equal(validateConfig({ dir: 'x' }, null).dir, resolve(process.cwd(), 'x'));
});

t.test('sizes are bytes or Redis memory units: 1k = 1000, 1kb = 1024', async (t) => {
  const ok: Array<[unknown, number]> = [
    [0, 0],
    [1024, 1024],
    ['1024', 1024],
    ['1b', 1],
    ['1k', 1000],
    ['1kb', 1024],
    ['1K', 1000],
    ['1KB', 1024],
    ['1m', 1_000_000],
    ['1mb', 1_048_576],
    ['2Mb', 2_097_152],
    ['1g', 1_000_000_000],
    ['1gb', 1_073_741_824],
  ];
  for (const [input, bytes] of ok) t.equal(sizeToBytes(input), bytes, JSON.stringify(input));
  for (const bad of [-1, 1.5, NaN, Infinity, '', '1 kb', '1.5mb', '1t', '1kib', 'mb', '-1', ' 1', null, true, {}, '9999999999gb']) {
    t.equal(sizeToBytes(bad), undefined, String(bad));
    t.equal(configError(t, () => validateConfig({ log: { disk: bad } }, null))?.path, 'log.disk', `log.disk: ${String(bad)}`);
  }
});

t.test('durations are seconds or a string with ms, s, m or h', async (t) => {
  const ok: Array<[unknown, number]> = [
    [0, 0],
    [60, 60_000],
    [0.5, 500],
    [0.001, 1],
    ['500ms', 500],
    ['10s', 10_000],
    ['1.5s', 1500],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['1H', 3_600_000],
    ['30', 30_000],
  ];
  for (const [input, ms] of ok) t.equal(durationToMs(input), ms, JSON.stringify(input));
  for (const bad of [-1, NaN, Infinity, '', '10 s', '1d', 's', '-5s', null, [], '1e3s']) {
    t.equal(durationToMs(bad), undefined, String(bad));
    t.equal(configError(t, () => validateConfig({ 'shutdown-timeout': bad }, null))?.path, 'shutdown-timeout', `shutdown-timeout: ${String(bad)}`);
  }
});

t.test('flags override the file, which overrides the defaults', async (t) => {
  const dir = t.testdir({
    'relay.yaml': 'listen:\n  port: 7000\n  bind: 0.0.0.0\nweb:\n  port: 9000\nlogging:\n  level: warn\ndir: state\n',
  });
  const file = resolve(dir, 'relay.yaml');

  const fromFile = loadConfig(['--config', file]).config;
  t.equal(fromFile.listen.port, 7000);
  t.equal(fromFile.listen.bind, '0.0.0.0');
  t.equal(fromFile.web.port, 9000);
  t.equal(fromFile.logging.level, 'warn');
  t.equal(fromFile.dir, resolve(dir, 'state'));
  t.equal(fromFile.configFile, file);
  t.equal(fromFile.upstream.port, 6379, 'untouched keys keep defaults');

  const { config, help } = loadConfig([
    `--config=${file}`,
    '--port',
    '7001',
    '--bind=::',
    '--web-port',
    '0',
    '--log-level',
    'debug',
    '--dir',
    '/var/lib/relay',
    '--upstream',
    'redis.local:6390',
  ]);
  t.equal(help, false);
  t.equal(config.listen.port, 7001);
  t.equal(config.listen.bind, '::');
  t.equal(config.web.port, 0);
  t.equal(config.logging.level, 'debug');
  t.equal(config.dir, '/var/lib/relay');
  t.equal(config.upstream.host, 'redis.local');
  t.equal(config.upstream.port, 6390);

  t.equal(loadConfig(['--port', '1', '--port', '2']).config.listen.port, 2, 'the last flag wins');
  t.equal(loadConfig(['--config', file, '--dir', 'here']).config.dir, resolve('here'), '--dir is relative to cwd');
  t.strictSame(loadConfig([]).config, EXPECTED_DEFAULTS, 'no flags, no file: defaults');
});

t.test('--upstream forms', async (t) => {
  const up = (v: string) => loadConfig(['--upstream', v]).config.upstream;
  t.match(up('10.0.0.1:6379'), { host: '10.0.0.1', port: 6379 });
  t.match(up('[::1]:6400'), { host: '::1', port: 6400 });
  t.match(up('[fe80::1]'), { host: 'fe80::1', port: 6379 });
  t.match(up('redis.local'), { host: 'redis.local', port: 6379 });
});

t.test('bad flags are ConfigErrors naming the flag', async (t) => {
  const cases: Array<[string[], string]> = [
    [['--nope'], '--nope'],
    [['-x'], '-x'],
    [['stray'], 'stray'],
    [['--port'], '--port'],
    [['--port', '--bind', 'x'], '--port'],
    [['--port', 'abc'], '--port'],
    [['--port', '0'], '--port'],
    [['--port=70000'], '--port'],
    [['--web-port', '-1'], '--web-port'],
    [['--web-port=-1'], '--web-port'],
    [['--log-level', 'loud'], '--log-level'],
    [['--dir='], '--dir'],
    [['--bind='], '--bind'],
    [['--config'], '--config'],
    [['--help=yes'], '--help'],
    [['--upstream', '::1:6379'], '--upstream'],
    [['--upstream', 'host:'], '--upstream'],
    [['--upstream', 'host:0'], '--upstream'],
    [['--upstream', '[::1'], '--upstream'],
  ];
  for (const [argv, path] of cases) {
    t.equal(configError(t, () => loadConfig(argv))?.path, path, argv.join(' '));
  }
});

t.test('--help skips the config file and returns defaults', async (t) => {
  const res = loadConfig(['--config', '/nonexistent/relay.yaml', '-h']);
  t.equal(res.help, true);
  t.strictSame(res.config, EXPECTED_DEFAULTS);
  t.equal(loadConfig(['--help']).help, true);
  for (const flag of ['--config', '--upstream', '--port', '--bind', '--web-port', '--dir', '--log-level', '--help']) {
    t.ok(HELP_TEXT.includes(flag), flag);
  }
});

t.test('config file errors', async (t) => {
  const dir = t.testdir({
    'syntax.yaml': 'listen:\n  port: [1, 2\n',
    'dup.yaml': 'web:\n  port: 1\n  port: 2\n',
    'key.yaml': 'listen:\n  prot: 6380\n',
    'list.yaml': '- 1\n',
    'empty.yaml': '',
  });

  const syntax = configError(t, () => loadConfigFile(resolve(dir, 'syntax.yaml')));
  t.equal(syntax?.path, '');
  t.match(syntax?.message, /syntax\.yaml:3:1:/, 'names file, line and column');

  const dup = configError(t, () => loadConfigFile(resolve(dir, 'dup.yaml')));
  t.match(dup?.message, /dup\.yaml:3:\d+:/);

  t.equal(configError(t, () => loadConfig(['--config', resolve(dir, 'key.yaml')]))?.path, 'listen.prot');
  t.equal(configError(t, () => loadConfig(['--config', resolve(dir, 'list.yaml'), '--port', '1']))?.path, '');
  t.equal(configError(t, () => loadConfig(['--config', resolve(dir, 'missing.yaml')]))?.path, '');
  t.equal(loadConfig(['--config', resolve(dir, 'empty.yaml'), '--port', '7002']).config.listen.port, 7002);
});
