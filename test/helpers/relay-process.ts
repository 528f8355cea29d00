import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';
import { testLog } from './log-defaults.js';
import { freePort } from './ports.js';
import { RedisClient } from './redis-client.js';
import { tempDir } from './temp-dir.js';
import { stdioDrained } from './redis-server.js';
import { waitFor } from './wait.js';
import type { LogLine } from './logged-relay.js';

export interface RelayProcess {
  /** The --port value passed by the caller (RESP port for replicas). */
  readonly port: number;
  readonly proc: ChildProcess;
  /** stdout + stderr captured so far. */
  logs(): string;
  /** The JSON log lines so far (whole lines), parsed (pino's; other output is left out). */
  lines(): LogLine[];
  /** Aborted when the process exits, with an Error saying how: pass it to waitFor so a dead relay ends the wait. */
  readonly exited: AbortSignal;
  /** Kill (default SIGTERM, SIGKILL after 10 s) and resolve with the exit code (null if killed by a signal). Idempotent. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface StartRelayOptions {
  /** Environment for the child (default: this process's env). */
  env?: NodeJS.ProcessEnv;
  /** Readiness deadline (default 20000 ms). */
  timeoutMs?: number;
  /** A command that runs node, e.g. `['prlimit', '--as=2147483648', '--']` (default: none, node itself). */
  prefix?: readonly string[];
  /** Called with the whole output so far whenever more arrives, from the start (before it answers PING). */
  onOutput?: (logs: string) => void;
}

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));
const KILL_AFTER_MS = 10_000;

function flagValue(args: string[], flag: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === flag) return args[i + 1];
    if (a.startsWith(`${flag}=`)) return a.slice(flag.length + 1);
  }
  return undefined;
}

/**
 * `env` without tap's coverage hook in NODE_OPTIONS, unless RELAY_COVERAGE=1: a relay process that records its
 * coverage spends about a second more CPU per start (1.7 s against 0.7 s to a PONG, /usr/bin/time), and the suite
 * starts a few hundred of them. The relay's code is covered in-process by most tests (helpers/relay.ts).
 */
function withoutCoverage(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  if (process.env['RELAY_COVERAGE'] === '1' || env['NODE_OPTIONS'] === undefined) return env;
  const options = env['NODE_OPTIONS'].split(/\s+/).filter((o) => !o.includes('@tapjs/processinfo')).join(' ');
  const { NODE_OPTIONS: _, ...rest } = env;
  return options === '' ? rest : { ...rest, NODE_OPTIONS: options };
}

/**
 * When `t` (or a test under it) fails, its relay's last log lines go to stderr (tap shows them with the failure): a
 * failure that only happens on a loaded machine is then explained by what the relay did.
 */
export function logsOnFailure(t: { passing(): boolean; teardown(fn: () => void): void; name: string }, relay: Pick<RelayProcess, 'logs'>, lines = 80): void {
  t.teardown(() => {
    if (t.passing()) return;
    const tail = relay.logs().trimEnd().split('\n').slice(-lines).join('\n');
    process.stderr.write(`--- the relay's last ${lines} log lines (${t.name}):\n${tail}\n---\n`);
  });
}

/**
 * Spawn `node dist/main.js ...args` from the repo root and wait until its RESP port answers PING.
 * `args` must include `--port N` (pick N with freePort()). Rejects, with the captured log, if the process exits first.
 */
export async function startRelayProcess(args: string[], opts: StartRelayOptions = {}): Promise<RelayProcess> {
  const portArg = flagValue(args, '--port');
  const port = Number(portArg);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new Error(`startRelayProcess: pass --port N in args (got ${String(portArg)})`);
  }
  if (!existsSync(MAIN)) throw new Error(`${MAIN} not found: run \`npm run build\` first`);
  const bind = flagValue(args, '--bind');
  const host = bind === undefined || bind === '0.0.0.0' || bind === '::' ? '127.0.0.1' : bind;

  let log = '';
  const argv = [...(opts.prefix ?? []), process.execPath, MAIN, ...args];
  const proc = spawn(argv[0]!, argv.slice(1), {
    cwd: REPO_ROOT,
    env: withoutCoverage(opts.env ?? process.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const append = (b: Buffer): void => {
    log += b.toString('utf8');
    opts.onOutput?.(log);
  };
  proc.stdout?.on('data', append);
  proc.stderr?.on('data', append);
  let exitInfo: string | undefined;
  const gone = new AbortController();
  const exited = new Promise<number | null>((resolve) => {
    proc.once('exit', (code, signal) => {
      exitInfo = signal ? `signal ${signal}` : `code ${String(code)}`;
      gone.abort(new Error(`the relay process exited (${exitInfo})`));
      resolve(code);
    });
    proc.once('error', (err) => {
      exitInfo = `spawn error: ${err.message}`;
      resolve(null);
    });
  });

  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> => {
    if (exitInfo === undefined) {
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), KILL_AFTER_MS);
      const code = await exited;
      clearTimeout(timer);
      return code;
    }
    return exited;
  };

  const early = exited.then(async () => {
    await stdioDrained(proc);
    throw new Error(`relay exited before it was ready (${exitInfo ?? '?'}); log:\n${log}`);
  });
  early.catch(() => undefined);
  const stopPolling = new AbortController();
  void exited.then(() => stopPolling.abort(new Error('process exited')));
  try {
    await Promise.race([
      early,
      waitFor(
        async () => {
          const c = await RedisClient.connect(port, host);
          try {
            return (await c.callString('PING')) === 'PONG';
          } catch (err) {
            // A relay with a password answers NOAUTH before AUTH, as Redis does: it is up.
            if (/^NOAUTH /.test((err as Error).message)) return true;
            throw err;
          } finally {
            await c.close();
          }
        },
        { timeoutMs: opts.timeoutMs ?? 20_000, intervalMs: 50, what: `relay on ${host}:${port} to answer PING`, signal: stopPolling.signal },
      ),
    ]);
  } catch (err) {
    if (exitInfo !== undefined) await early; // the process died: report that (with its log), not the aborted poll
    await stop('SIGKILL');
    throw new Error(`${(err as Error).message}\nlog:\n${log}`, { cause: err });
  }

  // Whole lines only: the pipe may have delivered part of the last one so far.
  const lines = (): LogLine[] => log.slice(0, log.lastIndexOf('\n') + 1).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine);
  return { port, proc, logs: () => log, lines, exited: gone.signal, stop };
}

/** `yaml` with testLog()'s defaults in its `log` section where it does not set them (its text kept otherwise). */
function withTestLog(yaml: string): string {
  const doc = parseDocument(yaml);
  const missing = Object.entries(testLog(undefined)).filter(([key]) => !doc.hasIn(['log', key]));
  for (const [key, value] of missing) doc.setIn(['log', key], value);
  return missing.length === 0 ? yaml : doc.toString();
}

/**
 * A fresh directory (`dirPrefix`), a free port and the arguments of a relay process that follows the master on
 * `masterPort`, with `yaml` (its `log` as testLog() makes it) as its relay.yaml and `dataDir`
 * (default `dir`/data) as its data directory: restart it with the same args.
 */
export async function relayArgs(dirPrefix: string, masterPort: number, yaml: string, dataDir?: string): Promise<{ dir: string; port: number; args: string[] }> {
  const dir = tempDir(dirPrefix);
  const port = await freePort();
  const conf = join(dir, 'relay.yaml');
  writeFileSync(conf, withTestLog(yaml));
  return { dir, port, args: ['--config', conf, '--upstream', `127.0.0.1:${masterPort}`, '--port', String(port), '--dir', dataDir ?? join(dir, 'data')] };
}
