#!/usr/bin/env node
import { loadConfig, HELP_TEXT } from './config/load.js';
import { createLogger } from './log.js';
import { Relay, RELAY_VERSION } from './relay.js';
import { RelayError } from './errors.js';

/**
 * CLI entry: flags → config → Relay; SIGTERM/SIGINT shut it down gracefully (replicas get up to shutdown-timeout to
 * acknowledge the stream; a second signal cuts that short) and exit 0; SIGHUP reloads listen.tls's certificate; exit 2
 * on a bad config, 1 on a start failure.
 */
async function main(): Promise<number> {
  let loaded;
  try {
    loaded = loadConfig(process.argv.slice(2));
  } catch (err) {
    const e = err as Error;
    process.stderr.write(`psync-relay: ${e.message}\n${err instanceof RelayError ? '' : String(e.stack) + '\n'}Run psync-relay --help for usage.\n`);
    return 2;
  }
  if (loaded.help) {
    process.stdout.write(HELP_TEXT);
    return 0;
  }
  if (loaded.version) {
    process.stdout.write(`psync-relay ${RELAY_VERSION}\n`);
    return 0;
  }
  const logger = createLogger(loaded.config.logging.level);
  const relay = new Relay(loaded.config, logger);
  // SIGHUP (a closed terminal, `systemctl reload`, a certificate renewal hook) must not end the relay, as it does not
  // end redis-server: Node's default would kill it at once, without the graceful shutdown and with every replica's
  // link. It reloads the TLS listener's certificate instead. Installed before the start, which can take a while.
  process.on('SIGHUP', () => relay.reloadTls());
  // Another process holds the data directory now: no graceful shutdown (it writes the state file), just stop.
  relay.onFatal = () => process.exit(1);
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) {
      // A second signal: stop waiting for replicas, close now.
      logger.warn({ signal }, 'second signal, not waiting for replicas');
      void relay.shutdown();
      return;
    }
    closing = true;
    logger.info({ signal, timeoutMs: loaded.config.shutdownTimeoutMs }, 'shutting down');
    relay.shutdown().then(
      () => process.exit(0),
      (err) => {
        logger.error({ err }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  // SHUTDOWN from an admin: what SIGTERM does; SHUTDOWN NOW as a second signal would.
  relay.onShutdown = (now) => {
    shutdown('SHUTDOWN');
    if (now) shutdown('SHUTDOWN NOW');
  };
  try {
    await relay.start();
  } catch (err) {
    logger.fatal({ err }, 'relay failed to start');
    // Whatever the failed start left behind (a timer, a handle) must not keep a process that is no relay alive.
    process.exit(1);
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  // A file size limit (RLIMIT_FSIZE) must fail the write with EFBIG (the disk log reports it and retries), never end
  // the process: Node ignores SIGXFSZ, but a preloaded module that listens for signals (signal-exit, as under tap's
  // coverage) re-raises it unless the process has a listener of its own.
  process.on('SIGXFSZ', () => {});
  return -1;
}

main().then((code) => {
  if (code >= 0) process.exitCode = code;
});
