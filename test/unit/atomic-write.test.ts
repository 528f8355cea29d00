/**
 * writeFileAtomicSync: the temp file is created exclusively (a file or symlink already there makes it fail, never
 * followed), the old mode and owner are kept, nothing is left behind on failure.
 */
import t from 'tap';
import { chownSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicSync } from '../../src/util/atomic-write.js';

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
