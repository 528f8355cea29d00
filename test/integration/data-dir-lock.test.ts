/**
 * One relay per data directory (src/data-dir-lock.ts). Before the lock, a second relay started on a running one's
 * `dir` cut back the log segment the first was writing ("torn log tail cut back") and both wrote the same files.
 */
import t from 'tap';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { connect, createServer, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { relayArgs, startRelayProcess, type RelayProcess } from '../helpers/relay-process.js';
import { onlineReplicas, stat, waitConverged } from '../helpers/replication.js';
import { writeKeys } from '../helpers/failover.js';
import { RedisClient } from '../helpers/redis-client.js';
import { startRelay } from '../helpers/relay.js';
import { tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait.js';

t.teardown(stopAll);

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));

t.test('a second relay on a running relay\'s dir refuses to start and touches nothing; after a SIGKILL the dir is free at once', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  // shutdown-timeout bounds how long a second relay waits for the first to exit before it refuses (1 s + 5 s here).
  const yaml = 'shutdown-timeout: 1\nweb:\n  port: 0\nupstream:\n  backoff-min: 20ms\n  backoff-max: 200ms\n';
  const first = await relayArgs('relay-lock-', master.port, yaml);
  const dataDir = join(first.dir, 'data');
  let relay: RelayProcess = await startRelayProcess(first.args);
  t.teardown(() => relay.stop('SIGKILL'));
  const { clients: rc } = await onlineReplicas(t, first.port, m, 1);
  await writeKeys(master.port, 'before');
  await waitConverged(m, rc, 'the replica holds the master');

  const second = await relayArgs('relay-lock-', master.port, yaml, dataDir);
  const tried = await startRelayProcess(second.args).then(
    async (p) => ({ started: true, log: (await p.stop('SIGKILL'), p.logs()) }),
    (e: Error) => ({ started: false, log: e.message }),
  );
  t.notOk(tried.started, 'the second relay did not start');
  t.match(tried.log, /exited before it was ready \(code 1\)/);
  t.match(tried.log, /waiting for it to exit/, 'it waited for the first to exit first');
  t.match(tried.log, new RegExp(`data directory .* is in use by another psync-relay \\(pid ${relay.proc.pid} `), 'and said who holds the dir');
  t.notMatch(relay.logs() + tried.log, /torn log tail cut back/, "nobody cut the first relay's log");

  await writeKeys(master.port, 'after-refusal');
  await waitConverged(m, rc, 'the first relay still serves');

  // SIGKILL leaves the lock file behind; its pid is gone, so the next relay takes the dir without waiting for it.
  await relay.stop('SIGKILL');
  t.ok(existsSync(join(dataDir, 'relay.lock')), 'a killed relay leaves its lock file');
  relay = await startRelayProcess(first.args);
  t.match(relay.logs(), /data directory lock left by a relay that is gone: taken over/);
  await writeKeys(master.port, 'after-restart');
  await waitConverged(m, rc, 'the replica follows the restarted relay');
  const x = await RedisClient.connect(first.port);
  t.teardown(() => x.close());
  t.equal(stat(await x.info('stats'), 'sync_full'), 0, 'the replica continued partially');

  // A graceful stop removes the lock file.
  t.equal(await relay.stop('SIGTERM'), 0);
  t.notOk(existsSync(join(dataDir, 'relay.lock')), 'a relay stopped gracefully removes its lock file');
});

t.test('a relay that fails to start (its port taken) leaves its dir free for the next one', async (t) => {
  const a = await startRelay({ upstream: { host: '127.0.0.1', port: 1 } });
  t.teardown(() => a.stop());
  const dir = tempDir('relay-lock-');
  await t.rejects(startRelay({ upstream: { host: '127.0.0.1', port: 1 }, listen: { port: a.port } }, dir), /EADDRINUSE/);
  t.notOk(existsSync(join(dir, 'relay.lock')), 'no lock file left behind');
  const b = await startRelay({ upstream: { host: '127.0.0.1', port: 1 } }, dir);
  t.teardown(() => b.stop());
  t.ok(existsSync(join(dir, 'relay.lock')), 'the next relay holds the dir');
  await t.rejects(startRelay({ upstream: { host: '127.0.0.1', port: 1 } }, dir), /in use by another relay in this process/, 'and a second one in this process is refused');
});

t.test('a relay process that fails to start (its web port taken) exits 1 and serves nothing, so no half-started relay answers on a dir it gave up', async (t) => {
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => taken.close());
  const webPort = (taken.address() as AddressInfo).port;
  const { port, args } = await relayArgs('relay-lock-', 1, `web:\n  port: ${webPort}\n`);
  const proc = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  t.teardown(() => proc.kill('SIGKILL'));
  await waitFor(() => proc.exitCode !== null || undefined, { what: 'the relay that failed to start to exit', timeoutMs: 15_000 });
  t.equal(proc.exitCode, 1, 'exit code 1');
  t.match(out, /relay failed to start/);
  const refused = await new Promise<boolean>((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.on('connect', () => (s.destroy(), resolve(false)));
    s.on('error', () => resolve(true));
  });
  t.ok(refused, 'its RESP port is closed');
});

t.test('a relay whose lock another relay took over stops at once (exit 1) without writing its state', async (t) => {
  const master = await startRedis();
  const { dir, args } = await relayArgs('relay-lock-', master.port, 'web:\n  port: 0\n');
  const relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const data = join(dir, 'data');
  await waitFor(() => existsSync(join(data, 'state.json')) || undefined, { what: 'the relay wrote its state' });
  const state = statSync(join(data, 'state.json')).mtimeMs;
  writeFileSync(join(data, 'relay.lock'), JSON.stringify({ runId: 'newcomer', pid: 4242, host: 'elsewhere', since: 'now' }) + '\n');
  await waitFor(() => relay.proc.exitCode !== null || undefined, { what: 'the relay to exit', timeoutMs: 10_000 });
  t.equal(relay.proc.exitCode, 1);
  t.match(relay.logs(), /data directory taken over by another relay: stopping/);
  t.match(relay.logs(), /pid 4242 on elsewhere/);
  t.equal(statSync(join(data, 'state.json')).mtimeMs, state, 'the state file untouched');
  t.match(readFileSync(join(data, 'relay.lock'), 'utf8'), /newcomer/, "the newcomer's lock untouched");
});

t.test('a relay started while the previous one still shuts down gracefully waits for it, then continues', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const { port, args } = await relayArgs('relay-lock-', master.port, 'shutdown-timeout: 60\nweb:\n  port: 0\nupstream:\n  backoff-min: 20ms\n  backoff-max: 200ms\n');
  const old = await startRelayProcess(args);
  t.teardown(() => old.stop('SIGKILL'));
  const { servers, clients: rc } = await onlineReplicas(t, port, m, 1);
  // A frozen replica keeps the old relay in its graceful shutdown (up to shutdown-timeout) until it resumes.
  servers[0]!.proc.kill('SIGSTOP');
  t.teardown(() => servers[0]!.proc.kill('SIGCONT'));
  await writeKeys(master.port, 'while-frozen');
  old.proc.kill('SIGTERM');
  await waitFor(() => /shutting down/.test(old.logs()) || undefined, { what: 'the old relay shutting down' });
  // The old relay stays in its shutdown until the new one says it waits (however long a loaded machine takes to
  // start it), then the replica resumes and the old relay's shutdown ends.
  let waiting = false;
  const starting = startRelayProcess(args, { timeoutMs: 60_000, onOutput: (logs) => (waiting ||= /is in use by another psync-relay \(pid \d+ .*waiting for it to exit/.test(logs)) });
  starting.catch(() => undefined);
  await waitFor(() => waiting || undefined, { what: 'the new relay waiting for the old one', timeoutMs: 30_000 });
  t.equal(old.proc.exitCode, null, 'the old relay still shuts down meanwhile');
  servers[0]!.proc.kill('SIGCONT');
  const next = await starting;
  t.teardown(() => next.stop('SIGKILL'));
  await waitFor(() => old.proc.exitCode !== null || undefined, { what: 'the old relay to exit' });
  t.equal(old.proc.exitCode, 0, 'the old relay finished its shutdown');
  await writeKeys(master.port, 'after');
  await waitConverged(m, rc, 'the replica follows the new relay');
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  t.equal(stat(await x.info('stats'), 'sync_full'), 0, 'the replica continued partially');
});
