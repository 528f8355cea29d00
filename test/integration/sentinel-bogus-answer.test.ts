/**
 * Bogus Sentinel answers. A `get-master-addr-by-name` reply whose host is empty would make the relay dial '' (Node
 * connects to localhost) and full-sync from whatever listens on that port there: another dataset, passed on to
 * every replica. The relay must check the host as REPLICAOF does, refuse the answer with a logged reason, and follow
 * nothing until a Sentinel names a real master.
 */
import t from 'tap';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { startFakeMaster } from '../helpers/fake-master.js';
import { waitFor } from '../helpers/wait.js';
import { scriptedSentinel } from '../helpers/scripted-sentinel.js';

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
