/**
 * CONFIG REWRITE against a relay process: the rewrite replaces the file atomically without following a symlink
 * planted where the old code put its temp file, keeps the file's mode (a 0600 file holds passwords) and owner,
 * keeps every other line, and rewrites a symlinked config at its target. A rewrite killed before its rename leaves
 * its temp file, which the next start removes.
 */
import t, { type Test } from 'tap';
import { chownSync, lstatSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { freePort } from '../helpers/ports.js';
import { startRelayProcess } from '../helpers/relay-process.js';
import { RedisClient } from '../helpers/redis-client.js';
import { waitFor } from '../helpers/wait.js';

const OWNER = 1234;
const asRoot = process.getuid?.() === 0;

function configText(dir: string): string {
  return `# the relay's config\nupstream:\n  host: null # set by REPLICAOF\n  port: 6379\nlisten:\n  password: s3cret-admin # keep this file private\nweb:\n  port: 0\nlog:\n  disk: 0\ndir: ${dir}\n`;
}

async function rewrite(t: Test, configArg: string, before?: (pid: number) => void) {
  const port = await freePort();
  const r = await startRelayProcess(['--config', configArg, '--port', String(port)]);
  t.teardown(() => r.stop());
  before?.(r.proc.pid!);
  const c = await RedisClient.connect(port);
  t.teardown(() => c.close());
  t.equal(await c.call('AUTH', 's3cret-admin'), 'OK');
  t.equal(await c.call('REPLICAOF', '10.1.2.3', '6390'), 'OK');
  t.equal(await c.call('CONFIG', 'REWRITE'), 'OK');
}

/** The temp files a CONFIG REWRITE of `name` creates next to it: `.<name>.<16 hex digits>.tmp`. */
const tempsOf = (dir: string, name: string): string[] => readdirSync(dir).filter((n) => n.startsWith(`.${name}.`) && n.endsWith('.tmp'));

/**
 * Starts a relay on `configArg` that SIGKILLs itself just before the rename of its first CONFIG REWRITE, has it
 * rewrite, and waits for it to die.
 */
async function rewriteKilledBeforeRename(t: Test, configArg: string): Promise<void> {
  const port = await freePort();
  const r = await startRelayProcess(['--config', configArg, '--port', String(port)], { env: { ...process.env, PSYNC_RELAY_FAILPOINT: 'rename@1' } });
  t.teardown(() => r.stop('SIGKILL'));
  const c = await RedisClient.connect(port);
  t.teardown(() => c.close());
  t.equal(await c.call('AUTH', 's3cret-admin'), 'OK');
  t.equal(await c.call('REPLICAOF', '10.1.2.3', '6390'), 'OK');
  const answer = c.call('CONFIG', 'REWRITE').then(
    (reply) => `answered ${String(reply)}`,
    (err: Error) => `no answer: ${err.message}`,
  );
  await waitFor(() => r.proc.signalCode === 'SIGKILL' || undefined, { what: 'the relay killed by its failpoint before the rename' });
  t.match(await answer, /^no answer/, 'CONFIG REWRITE got no answer');
  t.match(r.logs(), /failpoint: SIGKILL before rename\n/, 'killed before the rename of the config file');
}

t.test('the file is replaced, not written through a planted symlink; mode 0600 and owner are kept', async (t) => {
  const dir = t.testdir({ 'victim.txt': 'do not touch\n' });
  const file = join(dir, 'relay.yaml');
  writeFileSync(file, configText(dir), { mode: 0o600 });
  // Root in CI: give the file another owner, which the rewrite must keep. Otherwise it stays ours, and must stay so.
  if (asRoot) chownSync(file, OWNER, OWNER);
  const owner = statSync(file).uid;
  await rewrite(t, file, (pid) => symlinkSync(join(dir, 'victim.txt'), `${file}.tmp-${pid}`));
  t.equal(readFileSync(join(dir, 'victim.txt'), 'utf8'), 'do not touch\n', 'the symlink target is untouched');
  const st = statSync(file);
  t.equal(st.mode & 0o777, 0o600, 'mode kept');
  t.equal(st.uid, owner, asRoot ? 'owner kept (uid 1234)' : 'owner kept');
  const text = readFileSync(file, 'utf8');
  t.match(text, /host: 10\.1\.2\.3 # set by REPLICAOF\n\s+port: 6390\n/, 'the upstream is persisted, its comment kept');
  t.match(text, /^# the relay's config\n/);
  t.match(text, 'password: s3cret-admin # keep this file private');
  t.same(readdirSync(dir).filter((n) => /\.tmp$/.test(n)), [], 'no temp file left');
});

t.test('a symlinked config file is rewritten at its target; the link stays', async (t) => {
  const dir = t.testdir({});
  mkdirSync(join(dir, 'real'));
  const target = join(dir, 'real', 'relay.yaml');
  writeFileSync(target, configText(dir), { mode: 0o640 });
  const link = join(dir, 'relay.yaml');
  symlinkSync(target, link);
  await rewrite(t, link);
  t.ok(lstatSync(link).isSymbolicLink(), 'still a symlink');
  t.match(readFileSync(target, 'utf8'), /host: 10\.1\.2\.3/);
  t.equal(statSync(target).mode & 0o777, 0o640);
});

t.test('a CONFIG REWRITE killed before its rename leaves its temp file; the next start removes it, the config intact', async (t) => {
  const dir = t.testdir({});
  const file = join(dir, 'relay.yaml');
  const original = configText(dir);
  writeFileSync(file, original, { mode: 0o600 });
  // Names the relay never creates: kept, whatever happens to its own temp files.
  const others = ['.relay.yaml.0123456789abcdef.tmp.bak', '.relay.yaml.0123.tmp', 'relay.yaml.0123456789abcdef.tmp', '.other.yaml.0123456789abcdef.tmp'];
  for (const name of others) writeFileSync(join(dir, name), 'not the relay\'s\n');

  await rewriteKilledBeforeRename(t, file);
  const left = tempsOf(dir, 'relay.yaml').filter((n) => !others.includes(n));
  t.equal(left.length, 1, `the killed rewrite left its temp file (${left.join(', ')})`);
  t.match(readFileSync(join(dir, left[0]!), 'utf8'), /host: 10\.1\.2\.3/, 'holding the new upstream');
  t.equal(readFileSync(file, 'utf8'), original, 'the config file is as it was');

  const port = await freePort();
  const r = await startRelayProcess(['--config', file, '--port', String(port)]);
  t.teardown(() => r.stop());
  t.same(
    readdirSync(dir).sort(),
    ['relay.lock', 'relay.yaml', 'room-full-sync.json', 'room-snapshot-fetch.json', ...others].sort(),
    'the start removed the temp file, and only it (the relay holds its dir: relay.lock, and keeps its waits for room on the disk)',
  );
  for (const name of others) t.equal(readFileSync(join(dir, name), 'utf8'), 'not the relay\'s\n', `${name} kept`);
  t.match(r.logs(), /unfinished CONFIG REWRITE removed/, 'the removal is logged');
  t.equal(readFileSync(file, 'utf8'), original, 'the config file is intact');
  t.equal(statSync(file).mode & 0o777, 0o600, 'its mode too');
  const c = await RedisClient.connect(port);
  t.teardown(() => c.close());
  t.equal(await c.call('AUTH', 's3cret-admin'), 'OK', 'and the relay runs on it');
});

t.test('a read-only config directory: a temp file that cannot be removed is a warning at start, CONFIG REWRITE a clear error', async (t) => {
  const dir = t.testdir({});
  const file = join(dir, 'relay.yaml');
  writeFileSync(file, configText(dir), { mode: 0o600 });
  // What a killed rewrite leaves (the test above shows it does).
  writeFileSync(join(dir, '.relay.yaml.0123456789abcdef.tmp'), 'left by a crash\n');

  // Immutable (as root; a read-only mount, or systemd's ProtectSystem, does the same): nothing in it can be removed or
  // created. Made mutable again before the test ends, so that tap can remove the directory.
  execFileSync('chattr', ['+i', dir]);
  try {
    const port = await freePort();
    const r = await startRelayProcess(['--config', file, '--port', String(port)]);
    t.teardown(() => r.stop());
    t.match(r.logs(), /could not remove an unfinished CONFIG REWRITE/, 'the start warns and goes on');
    const c = await RedisClient.connect(port);
    t.teardown(() => c.close());
    t.equal(await c.call('AUTH', 's3cret-admin'), 'OK');
    t.equal(await c.call('REPLICAOF', '10.1.2.3', '6390'), 'OK');
    await t.rejects(c.call('CONFIG', 'REWRITE'), { message: /^ERR Rewriting config file: EPERM/ }, 'CONFIG REWRITE answers the error');
    t.equal(readFileSync(file, 'utf8'), configText(dir), 'the config file is unchanged');
    t.equal(tempsOf(dir, 'relay.yaml').length, 1, 'the temp file is still there');
  } finally {
    execFileSync('chattr', ['-i', dir]);
  }
});
