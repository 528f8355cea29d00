/**
 * The npm package: `npm pack` on a checkout without dist/ builds it (prepack) and ships only the runtime files;
 * `npm install -g <tarball>` (into a temporary prefix) gives a `psync-relay` command that runs from any directory
 * with production dependencies only. Installing needs the npm registry or npm's cache (--prefer-offline).
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../helpers/relay-process.js';

const run = promisify(execFile);
const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { name: string; version: string };

/** Not part of a checkout: left out of the copy that is packed. */
const NOT_CHECKED_IN = new Set(['node_modules', 'dist', '.git', '.tap', 'coverage', 'data']);

/** What the tarball may hold, besides package.json. */
const SHIPPED = [/^dist\/.+\.js(\.map)?$/, /^config\/relay\.yaml$/, /^README\.md$/, /^LICENSE$/, /^CHANGELOG\.md$/, /^SECURITY\.md$/];

/**
 * The environment of `npm test` minus npm's own variables, so the inner npm sees no outer project or prefix, and
 * minus NODE_OPTIONS, where tap puts its process-info hook (--import): every node process of the pack, the build,
 * the install and the installed command would load it (~0.3 s of CPU each), and a user's shell has no such hook.
 */
function npmEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) && k !== 'NODE_OPTIONS') env[k] = v;
  return { ...env, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' };
}

t.test('npm pack builds a tarball that installs globally and runs psync-relay from any directory', async (t) => {
  const tmp = mkdtempSync(join(tmpdir(), 'psync-relay-pack-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  const checkout = join(tmp, 'checkout');
  cpSync(REPO_ROOT, checkout, {
    recursive: true,
    filter: (src) => !NOT_CHECKED_IN.has(relative(REPO_ROOT, src).split('/')[0] ?? ''),
  });
  // The build needs the dev dependencies (tsc); link them instead of installing them again.
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(checkout, 'node_modules'), 'dir');
  // A stale file from an old build must not ship: prepack cleans dist/ before building.
  mkdirSync(join(checkout, 'dist'));
  writeFileSync(join(checkout, 'dist', 'stale.js'), '');
  const env = npmEnv();

  const packed = await run('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: checkout, env, maxBuffer: 16 << 20 });
  const [report] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as Array<{
    filename: string;
    files: Array<{ path: string; mode: number }>;
  }>;
  t.ok(report, 'npm pack --json reported the tarball');
  if (!report) return;
  const tarball = join(tmp, basename(report.filename));
  t.ok(existsSync(tarball), `${report.filename} written`);
  const paths = report.files.map((f) => f.path);
  for (const p of paths) t.ok(p === 'package.json' || SHIPPED.some((re) => re.test(p)), `${p} belongs in the package`);
  for (const want of ['dist/main.js', 'config/relay.yaml', 'README.md', 'LICENSE', 'CHANGELOG.md']) t.ok(paths.includes(want), `ships ${want}`);
  t.notOk(paths.includes('dist/stale.js'), 'prepack cleaned dist/ before building');
  const main = report.files.find((f) => f.path === 'dist/main.js');
  t.equal((main?.mode ?? 0) & 0o111, 0o111, 'dist/main.js is executable in the tarball');
  const packedMain = readFileSync(join(checkout, 'dist', 'main.js'), 'utf8');
  t.ok(packedMain.startsWith('#!/usr/bin/env node\n'), 'dist/main.js starts with a node shebang');

  const prefix = join(tmp, 'prefix');
  await run('npm', ['install', '--global', '--prefix', prefix, '--prefer-offline', tarball], { cwd: tmp, env, maxBuffer: 16 << 20 });
  const bin = join(prefix, 'bin', 'psync-relay');
  t.ok(statSync(bin).mode & 0o100, `${relative(tmp, bin)} is executable`);
  const installed = join(prefix, 'lib', 'node_modules', pkg.name);
  for (const dev of ['typescript', 'tap', 'pino-pretty', 'fast-check']) {
    t.notOk(existsSync(join(installed, 'node_modules', dev)), `no ${dev} (a dev dependency) installed`);
  }
  t.ok(existsSync(join(installed, 'node_modules', 'pino')), 'production dependencies installed');

  // Another directory, and a PATH without the repository's node_modules/.bin: the command stands alone.
  const elsewhere = join(tmp, 'elsewhere');
  mkdirSync(elsewhere);
  const plainEnv = { ...env, PATH: (env['PATH'] ?? '').split(':').filter((d) => !d.includes('node_modules')).join(':') };
  const version = await run(bin, ['--version'], { cwd: elsewhere, env: plainEnv });
  t.equal(version.stdout, `psync-relay ${pkg.version}\n`, '--version prints the package version');
  const help = await run(bin, ['--help'], { cwd: elsewhere, env: plainEnv });
  t.match(help.stdout, /^Usage: psync-relay \[--config FILE\]/, '--help prints the usage');
  t.match(help.stdout, /PSYNC_RELAY_PASSWORD\[_FILE\]/);
  t.equal(help.stderr, '', 'nothing on stderr (the native uWebSockets.js addon loaded, no fallback warning)');
});
