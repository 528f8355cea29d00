// Processes for the benchmark: redis-server (master, intermediate), the relay, forked helpers; /proc readers.
// Every child is registered and killed on exit, so an interrupted run leaves nothing behind.
import { spawn, fork } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RespClient, parseInfo } from './resp.js';
import { nowMs, sleep } from './clock.js';

const children = new Set();
const tempDirs = new Set();

export function cleanupAll() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  children.clear();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}
process.once('exit', cleanupAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    cleanupAll();
    process.exit(130);
  });
}

export function tempDir(prefix) {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(d);
  return d;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Keeps the last `max` characters of a child's output for error messages. */
function tailLog(proc, max = 16384) {
  let log = '';
  const add = (d) => {
    log += d.toString();
    if (log.length > max) log = log.slice(-max);
  };
  proc.stdout?.on('data', add);
  proc.stderr?.on('data', add);
  return () => log;
}

function track(proc) {
  children.add(proc);
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  exited.then(() => children.delete(proc));
  return exited;
}

async function stopProc(proc, exited, ms = 5000) {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), ms);
  await exited;
  clearTimeout(t);
}

async function waitPong(port, proc, log, timeoutMs = 15000) {
  const deadline = nowMs() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`process on port ${port} exited (${proc.exitCode}); log:\n${log()}`);
    try {
      const c = await RespClient.connect(port, '127.0.0.1', 1000);
      try {
        if ((await c.call(['PING'], 2000)) === 'PONG') return;
      } finally {
        c.close();
      }
    } catch {
      /* not yet */
    }
    if (nowMs() > deadline) throw new Error(`no PONG on port ${port} within ${timeoutMs} ms; log:\n${log()}`);
    await sleep(50);
  }
}

/**
 * A server on a free port of 127.0.0.1: `launch(port)` spawns it (stdout and stderr piped); it is a Node once it
 * answers PING. Another process can take the port between freePort() and the bind: when its log matches `busy`, it
 * is tried again on another port.
 */
async function startOnFreePort(kind, dir, busy, launch) {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const proc = await launch(port);
    const exited = track(proc);
    const log = tailLog(proc);
    try {
      await waitPong(port, proc, log);
      return new Node(kind, port, proc, exited, log, dir);
    } catch (err) {
      await stopProc(proc, exited);
      if (!busy.test(log())) throw err;
    }
  }
  throw new Error(`${kind}: no free port`);
}

/** A node in a topology: a port, a pid, INFO, stop(). */
class Node {
  constructor(kind, port, proc, exited, log, dir) {
    this.kind = kind;
    this.port = port;
    this.proc = proc;
    this.pid = proc.pid;
    this.exited = exited;
    this.log = log;
    this.dir = dir;
    this.client = null;
  }
  async call(args, timeoutMs = 60000) {
    if (!this.client) this.client = await RespClient.connect(this.port);
    return this.client.call(args, timeoutMs);
  }
  async info(section) {
    return parseInfo(await this.call(section ? ['INFO', section] : ['INFO']));
  }
  async offset() {
    return Number((await this.info('replication')).master_repl_offset);
  }
  async waitLinkUp(timeoutMs = 120000) {
    const deadline = nowMs() + timeoutMs;
    for (;;) {
      const i = await this.info('replication');
      if (i.master_link_status === 'up') return i;
      if (this.proc.exitCode !== null) throw new Error(`${this.kind} exited; log:\n${this.log()}`);
      if (nowMs() > deadline) throw new Error(`${this.kind} link not up within ${timeoutMs} ms; log:\n${this.log()}`);
      await sleep(50);
    }
  }
  /** SIGTERM, then SIGKILL after `graceMs` (a profiled relay needs time to write its profile). */
  async stop(graceMs = this.graceMs ?? 5000) {
    this.client?.close();
    this.client = null;
    await stopProc(this.proc, this.exited, graceMs);
  }
}

/** The limits every redis-server in the benchmark shares (the relay gets the same through its config). */
export const REDIS_LIMITS = [
  '--repl-backlog-size', '64mb',
  '--client-output-buffer-limit', 'replica 256mb 256mb 0',
  // No PINGs in the stream (the sink times the last byte it gets) and no idle timeouts during a run.
  '--repl-ping-replica-period', '3600',
  '--repl-timeout', '3600',
  // Redis 7.0 defaults to diskless sync with a 5 s delay; 0 starts a full sync as soon as a replica asks.
  '--repl-diskless-sync-delay', '0',
];

export async function startRedis(kind, extra = []) {
  const dir = tempDir(`psync-bench-${kind}-`);
  return startOnFreePort(kind, dir, /Address already in use/, (port) => {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--daemonize', 'no', '--save', '', '--appendonly', 'no',
      '--enable-debug-command', 'yes', '--loglevel', 'warning', ...REDIS_LIMITS, ...extra];
    return spawn('redis-server', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  });
}

/**
 * The relay with the same limits as the redis-server intermediate: 64mb in-memory log (backlog), 256mb replica
 * lag, long timeouts. `disk`: the log.disk setting; null keeps the relay's default (a 1gb disk log behind the
 * memory tail), 0 = memory only, the closest match to redis-server.
 */
export async function startRelay(upstreamPort, repoRoot, { disk = null, maxLag = '256mb', nodeArgs: extraNodeArgs = [], yaml = null, web = false } = {}) {
  const dir = tempDir('psync-bench-relay-');
  const cfg = join(dir, 'relay.yaml');
  // `yaml`: the whole config file instead (bench/wan.js); the flags below still set upstream, port, dir, web, log level.
  writeFileSync(
    cfg,
    yaml ?? `upstream:\n  timeout: 3600\nlog:\n  memory: 64mb\n${disk === null ? '' : `  disk: ${disk}\n`}replication:\n  replica-max-lag: ${maxLag}\n  replica-timeout: 3600\n`,
  );
  // `web`: the web port on too (node.webPort), for bench/metrics-flood.js.
  let webPort = 0;
  const node = await startOnFreePort('relay', dir, /EADDRINUSE|RELAY_ERR_WEB_LISTEN/, async (port) => {
    webPort = web ? await freePort() : 0;
    // BENCH_RELAY_NODE_ARGS: extra node flags for the relay, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
    const nodeArgs = [...(process.env.BENCH_RELAY_NODE_ARGS ?? '').split(' ').filter(Boolean), ...extraNodeArgs];
    const args = [...nodeArgs, join(repoRoot, 'dist/main.js'), '--config', cfg, '--upstream', `127.0.0.1:${upstreamPort}`, '--port', String(port),
      '--dir', join(dir, 'data'), '--web-port', String(webPort), '--log-level', 'warn'];
    return spawn(process.execPath, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  });
  node.webPort = webPort;
  return node;
}

/** bench/c-ref/relay.c, compiled once per bench process (into a temp dir removed on exit). */
export const CREF_SOURCE = join(dirname(fileURLToPath(import.meta.url)), '..', 'c-ref', 'relay.c');
export const CREF_CFLAGS = ['-O2', '-Wall', '-Wextra'];
let crefBinary = null;
export function buildCRef() {
  crefBinary ??= (async () => {
    const out = join(tempDir('psync-bench-cref-build-'), 'relay');
    await runCommand('gcc', [...CREF_CFLAGS, '-o', out, CREF_SOURCE], 120000);
    return out;
  })();
  return crefBinary;
}

/**
 * The minimal C relay (bench/c-ref/relay.c): the ceiling of issue 15's comparison, not a product. No config, no
 * limits: the whole stream stays in its memory; SIGTERM exits 0.
 */
export async function startCRef(upstreamPort) {
  const bin = await buildCRef();
  const dir = tempDir('psync-bench-cref-');
  return startOnFreePort('c-ref', dir, /Address already in use/, (port) =>
    spawn(bin, [String(port), '127.0.0.1', String(upstreamPort)], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] }),
  );
}

/** A forked helper (sink, raw reference) with a promise-based call(op, args). */
export function forkHelper(script, argv = []) {
  const proc = fork(script, argv, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = track(proc);
  let seq = 0;
  const pending = new Map();
  proc.on('message', (m) => {
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.ok) p.resolve(m.result);
    else p.reject(new Error(m.error));
  });
  exited.then(({ code, signal }) => {
    for (const p of pending.values()) p.reject(new Error(`${script} exited (${code ?? signal})`));
    pending.clear();
  });
  return {
    pid: proc.pid,
    call(op, args = {}, timeoutMs = 300000) {
      return new Promise((resolve, reject) => {
        const id = ++seq;
        const t = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`${script} ${op} timed out`));
        }, timeoutMs);
        pending.set(id, {
          resolve: (v) => (clearTimeout(t), resolve(v)),
          reject: (e) => (clearTimeout(t), reject(e)),
        });
        proc.send({ id, op, args });
      });
    },
    async stop() {
      proc.disconnect?.();
      await stopProc(proc, exited, 2000);
    },
  };
}

/** Runs a command to completion (bounded); resolves with its stdout. */
export function runCommand(cmd, args, timeoutMs) {
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = track(proc);
    let out = '';
    let err = '';
    proc.stdout.on('data', (d) => (out += d));
    proc.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    exited.then(({ code, signal }) => {
      clearTimeout(t);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} failed (${code ?? signal}): ${err || out}`));
    });
  });
}

export const CLK_TCK = 100;

/** utime + stime of a process, in seconds. */
export function cpuSeconds(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Resident set size in bytes. */
export function rssBytes(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Samples RSS of `pids` every `ms` (and used_memory of redis `nodes` every 4th tick) until stop(). */
export function memorySampler(pids, nodes = [], ms = 100) {
  const peak = {};
  const peakUsed = {};
  for (const p of pids) peak[p] = 0;
  let tick = 0;
  let busy = false;
  const t = setInterval(() => {
    for (const p of pids) {
      const r = rssBytes(p);
      if (r > peak[p]) peak[p] = r;
    }
    if (tick++ % 4 === 0 && !busy && nodes.length) {
      busy = true;
      Promise.all(
        nodes.map(async (n) => {
          const i = await n.info('memory');
          const u = Number(i.used_memory);
          if (!(peakUsed[n.port] >= u)) peakUsed[n.port] = u;
        }),
      )
        .catch(() => {})
        .finally(() => (busy = false));
    }
  }, ms);
  return {
    stop() {
      clearInterval(t);
      return { peakRss: peak, peakUsedMemory: peakUsed };
    },
  };
}

function cpuTimes() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + (f[4] ?? 0);
  return { idle, total: f.reduce((a, b) => a + b, 0) };
}

/** Fraction of the machine's CPU busy over `ms` (all cores). */
export async function cpuBusy(ms = 250) {
  const a = cpuTimes();
  await sleep(ms);
  const b = cpuTimes();
  const total = b.total - a.total;
  return total > 0 ? 1 - (b.idle - a.idle) / total : 0;
}

/** Waits (at most maxWaitMs) until other processes leave the machine idle; returns what it saw. */
export async function waitQuiet(maxWaitMs, threshold = 0.15) {
  const t0 = nowMs();
  for (;;) {
    const busy = await cpuBusy(250);
    const waited = nowMs() - t0;
    if (busy < threshold || waited > maxWaitMs) return { busyBefore: +busy.toFixed(3), waitedSeconds: +(waited / 1000).toFixed(1), quiet: busy < threshold };
  }
}

/** Machine-wide busy CPU seconds (all cores) between two calls: a = machineCpu(); ...; machineCpu() - a. */
export function machineCpu() {
  const t = cpuTimes();
  return (t.total - t.idle) / CLK_TCK;
}
