/**
 * CONFIG REWRITE against a relay process: the rewrite replaces the file atomically without following a symlink
 * planted where the old code put its temp file, keeps the file's mode (a 0600 file holds passwords) and owner,
 * keeps every other line, and rewrites a symlinked config at its target.
 */
import t, { type Test } from 'tap';
import { chownSync, lstatSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../helpers/ports.js';
import { startRelayProcess } from '../helpers/relay-process.js';
import { RedisClient } from '../helpers/redis-client.js';

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
