// A topology = a fresh master, plus (for `redis` / `relay*` / `c-ref`) the forwarder the sink's replicas connect to.
// Also the workload (redis-benchmark), the warm-up, and helpers that wait for offsets.
import { nowMs, sleep } from './clock.js';
import { runCommand, startCRef, startRedis, startRelay } from './procs.js';

export const LABEL = {
  raw: 'raw reference',
  direct: 'direct (master)',
  redis: 'redis intermediate',
  relay: 'psync-relay',
  'relay-mem': 'psync-relay mem-only',
  'c-ref': 'minimal C relay',
};
/** What --topologies accepts (`raw` is a row of its own, not a topology). */
export const TOPOLOGY_KINDS = ['redis', 'relay', 'relay-mem', 'direct', 'c-ref'];
export const isRelay = (k) => k === 'relay' || k === 'relay-mem';

/**
 * Limits for the issue-15 scenarios (fanout, drain, idle): nobody is disconnected for lag, so every run measures
 * the same job: every replica gets every byte. On the master: the forwarder is never dropped (we measure the
 * forwarder, not the master's patience). On the redis intermediate: its replicas are never dropped, as the relay
 * with its disk log never drops a lagging replica (a paused one in the drain scenario would otherwise be cut
 * at 256mb). The relay keeps its defaults (log.memory 64mb, log.disk 1gb).
 */
export const NO_REPLICA_LIMIT = ['--client-output-buffer-limit', 'replica 0 0 0'];

/**
 * master [+ intermediate redis-server | relay | minimal C relay]; `target` is where the sinks connect.
 * unlimited: NO_REPLICA_LIMIT on the redis-servers (and a huge replica-max-lag for the mem-only relay);
 * otherwise the 256mb limits of bench/lib/procs.js REDIS_LIMITS. relayNodeArgs: node flags for the relay.
 */
export async function topology(kind, { root, populate = 0, unlimited = false, relayNodeArgs = [] } = {}) {
  const extra = unlimited ? NO_REPLICA_LIMIT : [];
  const master = await startRedis('master', extra);
  let middle = null;
  try {
    if (populate > 0) await master.call(['DEBUG', 'POPULATE', String(populate)], 300000);
    if (kind === 'redis') middle = await startRedis('intermediate', ['--replicaof', '127.0.0.1', String(master.port), ...extra]);
    if (isRelay(kind)) {
      middle = await startRelay(master.port, root, {
        disk: kind === 'relay-mem' ? 0 : null,
        maxLag: unlimited && kind === 'relay-mem' ? '1024gb' : '256mb',
        nodeArgs: relayNodeArgs,
      });
      if (relayNodeArgs.length) middle.graceMs = 30000;
    }
    if (kind === 'c-ref') middle = await startCRef(master.port);
    if (middle) await middle.waitLinkUp();
  } catch (err) {
    await middle?.stop();
    await master.stop();
    throw err;
  }
  return {
    kind,
    master,
    middle,
    /** where the replicas connect */
    target: middle ?? master,
    /** the process that forwards the stream to the replicas */
    forwarder: middle ?? master,
    async stop() {
      await middle?.stop();
      await master.stop();
    },
  };
}

const benchArgs = (port, n) => ['-h', '127.0.0.1', '-p', String(port), '-t', 'set', '-d', '1024', '-P', '32', '-n', String(n), '-r', '100000', '-q'];
export const WORKLOAD = 'redis-benchmark -t set -d 1024 -P 32 -r 100000';

/** The issue-15 workload against the master; resolves with its requests per second. */
export async function redisBenchmark(port, n) {
  const out = await runCommand('redis-benchmark', benchArgs(port, n), 600000);
  const m = /SET: ([\d.]+) requests per second/.exec(out.replace(/\r/g, '\n'));
  return m ? Number(m[1]) : NaN;
}

/**
 * Writes a key now and then until every sink receives each write promptly (3 in a row within 20 ms). A
 * redis-server that sent a replica a diskless (EOF-marked) RDB starts streaming to it only after it has reaped the
 * RDB child and then received the replica's next REPLCONF ACK: ~0.5 s here, which would land in the measurement.
 * With many replicas "promptly" scales: 20 ms + 0.1 ms per replica.
 */
export async function warmUp(topo, sink, ids, maxMs = 20000) {
  const deadline = nowMs() + maxMs;
  const fastMs = 20 + ids.length * 0.1;
  let fast = 0;
  let rounds = 0;
  while (fast < 3 && nowMs() < deadline) {
    await topo.master.call(['SET', 'bench:warmup', String(rounds++)]);
    const target = await topo.master.offset();
    const t = nowMs();
    await sink.call('waitOffset', { target, ids, timeoutMs: maxMs });
    fast = nowMs() - t < fastMs ? fast + 1 : 0;
    await sleep(20);
  }
  return rounds;
}

/** Waits until the forwarder holds the master's current offset. */
export async function waitMiddleCaughtUp(topo, timeoutMs = 60000) {
  if (!topo.middle) return;
  const target = await topo.master.offset();
  await waitOffsetOf(topo.middle, target, timeoutMs);
}

/** Polls a node's master_repl_offset until it reaches `target`. */
export async function waitOffsetOf(node, target, timeoutMs = 300000) {
  const deadline = nowMs() + timeoutMs;
  while ((await node.offset()) < target) {
    if (nowMs() > deadline) throw new Error(`${node.kind} did not reach offset ${target} within ${timeoutMs} ms`);
    await sleep(10);
  }
  return nowMs();
}

/**
 * Why replicas were dropped, from the logs of the master and the forwarder (relay pino JSON, redis-server
 * warnings): an output limit on the forwarder, or the master dropping the forwarder's own link (then the
 * forwarder re-syncs and disconnects its replicas).
 */
const DROP_RE = /closing replica|output buffer|replica-max-lag|fell behind|new history|upstream link failed|lost|full resync|Disconnecting/i;
export function dropReasons(...nodes) {
  const out = [];
  for (const node of nodes.filter(Boolean)) {
    const lines = node.log().split('\n').filter((l) => DROP_RE.test(l));
    const reasons = lines
      .map((l) => {
        const redis = /^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ [*#-] (.*)$/.exec(l);
        if (redis) return redis[1];
        try {
          const j = JSON.parse(l);
          return `${j.msg}${j.reason ? `: ${j.reason}` : ''}${j.err?.message ? `: ${j.err.message}` : ''}`;
        } catch {
          return null; // a line cut by the log tail
        }
      })
      .filter((r) => r !== null);
    const uniq = [...new Set(reasons.map((r) => r.replace(/id=\d+ addr=\S+ .*(?= scheduled)/, 'id=.. (replica)').replace(/\d{4,}/g, 'N')))];
    if (uniq.length) out.push(`${node.kind}: ${uniq.slice(0, 3).join(' / ')}${lines.length > 1 ? ` (${lines.length} lines)` : ''}`);
  }
  return out;
}

/** Connected replicas summary for a run: complete at `target`, dropped (closed), and when. */
export function outcome(conns, target, start, t0) {
  const complete = conns.filter((c) => c.state === 'stream' && c.offset >= target);
  const dropped = conns.filter((c) => c.state === 'closed');
  const r = { complete: complete.length, dropped: dropped.length };
  if (dropped.length) {
    r.drops = {
      firstAfterSeconds: (Math.min(...dropped.map((c) => c.closedAt)) - t0) / 1000,
      lastAfterSeconds: (Math.max(...dropped.map((c) => c.closedAt)) - t0) / 1000,
      meanBytesBeforeDrop: dropped.reduce((a, c) => a + (c.offset - start), 0) / dropped.length,
    };
  }
  return r;
}
