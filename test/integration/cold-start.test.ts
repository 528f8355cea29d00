/**
 * Pipelined cold start: replicas that ask a fresh relay for a full sync while it is still receiving its own RDB
 * get that RDB as it arrives, instead of waiting for the whole file.
 */
import t from 'tap';
import type { Socket } from 'node:net';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { snapshotFiles, startRelay } from '../helpers/relay.js';
import { startFakeMaster } from '../helpers/fake-master.js';
import { startReplica, waitConverged, digest, stat, datasetRdb } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { encodeCommand } from '../../src/resp/writer.js';

t.teardown(stopAll);

const REPLID = 'c'.repeat(8) + '0123456789abcdef0123456789abcdef';

t.test('replicas waiting on a relay that is still receiving its RDB get it as it arrives ($<len> form)', async (t) => {
  const { rdb, digest: want } = await datasetRdb(30000);

  let master: Socket | null = null;
  const fake = await startFakeMaster((socket) => {
    master = socket;
    socket.write(`+FULLRESYNC ${REPLID} 500\r\n$${rdb.length}\r\n`);
    socket.write(rdb.subarray(0, rdb.length >> 1));
  });
  t.teardown(() => fake.close());
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: fake.port } });
  t.teardown(() => relay.stop());
  await waitFor(() => relay.relay.status().upstream.state === 'transfer' || undefined, { what: 'the relay receiving its RDB' });
  const replicas = await Promise.all([0, 1, 2].map(() => startReplica(relay.port)));
  const clients = await Promise.all(replicas.map((r) => r.client()));
  t.teardown(() => Promise.all(clients.map((x) => x.close())));
  // Each replica has half the RDB while the relay itself has not got the rest.
  await waitFor(
    async () => {
      for (const r of clients) if (stat(await r.info('replication'), 'master_sync_read_bytes') < rdb.length >> 2) return undefined;
      return true;
    },
    { what: 'every replica reading the RDB before the relay has it whole' },
  );
  t.equal(relay.relay.status().upstream.state, 'transfer', 'the relay is still receiving it');
  t.same(snapshotFiles(relay.dir), [], 'and holds no snapshot yet');

  master!.write(rdb.subarray(rdb.length >> 1));
  // Like a 7.0 master after the RDB: the stream follows the replica's first ACK.
  master!.once('data', () => master!.write(encodeCommand(['SET', 'after-rdb', 'yes'])));
  for (const r of clients) {
    await waitFor(async () => (await r.info('replication'))['master_link_status'] === 'up' || undefined, { what: 'replica synced' });
    await waitFor(async () => (await r.call('EXISTS', 'after-rdb')) === 1 || undefined, { what: 'the stream after the RDB' });
    t.equal(await digest(r), want, 'the dataset of the RDB plus the stream');
    t.equal((await r.info('replication'))['master_replid'], REPLID);
  }
  t.equal(relay.relay.status().stats.syncFull, 3, 'one full sync each');
  await Promise.all(replicas.map((r) => r.stop()));
});

t.test("an EOF-marked RDB passed on as it arrives: the stream waits for the replica's first ACK, as a 7.0 master does", async (t) => {
  // A replica finds the end of an EOF-marked payload in the last 40 bytes it has read: stream bytes read together
  // with the mark hide it, and the replica waits for the end until repl-timeout. Pausing the replica makes the mark
  // and whatever the relay sends after it arrive in one read.
  const { rdb, digest: want } = await datasetRdb(20000);
  const mark = 'e'.repeat(40);
  let master: Socket | null = null;
  const fake = await startFakeMaster((socket) => {
    master = socket;
    // Offset 0, as from a master that never wrote: the replica's first ACK then says 0, which must count too.
    socket.write(`+FULLRESYNC ${REPLID} 0\r\n$EOF:${mark}\r\n`);
    socket.write(rdb.subarray(0, rdb.length >> 1));
  });
  t.teardown(() => fake.close());
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: fake.port } });
  t.teardown(() => relay.stop());
  await waitFor(() => relay.relay.status().upstream.state === 'transfer' || undefined, { what: 'the relay receiving its RDB' });
  const replica = await startReplica(relay.port);
  const r = await replica.client();
  t.teardown(() => r.close());
  await waitFor(async () => stat(await r.info('replication'), 'master_sync_read_bytes') > 0 || undefined, { what: 'the replica reading the RDB' });
  replica.proc.kill('SIGSTOP');
  t.teardown(() => replica.proc.kill('SIGCONT'));
  master!.write(Buffer.concat([rdb.subarray(rdb.length >> 1), Buffer.from(mark)]));
  master!.once('data', () => master!.write(encodeCommand(['SET', 'after-rdb', 'yes'])));
  const end = encodeCommand(['SET', 'after-rdb', 'yes']).length;
  await waitFor(() => (relay.relay.status().replicas[0]?.state === 'online' && relay.relay.status().masterReplOffset === end) || undefined, {
    what: 'the relay done with the RDB and holding the stream after it',
  });
  replica.proc.kill('SIGCONT');
  await waitFor(async () => (await r.call('EXISTS', 'after-rdb')) === 1 || undefined, { what: 'the replica past the RDB and into the stream', timeoutMs: 30_000 });
  t.equal(await digest(r), want, 'the dataset of the RDB plus the stream');
  await replica.stop();
});

t.test('ten replicas on a fresh relay behind a real master (EOF-marked RDB) are served as it arrives and converge', async (t) => {
  const master = await startRedis({ args: ['--repl-diskless-sync-delay', '1'] });
  const m = await master.client();
  t.teardown(() => m.close());
  await m.call('DEBUG', 'POPULATE', 50000, 'key', 64);
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
  t.teardown(() => relay.stop());
  const replicas = await Promise.all(Array.from({ length: 10 }, () => startReplica(relay.port)));
  const clients = await Promise.all(replicas.map((r) => r.client()));
  t.teardown(() => Promise.all(clients.map((x) => x.close())));
  await m.call('SET', 'after', '1');
  await waitConverged(m, clients, 'all ten replicas', 60_000);
  t.equal(stat(await m.info('stats'), 'sync_full'), 1, 'the master made one full sync');
  t.equal(relay.relay.status().stats.syncFull, 10, 'the relay one for each replica');
  await Promise.all(replicas.map((r) => r.stop()));
});

t.test('full-sync-concurrency 1 and full-sync-rate: one snapshot transfer at a time, in arrival order, no faster than the rate', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  await m.call('DEBUG', 'POPULATE', 20000, 'key', 100);
  const rate = 300 * 1024;
  const relay = await startRelay({
    upstream: { host: '127.0.0.1', port: master.port },
    replication: { 'full-sync-concurrency': 1, 'full-sync-rate': rate },
  });
  t.teardown(() => relay.stop());
  await waitFor(() => relay.relay.usableSnapshot() ?? undefined, { what: 'the relay holds a snapshot' });
  const size = relay.relay.usableSnapshot()!.size;
  let maxSending = 0;
  let maxWaiting = 0;
  const order: number[] = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const reps = relay.relay.status().replicas;
      maxSending = Math.max(maxSending, reps.filter((r) => r.state === 'send_bulk').length);
      maxWaiting = Math.max(maxWaiting, reps.filter((r) => r.state === 'wait_bgsave').length);
      for (const r of reps) if (r.state !== 'wait_bgsave' && !order.includes(r.port)) order.push(r.port);
      // Every 2 ms, not every turn of the event loop (a loop that never waits: a core busy for the whole test). A
      // transfer at `rate` takes seconds; two at once for more than 2 ms would be seen.
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  })();
  const replicas = [];
  for (let i = 0; i < 3; i++) {
    replicas.push(await startReplica(relay.port));
    // Arrival order is what the relay sees: wait until this one has asked.
    await waitFor(() => relay.relay.status().replicas.length === i + 1 || undefined, { what: `replica ${i} connected` });
  }
  const clients = await Promise.all(replicas.map((r) => r.client()));
  t.teardown(() => Promise.all(clients.map((x) => x.close())));
  const started = Date.now();
  await waitConverged(m, clients, 'all three replicas', 60_000);
  const elapsed = Date.now() - started;
  sampling = false;
  await sampler;
  t.equal(maxSending, 1, 'never more than one snapshot transfer at once');
  t.ok(maxWaiting >= 1, `the others waited (up to ${maxWaiting} at once)`);
  const ports = replicas.map((r) => r.port);
  t.strictSame(order, ports, 'served in arrival order');
  // A lower bound only: three transfers of `size` bytes, one after the other, at `rate`, cannot be quicker.
  t.ok(elapsed >= ((3 * size) / rate) * 1000 * 0.8, `three ${size}-byte transfers at ${rate} B/s took ${elapsed} ms`);
  await Promise.all(replicas.map((r) => r.stop()));
});
