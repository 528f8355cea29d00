/**
 * writeFileAtomicSync: the temp file is created exclusively (a file or symlink already there makes it fail, never
 * followed), the old mode and owner are kept, nothing is left behind on failure. removeAtomicWriteTempsSync removes
 * the temp files a crash left, and nothing else.
 */
import t from 'tap';
import { chownSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeAtomicWriteTempsSync, writeFileAtomicSync } from '../../src/util/atomic-write.js';
import { removeRewriteTemps } from '../../src/config/rewrite.js';

t.test('replaces the content, keeps mode and owner, leaves no temp file', async (t) => {
  const dir = t.testdir({});
  const file = join(dir, 'relay.yaml');
  writeFileSync(file, 'old\n', { mode: 0o640 });
  if (process.getuid?.() === 0) chownSync(file, 1234, 4321);
  const before = statSync(file);
  writeFileAtomicSync(file, 'new\n');
  const after = statSync(file);
  t.equal(readFileSync(file, 'utf8'), 'new\n');
  t.equal(after.mode & 0o7777, 0o640);
  t.equal(after.uid, before.uid);
  t.equal(after.gid, before.gid);
  t.not(after.ino, before.ino, 'a new file renamed over the old one');
  t.same(readdirSync(dir), ['relay.yaml']);
});

t.test('a symlink where the temp file goes is not followed: the write fails and its target is untouched', async (t) => {
  const dir = t.testdir({ 'victim.txt': 'do not touch\n', 'relay.yaml': 'old\n' });
  const bytes = Buffer.alloc(8, 0xab);
  const { writeFileAtomicSync: write } = await t.mockImport<typeof import('../../src/util/atomic-write.js')>('../../src/util/atomic-write.js', {
    'node:crypto': { randomBytes: () => bytes },
  });
  symlinkSync(join(dir, 'victim.txt'), join(dir, `.relay.yaml.${bytes.toString('hex')}.tmp`));
  t.throws(() => write(join(dir, 'relay.yaml'), 'new\n'), { code: 'EEXIST' });
  t.equal(readFileSync(join(dir, 'victim.txt'), 'utf8'), 'do not touch\n');
  t.equal(readFileSync(join(dir, 'relay.yaml'), 'utf8'), 'old\n', 'the file is unchanged');
});

t.test('a missing file is an error and leaves nothing behind', async (t) => {
  const dir = t.testdir({});
  t.throws(() => writeFileAtomicSync(join(dir, 'nope.yaml'), 'x'), { code: 'ENOENT' });
  t.same(readdirSync(dir), []);
});

t.test('the temp files a crash left are removed: regular files named as the write names them, nothing else', async (t) => {
  const bytes = Buffer.from('00112233445566ff', 'hex');
  const dir = t.testdir({
    'relay.yaml': 'old\n',
    'victim.txt': 'do not touch\n',
    '.relay.yaml.0123456789abcdef.tmp': 'left by a crash\n',
    '.relay.yaml.0123456789ABCDEF.tmp': 'upper case: not a name it makes\n',
    '.relay.yaml.0123456789abcdef.tmp~': 'x',
    '.relay.yaml.0123456789abcde.tmp': 'x',
    '.relay.yamlx.0123456789abcdef.tmp': 'x',
    '.other.yaml.0123456789abcdef.tmp': 'another file\'s',
  });
  // The name the write itself gives its temp file is one it removes.
  const { writeFileAtomicSync: write } = await t.mockImport<typeof import('../../src/util/atomic-write.js')>('../../src/util/atomic-write.js', {
    'node:crypto': { randomBytes: () => bytes },
    'node:fs': { ...(await import('node:fs')), renameSync: () => { throw Object.assign(new Error('crash'), { code: 'EIO' }); }, unlinkSync: () => undefined },
  });
  t.throws(() => write(join(dir, 'relay.yaml'), 'new\n'), { code: 'EIO' });
  t.ok(readdirSync(dir).includes('.relay.yaml.00112233445566ff.tmp'), 'a write cut before its rename left its temp file');
  symlinkSync(join(dir, 'victim.txt'), join(dir, '.relay.yaml.fedcba9876543210.tmp'));
  mkdirSync(join(dir, '.relay.yaml.aaaaaaaaaaaaaaaa.tmp'));
  const before = readdirSync(dir);

  const { removed, failed } = removeAtomicWriteTempsSync(join(dir, 'relay.yaml'));
  t.same(removed.sort(), ['.relay.yaml.00112233445566ff.tmp', '.relay.yaml.0123456789abcdef.tmp']);
  t.same(failed, []);
  t.same(readdirSync(dir).sort(), before.filter((n) => !removed.includes(n)).sort(), 'everything else is kept, a symlink and a directory of such a name too');
  t.equal(readFileSync(join(dir, 'victim.txt'), 'utf8'), 'do not touch\n');
  t.equal(readFileSync(join(dir, 'relay.yaml'), 'utf8'), 'old\n');
});

t.test('a directory that cannot be listed is reported, not thrown', async (t) => {
  const { removed, failed } = removeAtomicWriteTempsSync(join(t.testdir({}), 'gone', 'relay.yaml'));
  t.same(removed, []);
  t.match(failed, [{ err: { code: 'ENOENT' } }]);
});

t.test('a symlinked config file: the temp files beside its target are removed (a rewrite writes there), the link stays', async (t) => {
  const dir = t.testdir({ real: { 'relay.yaml': 'old\n', '.relay.yaml.0123456789abcdef.tmp': 'left by a crash\n' } });
  const link = join(dir, 'relay.yaml');
  symlinkSync(join(dir, 'real', 'relay.yaml'), link);
  writeFileSync(join(dir, '.relay.yaml.fedcba9876543210.tmp'), 'beside the link: not where a rewrite writes\n');
  const { removed, failed } = removeRewriteTemps(link);
  t.same(removed, ['.relay.yaml.0123456789abcdef.tmp']);
  t.same(failed, []);
  t.same(readdirSync(join(dir, 'real')), ['relay.yaml']);
  t.same(readdirSync(dir).sort(), ['.relay.yaml.fedcba9876543210.tmp', 'real', 'relay.yaml']);
  t.equal(readFileSync(link, 'utf8'), 'old\n', 'the link still leads to the config');
});
