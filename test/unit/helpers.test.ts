import t from 'tap';
import { connect } from 'node:net';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { RespErrorValue } from '../../src/resp/reply-reader.js';
import { RedisClient } from '../helpers/redis-client.js';
import { redisFlavor, redisVersion, startRedis, stopAll } from '../helpers/redis-server.js';
import { waitFor } from '../helpers/wait.js';
import { unaccepted } from '../helpers/raw.js';

t.teardown(stopAll);

function connectOutcome(port: number): Promise<'connected' | string> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

t.test('redisVersion reads the installed redis-server version', async (t) => {
  t.match(redisVersion(), /^\d+\.\d+\.\d+/);
  t.match(redisFlavor(), /^(redis|valkey)$/, 'and redisFlavor whose it is');
});

t.test('startRedis launches a real redis-server reachable through RedisClient', async (t) => {
  const srv = await startRedis();
  t.ok(srv.port > 0, 'has a port');
  const c = await srv.client();
  t.teardown(() => c.close());

  t.equal(await c.callString('SET', 'greeting', 'hello'), 'OK');
  t.equal(await c.callString('GET', 'greeting'), 'hello');
  t.equal(await c.call('GET', 'missing'), null, 'nil bulk is null');
  t.equal(await c.call('INCRBY', 'n', 5), 5, 'integer reply');

  const info = await c.info('server');
  t.match(info['redis_version'], /^\d+\.\d+\.\d+/, 'INFO server has redis_version');
  t.equal(info['tcp_port'], String(srv.port));

  await t.rejects(c.call('NOSUCHCOMMAND'), /unknown command/, 'error reply rejects call() with the redis text');

  const replies = await c.pipeline([['SET', 'a', '1'], ['INCR', 'a'], ['LPUSH', 'a', 'x'], ['GET', 'a'], ['PING']]);
  t.equal(replies.length, 5);
  t.equal(replies[0], 'OK');
  t.equal(replies[1], 2);
  t.ok(replies[2] instanceof RespErrorValue, 'error reply stays a value inside a pipeline');
  t.match((replies[2] as RespErrorValue).message, /^WRONGTYPE/);
  t.same(Buffer.from(replies[3] as Buffer).toString(), '2');
  t.equal(replies[4], 'PONG');

  await c.close();
  await srv.stop();
  await srv.stop(); // idempotent
  t.not(srv.proc.exitCode ?? srv.proc.signalCode, null, 'process exited');
  t.equal(await connectOutcome(srv.port), 'ECONNREFUSED', 'port is closed after stop()');
  t.match(srv.logs(), /Ready to accept connections/);
});

t.test('restart keeps port and dir', async (t) => {
  const srv = await startRedis({ args: ['--save', '900 1'] });
  const c1 = await srv.client();
  await c1.call('SET', 'k', 'v');
  await c1.call('SAVE');
  await c1.close();
  const { port, dir } = srv;
  await srv.restart();
  t.equal(srv.port, port);
  t.equal(srv.dir, dir);
  const c2 = await srv.client();
  t.equal(await c2.callString('GET', 'k'), 'v', 'data reloaded from the RDB in the same dir');
  await c2.close();
  await srv.stop();
});

t.test('startRedis fails loudly when redis-server exits early', async (t) => {
  await t.rejects(startRedis({ args: ['--no-such-option', 'x'] }), /exited before it was ready[\s\S]*no-such-option/i);
});

t.test('unaccepted counts the connections a stopped listener has not accepted yet, and 0 once it has', async (t) => {
  const srv = await startRedis();
  t.equal(unaccepted(srv.port), 0, 'none before any client');
  srv.proc.kill('SIGSTOP');
  t.teardown(() => srv.proc.kill('SIGCONT'));
  const sockets = await Promise.all([1, 2].map(() => new Promise<ReturnType<typeof connect>>((resolve) => {
    const s = connect({ port: srv.port, host: '127.0.0.1' }, () => resolve(s));
  })));
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  t.equal(unaccepted(srv.port), 2, "both connected (the kernel's handshake) and not accepted by the stopped server");
  srv.proc.kill('SIGCONT');
  await waitFor(() => unaccepted(srv.port) === 0, { what: 'redis-server accepted them' });
  t.equal(unaccepted(srv.port), 0, "and it counts them no more");
});

t.test('waitFor names what it waited for and the last value on timeout', async (t) => {
  await t.rejects(waitFor(() => false, { timeoutMs: 100, intervalMs: 10, what: 'pigs to fly' }), /pigs to fly; last seen: false/);
  let n = 0;
  t.equal(await waitFor(() => (++n >= 3 ? n : undefined), { intervalMs: 1 }), 3);
});

t.test('RedisClient.connect rejects when nothing listens', async (t) => {
  const srv = await startRedis();
  const port = srv.port;
  await srv.stop();
  await t.rejects(RedisClient.connect(port), { code: 'ECONNREFUSED' });
});

t.test('startRedis({ sentinel }) runs redis-sentinel with the given config', async (t) => {
  const master = await startRedis();
  const sentinel = await startRedis({
    sentinel: true,
    sentinelConf: `sentinel monitor mymaster 127.0.0.1 ${master.port} 1\n`,
  });
  const c = await sentinel.client();
  t.teardown(() => c.close());
  const addr = (await c.call('SENTINEL', 'get-master-addr-by-name', 'mymaster')) as Buffer[];
  t.same(addr.map(String), ['127.0.0.1', String(master.port)]);
  const server = await c.info('server');
  // Valkey 8 names the field server_mode (and has no redis_mode).
  t.equal(server['redis_mode'] ?? server['server_mode'], 'sentinel');
  await sentinel.stop();
  await master.stop();
});

t.test('startRedis says how to install redis when redis-server is not on PATH', async (t) => {
  const saved = process.env['PATH'];
  t.teardown(() => {
    process.env['PATH'] = saved;
  });
  process.env['PATH'] = '/nonexistent';
  await t.rejects(startRedis(), /redis-server not found on PATH.*scripts\/install-redis\.sh/);
  t.throws(() => redisVersion(), /scripts\/install-redis\.sh/);
});

t.test('waitFor stops polling when its signal aborts', async (t) => {
  const ac = new AbortController();
  let calls = 0;
  const p = waitFor(() => (++calls, false), { intervalMs: 5, signal: ac.signal });
  await waitFor(() => calls >= 2, { what: 'two polls' });
  ac.abort(new Error('gave up'));
  await t.rejects(p, /gave up/);
  const seen = calls;
  // An ordering, not a pause: a timer set now with waitFor's interval fires after any pause timer waitFor had set
  // (same-duration timers fire in the order they were set), and each poll runs as soon as its pause ends.
  await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 5));
  t.equal(calls, seen, 'no polls after abort');
});

t.test("a test process that exits mid-load takes its redis-benchmark with it", async (t) => {
  const server = await startRedis();
  const helper = fileURLToPath(new URL('../helpers/load.ts', import.meta.url));
  // The child starts an endless load, prints the pid of its redis-benchmark once it runs, and exits mid-load.
  const child = `
    const { execFileSync } = await import('node:child_process');
    const { benchmarkLoad } = await import(${JSON.stringify(helper)});
    void benchmarkLoad(${server.port}, 1e9).catch(() => undefined);
    for (;;) {
      try {
        console.log(execFileSync('pgrep', ['-f', 'redis-benchmark -p ${server.port} '], { encoding: 'utf8' }).trim());
        process.exit(0);
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  `;
  const r = spawnSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', child], { encoding: 'utf8', timeout: 20_000 });
  t.equal(r.status, 0, `the child ran (${r.stderr})`);
  const pid = Number(r.stdout.trim().split('\n').pop());
  t.ok(pid > 0, `the load was running in redis-benchmark ${pid}`);
  // SIGKILL is sent as the child exits; the process is gone once the kernel has taken it down.
  const alive = (): boolean => existsSync(`/proc/${pid}/cmdline`) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('redis-benchmark');
  await waitFor(() => !alive(), { what: `redis-benchmark ${pid} gone`, timeoutMs: 5000 }).catch(() => undefined);
  t.notOk(alive(), 'no redis-benchmark outlives the process that started it');
});
