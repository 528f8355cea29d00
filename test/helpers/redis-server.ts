import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { freePort } from './ports.js';
import { RedisClient } from './redis-client.js';
import { waitFor } from './wait.js';
import { tempDir } from './temp-dir.js';

export interface StartRedisOptions {
  /** Extra argv for redis-server (no shell), appended after the defaults so they can override them. */
  args?: string[];
  /** Working dir (RDB, sentinel.conf). Default: a fresh mkdtemp under os.tmpdir(). */
  dir?: string;
  /** Run redis-sentinel with `sentinelConf` written to <dir>/sentinel.conf. */
  sentinel?: boolean;
  /** sentinel.conf text (e.g. `sentinel monitor mymaster 127.0.0.1 6379 1`); required with `sentinel: true`. */
  sentinelConf?: string;
  /** Readiness deadline (default 20000 ms). */
  timeoutMs?: number;
}

export interface RedisServer {
  readonly port: number;
  readonly host: string;
  readonly dir: string;
  /** The current process (a new one after restart()). */
  readonly proc: ChildProcess;
  /** A new connection; the caller closes it. */
  client(): Promise<RedisClient>;
  /** Kill (default SIGTERM, SIGKILL after 10 s) and await exit. Idempotent. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** stop() then start again on the same port and dir. */
  restart(): Promise<void>;
  /** stdout + stderr captured so far (all incarnations), for diagnostics. */
  logs(): string;
}

const HOST = '127.0.0.1';
const PORT_ATTEMPTS = 5;
const KILL_AFTER_MS = 10_000;
const INSTALL_HINT = 'run `bash scripts/install-redis.sh` (or install the redis-server, redis-tools and redis-sentinel packages)';

const running = new Set<ServerHandle>();

function onPath(bin: string): boolean {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, bin), fsConstants.X_OK);
      return true;
    } catch {
      // next
    }
  }
  return false;
}

function requireBinary(bin: string): void {
  if (!onPath(bin)) throw new Error(`${bin} not found on PATH: ${INSTALL_HINT}`);
}

function versionLine(): string {
  requireBinary('redis-server');
  return execFileSync('redis-server', ['--version'], { encoding: 'utf8' });
}

/** Version string of the redis-server on PATH, e.g. "7.0.15". */
export function redisVersion(): string {
  const out = versionLine();
  const m = /\bv=(\S+)/.exec(out);
  if (!m?.[1]) throw new Error(`cannot parse \`redis-server --version\` output: ${out.trim()}`);
  return m[1];
}

/** Which server the redis-server on PATH is: `Redis server v=7.4.1 ...` or `Valkey server v=8.0.1 ...` (a link to valkey-server). */
export function redisFlavor(): 'redis' | 'valkey' {
  const out = versionLine();
  if (out.startsWith('Redis server ')) return 'redis';
  if (out.startsWith('Valkey server ')) return 'valkey';
  throw new Error(`cannot tell Redis from Valkey by \`redis-server --version\` output: ${out.trim()}`);
}

/** Start a real redis-server (or redis-sentinel) on a free 127.0.0.1 port and wait until it answers PING. */
export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisServer> {
  const bin = opts.sentinel ? 'redis-sentinel' : 'redis-server';
  requireBinary(bin);
  if (opts.sentinel && opts.sentinelConf === undefined) throw new Error('startRedis: sentinel: true needs sentinelConf');
  const dir = opts.dir ?? tempDir(opts.sentinel ? 'psync-relay-sentinel-' : 'psync-relay-redis-');
  let confFile: string | undefined;
  if (opts.sentinel) {
    confFile = join(dir, 'sentinel.conf');
    writeFileSync(confFile, opts.sentinelConf ?? '');
  }
  const handle = new ServerHandle(bin, dir, confFile, opts.args ?? [], opts.timeoutMs ?? 20_000);
  let lastErr: Error | undefined;
  for (let attempt = 1; attempt <= PORT_ATTEMPTS; attempt++) {
    const port = await freePort();
    try {
      await handle.launch(port);
      return handle;
    } catch (err) {
      lastErr = err as Error;
      if (!(err instanceof PortInUseError)) throw err;
    }
  }
  throw new Error(`${bin}: no free port after ${PORT_ATTEMPTS} attempts`, { cause: lastErr });
}

/** Stop every server started by this module that is still running (for `t.teardown(stopAll)`). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((s) => s.stop()));
}

// Last resort so a crashed test run does not leak redis processes.
process.once('exit', () => {
  for (const s of running) s.proc.kill('SIGKILL');
});

class PortInUseError extends Error {}

/** After 'exit': wait for stdout/stderr to close (bounded: a forked child may hold them open). */
export function stdioDrained(proc: ChildProcess, maxMs = 200): Promise<void> {
  if (proc.stdout === null || proc.stdout.closed) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, maxMs);
    proc.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

class ServerHandle implements RedisServer {
  readonly host = HOST;
  #port = 0;
  #proc: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #log = '';

  constructor(
    readonly bin: string,
    readonly dir: string,
    readonly confFile: string | undefined,
    readonly extraArgs: string[],
    readonly timeoutMs: number,
  ) {}

  get port(): number {
    return this.#port;
  }

  get proc(): ChildProcess {
    if (!this.#proc) throw new Error('redis process not started');
    return this.#proc;
  }

  logs(): string {
    return this.#log;
  }

  client(): Promise<RedisClient> {
    return RedisClient.connect(this.#port, this.host);
  }

  #argv(port: number): string[] {
    const common = ['--port', String(port), '--bind', HOST, '--dir', this.dir, '--daemonize', 'no', '--loglevel', 'notice'];
    if (this.confFile !== undefined) return [this.confFile, ...common, ...this.extraArgs];
    return [...common, '--save', '', '--appendonly', 'no', '--enable-debug-command', 'yes', '--repl-diskless-sync-delay', '0', ...this.extraArgs];
  }

  /** Spawn on `port` and wait for PONG. Throws PortInUseError if the port was taken. */
  async launch(port: number): Promise<void> {
    const argv = this.#argv(port);
    this.#log += `--- ${this.bin} ${argv.join(' ')}\n`;
    const logStart = this.#log.length;
    const proc = spawn(this.bin, argv, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    this.#proc = proc;
    this.#port = port;
    const append = (b: Buffer): void => {
      this.#log += b.toString('utf8');
    };
    proc.stdout?.on('data', append);
    proc.stderr?.on('data', append);
    let exitInfo: string | undefined;
    this.#exited = new Promise<void>((resolve) => {
      proc.once('exit', (code, signal) => {
        exitInfo = signal ? `signal ${signal}` : `code ${String(code)}`;
        running.delete(this);
        resolve();
      });
      proc.once('error', (err) => {
        // spawn failure (ENOENT...): no 'exit' follows
        exitInfo = `spawn error: ${err.message}`;
        running.delete(this);
        resolve();
      });
    });
    running.add(this);

    const early = this.#exited.then(async () => {
      await stdioDrained(proc); // the log's last lines explain why it died
      const msg = `${this.bin} on port ${port} exited before it was ready (${exitInfo ?? '?'}); log:\n${this.#log}`;
      throw /Address already in use/i.test(this.#log.slice(logStart)) ? new PortInUseError(msg) : new Error(msg);
    });
    early.catch(() => undefined);
    const stopPolling = new AbortController();
    void this.#exited.then(() => stopPolling.abort(new Error('process exited')));
    try {
      await Promise.race([
        early,
        waitFor(
          async () => {
            const c = await RedisClient.connect(port, HOST);
            try {
              return (await c.callString('PING')) === 'PONG';
            } finally {
              await c.close();
            }
          },
          { timeoutMs: this.timeoutMs, intervalMs: 20, what: `${this.bin} on port ${port} to answer PING`, signal: stopPolling.signal },
        ),
      ]);
    } catch (err) {
      if (exitInfo !== undefined) await early; // the process died: report that (with its log), not the aborted poll
      // Timed out: do not leave it behind.
      await this.stop('SIGKILL');
      throw new Error(`${(err as Error).message}\nlog:\n${this.#log}`, { cause: err });
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const proc = this.#proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null || !running.has(this)) {
      await this.#exited;
      return;
    }
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), KILL_AFTER_MS);
    await this.#exited;
    clearTimeout(timer);
  }

  async restart(): Promise<void> {
    await this.stop();
    // Same port: retry a little in case the old socket is still being released.
    let lastErr: unknown;
    for (let attempt = 1; attempt <= PORT_ATTEMPTS; attempt++) {
      try {
        await this.launch(this.#port);
        return;
      } catch (err) {
        lastErr = err;
        if (!(err instanceof PortInUseError)) throw err;
        await new Promise((r) => setTimeout(r, 100 * attempt));
      }
    }
    throw new Error(`${this.bin}: could not restart on port ${this.#port}`, { cause: lastErr });
  }
}
