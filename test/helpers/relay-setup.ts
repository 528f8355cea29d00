import type { Test } from 'tap';
import { RedisClient } from './redis-client.js';
import type { RedisServer } from './redis-server.js';
import { relayArgs, startRelayProcess, type RelayProcess } from './relay-process.js';
import { diskLogCaughtUp, onlineReplicas, replicaOf, waitConverged } from './replication.js';

export interface RelaySetup {
  readonly relay: RelayProcess;
  /** The relay's directory (its data in dir/data) and port, and the arguments that start it again. */
  readonly dir: string;
  readonly port: number;
  readonly args: string[];
  /** A client of the relay. */
  readonly x: RedisClient;
  readonly replicas: RedisServer[];
  readonly clients: RedisClient[];
}

/**
 * A relay process (relay.yaml `yaml`, in a fresh `dirPrefix` directory) following `master`, a client of it and `n`
 * redis-server replicas holding the master's dataset; all stopped or closed at the end of `t`.
 */
export async function relayWithReplicas(t: Test, dirPrefix: string, master: { port: number; client: RedisClient }, yaml: string, n: number): Promise<RelaySetup> {
  const { dir, port, args } = await relayArgs(dirPrefix, master.port, yaml);
  const relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  const { servers, clients } = await onlineReplicas(t, port, master.client, n);
  return { relay, dir, port, args, x, replicas: servers, clients };
}

/**
 * A relay started with `args` (on `port`) and a redis-server replica of it; `load` runs on the master, the replica
 * converges on `m` and the relay's disk log takes the whole stream, then the relay is SIGKILLed: what the crash left
 * on disk is the caller's to look at or damage before it starts the relay again. The replica and its client `r` are
 * stopped or closed at the end of `t`.
 */
export async function crashAfterLoad(t: Test, args: string[], port: number, m: RedisClient, load: () => Promise<unknown>): Promise<{ replica: RedisServer; r: RedisClient }> {
  const relay = await startRelayProcess(args);
  t.teardown(() => relay.stop('SIGKILL'));
  const { replica, r } = await replicaOf(t, port);
  await load();
  await waitConverged(m, [r], 'replica online');
  // On a disk shared with another writer the replica can be megabytes ahead of the disk log (a segment of 20 KB
  // was left once, where the test damages the middle of a longer one).
  const x = await RedisClient.connect(port);
  await diskLogCaughtUp(x);
  await x.close();
  await relay.stop('SIGKILL');
  return { replica, r };
}
