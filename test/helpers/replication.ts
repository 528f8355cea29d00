import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import { RedisClient } from './redis-client.js';
import { startRedis, type RedisServer } from './redis-server.js';
import { waitFor } from './wait.js';

/** A real redis-server replica of `port` (a relay or a master). */
export function startReplica(port: number, extraArgs: string[] = []): Promise<RedisServer> {
  return startRedis({ args: ['--replicaof', '127.0.0.1', String(port), ...extraArgs] });
}

/** A redis-server replica of `port` and a client of it (closed at the end of `t`). */
export async function replicaOf(t: Test, port: number): Promise<{ replica: RedisServer; r: RedisClient }> {
  const replica = await startReplica(port);
  const r = await replica.client();
  t.teardown(() => r.close());
  return { replica, r };
}

/** `n` redis-server replicas of `port` with a client each (closed at the end of `t`), once they hold `master`'s dataset. */
export async function onlineReplicas(t: Test, port: number, master: RedisClient, n: number): Promise<{ servers: RedisServer[]; clients: RedisClient[] }> {
  const servers: RedisServer[] = [];
  for (let i = 0; i < n; i++) servers.push(await startReplica(port));
  const clients = await Promise.all(servers.map((s) => s.client()));
  t.teardown(async () => {
    for (const c of clients) await c.close();
  });
  await waitConverged(master, clients, 'replicas online');
  return { servers, clients };
}

/** One INFO field of the server on `port`, as a number, over a connection of its own. */
export async function statOf(port: number, section: string, key: string): Promise<number> {
  const c = await RedisClient.connect(port);
  try {
    return stat(await c.info(section), key);
  } finally {
    await c.close();
  }
}

/**
 * The offset of the master on `masterPort` and those of the servers on `ports`, once they are all equal (the master
 * read before and after them, as its PINGs move it at any moment), or the last look when `timeoutMs` passes: assert
 * on what it returns.
 */
export async function offsetsBeside(masterPort: number, ports: readonly number[], timeoutMs = 30_000): Promise<{ master: number; others: number[] }> {
  const offsetOf = (port: number): Promise<number> => statOf(port, 'replication', 'master_repl_offset');
  let last = { master: -1, others: ports.map(() => -1) };
  await waitFor(
    async () => {
      const before = await offsetOf(masterPort);
      const others: number[] = [];
      for (const p of ports) others.push(await offsetOf(p));
      last = { master: await offsetOf(masterPort), others };
      return last.master === before && others.every((o) => o === before);
    },
    { timeoutMs, what: "the master's offset everywhere" },
  ).catch(() => undefined);
  return last;
}

export async function info(c: RedisClient, section = 'replication'): Promise<Record<string, string>> {
  return c.info(section);
}

export async function digest(c: RedisClient): Promise<string> {
  return c.callString('DEBUG', 'DIGEST');
}

/** Waits until every replica's link is up, its offset equals the master's, and digests are equal. */
/**
 * Waits until the relay behind `x` has no stream bytes waiting for its disk log (relay_log_disk_pending_bytes 0):
 * what it holds is then on disk, not only in memory (its writes go out in batches, and a busy disk is slow).
 */
export async function diskLogCaughtUp(x: RedisClient, what = 'the disk log has the whole stream', timeoutMs?: number): Promise<void> {
  await waitFor(async () => stat(await x.info('replication'), 'relay_log_disk_pending_bytes') === 0 || undefined, { what, ...(timeoutMs !== undefined && { timeoutMs }) });
}

export async function waitConverged(master: RedisClient, replicas: RedisClient[], what = 'replicas converge', timeoutMs = 30000): Promise<{ offset: number; digest: string }> {
  return waitFor(
    async () => {
      const m = await master.info('replication');
      const offset = Number(m['master_repl_offset']);
      for (const r of replicas) {
        const ri = await r.info('replication');
        if (ri['master_link_status'] !== 'up' || Number(ri['master_repl_offset']) !== offset) return undefined;
      }
      // Offsets can move between reads: a write (the digests then differ, or the second look below does) or the
      // master's PING, which changes no data. On a big dataset the digests take seconds each (6.5 s for 700 MB), so
      // a PING lands between the looks nearly always: the second look asks only that every offset agree again.
      const d = await digest(master);
      for (const r of replicas) if ((await digest(r)) !== d) return undefined;
      const again = Number((await master.info('replication'))['master_repl_offset']);
      for (const r of replicas) if (Number((await r.info('replication'))['master_repl_offset']) !== again) return undefined;
      return { offset: again, digest: d };
    },
    { timeoutMs, what },
  );
}

/** A full sync a Redis replica took, in its log (as opposed to "Successful partial resynchronization"); Valkey says PRIMARY. */
export const REPLICA_FULL_SYNC_LINE = /<-> REPLICA sync: Finished with success/g;
/** A partial resync a Redis replica took, in its log. */
export const REPLICA_PARTIAL_SYNC_LINE = /Successful partial resynchronization with (master|primary)/g;
/**
 * What a Redis replica logs when its master sent bytes it could not take: a protocol error on the link, an aborted or
 * unexpected reply in the handshake, an RDB that does not load or check. A relay that kept its place never causes one.
 */
export const REPLICA_BAD_STREAM_LINE = /Protocol error|MASTER aborted|PRIMARY aborted|Unexpected|Bad protocol|Failed trying to load|RDB checksum|Wrong signature|Short read|Internal error in RDB|Guru Meditation|=== REDIS BUG REPORT/i;

/** How many full and partial syncs a Redis replica's log shows. */
export function replicaSyncs(logs: string): { full: number; partial: number } {
  return { full: (logs.match(REPLICA_FULL_SYNC_LINE) ?? []).length, partial: (logs.match(REPLICA_PARTIAL_SYNC_LINE) ?? []).length };
}

export function stat(infoMap: Record<string, string>, key: string): number {
  const v = infoMap[key];
  if (v === undefined) throw new Error(`INFO has no ${key}`);
  return Number(v);
}

/**
 * A real dataset's RDB (DEBUG POPULATE `keys` keys, SAVE), and the digest after `SET after-rdb yes`, for a scripted
 * upstream to serve: what a replica holds after that RDB and that one command.
 */
export async function datasetRdb(keys = 20000): Promise<{ rdb: Buffer; digest: string }> {
  const src = await startRedis();
  const c = await src.client();
  await c.call('DEBUG', 'POPULATE', keys, 'key', 100);
  await c.call('SAVE');
  await c.call('SET', 'after-rdb', 'yes');
  const d = await digest(c);
  await c.close();
  const rdb = readFileSync(join(src.dir, 'dump.rdb'));
  await src.stop();
  return { rdb, digest: d };
}
