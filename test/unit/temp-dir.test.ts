import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// A child process makes two test dirs with files in them and exits; the dirs must be gone after it.
const helper = fileURLToPath(new URL('../helpers/temp-dir.ts', import.meta.url));
const child = `
  const { tempDir } = await import(${JSON.stringify(helper)});
  const { writeFileSync, mkdirSync } = await import('node:fs');
  const a = tempDir('psync-relay-tempdir-a-');
  const b = tempDir('psync-relay-tempdir-b-');
  mkdirSync(a + '/sub');
  writeFileSync(a + '/sub/log.seg', 'x'.repeat(4096));
  writeFileSync(b + '/dump.rdb', 'REDIS');
  console.log(JSON.stringify([a, b]));
`;

function run(env: NodeJS.ProcessEnv): string[] {
  const r = spawnSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', child], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`child failed (${String(r.status)}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '[]') as string[];
}

t.test('test dirs, with what is in them, are removed when the test process exits', async (t) => {
  const dirs = run({ ...process.env, KEEP_TEST_DIRS: '' });
  t.equal(dirs.length, 2);
  t.same(dirs.filter(existsSync), [], 'no dir is left');
});

t.test('KEEP_TEST_DIRS=1 keeps them, to look at after a failure', async (t) => {
  const dirs = run({ ...process.env, KEEP_TEST_DIRS: '1' });
  t.equal(dirs.length, 2);
  t.same(dirs.filter(existsSync), dirs, 'both are kept');
  const { rmSync } = await import('node:fs');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
