import t from 'tap';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica, waitConverged } from '../helpers/replication.js';
import { benchmarkLoad } from '../helpers/load.js';

t.teardown(stopAll);

t.test('log.memory-prefault: the memory tail is made at start, and the first stream after it allocates no block', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const on = await startRelay({ upstream: { host: '127.0.0.1', port: master.port }, log: { memory: '16mb', 'memory-prefault': true } });
  t.teardown(() => on.stop());
  const off = await startRelay({ upstream: { host: '127.0.0.1', port: master.port }, log: { memory: '16mb', 'memory-prefault': false } });
  t.teardown(() => off.stop());
  t.equal(on.relay.status().log.blocksPrefaulted, 16, 'once started, the relay holds its memory tail: sixteen 1 MiB read blocks');

  const replicas = [await startReplica(on.port), await startReplica(off.port)];
  const rc = await Promise.all(replicas.map((r) => r.client()));
  t.teardown(async () => {
    for (const c of rc) await c.close();
  });
  await benchmarkLoad(master.port, 10000, 1024, 5000); // ~11 MB of stream
  await m.call('SET', 'last', '1');
  await waitConverged(m, rc, 'both replicas equal to the master');

  const a = on.relay.status().log;
  t.ok(a.size > 10 * 1024 * 1024, `the relay holds the stream in memory (${a.size} bytes)`);
  t.equal(a.blocksAllocated, 0, 'no block allocated while the stream filled the prefaulted tail');
  const b = off.relay.status().log;
  t.equal(b.blocksPrefaulted, 0, 'memory-prefault: false makes none');
  t.ok(b.blocksAllocated >= 10, `and that relay allocates its blocks as the stream arrives (${b.blocksAllocated})`);
});
