/**
 * Storage soak (not part of `npm test`; run `SOAK_MINUTES=10 npm run soak`, as root for the tmpfs):
 * an order-sensitive mixed load (INCR, APPEND, LPUSH, HSET, EXPIRE, big values, MULTI/EXEC) on a master, the relay's
 * data directory on a small tmpfs, three redis-server replicas behind the relay, and faults injected in turn every
 * few seconds: the disk filled for a while, the relay SIGKILLed, the relay SIGKILLed before a seeded file operation
 * (PSYNC_RELAY_FAILPOINT), a replica SIGSTOPped, a forced snapshot refresh. At the end the load stops and every
 * replica must hold the master's DEBUG DIGEST. Prints a summary line per fault and the totals.
 */
import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../test/helpers/redis-server.js';
import { startRelayProcess, type RelayProcess } from '../test/helpers/relay-process.js';
import { freePort } from '../test/helpers/ports.js';
import { startReplica, waitConverged, stat } from '../test/helpers/replication.js';
import { mixedLoad } from '../test/helpers/mixed-load.js';
import { tempDir } from '../test/helpers/temp-dir.js';
import { fillFilesystem } from '../test/helpers/small-fs.js';

t.teardown(stopAll);

const MINUTES = Number(process.env['SOAK_MINUTES'] ?? 10);
t.setTimeout((MINUTES * 60 + 600) * 1000);

t.test(`storage soak: ${MINUTES} minutes of mixed load with disk faults, crashes and stalls`, async (t) => {
  const master = await startRedis({ args: ['--repl-backlog-size', '512mb'] });
  const m = await master.client();
  t.teardown(() => m.close());
  const fsDir = tempDir('relay-soak-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=160m', 'tmpfs', fsDir]);
  t.teardown(() => execFileSync('umount', ['-l', fsDir]));
  const scratch = tempDir('relay-soak-conf-');
  const conf = join(scratch, 'relay.yaml');
  writeFileSync(
    conf,
    'log:\n  memory: 8mb\n  disk: 96mb\n  disk-queue: 32mb\nreplication:\n  snapshot-refresh-min-interval: 5s\nweb:\n  port: 0\n' +
      'upstream:\n  backoff-min: 50ms\n  backoff-max: 500ms\n',
  );
  const port = await freePort();
  const args = ['--config', conf, '--upstream', `127.0.0.1:${master.port}`, '--port', String(port), '--dir', join(fsDir, 'data')];
  let relay: RelayProcess = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const replicas = await Promise.all([0, 1, 2].map(() => startReplica(port)));
  const clients = await Promise.all(replicas.map((r) => r.client()));
  t.teardown(() => Promise.all(clients.map((c) => c.close())));
  const forksAtStart = stat(await m.info('stats'), 'total_forks');

  let loading = true;
  let commands = 0;
  const load = (async () => {
    for (let seed = 1; loading; seed++) {
      await mixedLoad(master.port, { commands: 2000, seed, keys: 5000, bigValue: 60_000 });
      commands += 2000;
    }
  })();

  const end = Date.now() + MINUTES * 60_000;
  const faults: string[] = [];
  const restart = async (env?: NodeJS.ProcessEnv): Promise<void> => {
    await relay.stop('SIGKILL');
    try {
      relay = await startRelayProcess(args, env ? { env: { ...process.env, ...env } } : {});
    } catch (err) {
      if (!/signal SIGKILL/.test((err as Error).message)) throw err;
      relay = await startRelayProcess(args);
    }
  };
  const kinds = ['rename', 'writev', 'datasync', 'open:w', 'rm', 'any'];
  for (let i = 0; Date.now() < end; i++) {
    const started = Date.now();
    switch (i % 5) {
      case 0: {
        const filler = join(fsDir, 'filler');
        fillFilesystem(filler);
        await new Promise((r) => setTimeout(r, 8000));
        rmSync(filler);
        faults.push('disk filled for 8 s');
        break;
      }
      case 1:
        await restart();
        faults.push('relay SIGKILLed');
        break;
      case 2: {
        const kind = kinds[i % kinds.length]!;
        const n = 1 + (i % 17);
        await restart({ PSYNC_RELAY_FAILPOINT: `${kind}@${n}` });
        await new Promise((r) => setTimeout(r, 5000));
        const died = relay.proc.signalCode === 'SIGKILL';
        await restart();
        faults.push(`failpoint ${kind}@${n}${died ? ' (died)' : ''}`);
        break;
      }
      case 3: {
        const r = replicas[i % replicas.length]!;
        r.proc.kill('SIGSTOP');
        await new Promise((res) => setTimeout(res, 15000));
        r.proc.kill('SIGCONT');
        faults.push('a replica SIGSTOPped for 15 s');
        break;
      }
      default: {
        const p = spawn('redis-cli', ['-p', String(port), '--rdb', join(scratch, 'rdb-only.rdb')], { stdio: 'ignore' });
        const [code] = (await once(p, 'exit')) as [number | null];
        // 1: refused with a reason (its fetch failed: the stream outgrew log.refresh-hold, a full disk, ...).
        faults.push(`redis-cli --rdb (a full sync, maybe a refresh; exit ${code})`);
      }
    }
    t.comment(`${new Date().toISOString()} ${faults[faults.length - 1]} (${Date.now() - started} ms); ${commands} commands so far`);
    await new Promise((r) => setTimeout(r, 3000));
  }
  loading = false;
  await load;
  await m.call('SET', 'soak-done', '1');
  const { offset, digest } = await waitConverged(m, clients, 'every replica holds the master dataset', 300_000);
  const x = await (await import('../test/helpers/redis-client.js')).RedisClient.connect(port);
  const xi = await x.info('replication');
  await x.close();
  t.comment(
    `soak done: ${commands} commands, ${(offset / 1e9).toFixed(2)} GB of stream, ${faults.length} faults, ` +
      `master forks since start: ${stat(await m.info('stats'), 'total_forks') - forksAtStart}, relay snapshot refreshes (this run): ${xi['relay_snapshot_refreshes']}, digest ${digest}`,
  );
  t.match(digest, /^[0-9a-f]{40}$/, `all ${clients.length} replicas converged to digest ${digest} at offset ${offset}`);
  t.ok(faults.length >= 5, 'faults were injected');
});
