/**
 * Protected mode, end to end against a relay process bound to 0.0.0.0: with no password and no users, clients from
 * a non-loopback address (this machine's own, so the test needs no second host) are refused with -DENIED, as
 * Redis 7.0 does; loopback clients are served; a password or `listen.protected-mode: false` lifts it.
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { freePort } from '../helpers/ports.js';
import { startRelayProcess } from '../helpers/relay-process.js';
import { RedisClient } from '../helpers/redis-client.js';
import { logLines, loggedLine, nonLoopbackIPv4, rawConnect, writeConfig } from '../helpers/raw.js';

const run = promisify(execFile);
const OUTSIDE = nonLoopbackIPv4();
const DENIED = /^-DENIED psync-relay is running in protected mode because listen\.protected-mode is on and neither listen\.password nor listen\.users is set\. .*listen\.password or listen\.users.*listen\.bind.*listen\.protected-mode: false.*\r\n$/;

async function relay(t: Test, config: Record<string, unknown> = {}) {
  const port = await freePort();
  const dir = t.testdir({});
  const file = writeConfig(dir, { dir, web: { port: 0 }, log: { disk: 0 }, upstream: { host: null }, ...config });
  const r = await startRelayProcess(['--config', file, '--port', String(port), '--bind', '0.0.0.0']);
  t.teardown(() => r.stop());
  return r;
}

t.test(`no password: a client from ${OUTSIDE} gets -DENIED naming the fix and is closed; loopback is served`, async (t) => {
  const r = await relay(t);
  const outside = await rawConnect(r.port, OUTSIDE);
  t.match(await outside.closed, DENIED, 'DENIED before the client sent anything, then closed');

  const cli = await run('redis-cli', ['-h', OUTSIDE, '-p', String(r.port), 'REPLICAOF', '127.0.0.1', '1']).catch((e: { stdout: string }) => e);
  t.match(cli.stdout, /DENIED psync-relay is running in protected mode/, 'redis-cli from outside is refused too');

  const local = await RedisClient.connect(r.port, '127.0.0.1');
  t.teardown(() => local.close());
  t.equal(await local.callString('PING'), 'PONG', '127.0.0.1 is served');
  t.notOk((await local.info('replication'))['master_host'], 'the refused REPLICAOF did not run');

  // Redis 7.0 counts only 127.0.0.1 and ::1 as local: another loopback source address is refused.
  const other = await rawConnect(r.port, '127.0.0.1', { localAddress: '127.0.0.2' });
  t.match(await other.closed, DENIED, '127.0.0.2 is not local, as in Redis 7.0');

  t.match(await loggedLine(r, /^protected mode: no listen.password/), { level: 40, bind: '0.0.0.0', protectedMode: true }, 'a warning at start');
  t.match(await loggedLine(r, /connection from a non-loopback address refused/), {
    limit: 'listen.protected-mode',
    peer: new RegExp(`^${OUTSIDE.replace(/\./g, '\\.')}:`),
  }, 'each refusal logged');
});

t.test('with listen.password, clients from outside are let in and must AUTH', async (t) => {
  const r = await relay(t, { listen: { password: 'pw' } });
  const c = await RedisClient.connect(r.port, OUTSIDE);
  t.teardown(() => c.close());
  await t.rejects(c.call('INFO'), { message: 'NOAUTH Authentication required.' });
  t.equal(await c.call('AUTH', 'pw'), 'OK');
  t.match(await c.callString('INFO', 'replication'), 'role:slave');
  await loggedLine(r, /^relay started$/);
  t.same(logLines(r.logs(), /protected mode|protected-mode/), [], 'no protected-mode warning (it would come before "relay started")');
});

t.test('listen.protected-mode: false serves everyone, and says loudly at start what that means', async (t) => {
  const r = await relay(t, { listen: { 'protected-mode': false } });
  const c = await RedisClient.connect(r.port, OUTSIDE);
  t.teardown(() => c.close());
  t.equal(await c.callString('PING'), 'PONG');
  t.match(await loggedLine(r, /^listen.protected-mode is off/), { level: 40, protectedMode: false });
});
