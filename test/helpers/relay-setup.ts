import type { Test } from 'tap';
import { RedisClient } from './redis-client.js';
import type { RedisServer } from './redis-server.js';
import { relayArgs, startRelayProcess, type RelayProcess } from './relay-process.js';
import { onlineReplicas } from './replication.js';

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
