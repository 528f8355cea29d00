import { readFileSync } from 'node:fs';
import type { Logger } from '../log.js';
import type { RelayConfig, ListenConfig } from '../config/types.js';

/**
 * File descriptors the relay keeps for itself besides its RESP clients: Node's own, the disk log's segments and
 * their checksum files, snapshots open for transfers and fetches, upstream and Sentinel links, point-in-time
 * listeners (Redis keeps 32, CONFIG_MIN_RESERVED_FDS; the relay has more files of its own). The web port's
 * subscribers come on top.
 */
export const RESERVED_FDS = 128;

/** The soft limit on open files (RLIMIT_NOFILE, which Node raises to the hard limit at start); null = unknown or none. */
export function openFilesLimit(read: () => string = () => readFileSync('/proc/self/limits', 'utf8')): number | null {
  try {
    const m = /^Max open files\s+(\S+)/m.exec(read());
    const n = m && m[1] !== 'unlimited' ? Number(m[1]) : NaN;
    return Number.isSafeInteger(n) ? n : null;
  } catch {
    return null; // not Linux: no /proc
  }
}

/**
 * listen.max-clients within the open files limit, as Redis lowers maxclients at start: a flood of connections past
 * it took every descriptor, so the disk log's writes failed (EMFILE), snapshots could not be opened, and new
 * clients were closed without the `max number of clients` error. Warns when it lowers the value.
 */
export function listenWithinFdLimit(config: RelayConfig, logger: Logger, limit = openFilesLimit()): ListenConfig {
  if (limit === null) return config.listen;
  const reserved = RESERVED_FDS + (config.web.port !== 0 ? config.web.maxSubscribers : 0);
  const wanted = config.listen.maxClients;
  const room = Math.max(1, limit - reserved);
  if (wanted <= room) return config.listen;
  logger.warn(
    { limit: 'listen.max-clients', value: wanted, maxClients: room, openFilesLimit: limit, reserved },
    `the open files limit (${limit}) leaves room for ${room} clients (the relay keeps ${reserved} descriptors for its files, links and web port): listen.max-clients lowered to ${room}; raise the limit (ulimit -n, systemd LimitNOFILE=) to serve ${wanted}`,
  );
  return { ...config.listen, maxClients: room };
}
