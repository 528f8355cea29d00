/**
 * Cross-protocol attacks from a browser: a page can POST to the RESP port. Like Redis, the relay closes the
 * connection at the first `POST` or `Host:` line, so no command in the request body runs, and logs it as a possible
 * attack (at most once a minute).
 */
import t from 'tap';
import { freePort } from '../helpers/ports.js';
import { startRelayProcess } from '../helpers/relay-process.js';
import { RedisClient } from '../helpers/redis-client.js';
import { logLines, loggedLine, rawConnect, writeConfig } from '../helpers/raw.js';

const port = await freePort();
const dir = t.testdir({});
const relay = await startRelayProcess(['--config', writeConfig(dir, { dir, web: { port: 0 }, log: { disk: 0 } }), '--port', String(port)]);
t.teardown(() => relay.stop());
const admin = await RedisClient.connect(port);
t.teardown(() => admin.close());
const ATTACK = /^Possible SECURITY ATTACK detected\. It looks like somebody is sending POST or Host: commands/;

const body = 'REPLICAOF 127.0.0.1 1\r\nCLIENT KILL TYPE normal\r\n';
const http = (method: string) => `${method} / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`;

t.test('a POST request is cut at its first line: no reply, and the commands in its body never run', async (t) => {
  const c = await rawConnect(port, '127.0.0.1', { send: http('POST') });
  t.equal(await c.closed, '', 'closed with nothing sent back');
  t.notOk((await admin.info('replication'))['master_host'], 'REPLICAOF in the body did not run');
  t.equal(await admin.callString('PING'), 'PONG', 'CLIENT KILL in the body did not run either');
});

t.test('a GET request is cut at its Host: line', async (t) => {
  const c = await rawConnect(port, '127.0.0.1', { send: http('GET') });
  const got = await c.closed;
  t.notMatch(got, /OK/, 'nothing after the request line ran');
  t.notOk((await admin.info('replication'))['master_host']);
});

t.test("a browser-style fetch POST gets no HTTP answer and changes nothing", async (t) => {
  await t.rejects(
    fetch(`http://127.0.0.1:${port}/`, { method: 'POST', body, headers: { connection: 'close', 'content-type': 'text/plain' } }),
    'the connection closes without an HTTP response',
  );
  t.notOk((await admin.info('replication'))['master_host']);
});

t.test('the attack is logged once, not once per request', async (t) => {
  // A later line, from a protocol error: once it is in, every warning the attacks caused is in too.
  await (await rawConnect(port, '127.0.0.1', { send: '*x\r\n' })).closed;
  await loggedLine(relay, /^protocol error from client/);
  const lines = logLines(relay.logs(), ATTACK);
  t.equal(lines.length, 1, 'three attempts, one warning (rate limited like Redis: once a minute)');
  t.match(lines[0], { level: 40, peer: /^127\.0\.0\.1:/ });
});
