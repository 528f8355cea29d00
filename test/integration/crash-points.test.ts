/**
 * Crash storms: the relay SIGKILLs itself at seeded moments (just before its n-th file operation of a kind: a
 * segment roll, an fsync, a snapshot rename, a state write, a segment drop), with a small log.disk so that rolls,
 * drops and snapshot refreshes happen all the time, under an order-sensitive mixed load. After every crash it is
 * restarted and must converge, within a bounded time, to the master's dataset on its replica: same DEBUG DIGEST.
 * `CRASH_SEEDS=n` runs more seeds (the CI default is a handful).
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelayProcess, type RelayProcess } from '../helpers/relay-process.js';
import { freePort } from '../helpers/ports.js';
import { startReplica, waitConverged } from '../helpers/replication.js';
import { mixedLoad } from '../helpers/mixed-load.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';
import { tempDir } from '../helpers/temp-dir.js';

t.teardown(stopAll);

/** Kinds of file operation to die before, and how many of them to let through first (at most). */
const KINDS: ReadonlyArray<readonly [string, number]> = [
  ['rename', 4],
  ['writev', 40],
  ['datasync', 12],
  ['open:w', 12],
  ['rm', 6],
  ['open:wx', 1],
  ['sync', 1],
  ['any', 120],
];

/** `redis-cli --rdb`: a full sync that forces a snapshot refresh whenever the small disk log dropped the snapshot's next byte. */
async function fetchRdb(port: number, dir: string): Promise<void> {
  const p = spawn('redis-cli', ['-p', String(port), '--rdb', join(dir, `rdb-${Date.now()}.rdb`)], { stdio: 'ignore' });
  const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
  await once(p, 'exit');
  clearTimeout(timer);
}

/** Cuts the relay's link on the master and writes past a shrunken backlog, so the relay must full-sync. */
async function forceFullSync(m: RedisClient, port: number): Promise<void> {
  await m.call('CONFIG', 'SET', 'repl-backlog-size', '16384');
  await m.call('CLIENT', 'KILL', 'TYPE', 'replica');
  await mixedLoad(port, { commands: 300, seed: 99, bigValue: 2000 });
  await m.call('CONFIG', 'SET', 'repl-backlog-size', String(64 * 1024 * 1024));
}

t.test('a relay killed before any file operation recovers and its replica converges to the master', async (t) => {
  const seeds = Number(process.env['CRASH_SEEDS'] ?? 8);
  const master = await startRedis({ args: ['--repl-backlog-size', '64mb'] });
  const m = await master.client();
  t.teardown(() => m.close());
  const dir = tempDir('relay-crash-');
  const conf = join(dir, 'relay.yaml');
  writeFileSync(
    conf,
    'log:\n  memory: 64kb\n  disk: 512kb\nreplication:\n  snapshot-refresh-min-interval: 0s\n  ahead-wait: 2s\nweb:\n  port: 0\n' +
      'upstream:\n  backoff-min: 50ms\n  backoff-max: 300ms\n',
  );
  const port = await freePort();
  const args = ['--config', conf, '--upstream', `127.0.0.1:${master.port}`, '--port', String(port), '--dir', join(dir, 'data')];
  let relay: RelayProcess = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const replica = await startReplica(port);
  const r = await replica.client();
  t.teardown(() => r.close());
  await mixedLoad(master.port, { commands: 2000, seed: 1 });
  await waitConverged(m, [r], 'replica online');

  let x = 7;
  const rand = (n: number): number => {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    return x % n;
  };
  const crashed: string[] = [];
  for (let seed = 1; seed <= seeds; seed++) {
    const [kind, most] = KINDS[(seed - 1) % KINDS.length]!;
    const n = 1 + rand(most);
    await relay.stop('SIGKILL');
    let died = false;
    try {
      relay = await startRelayProcess(args, { env: { ...process.env, PSYNC_RELAY_FAILPOINT: `${kind}@${n}` } });
      // Every other seed, a full sync from upstream (a new history: segments reset, snapshot published, state
      // written): the master's backlog cannot continue the relay after its link is cut.
      if (seed % 2 === 0) await forceFullSync(m, master.port);
      // Load, with full syncs in between (each may refresh the snapshot), until the failpoint kills the relay.
      for (let round = 0; round < 6 && relay.proc.exitCode === null && relay.proc.signalCode === null; round++) {
        await mixedLoad(master.port, { commands: 1500, seed: seed * 100 + round });
        await fetchRdb(port, dir);
      }
      died = relay.proc.signalCode === 'SIGKILL';
    } catch (err) {
      // The failpoint fired while it was still starting (recovery, its first sync): a crash like any other.
      if (!/exited before it was ready \(signal SIGKILL\)/.test((err as Error).message)) throw err;
      died = true;
    }
    if (died) crashed.push(`${kind}@${n}`);
    // Restarted without the failpoint, it must converge: same dataset on its replica, within a bounded time.
    await relay.stop('SIGKILL');
    relay = await startRelayProcess(args);
    await m.call('SET', `after-crash-${seed}`, String(seed));
    await waitConverged(m, [r], `seed ${seed} (${kind}@${n}${died ? ', crashed' : ''}): the replica converges after the restart`, 60_000);
    const c = await RedisClient.connect(port);
    await waitFor(async () => (await c.info('replication'))['master_link_status'] === 'up' || undefined, { what: 'relay link up' });
    await c.close();
  }
  t.ok(crashed.length >= Math.ceil(seeds / 2), `the relay died at ${crashed.length} of ${seeds} crash points: ${crashed.join(', ')}`);
  await replica.stop();
});
