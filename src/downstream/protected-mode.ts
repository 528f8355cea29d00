import { isLoopback } from '../config/schema.js';
import type { ListenConfig } from '../config/types.js';
import { authRequired } from './roles.js';

/**
 * Redis protected-mode: with `listen.protected-mode` on and no way to authenticate (no `listen.password`, no
 * `listen.users`), only local clients may connect; the others get `-DENIED` and are closed at once.
 */
export function protectedModeOn(config: Pick<ListenConfig, 'protectedMode' | 'password' | 'users'>): boolean {
  return config.protectedMode && config.password === null && config.users.length === 0;
}

/**
 * Local as Redis 7.0 counts it (`islocalClient`): 127.0.0.1 and ::1 exactly, so 127.0.0.2 is not local. A dual-stack
 * listener shows an IPv4 peer as `::ffff:127.0.0.1`: the same address, so local too.
 */
export function isLocalPeer(address: string | undefined): boolean {
  return address === '127.0.0.1' || address === '::1' || address === '::ffff:127.0.0.1';
}

/** Redis's DENIED reply, naming the relay's settings. */
export const DENIED =
  '-DENIED psync-relay is running in protected mode because listen.protected-mode is on and neither listen.password ' +
  'nor listen.users is set. In this mode connections are only accepted from the loopback interface (127.0.0.1, ::1). ' +
  'To accept clients from other hosts, do one of: 1) set listen.password or listen.users in the config file and ' +
  'restart the relay (replicas then AUTH with masterauth/masteruser); 2) keep listen.bind on a loopback address and ' +
  'reach the relay through a tunnel; 3) set listen.protected-mode: false, only if every host that can reach this ' +
  'port is trusted: anyone who connects may then read the whole dataset and make the relay follow another master.\r\n';

/** What to warn about at start, if anything: an exposed listener nobody can use, or one anybody can. */
export function protectedModeWarning(config: Pick<ListenConfig, 'protectedMode' | 'password' | 'users' | 'bind'>): string | null {
  if (authRequired(config) || isLoopback(config.bind)) return null;
  return config.protectedMode
    ? 'protected mode: no listen.password or listen.users, so only loopback clients will be accepted; set a password or users to serve replicas on other hosts'
    : 'listen.protected-mode is off with no listen.password or listen.users on a non-loopback bind: any client that can reach the port may read the whole dataset, run REPLICAOF and CLIENT KILL';
}
