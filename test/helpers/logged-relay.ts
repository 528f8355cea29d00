import { tempDir } from './temp-dir.js';
import type { Test } from 'tap';
import { validateConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { testLog } from './log-defaults.js';
import { Relay } from '../../src/relay.js';
import { freePort } from './ports.js';
import { RedisClient } from './redis-client.js';
import { waitFor } from './wait.js';

export type LogLine = Record<string, unknown>;

export interface LoggedRelay {
  readonly relay: Relay;
  readonly port: number;
  /** Every log line so far (info and up), parsed. */
  readonly lines: LogLine[];
  /** Waits for a line whose `limit` is `limit`. */
  logged(limit: string): Promise<LogLine>;
  /** A new client, closed at the end of the test. */
  client(): Promise<RedisClient>;
}

/**
 * An in-process relay (coverage sees it) whose log lines are kept, stopped when `t` ends. `config` is YAML-shaped;
 * `listen` is merged over a free port; no upstream, no disk log, no web server and no log.memory-prefault unless given.
 */
export async function startLoggedRelay(t: Test, config: Record<string, unknown> = {}): Promise<LoggedRelay> {
  const lines: LogLine[] = [];
  const dest = { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) };
  const port = await freePort();
  const raw = {
    upstream: { host: null },
    web: { port: 0 },
    // Its own dir per relay: two relays of one test must not share state.json, snapshots or temp files.
    dir: tempDir('psync-relay-logged-'),
    ...config,
    listen: { port, ...(config['listen'] as object | undefined) },
    log: testLog((config['log'] as object | undefined) ?? { disk: 0 }),
  };
  const relay = new Relay(validateConfig(raw, null), createLogger('info', dest));
  await relay.start();
  t.teardown(() => relay.close());
  return {
    relay,
    port: relay.port,
    lines,
    logged: (limit) => waitFor(() => lines.find((l) => l['limit'] === limit), { what: `a log line with limit ${limit}`, timeoutMs: 10_000 }),
    client: async () => {
      const c = await RedisClient.connect(relay.port);
      t.teardown(() => c.close());
      return c;
    },
  };
}
