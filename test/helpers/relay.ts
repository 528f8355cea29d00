import type { Test } from 'tap';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createLogger } from '../../src/log.js';
import { validateConfig } from '../../src/config/schema.js';
import { Relay } from '../../src/relay.js';
import { testLog } from './log-defaults.js';
import { freePort } from './ports.js';
import { RedisClient } from './redis-client.js';
import { tempDir } from './temp-dir.js';

export interface TestRelay {
  readonly relay: Relay;
  readonly port: number;
  readonly dir: string;
  client(): Promise<RedisClient>;
  stop(): Promise<void>;
}

/**
 * Starts a Relay in this process (so coverage sees it) on a free port with a fresh data dir.
 * `config` is YAML-shaped (kebab-case keys), merged over test defaults (`log.memory-prefault: false` among them). Logs go nowhere unless RELAY_TEST_LOG=level.
 */
export async function startRelay(config: Record<string, unknown> = {}, dir?: string): Promise<TestRelay> {
  const dataDir = dir ?? tempDir('psync-relay-test-');
  let web = config['web'] as Record<string, unknown> | undefined;
  let relay: Relay;
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const raw = {
      dir: dataDir,
      ...config,
      listen: { port, ...(config['listen'] as object | undefined) },
      web: { port: 0, ...web },
      upstream: { 'backoff-min': '50ms', 'backoff-max': '500ms', ...(config['upstream'] as object | undefined) },
      log: testLog(config['log'] as object | undefined),
    };
    const cfg = validateConfig(raw, null);
    const level = (process.env['RELAY_TEST_LOG'] ?? 'silent') as 'silent';
    relay = new Relay(cfg, createLogger(level, level === 'silent' ? undefined : process.stderr));
    try {
      await relay.start();
      break;
    } catch (err) {
      // A port from freePort() taken by another process before the relay bound it (freePort's contract: retry).
      if (attempt >= 5 || !portTaken(err)) throw err;
      await relay.close().catch(() => undefined);
      if (typeof web?.['port'] === 'number' && web['port'] !== 0) web = { ...web, port: await freePort() };
    }
  }
  let stopped = false;
  return {
    relay,
    port: relay.port,
    dir: dataDir,
    client: () => RedisClient.connect(relay.port),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await relay.close();
    },
  };
}

function portTaken(err: unknown): boolean {
  const e = err as { code?: string; message?: string } | null;
  return e?.code === 'RELAY_ERR_WEB_LISTEN' || e?.code === 'EADDRINUSE' || /EADDRINUSE/.test(e?.message ?? '');
}

/** The published snapshot files in a relay's data dir (snapshot-<epoch>-<replid>-<offset>.rdb), oldest first. */
export function snapshotFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((n) => /^snapshot-\d+-[0-9a-f]{40}-\d+\.rdb$/.test(n))
    .sort()
    .map((n) => join(dir, n));
}

/** startRelay, and a client of it, both closed when `t` ends. */
export async function startRelayWithClient(t: Test, config: Record<string, unknown> = {}): Promise<{ relay: TestRelay; x: RedisClient }> {
  const relay = await startRelay(config);
  t.teardown(() => relay.stop());
  const x = await relay.client();
  t.teardown(() => x.close());
  return { relay, x };
}
