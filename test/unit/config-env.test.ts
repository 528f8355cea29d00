import { resolve } from 'node:path';
import t from 'tap';
import { HELP_TEXT, loadConfig } from '../../src/config/load.js';
import { ENV_KEYS } from '../../src/config/env.js';
import { configError } from '../helpers/config-error.js';

t.test('PSYNC_RELAY_* variables set listen.password, upstream.password and web.token', async (t) => {
  const { config } = loadConfig([], {
    PSYNC_RELAY_PASSWORD: 'listen-pw',
    PSYNC_RELAY_UPSTREAM_PASSWORD: 'upstream-pw',
    PSYNC_RELAY_WEB_TOKEN: 'web-token',
  });
  t.equal(config.listen.password, 'listen-pw');
  t.equal(config.upstream.password, 'upstream-pw');
  t.equal(config.web.token, 'web-token');
  const none = loadConfig([], {}).config;
  t.equal(none.listen.password, null, 'nothing set: no password');
  t.equal(none.web.token, null);
});

t.test('a _FILE variable reads the secret from a file, dropping one trailing newline', async (t) => {
  const dir = t.testdir({ pw: 's3cret\n', 'pw-crlf': 'a b\r\n', token: 'tok\n\n', upstream: 'up' });
  const { config } = loadConfig([], {
    PSYNC_RELAY_PASSWORD_FILE: resolve(dir, 'pw'),
    PSYNC_RELAY_UPSTREAM_PASSWORD_FILE: resolve(dir, 'upstream'),
    PSYNC_RELAY_WEB_TOKEN_FILE: resolve(dir, 'token'),
  });
  t.equal(config.listen.password, 's3cret');
  t.equal(config.upstream.password, 'up');
  t.equal(config.web.token, 'tok\n', 'only one newline is dropped');
  t.equal(loadConfig([], { PSYNC_RELAY_PASSWORD_FILE: resolve(dir, 'pw-crlf') }).config.listen.password, 'a b');
});

t.test('the environment overrides the config file; other keys keep the file value', async (t) => {
  const dir = t.testdir({
    'relay.yaml': 'listen:\n  password: from-file\n  port: 7000\nweb:\n  token: file-token\n  bind: 0.0.0.0\n',
  });
  const file = resolve(dir, 'relay.yaml');
  const { config } = loadConfig(['--config', file, '--port', '7001'], { PSYNC_RELAY_PASSWORD: 'from-env' });
  t.equal(config.listen.password, 'from-env', 'env beats the file');
  t.equal(config.web.token, 'file-token', 'keys without a variable keep the file value');
  t.equal(config.listen.port, 7001, 'flags still apply');
  t.equal(loadConfig(['--config', file], {}).config.listen.password, 'from-file');
});

t.test('a web token from the environment satisfies the non-loopback web.bind rule', async (t) => {
  const dir = t.testdir({ 'relay.yaml': 'web:\n  bind: 0.0.0.0\n' });
  const file = resolve(dir, 'relay.yaml');
  t.equal(configError(t, () => loadConfig(['--config', file], {}))?.path, 'web.token', 'refused without a token');
  t.equal(loadConfig(['--config', file], { PSYNC_RELAY_WEB_TOKEN: 't' }).config.web.bind, '0.0.0.0');
});

t.test('bad environment overrides are ConfigErrors naming the variable, never the secret', async (t) => {
  const dir = t.testdir({ empty: '', newline: '\n' });
  const cases: Array<[NodeJS.ProcessEnv, string]> = [
    [{ PSYNC_RELAY_PASSWORD: '' }, 'PSYNC_RELAY_PASSWORD'],
    [{ PSYNC_RELAY_WEB_TOKEN: '' }, 'PSYNC_RELAY_WEB_TOKEN'],
    [{ PSYNC_RELAY_PASSWORD: 'a', PSYNC_RELAY_PASSWORD_FILE: resolve(dir, 'empty') }, 'PSYNC_RELAY_PASSWORD'],
    [{ PSYNC_RELAY_PASSWORD_FILE: '' }, 'PSYNC_RELAY_PASSWORD_FILE'],
    [{ PSYNC_RELAY_PASSWORD_FILE: resolve(dir, 'missing') }, 'PSYNC_RELAY_PASSWORD_FILE'],
    [{ PSYNC_RELAY_UPSTREAM_PASSWORD_FILE: resolve(dir, 'empty') }, 'PSYNC_RELAY_UPSTREAM_PASSWORD_FILE'],
    [{ PSYNC_RELAY_WEB_TOKEN_FILE: resolve(dir, 'newline') }, 'PSYNC_RELAY_WEB_TOKEN_FILE'],
  ];
  for (const [env, path] of cases) {
    const err = configError(t, () => loadConfig([], env));
    t.equal(err?.path, path, JSON.stringify(env));
    t.ok(err?.message.startsWith(`${path}: `), String(err?.message));
  }
  const err = configError(t, () => loadConfig([], { PSYNC_RELAY_PASSWORD: 'hunter2', PSYNC_RELAY_PASSWORD_FILE: '/x' }));
  t.notMatch(err?.message, /hunter2/, 'the value is not echoed');
});

t.test('--help and --version read neither the environment nor the file', async (t) => {
  const env = { PSYNC_RELAY_PASSWORD_FILE: '/nonexistent/pw' };
  t.equal(loadConfig(['--help'], env).help, true);
  const v = loadConfig(['--version', '--config', '/nonexistent/relay.yaml'], env);
  t.equal(v.version, true);
  t.equal(v.help, false);
  t.equal(loadConfig(['-v'], env).version, true);
  t.equal(loadConfig([], {}).version, false);
  t.equal(configError(t, () => loadConfig(['--version=1'], {}))?.path, '--version');
});

t.test('--help lists --version and every variable', async (t) => {
  t.match(HELP_TEXT, /-v, --version/);
  for (const name of Object.keys(ENV_KEYS)) t.match(HELP_TEXT, `${name}[_FILE]`);
});
