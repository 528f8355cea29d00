// Cold start (issue 16): a fresh relay, `--replicas` redis-server replicas attached to it before it has synced,
// a master with `--keys` keys (DEBUG POPULATE). Measures the seconds from the relay's start until every replica is
// online with the master's offset. `--relay-root DIR` runs the relay built in another checkout (e.g. a worktree
// at an older commit) for a before/after in the same run; `--repeats K` alternates them.
// `--mbit M` puts a throttled link (bench/lib/throttle-proxy.js, M Mbit/s, --delay ms one way) between the master
// and the relay: the relay's upstream is a WAN.
//   node bench/coldstart.js [--keys 1000000] [--replicas 10] [--repeats 2] [--mbit 200 --delay 20] [--relay-root DIR ...]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { forkHelper, freePort, startRedis, startRelay, cleanupAll } from './lib/procs.js';
import { compareArgs } from './lib/args.js';

const { argv, roots, opt } = compareArgs();
const KEYS = Number(opt('keys', 1_000_000));
const N = Number(opt('replicas', 10));
const REPEATS = Number(opt('repeats', 2));
// The default measures the relay's part: replicas are connections of the bench sink (they take the RDB and do
// not load it). --redis-replicas uses real redis-server replicas, whose own loading then dominates on 2 cores.
const REAL = argv.includes('--redis-replicas');
const sink = REAL ? null : forkHelper(fileURLToPath(new URL('./sink.js', import.meta.url)));
const MBIT = Number(opt('mbit', 0));
const DELAY_MS = Number(opt('delay', 0));
const proxy = MBIT > 0 ? forkHelper(fileURLToPath(new URL('./lib/throttle-proxy.js', import.meta.url))) : null;

async function replica(port) {
  const dir = mkdtempSync(join(tmpdir(), 'psync-coldstart-replica-'));
  const own = await freePort();
  const proc = spawn('redis-server', ['--port', String(own), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no',
    '--replicaof', '127.0.0.1', String(port), '--loglevel', 'warning', '--repl-diskless-load', 'disabled'], { stdio: 'ignore' });
  return { port: own, proc, dir };
}

async function info(port) {
  const p = spawn('redis-cli', ['-p', String(port), 'INFO', 'replication']);
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  await new Promise((r) => p.on('exit', r));
  return Object.fromEntries(out.split('\r\n').filter((l) => l.includes(':')).map((l) => l.split(':')));
}

async function run(root) {
  const master = await startRedis('master', ['--repl-diskless-sync-delay', '0']);
  await master.call(['DEBUG', 'POPULATE', String(KEYS), 'key', '64'], 600000);
  const offset = Number((await master.info('replication')).master_repl_offset);
  const upstream = proxy ? (await proxy.call('start', { targetPort: master.port, mbit: MBIT, delayMs: DELAY_MS })).port : master.port;
  const t0 = performance.now();
  const relay = await startRelay(upstream, root);
  if (sink) {
    const ids = await sink.call('connect', { port: relay.port, count: N });
    await sink.call('waitOnline', { ids, timeoutMs: 600000 }, 600000);
    const seconds = (performance.now() - t0) / 1000;
    await sink.call('closeAll');
    await relay.stop();
    await master.stop();
    return seconds;
  }
  const replicas = await Promise.all(Array.from({ length: N }, () => replica(relay.port)));
  for (;;) {
    const states = await Promise.all(replicas.map((r) => info(r.port)));
    if (states.every((s) => s.master_link_status === 'up' && Number(s.master_repl_offset) >= offset)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const seconds = (performance.now() - t0) / 1000;
  for (const r of replicas) {
    r.proc.kill('SIGKILL');
    rmSync(r.dir, { recursive: true, force: true });
  }
  await relay.stop();
  await master.stop();
  return seconds;
}

const results = Object.fromEntries(roots.map((r) => [r, []]));
for (let i = 0; i < REPEATS; i++) for (const root of roots) results[root].push(await run(root));
console.log(`cold start: ${N} replicas on a fresh relay, master with ${KEYS} keys${MBIT > 0 ? `, upstream over ${MBIT} Mbit/s + ${DELAY_MS} ms` : ''}; seconds until all online`);
for (const [root, secs] of Object.entries(results)) {
  const sorted = [...secs].sort((a, b) => a - b);
  console.log(`  ${root}: median ${sorted[Math.floor(sorted.length / 2)].toFixed(2)} s  (runs: ${secs.map((s) => s.toFixed(2)).join(', ')})`);
}
sink?.stop?.();
proxy?.stop?.();
cleanupAll();
process.exit(0);
