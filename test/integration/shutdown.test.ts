/**
 * Graceful shutdown of the relay process (dist/main.js): SIGTERM stops accepting and stops the upstream link, waits
 * up to shutdown-timeout for the replicas to acknowledge the stream, persists its state and exits 0; restarted, it
 * continues without any full sync, upstream or downstream.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelayProcess } from '../helpers/relay-process.js';
import { freePort } from '../helpers/ports.js';
import { startReplica, waitConverged, stat } from '../helpers/replication.js';
import { RedisClient } from '../helpers/redis-client.js';
import { tempDir } from '../helpers/temp-dir.js';

t.teardown(stopAll);

t.test('SIGTERM: replicas get the whole stream, exit 0, and a restarted relay continues without a full sync', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const dir = tempDir('psync-relay-shutdown-');
  const config = join(dir, 'relay.yaml');
  writeFileSync(config, 'shutdown-timeout: 2\nweb:\n  port: 0\nlog:\n  memory: 1mb\nupstream:\n  backoff-min: 50ms\n  backoff-max: 500ms\n');
  const port = await freePort();
  const args = ['--config', config, '--upstream', `127.0.0.1:${master.port}`, '--port', String(port), '--dir', join(dir, 'data')];
  let relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const replica = await startReplica(port);
  const r = await replica.client();
  t.teardown(() => r.close());

  for (let i = 0; i < 200; i++) await m.call('SET', `k${i}`, `v${i}`);
  await waitConverged(m, [r], 'replica online');

  // 1. Everyone keeps up: the relay exits as soon as the replica acknowledged everything, before the deadline, code 0.
  t.equal(await relay.stop('SIGTERM'), 0, 'exit code 0');
  t.match(relay.logs(), /replicas hold the whole stream/, 'it exited because the replica holds the whole stream');
  t.notMatch(relay.logs(), /before the shutdown deadline/, 'not because the deadline passed');
  t.notMatch(relay.logs(), /"level":50/, 'no error logged');

  await m.call('SET', 'while-down', '1');
  relay = await startRelayProcess(args);
  await waitConverged(m, [r], 'replica back through the restarted relay');
  let x = await RedisClient.connect(port);
  let xs = await x.info('stats');
  t.equal(stat(xs, 'sync_full'), 0, 'no full sync downstream');
  t.equal(stat(xs, 'sync_partial_ok'), 1, 'the replica continued partially');
  t.equal(stat(xs, 'relay_upstream_full_syncs'), 0, 'the relay continued upstream partially');
  t.equal(stat(xs, 'relay_upstream_partial_syncs'), 1);
  t.equal(stat(await m.info('stats'), 'sync_full'), 1, 'the master made one full sync in all');
  await x.close();

  // 2. A frozen replica: the relay waits shutdown-timeout for it, then exits 0 all the same.
  replica.proc.kill('SIGSTOP');
  try {
    for (let i = 0; i < 100; i++) await m.call('SET', `late${i}`, 'x'.repeat(100));
    t.equal(await relay.stop('SIGTERM'), 0, 'exit code 0 after the deadline');
    const logs = relay.logs();
    t.match(logs, /did not acknowledge the whole stream before the shutdown deadline/, 'it waited for the frozen replica until shutdown-timeout');
    t.match(logs, /"limit":"shutdown-timeout"/, 'and says which limit ended the wait');
    t.notMatch(logs, /replicas hold the whole stream/);
  } finally {
    replica.proc.kill('SIGCONT');
  }
  relay = await startRelayProcess(args);
  await waitConverged(m, [r], 'the frozen replica catches up through the restarted relay');
  x = await RedisClient.connect(port);
  xs = await x.info('stats');
  t.equal(stat(xs, 'sync_full'), 0, 'still no full sync downstream');
  t.equal(stat(await m.info('stats'), 'sync_full'), 1, 'nor upstream');
  await x.close();
  t.equal(await relay.stop('SIGTERM'), 0);
});

t.test('SHUTDOWN from an admin stops the relay as SIGTERM does; other roles, bad options and ABORT are refused', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const dir = tempDir('psync-relay-shutdown-');
  const config = join(dir, 'relay.yaml');
  writeFileSync(
    config,
    'shutdown-timeout: 5\nweb:\n  port: 0\nlisten:\n  password: admin-pw\n  users:\n    - {name: repl, password: repl-pw, role: replication}\n    - {name: sentinel, password: sentinel-pw, role: sentinel}\n',
  );
  const port = await freePort();
  const args = ['--config', config, '--upstream', `127.0.0.1:${master.port}`, '--port', String(port), '--dir', join(dir, 'data')];
  let relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const replica = await startReplica(port, ['--masteruser', 'repl', '--masterauth', 'repl-pw']);
  const r = await replica.client();
  t.teardown(() => r.close());
  for (let i = 0; i < 100; i++) await m.call('SET', `k${i}`, `v${i}`);
  await waitConverged(m, [r], 'replica online');

  for (const [user, pw] of [['repl', 'repl-pw'], ['sentinel', 'sentinel-pw']]) {
    const c = await RedisClient.connect(port);
    await c.call('AUTH', user!, pw!);
    await t.rejects(c.call('SHUTDOWN'), /^NOPERM /, `the ${user} role may not SHUTDOWN`);
    await c.close();
  }
  const admin = await RedisClient.connect(port);
  t.teardown(() => admin.close());
  await admin.call('AUTH', 'admin-pw');
  await t.rejects(admin.call('SHUTDOWN', 'LATER'), /^ERR syntax error/);
  await t.rejects(admin.call('SHUTDOWN', 'ABORT'), /^ERR No shutdown in progress/);
  await t.rejects(admin.call('SHUTDOWN', 'NOW', 'ABORT'), /^ERR syntax error/);
  await admin.call('MULTI');
  await t.rejects(admin.call('SHUTDOWN'), /^ERR Command not allowed inside a transaction/, 'not inside MULTI');
  await admin.call('DISCARD');

  // As SIGTERM: the replica gets the whole stream, the connection closes with the relay, exit 0.
  await t.rejects(admin.call('SHUTDOWN', 'NOSAVE'), /closed|ended|ECONNRESET/i, 'no reply: the connection closes');
  t.equal(await relay.stop(), 0, 'exit code 0');
  t.match(relay.logs(), /SHUTDOWN: shutting down/);
  t.match(relay.logs(), /replicas hold the whole stream/);

  await m.call('SET', 'while-down', '1');
  relay = await startRelayProcess(args);
  await waitConverged(m, [r], 'replica back through the restarted relay');
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  await x.call('AUTH', 'admin-pw');
  t.equal(stat(await x.info('stats'), 'sync_full'), 0, 'the replica continued partially');
});
