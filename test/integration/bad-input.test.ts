/**
 * Bad input over real sockets: garbage from the upstream (the relay logs it, drops that link, reconnects and PSYNCs
 * from what it validly received, and its replicas end with exactly the valid stream), garbage from downstream
 * clients (the relay keeps serving its replicas), and the downstream limits, each logged with a `limit` field.
 */
import t from 'tap';
import fc from 'fast-check';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startFakeMaster } from '../helpers/fake-master.js';
import { startReplica, replicaOf, waitConverged, digest } from '../helpers/replication.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { emptyRdb } from '../../src/backlog/snapshot-store.js';
import { StreamScanner } from '../../src/resp/stream-scanner.js';
import { validateConfig } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { Relay } from '../../src/relay.js';
import { closeOf, loggedLine, rawConnect, writeConfig } from '../helpers/raw.js';
import { startRelayProcess } from '../helpers/relay-process.js';

t.teardown(stopAll);

const REPLID = 'a'.repeat(8) + '0123456789abcdef0123456789abcdef';

/** Would the relay's scanner reject `garbage` at its very first byte, after `valid`? Then no garbage byte is kept. */
function rejectedAtOnce(valid: Buffer, garbage: Buffer): boolean {
  const s = new StreamScanner(() => undefined);
  s.reset(0);
  s.scan(valid);
  const r = s.scan(garbage);
  return r.error !== null && r.validBytes === 0;
}

t.test('garbage from upstream: the relay drops the link, PSYNCs from the valid bytes, replicas end equal to the valid stream', async (t) => {
  const ROUNDS = 10;
  // Each round: some commands, cut at a random point, then garbage that is detectable right there (garbage that
  // happens to be valid RESP cannot be told from the stream by anyone, the relay included).
  const roundSpec = fc.record({
    cmds: fc.array(
      fc.tuple(fc.constantFrom('SET', 'APPEND', 'HSET', 'INCRBY', 'DEL'), fc.integer({ min: 0, max: 30 }), fc.string({ minLength: 1, maxLength: 40 })),
      { minLength: 1, maxLength: 12 },
    ),
    cutAt: fc.double({ min: 0, max: 1, noNaN: true }),
    garbage: fc.uint8Array({ minLength: 1, maxLength: 64 }).map((a) => Buffer.from(a)),
  });
  const specs = fc.sample(roundSpec, { seed: 7007, numRuns: ROUNDS });

  const reference = await startRedis();
  const ref = await reference.client();
  t.teardown(() => ref.close());
  let truth = encodeCommand(['SELECT', '0']);
  await ref.call('SELECT', 0);
  /** Where each round stops sending valid bytes: the relay keeps exactly truth[0, cut). */
  const cuts: number[] = [];
  const garbages: Buffer[] = [];
  for (const spec of specs) {
    const before = truth.length;
    for (const [op, k, v] of spec.cmds) {
      const key = `k${k}`;
      const cmd = op === 'HSET' ? ['HSET', `h${k}`, 'f', v] : op === 'INCRBY' ? ['INCRBY', `n${k}`, String(v.length)] : op === 'DEL' ? ['DEL', key] : [op, key, v];
      await ref.call(...cmd);
      truth = Buffer.concat([truth, encodeCommand(cmd)]);
    }
    // The first cut point at or after the drawn one where this garbage is rejected at once.
    let cut = before + Math.floor(spec.cutAt * (truth.length - before));
    let garbage = spec.garbage;
    while (cut < truth.length && !rejectedAtOnce(truth.subarray(0, cut), garbage)) cut++;
    if (cut === truth.length && !rejectedAtOnce(truth, garbage)) garbage = Buffer.concat([Buffer.from('?'), garbage]);
    cuts.push(cut);
    garbages.push(garbage);
  }

  const fake = await startFakeMaster((socket: Socket, attempt, args) => {
    let from = 0;
    if (attempt === 0) {
      const rdb = emptyRdb(10);
      socket.write(Buffer.concat([Buffer.from(`+FULLRESYNC ${REPLID} 0\r\n$${rdb.length}\r\n`), rdb]));
    } else {
      from = Number(args[2]) - 1;
      socket.write(`+CONTINUE ${REPLID}\r\n`);
    }
    if (attempt < ROUNDS) socket.write(Buffer.concat([truth.subarray(from, cuts[attempt]!), garbages[attempt]!]));
    else socket.write(truth.subarray(from));
  });
  t.teardown(() => fake.close());
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: fake.port }, log: { disk: 0 } });
  t.teardown(() => relay.stop());
  const replicas = await Promise.all([0, 1].map(() => startReplica(relay.port)));
  const rc = await Promise.all(replicas.map((r) => r.client()));
  t.teardown(async () => {
    for (const c of rc) await c.close().catch(() => undefined);
  });

  await waitFor(() => fake.psyncs.length === ROUNDS + 1, { what: 'one reconnect per garbage round', timeoutMs: 20000 });
  for (let i = 1; i <= ROUNDS; i++) {
    t.strictSame(fake.psyncs[i], ['PSYNC', REPLID, String(cuts[i - 1]! + 1)], `round ${i}: PSYNC from the last valid byte`);
  }
  t.match(relay.relay.status().upstream.lastError, /garbage in the upstream stream/);
  const want = await digest(ref);
  await waitFor(
    async () => {
      for (const r of rc) {
        const ri = await r.info('replication');
        if (ri['master_link_status'] !== 'up' || Number(ri['master_repl_offset']) !== truth.length) return undefined;
        if ((await digest(r)) !== want) return undefined;
      }
      return true;
    },
    { what: 'replicas hold exactly the valid stream', timeoutMs: 20000 },
  );
  t.equal(relay.relay.status().masterReplOffset, truth.length, 'the relay holds exactly the valid stream');
  t.equal(relay.relay.status().stats.syncFull, 2, 'each replica synced once: no garbage ever reached them');
  t.equal(relay.relay.status().stats.syncPartialOk + relay.relay.status().stats.syncPartialErr, 0, 'and never had to come back');
});

t.test('garbage from downstream clients: the relay keeps serving its replicas', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port }, listen: { 'max-bulk-len': '4kb', 'max-query-buffer': '16kb' } });
  t.teardown(() => relay.stop());
  const replica = await startReplica(relay.port);
  const r = await replica.client();
  t.teardown(() => r.close());
  await m.call('SET', 'before', '1');
  await waitConverged(m, [r], 'replica online');

  const inputs = fc.sample(
    fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
      fc.array(fc.constantFrom(0x2a, 0x24, 0x0d, 0x0a, 0x20, 0x22, 0x2d, 0x30, 0x31, 0x39), { maxLength: 300 }).map((a) => Buffer.from(a)),
      fc.array(fc.constantFrom('PSYNC ? -1', 'REPLCONF ACK 99999999', 'CLIENT KILL TYPE master', 'SYNC', 'MULTI', 'EXEC', 'SUBSCRIBE x', 'QUIT'), { maxLength: 5 })
        .map((c) => Buffer.from(c.join('\r\n') + '\r\n')),
    ),
    { seed: 7008, numRuns: 200 },
  );
  for (let i = 0; i < inputs.length; i += 20) {
    await Promise.all(
      inputs.slice(i, i + 20).map(async (input) => {
        const s = connect(relay.port, '127.0.0.1');
        const closed = closeOf(s);
        s.on('data', () => undefined);
        await once(s, 'connect');
        s.end(input);
        await closed;
      }),
    );
  }
  const x = await relay.client();
  t.teardown(() => x.close());
  t.equal(await x.callString('PING'), 'PONG', 'the relay still answers');
  await m.call('SET', 'after', '2');
  await waitConverged(m, [r], 'the replica still follows the master');
  t.equal(await r.callString('GET', 'after'), '2');
  t.ok(relay.relay.status().stats.protocolErrors > 0, `${relay.relay.status().stats.protocolErrors} protocol errors counted`);
});

t.test('a replica that stops reading its snapshot is closed after replica-timeout; the full sync waiting behind it goes ahead', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  // 16 MB that do not compress: more than the kernel buffers of a connection that does not read.
  await m.pipeline(Array.from({ length: 160 }, (_, i) => ['SET', `big:${i}`, randomBytes(100_000)]));
  const relay = await startRelay({
    upstream: { host: '127.0.0.1', port: master.port },
    replication: { 'full-sync-concurrency': 1, 'replica-timeout': '1s' },
  });
  t.teardown(() => relay.stop());
  await waitFor(() => relay.relay.usableSnapshot(), { what: 'the relay holds a snapshot' });
  const deaf = await rawConnect(relay.port, '127.0.0.1', { send: 'REPLCONF capa eof\r\nPSYNC ? -1\r\n' });
  deaf.socket.pause();
  let closed = false;
  void deaf.closed.then(() => (closed = true));
  t.teardown(() => deaf.socket.destroy());
  await waitFor(() => relay.relay.status().fullSyncsActive === 1, { what: 'the deaf replica takes the only transfer slot' });
  const { r } = await replicaOf(t, relay.port);
  await waitConverged(m, [r], 'the replica queued behind it syncs', 15_000);
  deaf.socket.resume(); // it sees the close once it reads what its kernel holds
  await waitFor(() => closed, { what: 'the deaf replica closed by the relay', timeoutMs: 5000 });
  t.equal(relay.relay.status().stats.replicasDroppedTimeout, 1, 'the deaf replica was dropped for its timeout');
});

t.test('under a low open files limit, listen.max-clients is lowered: clients past it get the error, the disk log keeps its files', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const port = await freePort();
  const dir = t.testdir({});
  const config = writeConfig(dir, { upstream: { host: '127.0.0.1', port: master.port }, listen: { port }, log: { memory: '4mb', disk: '1mb' }, web: { port: 0 }, dir });
  const relay = await startRelayProcess(['--config', config, '--port', String(port)], { prefix: ['prlimit', '--nofile=200', '--'] });
  t.teardown(() => relay.stop());
  t.match(await loggedLine(relay, /listen\.max-clients lowered/), { limit: 'listen.max-clients', value: 10000, maxClients: 72, openFilesLimit: 200 });
  const admin = await RedisClient.connect(port);
  t.teardown(() => admin.close());
  t.equal((await admin.info('clients'))['maxclients'], '72');
  // Past 200 descriptors the relay could open no file: a disk log segment, a snapshot.
  // Clients that never close their side: a refused connection must not keep its descriptor until they do.
  const conns = await Promise.all(Array.from({ length: 250 }, () => rawConnect(port, '127.0.0.1', { allowHalfOpen: true })));
  t.teardown(() => conns.forEach((c) => c.socket.destroy()));
  const refused = () => conns.filter((c) => c.received() === '-ERR max number of clients reached\r\n').length;
  const summary = (): string =>
    `${refused()} refused, ${conns.filter((c) => c.socket.destroyed).length} closed; other answers: ${JSON.stringify([...new Set(conns.map((c) => c.received()).filter((r) => r !== '' && !r.startsWith('-ERR max number')))].slice(0, 3))}`;
  await waitFor(
    () => {
      if (refused() === 250 - 71) return true;
      throw new Error(summary()); // kept as the last value seen
    },
    { what: 'every connection past the 72nd refused with the error' },
  );
  // Connections the relay closes after an error (here a protocol error) are closed at once too, not half-closed
  // until a peer that never closes its side goes: 4 rounds of 50 such clients, each round past the room left.
  for (const c of conns) c.socket.destroy();
  await waitFor(async () => (await admin.info('clients'))['connected_clients'] === '1' || undefined, { what: 'the flood gone' });
  for (let round = 0; round < 4; round++) {
    const bad = await Promise.all(Array.from({ length: 50 }, () => rawConnect(port, '127.0.0.1', { allowHalfOpen: true, send: '*1\r\n$x\r\n' })));
    t.teardown(() => bad.forEach((c) => c.socket.destroy()));
    const answered = () => bad.filter((c) => c.received().startsWith('-ERR Protocol error')).length;
    await waitFor(
      () => {
        if (answered() === 50) return true;
        throw new Error(`${answered()} of 50 answered; others got ${JSON.stringify([...new Set(bad.map((c) => c.received()))].slice(0, 3))}`);
      },
      { what: `round ${round + 1}: every client sending garbage gets the protocol error` },
    );
  }
  // 2 MB of stream: the 1mb disk log opens a segment (and its checksum file) every 128 KiB of it.
  await m.pipeline(Array.from({ length: 200 }, (_, i) => ['SET', `k${i}`, 'v'.repeat(10_000)]));
  const offset = Number((await m.info('replication'))['master_repl_offset']);
  await waitFor(async () => Number((await admin.info('replication'))['master_repl_offset']) === offset, { what: 'the relay holds the stream' });
  const disk = await admin.info('replication');
  t.equal(disk['relay_log_disk_write_errors'], '0', 'no disk log write failed');
  t.equal(disk['relay_log_disk_state'], 'ok');
});

t.test('downstream limits are enforced and logged with a limit field', async (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const dest = { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) };
  const port = await freePort();
  const config = validateConfig(
    {
      upstream: { host: null },
      listen: { port, 'max-clients': 3, 'max-bulk-len': '1kb', 'max-query-buffer': '4kb', 'handshake-timeout': '300ms' },
      log: { disk: 0 },
      web: { port: 0 },
      dir: t.testdir({}),
    },
    null,
  );
  const relay = new Relay(config, createLogger('info', dest));
  await relay.start();
  t.teardown(() => relay.close());
  const logged = (limit: string) => waitFor(() => lines.find((l) => l['limit'] === limit), { what: `a log line with limit ${limit}`, timeoutMs: 5000 });

  /** A raw connection: what it receives, and when it closes. */
  const raw = async (send?: Buffer) => {
    const s = connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    const closed = closeOf(s).then(() => got);
    await once(s, 'connect');
    if (send) s.write(send);
    return { s, closed };
  };

  // Opened first and speaks at once: its handshake timer, set before the silent one's with the same duration,
  // would have fired first. Still open once the silent one is closed, it was never going to be closed.
  const spoke = await raw(encodeCommand(['PING']));
  let spokeClosed = false;
  void spoke.closed.then(() => (spokeClosed = true));
  const silent = await raw();
  t.equal(await silent.closed, '', 'a silent connection is closed by the relay, with nothing written');
  t.match(await logged('listen.handshake-timeout'), { value: 300, bytesIn: 0 });
  t.notOk(spokeClosed, 'a connection that spoke, opened just before it, is still open');
  spoke.s.end();
  t.equal(await spoke.closed, '+PONG\r\n');
  // Half a command is no handshake: a client trickling one never finishes (slowloris) and held its slot for ever.
  const half = await raw(Buffer.from('*1\r\n$4\r\nPI'));
  t.equal(await half.closed, '', 'a connection that sent half a command is closed at the timeout');
  t.match(
    await waitFor(() => lines.find((l) => l['limit'] === 'listen.handshake-timeout' && l['bytesIn'] === 10), { what: 'its log line' }),
    { msg: 'client sent no whole command within the handshake timeout, closing it' },
  );

  const bulk = await raw(Buffer.from('*2\r\n$4\r\necho\r\n$1025\r\n'));
  t.equal(await bulk.closed, '-ERR Protocol error: invalid bulk length\r\n', 'a bulk over max-bulk-len');
  t.match(await logged('listen.max-bulk-len'), { value: 1024 });

  const big = Buffer.concat([Buffer.from('*9\r\n'), ...Array.from({ length: 5 }, () => encodeCommand(['x'.repeat(1000)]).subarray(4))]);
  const query = await raw(big);
  t.equal(await query.closed, '-ERR Protocol error: query buffer limit exceeded\r\n', 'an unfinished command over max-query-buffer');
  t.match(await logged('listen.max-query-buffer'), { value: 4096 });

  const clients = await Promise.all([0, 1, 2].map(() => RedisClient.connect(port)));
  for (const c of clients) t.equal(await c.callString('PING'), 'PONG');
  const fourth = await raw();
  t.equal(await fourth.closed, '-ERR max number of clients reached\r\n', 'the client past max-clients is refused');
  t.match(await logged('listen.max-clients'), { value: 3 });
  t.equal(relay.status().stats.rejectedConnections, 1);
  for (const c of clients) await c.close();
  t.equal(relay.status().stats.protocolErrors, 2);

  // A replid is client text: logged cut to 128 characters, as every client text is (a 512mb one made a line as long).
  const psync = await raw(encodeCommand(['PSYNC', 'R'.repeat(1000), '5']));
  const refused = await waitFor(() => lines.find((l) => l['msg'] === 'partial resync refused, full resync'), { what: 'the refused PSYNC logged' });
  t.equal(refused['askedReplid'], `${'R'.repeat(128)}...`);
  psync.s.destroy();
});
