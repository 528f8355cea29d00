import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { waitFor } from '../helpers/wait.js';

t.teardown(stopAll);

// A server whose AUTH is renamed away answers it as Redis 7.0 answers any unknown command, quoting its arguments:
// "-ERR unknown command 'AUTH', with args beginning with: 'relay' '<password>'". So may a proxy or an older server
// that does not know AUTH <user> <password>. The relay must not pass that quote on.
const SECRET = 'Upstr3amS3cret';
// As `openssl rand -hex 64` makes: Redis cuts its quote at 128 characters, so only a part of it would show.
const LONG_SECRET = 'a1b2c3d4e5f6'.repeat(11);
const echoing = await startRedis({ args: ['--rename-command', 'AUTH', ''] });

t.test('a master that quotes the AUTH arguments back: the password is in no log line and not in /status', async (t) => {
  const { relay, lines } = await startLoggedRelay(t, { log: { disk: 0, 'memory-prefault': false }, upstream: { host: '127.0.0.1', port: echoing.port, user: 'relay', password: SECRET } });
  await waitFor(() => lines.find((l) => l['msg'] === 'upstream link failed'), { what: 'the upstream link to fail on AUTH', timeoutMs: 10_000 });
  const failed = lines.find((l) => l['msg'] === 'upstream link failed')!;
  t.match(JSON.stringify(failed), /unknown command/, "the master's answer is still logged");
  t.notMatch(JSON.stringify(lines), SECRET, 'no log line holds the password');
  t.notMatch(relay.status().upstream.lastError, SECRET, '/status upstream.lastError does not hold it');
  t.match(relay.status().upstream.lastError, /unknown command/);
});

t.test('a long password the master quotes only in part: no part of it is in a log line', async (t) => {
  const { lines } = await startLoggedRelay(t, {
    log: { disk: 0, 'memory-prefault': false },
    upstream: { host: '127.0.0.1', port: echoing.port, user: 'relay', password: LONG_SECRET },
  });
  await waitFor(() => lines.find((l) => l['msg'] === 'upstream link failed'), { what: 'the upstream link to fail on AUTH', timeoutMs: 10_000 });
  t.notMatch(JSON.stringify(lines), LONG_SECRET.slice(0, 24), 'not even its first 24 characters');
});

t.test('a Sentinel that quotes the AUTH argument back: the password is in no log line', async (t) => {
  const { lines } = await startLoggedRelay(t, {
    log: { disk: 0, 'memory-prefault': false },
    upstream: { host: null, sentinel: { nodes: [`127.0.0.1:${echoing.port}`], 'master-name': 'mymaster', password: SECRET } },
  });
  await waitFor(() => lines.find((l) => l['msg'] === 'sentinel unusable, trying the next one'), { what: 'the Sentinel to be given up', timeoutMs: 10_000 });
  const failed = lines.find((l) => l['msg'] === 'sentinel unusable, trying the next one')!;
  t.match(JSON.stringify(failed), /unknown command/, "the Sentinel's answer is still logged");
  t.notMatch(JSON.stringify(lines), SECRET, 'no log line holds the password');
});
