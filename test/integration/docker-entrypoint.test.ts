/**
 * The Docker image's entrypoint and health check, run here as the image runs them (sh, node, dist/main.js from the
 * application directory), since no Docker engine is available: 0.0.0.0 only with a password, the secret read from
 * a file, the relay exec'd (it gets SIGTERM itself), and the health check following /readyz.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/relay-process.js';
import { RedisClient } from '../helpers/redis-client.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';

const ENTRYPOINT = join(REPO_ROOT, 'deploy/docker/entrypoint.sh');
const HEALTHCHECK = join(REPO_ROOT, 'deploy/docker/healthcheck.js');

interface Run {
  readonly proc: ChildProcess;
  output(): { stdout: string; stderr: string };
  readonly exited: Promise<number | null>;
}

function start(cmd: string, args: string[], env: NodeJS.ProcessEnv): Run {
  const proc = spawn(cmd, args, { cwd: tmpdir(), env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout?.on('data', (b: Buffer) => (stdout += b.toString()));
  proc.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = once(proc, 'close').then(([code]) => code as number | null);
  return { proc, exited, output: () => ({ stdout, stderr }) };
}

/** This process's environment without PSYNC_RELAY_* (the entrypoint's input), plus `extra`. */
function envWith(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PSYNC_RELAY_')));
  return { ...env, ...extra };
}

/** The relay's "listening for replicas" log line, once it is printed. */
async function listening(run: Run): Promise<{ bind: string; port: number }> {
  const exited = new AbortController();
  void run.exited.then((code) => exited.abort(new Error(`exited (${String(code)}) before listening: ${JSON.stringify(run.output())}`)));
  return waitFor(
    () => {
      const line = run.output().stdout.split('\n').find((l) => l.includes('"listening for replicas"'));
      return line ? (JSON.parse(line) as { bind: string; port: number }) : undefined;
    },
    { what: 'the relay to listen', signal: exited.signal },
  );
}

const dir = mkdtempSync(join(tmpdir(), 'psync-relay-entrypoint-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const config = join(dir, 'relay.yaml');
const passwordFile = join(dir, 'password');
writeFileSync(passwordFile, 'ent-s3cret\n');

t.test('without a password the entrypoint refuses to start and says how to give one', async (t) => {
  writeFileSync(config, `upstream:\n  host: null\nweb:\n  port: 0\ndir: ${JSON.stringify(join(dir, 'data-a'))}\n`);
  const run = start('/bin/sh', [ENTRYPOINT, '--port', String(await freePort())], envWith({ PSYNC_RELAY_CONFIG: config }));
  t.equal(await run.exited, 2, 'exit status 2');
  const { stdout, stderr } = run.output();
  t.match(stderr, /refusing to listen on 0\.0\.0\.0 without a password/);
  t.match(stderr, /PSYNC_RELAY_PASSWORD_FILE/);
  t.equal(stdout, '', 'the relay was never started');
  const empty = start('/bin/sh', [ENTRYPOINT], envWith({ PSYNC_RELAY_CONFIG: config, PSYNC_RELAY_PASSWORD: '' }));
  t.equal(await empty.exited, 2, 'an empty PSYNC_RELAY_PASSWORD is no password');
});

t.test('with PSYNC_RELAY_PASSWORD_FILE the relay binds 0.0.0.0 and requires AUTH; SIGTERM reaches it', async (t) => {
  const port = await freePort();
  const webPort = await freePort();
  writeFileSync(config, `upstream:\n  host: null\nweb:\n  port: ${webPort}\ndir: ${JSON.stringify(join(dir, 'data-b'))}\n`);
  const run = start('/bin/sh', [ENTRYPOINT, '--port', String(port)], envWith({ PSYNC_RELAY_CONFIG: config, PSYNC_RELAY_PASSWORD_FILE: passwordFile }));
  t.teardown(() => void run.proc.kill('SIGKILL'));
  const where = await listening(run);
  t.equal(where.bind, '0.0.0.0', 'listening on 0.0.0.0');
  t.equal(where.port, port);
  const cmdline = readFileSync(`/proc/${run.proc.pid}/cmdline`, 'utf8').split('\0');
  t.ok(cmdline.some((a) => a.endsWith('dist/main.js')), 'the shell exec\'d node: signals go straight to the relay');

  const c = await RedisClient.connect(port);
  t.teardown(() => c.close());
  await t.rejects(c.call('INFO'), /NOAUTH/, 'commands need AUTH');
  t.equal(await c.callString('AUTH', 'ent-s3cret'), 'OK', 'the password from the file (newline dropped)');
  t.equal(await c.callString('PING'), 'PONG');

  // No upstream, so not ready: the health check reports it unhealthy, with /readyz's body.
  const hc = start(process.execPath, [HEALTHCHECK], envWith({ PSYNC_RELAY_HEALTH_URL: `http://127.0.0.1:${webPort}/readyz` }));
  t.equal(await hc.exited, 1, 'health check fails while /readyz is 503');
  t.match(hc.output().stdout, /^503 \{.*"ready":false/);

  run.proc.kill('SIGTERM');
  t.equal(await run.exited, 0, 'SIGTERM: graceful exit 0');
});

t.test('an explicit --bind is passed through; --version needs no password', async (t) => {
  const port = await freePort();
  writeFileSync(config, `upstream:\n  host: null\nweb:\n  port: 0\ndir: ${JSON.stringify(join(dir, 'data-c'))}\n`);
  const run = start('/bin/sh', [ENTRYPOINT, '--bind', '127.0.0.1', '--port', String(port)], envWith({ PSYNC_RELAY_CONFIG: config }));
  t.teardown(() => void run.proc.kill('SIGKILL'));
  t.equal((await listening(run)).bind, '127.0.0.1');
  run.proc.kill('SIGTERM');
  t.equal(await run.exited, 0);

  const version = start('/bin/sh', [ENTRYPOINT, '--version'], envWith({}));
  t.equal(await version.exited, 0);
  t.match(version.output().stdout, /^psync-relay \d+\.\d+\.\d+\n$/);
});

t.test('the health check passes on 200 and fails when nothing answers', async (t) => {
  const server = createServer((_req, res) => res.end('{"ready":true}'));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  const ok = start(process.execPath, [HEALTHCHECK], envWith({ PSYNC_RELAY_HEALTH_URL: `http://127.0.0.1:${port}/readyz` }));
  t.equal(await ok.exited, 0, '200: healthy');
  await new Promise((resolve) => server.close(resolve));
  const down = start(process.execPath, [HEALTHCHECK], envWith({ PSYNC_RELAY_HEALTH_URL: `http://127.0.0.1:${port}/readyz` }));
  t.equal(await down.exited, 1, 'connection refused: unhealthy');
  t.match(down.output().stdout, /readyz: /);
});
