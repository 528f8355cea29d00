/**
 * Bogus Sentinel answers. A `get-master-addr-by-name` reply whose host is empty would make the relay dial '' (Node
 * connects to localhost) and full-sync from whatever listens on that port there: another dataset, passed on to
 * every replica. The relay must check the host as REPLICAOF does, refuse the answer with a logged reason, and follow
 * nothing until a Sentinel names a real master.
 */
import t from 'tap';
import { createServer } from 'node:net';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { startFakeMaster } from '../helpers/fake-master.js';
import { waitFor } from '../helpers/wait.js';
import { RequestParser } from '../../src/resp/request-parser.js';
import { encodeCommand } from '../../src/resp/writer.js';

/** A scripted Sentinel that names `host`:`port` as the master, every time it is asked. */
async function scriptedSentinel(host: string, port: number): Promise<{ port: number; asked: () => number; close: () => Promise<void> }> {
  let asked = 0;
  const server = createServer((socket) => {
    socket.on('error', () => {});
    const parser = new RequestParser({ maxBulkLen: 1 << 20, maxQueryBuffer: 1 << 20 });
    socket.on('data', (chunk: Buffer) => {
      parser.push(chunk);
      for (let args = parser.next(); args; args = parser.next()) {
        const name = args[0]!.toString().toUpperCase();
        if (name === 'SENTINEL') {
          asked++;
          socket.write(encodeCommand([host, String(port)]));
        } else if (name === 'SUBSCRIBE') socket.write('*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n');
        else socket.write('+PONG\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : 0,
    asked: () => asked,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

t.test('a Sentinel naming an empty host is refused: the relay does not dial localhost, and says why', async (t) => {
  // What listens on localhost at the named port: a master of some other dataset.
  const other = await startFakeMaster((socket) => socket.end('-ERR not for you\r\n'));
  t.teardown(() => other.close());
  const sentinel = await scriptedSentinel('', other.port);
  t.teardown(() => sentinel.close());
  const relay = await startLoggedRelay(t, {
    upstream: { host: null, 'backoff-min': '50ms', 'backoff-max': '200ms', sentinel: { nodes: [`127.0.0.1:${sentinel.port}`], 'master-name': 'mymaster' } },
  });
  const client = await relay.client();
  const refused = () => relay.lines.some((l) => JSON.stringify(l).includes('malformed master host'));
  await waitFor(() => other.psyncs.length > 0 || (sentinel.asked() >= 3 && refused()), {
    what: 'the empty host refused on several asks, or followed',
    timeoutMs: 10_000,
  });
  t.same(other.psyncs, [], 'nothing on localhost was asked for a sync');
  t.ok(refused(), 'the refusal is logged with its reason');
  const info = await client.info('replication');
  t.not(info['master_port'], String(other.port), 'the relay does not follow the bogus address');
  t.equal(info['master_host'], undefined, 'no master is followed');
});
