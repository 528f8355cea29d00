import type { ListenUser } from '../config/types.js';

export type Role = ListenUser['role'];

/**
 * Clients must AUTH when the default user has a password or named users exist (the default user is then off
 * without one). The one test of "auth is configured": commands, the listener and protected mode ask it.
 */
export function authRequired(cfg: { readonly password: string | null; readonly users: readonly unknown[] }): boolean {
  return cfg.password !== null || cfg.users.length > 0;
}

/** The channel Sentinels announce themselves and the master on (Redis sentinel.c). */
export const SENTINEL_HELLO_CHANNEL = '__sentinel__:hello';

/** Open to every role: logging in, out and keeping the connection alive. */
const CONNECTION = ['auth', 'hello', 'ping', 'quit', 'reset'];

/**
 * What each role may run (`command|subcommand` for CLIENT and CONFIG); `admin` runs everything.
 * - replication: what a replica or a sync tool sends to its master (Redis's `+psync +replconf +ping`), plus
 *   read-only introspection (INFO, ROLE: less than the dataset PSYNC already hands over).
 * - sentinel: what Sentinel sends to a replica it monitors, as Redis documents its ACL
 *   (`+multi +slaveof +ping +exec +subscribe +config|rewrite +role +publish +info +client|setname +client|kill`),
 *   with pub/sub held to the hello channel.
 */
const ALLOWED: Record<Exclude<Role, 'admin'>, ReadonlySet<string>> = {
  replication: new Set([
    ...CONNECTION, 'psync', 'sync', 'replconf', 'select', 'echo', 'command', 'info', 'role',
    'client|setname', 'client|getname', 'client|id', 'client|info', 'client|setinfo',
  ]),
  sentinel: new Set([
    ...CONNECTION, 'info', 'role', 'replicaof', 'slaveof', 'config|rewrite', 'client|kill', 'client|setname',
    'client|getname', 'client|id', 'client|setinfo', 'multi', 'exec', 'discard', 'subscribe', 'unsubscribe', 'publish',
  ]),
};

/** May `role` run `full` (`name` or `name|sub`)? */
export function roleAllows(role: Role, full: string): boolean {
  return role === 'admin' || ALLOWED[role].has(full);
}

/** Channel arguments of the pub/sub commands a role is restricted on, or null when `name` takes none to check. */
export function channelArgs(name: string, args: Buffer[]): Buffer[] | null {
  if (name === 'subscribe') return args.slice(1);
  if (name === 'publish') return args.slice(1, 2);
  return null;
}

/** The sentinel role's channels: the hello channel only. Other roles may not subscribe or publish at all. */
export function channelAllowed(role: Role, channel: Buffer): boolean {
  return role === 'admin' || (role === 'sentinel' && channel.toString('latin1') === SENTINEL_HELLO_CHANNEL);
}
