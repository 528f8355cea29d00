import { resolve } from 'node:path';
import t from 'tap';
import { loadConfig, loadConfigFile } from '../../src/config/load.js';
import { validateConfig } from '../../src/config/schema.js';
import { configError } from '../helpers/config-error.js';

const SECRET = 's3cretPW';

t.test('a host written as a URL with credentials is refused at load, and the error does not repeat the password', async (t) => {
  // Accepted, such a host went verbatim into INFO's master_host (readable by the replication role), /status and
  // every upstream log line.
  const cases: Array<[unknown, string]> = [
    [{ upstream: { host: `redis://default:${SECRET}@10.0.0.5:6379` } }, 'upstream.host'],
    [{ upstream: { host: `rediss://:${SECRET}@master.example.com` } }, 'upstream.host'],
    [{ upstream: { host: `${SECRET}@10.0.0.5` } }, 'upstream.host'],
    [{ upstream: { host: 'master\r\nmaster_link_status:up' } }, 'upstream.host'],
    [{ upstream: { host: '10.0.0.5', 'snapshot-source': { host: `redis://u:${SECRET}@10.0.0.6` } } }, 'upstream.snapshot-source.host'],
    [{ upstream: { sentinel: { nodes: [`redis://:${SECRET}@10.0.0.11:26379`], 'master-name': 'm' } } }, 'upstream.sentinel.nodes.0'],
    [{ upstream: { sentinel: { nodes: [`u:${SECRET}@10.0.0.11`], 'master-name': 'm' } } }, 'upstream.sentinel.nodes.0'],
  ];
  for (const [raw, path] of cases) {
    const err = configError(t, () => validateConfig(raw, null));
    t.equal(err?.path, path, JSON.stringify(raw));
    t.notMatch(err?.message ?? '', SECRET, `${path}: the message does not repeat the password`);
  }
  t.equal(validateConfig({ upstream: { host: 'master-1.redis.svc.cluster.local' } }, null).upstream.host, 'master-1.redis.svc.cluster.local');
  t.equal(validateConfig({ upstream: { host: '::1' } }, null).upstream.host, '::1');
});

t.test('--upstream with credentials in it is refused without repeating them', async (t) => {
  for (const value of [`default:${SECRET}@10.0.0.5:6379`, `${SECRET}@10.0.0.5`]) {
    const err = configError(t, () => loadConfig(['--upstream', value], {}));
    t.equal(err?.path, '--upstream');
    t.notMatch(err?.message ?? '', SECRET);
  }
});

t.test('a users entry or a section written as a string is refused without repeating the string', async (t) => {
  const cases: Array<[unknown, string]> = [
    [{ listen: { users: [`ops:${SECRET}`] } }, 'listen.users.0'],
    [{ upstream: { tls: `${SECRET}` } }, 'upstream.tls'],
    [{ web: `token=${SECRET}` }, 'web'],
  ];
  for (const [raw, path] of cases) {
    const err = configError(t, () => validateConfig(raw, null));
    t.equal(err?.path, path, JSON.stringify(raw));
    t.notMatch(err?.message ?? '', SECRET, `${path}: the message does not repeat the value`);
  }
});

t.test('a YAML syntax error on a password line names the line and column, not the text there', async (t) => {
  const dir = t.testdir({
    'nested.yaml': `upstream:\n  host: 10.0.0.5\n  password: ${SECRET}: x\n`,
    'quote.yaml': `listen:\n  password: "${SECRET}\n  port: 6380\n`,
    'tab.yaml': `web:\n  token: ${SECRET}\n\tport: 1\n`,
  });
  for (const [file, line] of [['nested.yaml', 3], ['quote.yaml', 4], ['tab.yaml', 3]] as const) {
    const path = resolve(dir, file);
    const err = configError(t, () => loadConfigFile(path));
    t.match(err?.message ?? '', `${path}:${line}:`, `${file}: names the file and line`);
    t.notMatch(err?.message ?? '', SECRET, `${file}: does not show the line's text`);
  }
});
