/**
 * The Dockerfile and .dockerignore, read as text: no Docker engine runs here or in CI, so the image cannot be
 * built; these are the properties a build would otherwise show. hadolint is neither in Debian nor on npm: the
 * lint is dockerfile-utils, the linter of the VS Code Docker language server.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { validate as lintDockerfile } from 'dockerfile-utils';
import { validateConfig } from '../../src/config/schema.js';
import { REPO_ROOT } from '../helpers/relay-process.js';

interface Instruction {
  readonly keyword: string;
  readonly args: string;
  readonly line: number;
}

/** Instructions grouped by stage (FROM starts one); comments dropped, `\` continuations joined. */
function parseDockerfile(text: string): Instruction[][] {
  const stages: Instruction[][] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    while (line.endsWith('\\') && i + 1 < lines.length) {
      const next = lines[++i]!.trim();
      line = line.slice(0, -1).trimEnd() + (next.startsWith('#') ? '' : ' ' + next);
    }
    const [keyword = '', ...rest] = line.split(/\s+/);
    const ins = { keyword: keyword.toUpperCase(), args: rest.join(' '), line: start + 1 };
    if (ins.keyword === 'FROM') stages.push([]);
    const stage = stages[stages.length - 1];
    if (!stage) throw new Error(`line ${ins.line}: ${ins.keyword} before FROM`);
    stage.push(ins);
  }
  return stages;
}

const DEFAULTS = validateConfig({}, null);
const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
const stages = parseDockerfile(dockerfile);
const final = stages[stages.length - 1] ?? [];
const all = (stage: Instruction[], keyword: string): Instruction[] => stage.filter((i) => i.keyword === keyword);
const runs = (stage: Instruction[]): string => all(stage, 'RUN').map((i) => i.args).join('\n');

t.test('dockerfile-utils finds no problem (and does find one in a broken copy)', async (t) => {
  const problems = lintDockerfile(dockerfile).map((d) => `line ${d.range.start.line + 1}: ${d.message}`);
  t.strictSame(problems, [], 'no problem');
  const broken = dockerfile.replace('--start-period=', '--startperiod=');
  t.match(lintDockerfile(broken).map((d) => d.message), ['Unknown flag: startperiod'], 'an unknown HEALTHCHECK flag is caught');
});

t.test('multi-stage: a build stage compiles, the runtime stage is node:20-bookworm-slim', async (t) => {
  t.ok(stages.length >= 2, `${stages.length} stages`);
  const build = stages.find((s) => /\bAS\s+build$/i.test(s[0]!.args));
  t.ok(build, 'a stage named build');
  t.match(runs(build ?? []), /npm ci(?![^\n]*--omit=dev)/, 'the build stage installs the dev dependencies');
  t.match(runs(build ?? []), /npm run build/, 'and compiles');
  t.equal(final[0]?.args, 'node:20-bookworm-slim', 'runtime base: Node 20 (the uWebSockets.js addon has no Node 22 build)');
});

t.test('the runtime stage has production dependencies only', async (t) => {
  const r = runs(final);
  t.match(r, /npm ci --omit=dev/, 'npm ci --omit=dev');
  t.notMatch(r, /npm (i|install)\b/, 'no npm install (it would ignore the lockfile)');
  t.notMatch(r, /npm ci(?! --omit=dev)/, 'no npm ci with dev dependencies');
  t.notMatch(final.map((i) => i.args).join('\n'), /pino-pretty|typescript|\btap\b|\btsc\b/, 'no dev tool named');
  const fromBuild = all(final, 'COPY').filter((i) => i.args.startsWith('--from='));
  t.strictSame(fromBuild.map((i) => i.args), ['--from=build /src/dist ./dist'], 'only dist/ comes from the build stage');
});

t.test('runs as a non-root user that owns the data and config directories', async (t) => {
  const users = all(final, 'USER');
  t.ok(users.length > 0, 'a USER instruction');
  const user = users[users.length - 1]?.args ?? 'root';
  t.notOk(['root', '0', '0:0'].includes(user), `the last USER is ${user}`);
  const lastUserLine = users[users.length - 1]?.line ?? Infinity;
  t.notOk(all(final, 'RUN').some((i) => i.line > lastUserLine), 'no RUN after USER (it would run as that user, or need root)');
  t.match(runs(final), new RegExp(`chown -R ${user}:${user} /app/data /app/config`), 'data and config belong to it');
  const volumes = all(final, 'VOLUME').map((i) => i.args);
  t.ok(volumes.includes('/app/data'), 'the data directory is a volume');
});

t.test('HEALTHCHECK runs node against /readyz; SIGTERM stops it; the stop grace is documented', async (t) => {
  const [hc] = all(final, 'HEALTHCHECK');
  t.match(hc?.args, /CMD \["node", "\/app\/deploy\/docker\/healthcheck\.js"\]/, 'node does the HTTP check (no curl in slim)');
  const script = readFileSync(join(REPO_ROOT, 'deploy/docker/healthcheck.js'), 'utf8');
  t.match(script, `http://127.0.0.1:${DEFAULTS.web.port}/readyz`, 'the check asks /readyz on the default web port');
  t.strictSame(all(final, 'STOPSIGNAL').map((i) => i.args), ['SIGTERM']);
  const graceSeconds = DEFAULTS.shutdownTimeoutMs / 1000;
  const stopT = /docker stop -t (\d+)/.exec(dockerfile);
  t.ok(stopT && Number(stopT[1]) > graceSeconds, `the comment says docker stop -t N with N > shutdown-timeout (${graceSeconds} s)`);
  t.match(dockerfile, /stop_grace_period/, 'and the compose key');
  t.match(dockerfile, /Dockerfile cannot change/i, 'and that a Dockerfile cannot set it');
});

t.test('the entrypoint is the script that binds 0.0.0.0 only with a password', async (t) => {
  t.strictSame(all(final, 'ENTRYPOINT').map((i) => i.args), ['["/bin/sh", "/app/deploy/docker/entrypoint.sh"]']);
  t.notMatch(dockerfile, /--bind", "0\.0\.0\.0"/, 'the Dockerfile does not pass --bind 0.0.0.0 itself');
  t.ok(all(final, 'EXPOSE').some((i) => i.args.split(/\s+/).includes(String(DEFAULTS.listen.port))), `EXPOSE ${DEFAULTS.listen.port}`);
});

t.test('.dockerignore lets in exactly what the Dockerfile copies from the context', async (t) => {
  const rules = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  t.equal(rules[0], '*', 'an allow-list: everything is excluded first');
  const allowed = rules.slice(1).map((l) => {
    t.ok(l.startsWith('!'), `${l} is an exception`);
    return l.slice(1).replace(/\/$/, '');
  });
  const sources = stages
    .flat()
    .filter((i) => i.keyword === 'COPY' && !i.args.startsWith('--from='))
    .flatMap((i) => i.args.split(/\s+/).slice(0, -1));
  t.ok(sources.length > 0);
  for (const src of sources) t.ok(allowed.includes(src.replace(/\/$/, '')), `${src} is in the build context`);
  for (const src of allowed) t.ok(sources.some((s) => s.replace(/\/$/, '') === src), `${src} is copied (nothing extra allowed in)`);
});
