/**
 * CLIENT REPLY ON|OFF|SKIP, as Redis: OFF silences every reply until ON or RESET, SKIP the next command's, and neither
 * answers itself. The relay answered OK to each and kept replying, so a client that turned replies off to pipeline
 * blind got every reply anyway, out of step with what it expected.
 */
import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { rawConnect } from '../helpers/raw.js';
import { waitFor } from '../helpers/wait.js';

t.teardown(stopAll);

t.test('CLIENT REPLY OFF, SKIP and ON: the relay sends what redis-server sends, byte for byte', async (t) => {
  const redis = await startRedis();
  const { port } = await startLoggedRelay(t);
  const input = [
    'CLIENT REPLY OFF',
    'PING',
    'ECHO silenced',
    'NOSUCHCOMMAND',
    'CLIENT REPLY SKIP',
    'CLIENT REPLY ON',
    'PING',
    'CLIENT REPLY SKIP',
    'ECHO skipped',
    'ECHO shown',
    'CLIENT REPLY SKIP',
    'NOSUCHCOMMAND',
    'CLIENT REPLY BOGUS',
    'CLIENT REPLY OFF',
    'RESET',
    'ECHO after-reset',
    'CLIENT REPLY OFF',
    'QUIT',
  ]
    .map((l) => `${l}\r\n`)
    .join('');
  const [fromRedis, fromRelay] = await Promise.all([redis.port, port].map(async (p) => (await rawConnect(p, '127.0.0.1', { send: input })).closed));
  t.equal(fromRelay, fromRedis);
  t.equal(fromRelay, '+OK\r\n+PONG\r\n$5\r\nshown\r\n-ERR syntax error\r\n+RESET\r\n$11\r\nafter-reset\r\n', 'only ON, the PING after it, the unskipped ECHO, the syntax error and RESET are answered');
});

t.test('with CLIENT REPLY OFF a subscriber still gets its messages (pushes, as Redis 7.2+)', async (t) => {
  const { port, client } = await startLoggedRelay(t);
  const sub = await rawConnect(port, '127.0.0.1', { send: 'CLIENT REPLY OFF\r\nSUBSCRIBE news\r\nPING\r\n' });
  const pub = await client();
  await waitFor(async () => (await pub.call('PUBSUB', 'NUMSUB', 'news'))?.toString() === 'news,1', { what: 'the subscriber is subscribed' });
  t.equal(await pub.call('PUBLISH', 'news', 'hello'), 1);
  const message = '*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n';
  await waitFor(() => sub.received().endsWith(message), { what: 'the message delivered' });
  t.equal(sub.received(), `*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n${message}`, 'the confirmation and the message; not the PONG');
  sub.socket.destroy();
});
