/**
 * Roles (replication, sentinel, admin) and what clients may write into INFO and CLIENT LIST: the replication role
 * cannot PUBLISH (Sentinel trusts `__sentinel__:hello`), the sentinel role runs what a real Sentinel sends during a
 * failover and nothing more, and no client value (REPLCONF ip-address, client names, command names, REPLICAOF host)
 * can add a line to INFO or CLIENT LIST.
 */
import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { startReplica, waitConverged } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { rawConnect } from '../helpers/raw.js';
import { encodeCommand } from '../../src/resp/writer.js';
import {
  CANDIDATE_ARGS,
  QUIET_MASTER_ARGS,
  SENTINEL_PASS,
  SENTINEL_USER,
  convergedPorts,
  sentinelsReady,
  startSentinels,
  waitPromoted,
  writeKeys,
  call,
} from '../helpers/failover.js';

t.teardown(stopAll);

const noperm = (cmd: string) => ({ message: `NOPERM this user has no permissions to run the '${cmd}' command` });
const NOPERM_CHANNEL = { message: 'NOPERM this user has no permissions to access one of the channels used as arguments' };
const USERS = [
  { name: 'replica', password: 'replica-pw', role: 'replication' },
  { name: 'sentinel', password: 'sentinel-pw', role: 'sentinel' },
  { name: 'ops', password: 'ops-pw', role: 'admin' },
];

t.test('replication role: replica commands and reads; no pub/sub, no admin commands', async (t) => {
  const { client } = await startLoggedRelay(t, { listen: { users: USERS } });
  const c = await client();
  t.equal(await c.call('AUTH', 'replica', 'replica-pw'), 'OK');
  t.equal(await c.call('REPLCONF', 'listening-port', '6390'), 'OK');
  t.equal(await c.call('PING'), 'PONG');
  t.match(await c.callString('INFO', 'replication'), 'role:slave');
  for (const [args, cmd] of [
    [['PUBLISH', '__sentinel__:hello', '127.0.0.1,26379,forged,1,mymaster,10.6.6.6,6379,2'], 'publish'],
    [['SUBSCRIBE', '__sentinel__:hello'], 'subscribe'],
    [['PSUBSCRIBE', '*'], 'psubscribe'],
    [['REPLICAOF', '10.6.6.6', '6379'], 'replicaof'],
    [['CONFIG', 'REWRITE'], 'config|rewrite'],
    [['CLIENT', 'KILL', 'TYPE', 'normal'], 'client|kill'],
    [['MULTI'], 'multi'],
  ] as const) {
    await t.rejects(c.call(...args), noperm(cmd), args.join(' '));
  }
  await t.rejects(c.call('AUTH', 'replica', 'wrong'), { message: /^WRONGPASS/ });
  t.match(await c.info('stats'), { acl_access_denied_auth: '1', acl_access_denied_cmd: '7', acl_access_denied_key: '0', acl_access_denied_channel: '0' }, "INFO counts the refusals as Redis 7.2's acl_access_denied_*");
});

t.test('a relay below, logged in with the replication role, is refused CLIENT LIST without a warning; another client is warned about', async (t) => {
  const master = await startRedis();
  const a = await startLoggedRelay(t, { upstream: { host: '127.0.0.1', port: master.port }, listen: { users: USERS } });
  const b = await startLoggedRelay(t, { upstream: { host: '127.0.0.1', port: a.port, user: 'replica', password: 'replica-pw' } });
  const bc = await b.client();
  await waitFor(async () => (await bc.info('replication'))['master_link_status'] === 'up' || undefined, { what: 'B streaming from A' });
  // B asked `CLIENT LIST TYPE master` in its handshake (its check for a Redis upstream that follows B): refused, as
  // the role has no CLIENT LIST, and expected from every relay below: not a warning at each of its reconnections.
  const refused = (l: Record<string, unknown>) => l['msg'] === 'command refused: no permission';
  t.notOk(a.lines.some(refused), 'no warning for the relay below');
  const c = await a.client();
  t.equal(await c.call('AUTH', 'replica', 'replica-pw'), 'OK');
  await t.rejects(c.call('CLIENT', 'LIST', 'TYPE', 'master'), noperm('client|list'));
  t.match(await waitFor(() => a.lines.find(refused), { what: 'the warning' }), { command: 'client', user: 'replica' }, 'another client is warned about');
});

t.test('sentinel role: what Sentinel sends, pub/sub on its hello channel only; not PSYNC, REPLCONF or CLIENT LIST', async (t) => {
  const { client } = await startLoggedRelay(t, { listen: { users: USERS } });
  const s = await client();
  t.equal(await s.call('AUTH', 'sentinel', 'sentinel-pw'), 'OK');
  t.equal(await s.call('CLIENT', 'SETNAME', 'sentinel-1-cmd'), 'OK');
  t.match(await s.callString('INFO'), 'role:slave');
  t.equal(await s.call('PING'), 'PONG');
  t.ok(Array.isArray(await s.call('ROLE')));
  t.equal(await s.call('PUBLISH', '__sentinel__:hello', 'hello'), 0);
  await t.rejects(s.call('PUBLISH', 'other', 'x'), NOPERM_CHANNEL);
  await t.rejects(s.call('SUBSCRIBE', '__sentinel__:hello', 'other'), NOPERM_CHANNEL);
  t.match(await s.info('stats'), { acl_access_denied_cmd: '0', acl_access_denied_channel: '2' }, 'channel refusals counted apart');
  for (const [args, cmd] of [
    [['PSYNC', '?', '-1'], 'psync'],
    [['SYNC'], 'sync'],
    [['REPLCONF', 'listening-port', '1'], 'replconf'],
    [['CLIENT', 'LIST'], 'client|list'],
    [['CONFIG', 'GET', 'maxmemory'], 'config|get'],
    [['PSUBSCRIBE', '*'], 'psubscribe'],
  ] as const) {
    await t.rejects(s.call(...args), noperm(cmd), args.join(' '));
  }
  // Sentinel's failover transaction on a replica (sentinel.c sentinelSendSlaveOf).
  const replies = await s.pipeline([['MULTI'], ['SLAVEOF', '127.0.0.1', '1'], ['CONFIG', 'REWRITE'], ['CLIENT', 'KILL', 'TYPE', 'normal'], ['CLIENT', 'KILL', 'TYPE', 'pubsub'], ['EXEC']]);
  t.strictSame(replies.slice(0, 5), ['OK', 'QUEUED', 'QUEUED', 'QUEUED', 'QUEUED']);
  t.match(replies[5], ['OK', 'OK', Number, Number], 'EXEC ran SLAVEOF, CONFIG REWRITE and both CLIENT KILLs');
  const sub = await client();
  t.equal(await sub.call('AUTH', 'sentinel', 'sentinel-pw'), 'OK');
  t.match(await sub.call('SUBSCRIBE', '__sentinel__:hello'), [Buffer.from('subscribe'), Buffer.from('__sentinel__:hello'), 1]);
});

t.test('RESET inside MULTI logs the client out at once, as in Redis: nothing after it runs as the default user', async (t) => {
  const { client } = await startLoggedRelay(t, { listen: { users: USERS } });
  const s = await client();
  t.equal(await s.call('AUTH', 'sentinel', 'sentinel-pw'), 'OK');
  const replies = await s.pipeline([['MULTI'], ['PING'], ['RESET'], ['CLIENT', 'LIST'], ['CONFIG', 'RESETSTAT'], ['EXEC']]);
  t.strictSame(replies.slice(0, 3), ['OK', 'QUEUED', 'RESET'], 'RESET is not queued: it ends the transaction');
  t.match(
    replies.slice(3),
    [
      { message: 'NOAUTH Authentication required.' },
      { message: 'NOAUTH Authentication required.' },
      { message: 'EXECABORT Transaction discarded because of: NOAUTH Authentication required.' },
    ],
    'after RESET the client is logged out: CLIENT LIST, CONFIG RESETSTAT and EXEC are refused',
  );
});

t.test('a real Sentinel logged in with the sentinel role fails the relay over to the promoted replica', async (t) => {
  const master = await startRedis({ args: QUIET_MASTER_ARGS });
  const r = await startReplica(master.port, CANDIDATE_ARGS);
  const x = await startLoggedRelay(t, {
    upstream: { host: '127.0.0.1', port: master.port, timeout: 600 },
    listen: { users: [{ name: SENTINEL_USER, password: SENTINEL_PASS, role: 'sentinel' }, USERS[0]] },
  });
  const replica = await startReplica(x.port, ['--masteruser', 'replica', '--masterauth', 'replica-pw']);
  await writeKeys(master.port, 'before');
  await convergedPorts(master.port, [r.port, replica.port], 'initial syncs');
  const sentinels = await startSentinels(master.port, { auth: true });
  await sentinelsReady(sentinels, 2);
  t.equal(await call(sentinels[0]!.port, 'SENTINEL', 'FAILOVER', 'mymaster'), 'OK');
  await waitPromoted(r.port);
  await waitFor(() => x.relay.status().upstream.port === r.port && x.relay.status().upstream.linkUp, { what: 'the relay follows R', timeoutMs: 30_000 });
  const rc = await r.client();
  t.teardown(() => rc.close());
  await writeKeys(r.port, 'after');
  const replicaClient = await replica.client();
  t.teardown(() => replicaClient.close());
  await waitConverged(rc, [replicaClient], 'the relay\'s replica follows R through the relay');
  t.same(x.lines.filter((l) => l['msg'] === 'command refused: no permission'), [], 'Sentinel was refused nothing');
  t.match(x.lines.find((l) => l['msg'] === 'following a new upstream'), { how: 'REPLICAOF' }, 'Sentinel moved it with SLAVEOF');
});

t.test('REPLCONF ip-address: only an IP or a host name, so INFO shows exactly one slaveN line per replica', async (t) => {
  const master = await startRedis();
  const x = await startLoggedRelay(t, { upstream: { host: '127.0.0.1', port: master.port } });
  await waitFor(() => x.relay.usableSnapshot() !== null, { what: 'the relay has a snapshot' });
  const c = await x.client();
  const forged = '10.0.0.9\r\nslave1:ip=10.6.6.6,port=6379,state=online,offset=999999,lag=0';
  for (const bad of [forged, '10.0.0.9,port=1', 'a b', 'x=y', '']) {
    await t.rejects(c.call('REPLCONF', 'ip-address', bad), { message: 'ERR REPLCONF ip-address provided by replica instance is not a valid IP address or host name' }, JSON.stringify(bad));
  }
  await t.rejects(c.call('REPLCONF', 'ip-address', 'a'.repeat(300)), { message: 'ERR REPLCONF ip-address provided by replica instance is too long: 300 bytes' });
  for (const good of ['10.0.0.9', 'fd00::5', 'replica-1.dc2.example']) t.equal(await c.call('REPLCONF', 'ip-address', good), 'OK', good);

  // A replica that tries the forged address and then syncs is listed under its real address, once.
  const fake = await rawConnect(x.port, '127.0.0.1', {
    send: Buffer.concat([encodeCommand(['REPLCONF', 'ip-address', forged]), encodeCommand(['REPLCONF', 'listening-port', '7777']), encodeCommand(['PSYNC', '?', '-1'])]),
  });
  t.teardown(() => fake.socket.destroy());
  await waitFor(() => fake.received().includes('FULLRESYNC'), { what: 'the raw replica gets a full sync' });
  const info = await c.callString('INFO', 'replication');
  t.match(info, /\r\nslave0:ip=127\.0\.0\.1,port=7777,state=/);
  t.notMatch(info, /slave1:|10\.6\.6\.6/, 'no forged line');
  t.equal(await c.call('REPLCONF', 'version', '8.0.1'), 'OK');
  await t.rejects(c.call('REPLCONF', 'version', '8.0\r\nx'), { message: 'ERR REPLCONF version is not a version number' });
});

t.test('client names and command names never add a line to CLIENT LIST; HELLO SETNAME needs a successful AUTH', async (t) => {
  const { client } = await startLoggedRelay(t, { listen: { password: 'pw' } });
  const admin = await client();
  await admin.call('AUTH', 'pw');
  const c = await client();
  await t.rejects(c.call('HELLO', '2', 'AUTH', 'default', 'wrong', 'SETNAME', 'before-auth'), { message: /^WRONGPASS/ });
  await t.rejects(c.call('HELLO', '2', 'SETNAME', 'no-auth-at-all'), { message: /^NOAUTH HELLO must be called with the client already authenticated/ });
  t.notMatch(await admin.callString('CLIENT', 'LIST'), /before-auth|no-auth-at-all/, 'no name stored before AUTH');
  await t.rejects(c.call('HELLO', '2', 'AUTH', 'default', 'pw', 'SETNAME', 'bad name'), { message: 'ERR Client names cannot contain spaces, newlines or special characters.' });
  t.ok(Array.isArray(await c.call('HELLO', '2', 'AUTH', 'default', 'pw', 'SETNAME', 'good-name')));
  for (const bad of ['x\nid=99 addr=6.6.6.6:1', 'tab\there', 'del\x7f', 'é']) {
    await t.rejects(c.call('CLIENT', 'SETNAME', bad), { message: 'ERR Client names cannot contain spaces, newlines or special characters.' }, JSON.stringify(bad));
  }
  t.equal(await c.callString('CLIENT', 'GETNAME'), 'good-name', 'refused names change nothing');
  await t.rejects(c.call('x\nid=99 addr=6.6.6.6:1 cmd=forged', 'a'), /^ERR unknown command/);
  await t.rejects(c.call('REPLICAOF', 'h\r\nmaster_host:10.6.6.6', '6379'), { message: 'ERR Invalid master host: not an IP address or host name' });
  t.notOk((await admin.info('replication'))['master_host'], 'REPLICAOF with a bad host changed nothing');
  const list = await admin.callString('CLIENT', 'LIST');
  const lines = list.split('\n').filter(Boolean);
  t.equal(lines.length, 2, 'one line per client');
  for (const l of lines) t.match(l, /^id=\d+ addr=127\.0\.0\.1:\d+ laddr=127\.0\.0\.1:\d+ fd=0 name=\S* age=/);
  t.match(list, ' name=good-name ');
  t.notMatch(list, /id=99|6\.6\.6\.6|forged/);
});
