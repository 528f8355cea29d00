import { readFileSync } from 'node:fs';

/**
 * listen.tcp-backlog, like Redis tcp-backlog: how many connections the kernel completes and queues for the relay to
 * accept. Node (libuv 1.45 and later) accepts one connection per turn of the event loop, where Redis accepts up to a
 * thousand, so a storm of connections (replicas reconnecting at once) fills the queue faster than the relay drains
 * it. Past it the kernel drops the handshakes' packets and the clients wait on its retransmissions: 3,000
 * connections at once with Redis's 511 (a 2-core machine) were not all accepted 20 s later; with 4096, in 0.5 s.
 */

/** net.core.somaxconn, the kernel's cap on every listen backlog; null = unknown (not Linux). */
export function somaxconn(read: () => string = () => readFileSync('/proc/sys/net/core/somaxconn', 'utf8')): number | null {
  try {
    const n = Number(read().trim());
    return Number.isSafeInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/** The warning Redis gives when the kernel caps tcp-backlog below what was asked; null when it does not. */
export function backlogCapWarning(wanted: number, cap: number | null = somaxconn()): string | null {
  if (cap === null || cap >= wanted) return null;
  return `listen.tcp-backlog ${wanted} cannot be enforced: /proc/sys/net/core/somaxconn is ${cap}; raise it (sysctl net.core.somaxconn) so a storm of connections is queued rather than dropped`;
}
