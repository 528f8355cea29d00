/**
 * The security decisions as pure functions, tabled: who protected mode lets in, which Host/Origin the web server
 * serves, which host names and client names are accepted, how much client text is echoed, output-buffer limits over
 * time, eviction order under listen.max-clients-memory, warning rate limits, and what each role may run.
 */
import t from 'tap';
import { hostname } from 'node:os';
import { isLocalPeer, protectedModeOn, protectedModeWarning } from '../../src/downstream/protected-mode.js';
import { RequestGuard } from '../../src/web/request-guard.js';
import { clip, validClientName, validHost } from '../../src/util/text.js';
import { checkOutputLimit } from '../../src/downstream/output-limit.js';
import { ClientMemory, type MemoryUser } from '../../src/downstream/client-memory.js';
import { LogLimiter } from '../../src/util/log-limiter.js';
import { channelAllowed, roleAllows } from '../../src/downstream/roles.js';
import { createLogger } from '../../src/log.js';

t.test('protected mode: local is 127.0.0.1 and ::1 only, as Redis 7.0; on only without password and users', async (t) => {
  for (const a of ['127.0.0.1', '::1', '::ffff:127.0.0.1']) t.ok(isLocalPeer(a), `${a} is local`);
  for (const a of ['127.0.0.2', '127.1.2.3', '::ffff:127.0.0.2', '192.0.2.2', '10.0.0.1', 'fd00::2', '0.0.0.0', '', undefined]) {
    t.notOk(isLocalPeer(a), `${String(a)} is not local`);
  }
  const base = { protectedMode: true, password: null, users: [], bind: '0.0.0.0' };
  t.ok(protectedModeOn(base));
  t.notOk(protectedModeOn({ ...base, password: 'pw' }));
  t.notOk(protectedModeOn({ ...base, users: [{ name: 'u', password: 'p', role: 'replication' as const }] }));
  t.notOk(protectedModeOn({ ...base, protectedMode: false }));
  t.match(protectedModeWarning(base), /^protected mode: /);
  t.match(protectedModeWarning({ ...base, protectedMode: false }), /^listen\.protected-mode is off/);
  t.equal(protectedModeWarning({ ...base, bind: '127.0.0.1' }), null, 'nothing to say on loopback');
  t.equal(protectedModeWarning({ ...base, password: 'pw' }), null, 'nor with a password');
});

t.test('web guard: Host must be an IP, localhost, this host or allowed; Origin must be the same host or allowed', async (t) => {
  const g = new RequestGuard({ allowedHosts: ['relay.example.com'], allowedOrigins: ['https://ops.example.com'] });
  const ok: Array<[string, string]> = [
    ['127.0.0.1:8080', ''],
    ['10.1.2.3:8080', ''],
    ['[::1]:8080', ''],
    ['[fd00::2]', ''],
    ['localhost:8080', ''],
    ['LOCALHOST', ''],
    [`${hostname()}:8080`, ''],
    ['relay.example.com', ''],
    ['127.0.0.1:8080', 'http://127.0.0.1:8080'],
    ['relay.example.com', 'https://relay.example.com'],
    ['relay.example.com:8443', 'https://relay.example.com:8443'],
    ['127.0.0.1:8080', 'https://ops.example.com'],
    ['127.0.0.1:8080', 'HTTPS://OPS.EXAMPLE.COM'],
  ];
  for (const [host, origin] of ok) t.equal(g.check(host, origin), null, `Host ${host} Origin ${origin || '-'}`);
  const refused: Array<[string, string, string]> = [
    ['evil.example:8080', '', 'web.allowed-hosts'],
    ['', '', 'web.allowed-hosts'],
    ['127.0.0.1.evil.example', '', 'web.allowed-hosts'],
    ['relay.example.com.evil', '', 'web.allowed-hosts'],
    ['a b', '', 'web.allowed-hosts'],
    ['127.0.0.1:8080', 'http://evil.example', 'web.allowed-origins'],
    ['127.0.0.1:8080', 'null', 'web.allowed-origins'],
    ['127.0.0.1:8080', 'http://127.0.0.1:9090', 'web.allowed-origins'],
    ['127.0.0.1:8080', 'http://localhost:8080', 'web.allowed-origins'],
    ['127.0.0.1:8080', 'file://', 'web.allowed-origins'],
    ['relay.example.com', 'http://relay.example.com:8080', 'web.allowed-origins'],
  ];
  for (const [host, origin, key] of refused) t.equal(g.check(host, origin), key, `Host ${host || '(none)'} Origin ${origin || '-'}`);
  // As operators may write them (the config takes any case).
  const written = new RequestGuard({ allowedHosts: ['Relay.Example.com'], allowedOrigins: ['https://Ops.Example.com'] });
  t.equal(written.check('relay.example.com', ''), null, 'an allowed host is matched whatever its case');
  t.equal(written.check('relay.example.com', 'https://ops.example.com'), null, 'an allowed origin is matched whatever its case');
  t.equal(written.check('relay.example.com', 'https://ops.example.com.evil.test'), 'web.allowed-origins', 'and nothing more');
  const open = new RequestGuard({ allowedHosts: ['*'], allowedOrigins: ['*'] });
  t.equal(open.check('anything.example', 'http://evil.example'), null, '* opts out of both');
  // Sec-Fetch-Site/-Mode/-Dest: a page on another site (or another port: same-site) loading the relay in a tag sends no Origin.
  const meta = (site: string, mode: string, dest: string) => ({ site, mode, dest });
  for (const m of [meta('cross-site', 'no-cors', 'image'), meta('same-site', 'no-cors', 'script'), meta('cross-site', 'navigate', 'object'), meta('Cross-Site', 'navigate', 'iframe'), meta('cross-site', 'no-cors', 'empty')]) {
    t.equal(g.check('127.0.0.1:8080', '', m), 'cross-site', `Sec-Fetch ${m.site} ${m.mode} ${m.dest}: refused`);
  }
  for (const m of [meta('cross-site', 'navigate', 'document'), meta('same-origin', 'no-cors', 'image'), meta('none', 'navigate', 'document'), meta('', '', '')]) {
    t.equal(g.check('127.0.0.1:8080', '', m), null, `Sec-Fetch ${m.site || '-'} ${m.mode || '-'} ${m.dest || '-'}: served (a link, the page's own, a typed URL, a tool)`);
  }
  t.equal(g.check('127.0.0.1:8080', 'https://ops.example.com', meta('cross-site', 'cors', 'empty')), null, 'an allowed Origin from another site');
  t.equal(open.check('127.0.0.1:8080', '', meta('cross-site', 'no-cors', 'image')), null, 'web.allowed-origins * lets pages on other sites load it in tags');
});

t.test('host names, client names and echoed text', async (t) => {
  for (const h of ['10.0.0.1', '::1', 'fd00::2', 'a', 'replica-1.dc2.example', 'under_score.local', 'redis.example.com.', 'x'.repeat(63)]) t.ok(validHost(h), h);
  for (const h of ['', 'a b', 'a,b', 'a=b', 'a\r\nb', 'a\n', '-lead', 'trail-', 'a..b', 'x'.repeat(64), `${'a.'.repeat(128)}a`, 'é.example', '1.2.3.4:5', '.', 'a..']) {
    t.notOk(validHost(h), JSON.stringify(h));
  }
  for (const n of ['', 'sentinel-1-cmd', '!~', 'a:b=c']) t.ok(validClientName(n), JSON.stringify(n));
  for (const n of [' ', 'a b', 'a\nb', 'a\rb', '\t', '\x7f', 'é', '\x00']) t.notOk(validClientName(n), JSON.stringify(n));
  t.equal(clip('x'.repeat(128)), 'x'.repeat(128));
  t.equal(clip('x'.repeat(100_000)), `${'x'.repeat(128)}...`);
});

t.test('output buffer limits: hard at once; soft only after soft-seconds over it without a break', async (t) => {
  const limit = { hard: 1000, soft: 100, softMs: 5000 };
  const state = { softSince: 0 };
  t.equal(checkOutputLimit('pubsub', limit, 50, 1000, state), null);
  t.equal(checkOutputLimit('pubsub', limit, 150, 1000, state), null, 'over soft: the clock starts');
  t.equal(checkOutputLimit('pubsub', limit, 150, 6000, state), null, 'exactly soft-seconds: not yet');
  t.equal(checkOutputLimit('pubsub', limit, 50, 6500, state), null, 'back under: the clock stops');
  t.equal(checkOutputLimit('pubsub', limit, 150, 7000, state), null, 'over again: a new clock');
  t.equal(checkOutputLimit('pubsub', limit, 150, 11_000, state), null);
  t.strictSame(checkOutputLimit('pubsub', limit, 150, 12_001, state), { limit: 'listen.client-output-buffer-limit.pubsub.soft', value: 100 });
  t.strictSame(checkOutputLimit('normal', limit, 1000, 0, { softSince: 0 }), { limit: 'listen.client-output-buffer-limit.normal.hard', value: 1000 });
  const none = { hard: 0, soft: 0, softMs: 0 };
  t.equal(checkOutputLimit('normal', none, 1e12, 0, { softSince: 0 }), null, '0 0 0 = no limit');
});

t.test('listen.max-clients-memory evicts the largest clients first, until the total fits', async (t) => {
  const evicted: string[] = [];
  const user = (name: string, bytes: number): MemoryUser & { bytes: number } => {
    const u = { bytes, memoryUsage: () => u.bytes, evictForMemory: () => void evicted.push(name) };
    return u;
  };
  const m = new ClientMemory(1000);
  const a = user('a', 100);
  const b = user('b', 500);
  const c = user('c', 300);
  for (const u of [a, b, c]) m.update(u, u.bytes);
  t.equal(m.total, 900);
  t.same(evicted, []);
  b.bytes = 650;
  m.update(b, 650);
  t.same(evicted, ['b'], 'over the cap: the biggest goes');
  t.equal(m.total, 400);
  c.bytes = 200;
  const d = user('d', 900);
  m.update(d, 900);
  t.same(evicted, ['b', 'd'], 'figures are re-measured first (c shrank), then the biggest goes');
  m.remove(a);
  t.equal(m.total, 200);
  const off = new ClientMemory(0);
  off.update(user('x', 1e12), 1e12);
  t.equal(off.total, 0, '0 = no cap, nothing tracked');
});

t.test('warnings a client can trigger are rate limited per message, with the count suppressed', async (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger('info', { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  let now = 0;
  const limiter = new LogLimiter({ burst: 3, intervalMs: 1000, now: () => now });
  for (let i = 0; i < 10; i++) limiter.warn(log, { i }, 'auth failed');
  limiter.warn(log, {}, 'another message');
  t.equal(lines.filter((l) => l['msg'] === 'auth failed').length, 3, 'burst of 3');
  t.equal(lines.filter((l) => l['msg'] === 'another message').length, 1, 'per message');
  now = 1000;
  limiter.warn(log, { i: 10 }, 'auth failed');
  t.match(lines.at(-1), { msg: 'auth failed', i: 10, suppressed: 7 }, 'the next window says how many were dropped');
  limiter.warn(log, {}, 'once', 1);
  limiter.warn(log, {}, 'once', 1);
  t.equal(lines.filter((l) => l['msg'] === 'once').length, 1, 'a burst of 1 (the POST/Host: warning)');
});

t.test('roles: replication, sentinel and admin', async (t) => {
  for (const cmd of ['psync', 'sync', 'replconf', 'ping', 'auth', 'info', 'role']) t.ok(roleAllows('replication', cmd), `replication: ${cmd}`);
  for (const cmd of ['publish', 'subscribe', 'psubscribe', 'replicaof', 'slaveof', 'config|rewrite', 'client|kill', 'client|list', 'multi', 'exec']) {
    t.notOk(roleAllows('replication', cmd), `replication: not ${cmd}`);
  }
  for (const cmd of ['info', 'ping', 'role', 'subscribe', 'publish', 'replicaof', 'slaveof', 'config|rewrite', 'client|kill', 'client|setname', 'multi', 'exec']) {
    t.ok(roleAllows('sentinel', cmd), `sentinel: ${cmd}`);
  }
  for (const cmd of ['psync', 'sync', 'replconf', 'psubscribe', 'client|list', 'config|get', 'config|set']) t.notOk(roleAllows('sentinel', cmd), `sentinel: not ${cmd}`);
  t.ok(roleAllows('admin', 'anything'));
  t.ok(channelAllowed('sentinel', Buffer.from('__sentinel__:hello')));
  t.notOk(channelAllowed('sentinel', Buffer.from('__sentinel__:hello2')));
  t.notOk(channelAllowed('replication', Buffer.from('__sentinel__:hello')));
  t.ok(channelAllowed('admin', Buffer.from('any')));
});
