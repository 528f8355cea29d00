import { RedisClient, type RedisArg } from './redis-client.js';
import { startRedis, type RedisServer } from './redis-server.js';
import { waitFor } from './wait.js';
import type { RespValue } from '../../src/resp/reply-reader.js';

/**
 * Helpers for failover tests. Sentinel sends `CLIENT KILL TYPE normal` to every instance it reconfigures, so
 * long-lived test connections die mid-test: these helpers open a connection per call instead.
 */

export const MASTER_NAME = 'mymaster';
export const SENTINEL_USER = 'sentinel';
export const SENTINEL_PASS = 'sentinel-pw';

/** Runs `fn` on a fresh connection to `port`, then closes it. */
export async function withClient<T>(port: number, fn: (c: RedisClient) => Promise<T>): Promise<T> {
  const c = await RedisClient.connect(port);
  try {
    return await fn(c);
  } finally {
    await c.close().catch(() => {});
  }
}

export function call(port: number, ...args: RedisArg[]): Promise<RespValue> {
  return withClient(port, (c) => c.call(...args));
}

export function infoOf(port: number, section = 'replication'): Promise<Record<string, string>> {
  return withClient(port, (c) => c.info(section));
}

export function digestOf(port: number): Promise<string> {
  return withClient(port, (c) => c.callString('DEBUG', 'DIGEST'));
}

export function num(info: Record<string, string>, key: string): number {
  const v = info[key];
  if (v === undefined) throw new Error(`INFO has no ${key}`);
  return Number(v);
}

/** Like waitConverged, with a connection per look: every replica's link up at the master's offset, digests equal. */
export async function convergedPorts(masterPort: number, replicaPorts: number[], what: string, timeoutMs = 30_000): Promise<{ offset: number; digest: string }> {
  return waitFor(
    async () => {
      const offset = num(await infoOf(masterPort), 'master_repl_offset');
      for (const p of replicaPorts) {
        const ri = await infoOf(p);
        if (ri['master_link_status'] !== 'up' || num(ri, 'master_repl_offset') !== offset) return undefined;
      }
      const d = await digestOf(masterPort);
      for (const p of replicaPorts) if ((await digestOf(p)) !== d) return undefined;
      return num(await infoOf(masterPort), 'master_repl_offset') === offset ? { offset, digest: d } : undefined;
    },
    { timeoutMs, what },
  );
}

/** Writes `n` keys (with a large-ish value so the stream moves) in one pipeline. */
export async function writeKeys(port: number, tag: string, n = 200): Promise<void> {
  await withClient(port, async (c) => {
    const cmds: RedisArg[][] = [];
    for (let i = 0; i < n; i++) cmds.push(['SET', `${tag}:${i}`, `${tag}-value-${i}`.repeat(8)]);
    cmds.push(['HSET', `${tag}:h`, 'a', 1, 'b', 2], ['RPUSH', `${tag}:l`, 'x', 'y'], ['INCRBY', `${tag}:n`, n]);
    await c.pipeline(cmds);
  });
}

/**
 * redis-server args for a master whose replication stream stays quiet while a failover is in flight: with the
 * master still up (SENTINEL FAILOVER), anything it adds to its stream after the replica's promotion reaches the
 * other replicas (the relay) but not the promoted one, which then must full-sync them (a Redis replica in the
 * relay's place is no different). Two sources: Sentinel's hello PUBLISH every 2 s (propagated to replicas), denied
 * here to the Sentinels' ACL user (they still discover each other through the replicas' hello channel, the
 * relay's included), and the master's own PING every repl-ping-replica-period.
 */
export const QUIET_MASTER_ARGS = [
  '--user', SENTINEL_USER, 'on', `>${SENTINEL_PASS}`, '~*', '&*', '+@all', '-publish',
  '--repl-ping-replica-period', '3600',
];
/** A Redis replica the Sentinels may promote: their ACL user with every command, and no timeout from a quiet master. */
export const CANDIDATE_ARGS = ['--user', SENTINEL_USER, 'on', `>${SENTINEL_PASS}`, '~*', '&*', '+@all', '--repl-timeout', '600'];

export interface SentinelOptions {
  count?: number;
  /** Authenticate to the monitored instances as SENTINEL_USER (with QUIET_MASTER_ARGS / CANDIDATE_ARGS). */
  auth?: boolean;
  failoverTimeoutMs?: number;
}

/** Three (by default) Sentinels monitoring `masterPort` as MASTER_NAME, quorum 2, fast timeouts. */
export async function startSentinels(masterPort: number, opts: SentinelOptions = {}): Promise<RedisServer[]> {
  const conf = [
    'bind 127.0.0.1',
    'sentinel resolve-hostnames no',
    `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${masterPort} 2`,
    `sentinel down-after-milliseconds ${MASTER_NAME} 1000`,
    `sentinel failover-timeout ${MASTER_NAME} ${opts.failoverTimeoutMs ?? 10_000}`,
    `sentinel parallel-syncs ${MASTER_NAME} 5`,
    ...(opts.auth ? [`sentinel auth-user ${MASTER_NAME} ${SENTINEL_USER}`, `sentinel auth-pass ${MASTER_NAME} ${SENTINEL_PASS}`] : []),
    '',
  ].join('\n');
  return Promise.all(Array.from({ length: opts.count ?? 3 }, () => startRedis({ sentinel: true, sentinelConf: conf })));
}

/** SENTINEL MASTER as a map. */
export async function sentinelMaster(port: number): Promise<Record<string, string>> {
  const flat = (await call(port, 'SENTINEL', 'MASTER', MASTER_NAME)) as Buffer[];
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!.toString()] = flat[i + 1]!.toString();
  return out;
}

/** Waits until every Sentinel knows `replicas` replicas and every other Sentinel (found through hello messages). */
export async function sentinelsReady(sentinels: RedisServer[], replicas: number, timeoutMs = 30_000): Promise<void> {
  await waitFor(
    async () => {
      for (const s of sentinels) {
        const m = await sentinelMaster(s.port);
        if (Number(m['num-slaves']) !== replicas || Number(m['num-other-sentinels']) !== sentinels.length - 1) return undefined;
        if (m['flags'] !== 'master') return undefined;
      }
      return true;
    },
    { timeoutMs, what: `sentinels know ${replicas} replicas and each other` },
  );
}

/** The address a Sentinel gives for the master. */
export async function sentinelMasterAddr(port: number): Promise<string> {
  const r = (await call(port, 'SENTINEL', 'get-master-addr-by-name', MASTER_NAME)) as Buffer[];
  return `${r[0]!.toString()}:${r[1]!.toString()}`;
}

/** Waits until the node on `port` is a master; resolves with its replid. */
export async function waitPromoted(port: number): Promise<string> {
  await waitFor(async () => (await infoOf(port))['role'] === 'master', { what: `${port} promoted`, timeoutMs: 30_000 });
  return (await infoOf(port))['master_replid']!;
}

/** Waits until the node on `port` streams from `masterPort` under `replid`. */
export async function waitFollowing(port: number, masterPort: number, replid: string, what: string): Promise<void> {
  await waitFor(
    async () => {
      const i = await infoOf(port);
      return num(i, 'master_port') === masterPort && i['master_link_status'] === 'up' && i['master_replid'] === replid;
    },
    { what, timeoutMs: 30_000 },
  );
}

/** Waits until every node in `ports` carries `replid`. */
export async function waitReplid(ports: number[], replid: string, what: string): Promise<void> {
  await waitFor(
    async () => {
      for (const p of ports) if ((await infoOf(p))['master_replid'] !== replid) return false;
      return true;
    },
    { what, timeoutMs: 30_000 },
  );
}
