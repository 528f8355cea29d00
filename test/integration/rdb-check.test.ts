import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startFakeMaster } from '../helpers/fake-master.js';
import { snapshotFiles, startRelay } from '../helpers/relay.js';
import { waitFor } from '../helpers/wait.js';
import { stat } from '../helpers/replication.js';

t.teardown(stopAll);

const REPLID = 'a'.repeat(40);

t.test('a corrupted RDB from upstream is refused and fetched again', async (t) => {
  // A real RDB with a real CRC-64 trailer, from redis-server itself.
  const src = await startRedis();
  const c = await src.client();
  await c.call('DEBUG', 'POPULATE', 2000, 'k', 50);
  await c.call('SAVE');
  await c.close();
  const rdb = readFileSync(join(src.dir, 'dump.rdb'));
  await src.stop();

  const master = await startFakeMaster((socket, attempt) => {
    const payload = Buffer.from(rdb);
    if (attempt === 0) payload[Math.floor(payload.length / 2)]! ^= 0x01; // one flipped bit
    socket.write(`+FULLRESYNC ${REPLID} 100\r\n$${payload.length}\r\n`);
    socket.write(payload);
  });
  t.teardown(() => master.close());
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
  t.teardown(() => relay.stop());
  const x = await relay.client();
  t.teardown(() => x.close());

  await waitFor(async () => (await x.info('replication'))['master_link_status'] === 'up' || undefined, { what: 'relay accepts the second RDB' });
  t.equal(master.psyncs.length, 2, 'the relay asked twice');
  t.same(master.psyncs[1], ['PSYNC', '?', '-1'], 'the second attempt is a fresh full sync');
  const xi = await x.info('replication');
  t.equal(xi['master_replid'], REPLID);
  t.equal(stat(xi, 'relay_snapshot_offset'), 100);
  t.equal(stat(await x.info('stats'), 'relay_upstream_full_syncs'), 1, 'only the good RDB became a snapshot');
  t.same(snapshotFiles(relay.dir).length, 1, 'one snapshot file');
  t.same(readFileSync(snapshotFiles(relay.dir)[0]!), rdb, 'the stored snapshot is the intact RDB');
  t.match(relay.relay.status().upstream.lastError, /checksum mismatch/);
});
