import t, { type Test } from 'tap';
import { connect } from 'node:net';
import { once } from 'node:events';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica, digest, waitConverged, stat } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import type { RedisClient } from '../helpers/redis-client.js';
import { closeOf } from '../helpers/raw.js';

t.teardown(stopAll);

// One topology shared by the tests in this file, in order: master → relay → 3 redis-server replicas.
const master = await startRedis();
const m = await master.client();
const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
t.teardown(() => relay.stop());
const x = await relay.client();
const replicas = await Promise.all([0, 1, 2].map(() => startReplica(relay.port)));
const rc: RedisClient[] = await Promise.all(replicas.map((r) => r.client()));
t.teardown(async () => {
  for (const c of [m, x, ...rc]) await c.close().catch(() => {});
});

async function mixedWorkload(t: Test, c: RedisClient, tag: string): Promise<void> {
  const cmds: (string | number | Buffer)[][] = [];
  for (let i = 0; i < 300; i++) cmds.push(['SET', `${tag}:s:${i}`, `v${i}`]);
  for (let i = 0; i < 50; i++) cmds.push(['HSET', `${tag}:h`, `f${i}`, i]);
  cmds.push(['RPUSH', `${tag}:l`, 'a', 'b', 'c'], ['LPOP', `${tag}:l`]);
  cmds.push(['SADD', `${tag}:set`, 'x', 'y', 'z'], ['SREM', `${tag}:set`, 'y']);
  cmds.push(['ZADD', `${tag}:z`, 1, 'one', 2, 'two', 3.5, 'three']);
  cmds.push(['XADD', `${tag}:stream`, '*', 'field', 'value'], ['XADD', `${tag}:stream`, '*', 'f2', 'v2']);
  cmds.push(['SET', `${tag}:ttl`, 'soon', 'EX', 1000], ['PEXPIRE', `${tag}:s:1`, 500000]);
  cmds.push(['MULTI'], ['INCR', `${tag}:counter`], ['INCRBY', `${tag}:counter`, 10], ['EXEC']);
  cmds.push(['EVAL', "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])", 2, `${tag}:lua`, `${tag}:luacount`, 'from-lua']);
  cmds.push(['SELECT', 3], ['SET', `${tag}:db3`, 'three'], ['HSET', `${tag}:db3h`, 'a', 1]);
  cmds.push(['SELECT', 9], ['SET', `${tag}:db9`, 'nine'], ['SET', `${tag}:gone`, 'x'], ['FLUSHDB']);
  cmds.push(['SET', `${tag}:db9after`, 'kept']);
  cmds.push(['SELECT', 0]);
  cmds.push(['SET', `${tag}:big`, Buffer.alloc(10 * 1024 * 1024, 'x')]);
  cmds.push(['DEL', `${tag}:s:2`]);
  const replies = await c.pipeline(cmds);
  t.equal(replies.length, cmds.length, 'workload ran');
}

t.test('a mixed workload leaves digests and offsets equal on master, relay and three replicas', async (t) => {
  await mixedWorkload(t, m, 'mix');
  const { offset, digest: d } = await waitConverged(m, rc, 'replicas of the relay converge');
  t.equal(stat(await x.info('replication'), 'master_repl_offset'), offset, 'relay offset equals master offset');
  for (const r of rc) t.equal(await digest(r), d, 'replica digest equals master digest');
  t.not(d, '0000000000000000000000000000000000000000', 'the dataset is not empty');
  const mi = await m.info('replication');
  for (const r of rc) t.equal((await r.info('replication'))['master_replid'], mi['master_replid'], 'replica has the master replid');
  const xi = await x.info('replication');
  t.equal(xi['connected_slaves'], '3');
  t.equal(xi['replica_priority'], '0');
  t.equal(xi['master_link_status'], 'up');
  t.equal(stat(await m.info('stats'), 'sync_full'), 1, 'the master made exactly one full sync');
});

t.test('a downstream replica whose link is cut resyncs partially from the relay', async (t) => {
  const before = await x.info('stats');
  const killed = await x.call('CLIENT', 'KILL', 'TYPE', 'replica');
  t.equal(killed, 3, 'three replica links cut');
  await mixedWorkload(t, m, 'after-kill');
  await waitConverged(m, rc, 'replicas come back');
  const after = await x.info('stats');
  t.equal(stat(after, 'sync_partial_ok') - stat(before, 'sync_partial_ok'), 3, 'three partial resyncs');
  t.equal(stat(after, 'sync_full'), stat(before, 'sync_full'), 'no full sync');
});

t.test('a downstream replica restarted from its saved RDB resyncs partially from the relay', async (t) => {
  const before = await x.info('stats');
  // SHUTDOWN SAVE writes the replid and offset into the RDB; on restart Redis 7.0 PSYNCs with them.
  await rc[0]!.call('SHUTDOWN', 'SAVE').catch(() => {});
  await rc[0]!.close().catch(() => {});
  await replicas[0]!.restart();
  rc[0] = await replicas[0]!.client();
  await m.call('SET', 'after-restart', '1');
  await waitConverged(m, rc, 'restarted replica comes back');
  const after = await x.info('stats');
  t.equal(stat(after, 'sync_partial_ok') - stat(before, 'sync_partial_ok'), 1, 'one partial resync');
  t.equal(stat(after, 'sync_full'), stat(before, 'sync_full'), 'no full sync');
});

t.test('the relay continues upstream with +CONTINUE when its link is cut under writes', async (t) => {
  const mBefore = await m.info('stats');
  const xBefore = await x.info('stats');
  let writing = true;
  const writer = (async () => {
    let i = 0;
    while (writing) await m.call('SET', `cut:${i++ % 1000}`, `v${i}`);
  })();
  const killed = await m.call('CLIENT', 'KILL', 'TYPE', 'replica');
  t.equal(killed, 1, 'the relay link was cut');
  await waitFor(async () => stat(await m.info('stats'), 'sync_partial_ok') > stat(mBefore, 'sync_partial_ok'), { what: 'relay PSYNC accepted' });
  writing = false;
  await writer;
  await waitConverged(m, rc, 'replicas converge after the upstream cut');
  const mAfter = await m.info('stats');
  t.equal(stat(mAfter, 'sync_full'), stat(mBefore, 'sync_full'), 'master made no full sync');
  const xAfter = await x.info('stats');
  t.equal(stat(xAfter, 'sync_full'), stat(xBefore, 'sync_full'), 'replicas made no full sync');
  t.equal(stat(xAfter, 'sync_partial_ok'), stat(xBefore, 'sync_partial_ok'), 'replicas stayed connected');
});

t.test('WAIT on the master counts the relay, and the master sees the relay offset', async (t) => {
  await m.call('SET', 'wait-key', '1');
  t.equal(await m.call('WAIT', 1, 2000), 1);
  const offset = stat(await m.info('replication'), 'master_repl_offset');
  const line = await waitFor(async () => {
    const slave0 = (await m.info('replication'))['slave0'] ?? '';
    return slave0.includes(`offset=${offset},`) ? slave0 : undefined;
  }, { what: 'master INFO shows the relay at its offset' });
  // Valkey 8 adds ",type=replica".
  t.match(line, new RegExp(`^ip=127\\.0\\.0\\.1,port=${relay.port},state=online,offset=${offset},lag=\\d+(,type=replica)?$`), 'the relay, online at the master offset');
});

t.test('malformed RESP from a downstream client gets a protocol error and only that client is closed', async (t) => {
  const sock = connect({ port: relay.port, host: '127.0.0.1' });
  const closed = closeOf(sock);
  await once(sock, 'connect');
  let got = '';
  sock.on('data', (d) => (got += d.toString()));
  sock.write('*2\r\n$3\r\nGET\r\n$abc\r\n');
  await closed;
  t.match(got, /^-ERR Protocol error: invalid bulk length/);
  await m.call('SET', 'after-garbage', '1');
  await waitConverged(m, rc, 'replicas unaffected');
  t.equal((await x.info('replication'))['connected_slaves'], '3');
});

t.test('the relay answers the commands replicas and tools use', async (t) => {
  t.equal(await x.call('PING'), 'PONG');
  t.same(await x.call('ECHO', 'hi'), Buffer.from('hi'));
  await t.rejects(x.call('SET', 'k', 'v'), /READONLY/);
  await t.rejects(x.call('NOSUCHCMD'), /unknown command/);
  // Names of Object's own properties are no commands or INFO sections (before: an arity error; INFO threw inside).
  for (const name of ['constructor', '__proto__', 'CONSTRUCTOR']) {
    await t.rejects(x.call(name, 'a'), { message: `ERR unknown command '${name}', with args beginning with: 'a' ` }, name);
    t.equal(String(await x.call('INFO', name)), '', `INFO ${name}: no section (an empty string, as Redis)`);
  }
  const role = (await x.call('ROLE')) as unknown[];
  t.same(role.slice(0, 4), [Buffer.from('slave'), Buffer.from('127.0.0.1'), master.port, Buffer.from('connected')]);
  t.match((await x.call('CLIENT', 'LIST')) as Buffer, /flags=S/);
});

t.test('CLIENT LIST TYPE and ID pick clients as Redis does; its errors are Redis\'s', async (t) => {
  // Ages and idle times tick between two calls (a replica's ACK every second): compared without them.
  const lines = async (...args: string[]) =>
    ((await x.call('CLIENT', 'LIST', ...args)) as Buffer)
      .toString()
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => l.replace(/ age=\d+ idle=\d+ /, ' '));
  const replicaLines = await lines('TYPE', 'replica');
  t.equal(replicaLines.length, 3, 'the three replicas');
  t.ok(replicaLines.every((l) => / flags=S /.test(l)));
  t.same(await lines('TYPE', 'slave'), replicaLines, 'slave is replica');
  t.same(await lines('TYPE', 'master'), [], 'no connection to the relay is a master link');
  t.ok((await lines('TYPE', 'normal')).every((l) => / flags=N /.test(l)), 'normal clients only');
  const myId = (await x.call('CLIENT', 'ID')) as number;
  const mine = await lines('ID', String(myId), '999999', String(myId));
  t.equal(mine.length, 2, 'each id asked, in order; an id no client has lists nothing');
  t.match(mine[0], new RegExp(`^id=${myId} `));
  // The same commands to a redis-server: the same errors.
  for (const args of [['TYPE', 'bogus'], ['ID', 'abc'], ['ID'], ['TYPE'], ['extra'], ['TYPE', 'master', 'more']]) {
    const [fromRedis, fromRelay] = await Promise.all(
      [m, x].map((c) => c.call('CLIENT', 'LIST', ...args).then((r) => `reply ${String(r)}`, (e: Error) => `error ${e.message}`)),
    );
    t.equal(fromRelay, fromRedis, `CLIENT LIST ${args.join(' ')}`);
  }
});

t.test('a handshake sent in one write (REPLCONFs, then PSYNC) is answered in order: the +OKs before +CONTINUE or +FULLRESYNC', async (t) => {
  const info = await x.info('replication');
  const replid = info['master_replid']!;
  const offset = Number(info['master_repl_offset']);
  const cmd = (...a: string[]): string => `*${a.length}\r\n${a.map((s) => `$${Buffer.byteLength(s)}\r\n${s}\r\n`).join('')}`;
  for (const [psync, first] of [
    [cmd('PSYNC', replid, String(offset + 1)), `+CONTINUE ${replid}\r\n`],
    [cmd('PSYNC', '?', '-1'), '+FULLRESYNC '],
  ] as const) {
    const sock = connect({ port: relay.port, host: '127.0.0.1' });
    const closed = closeOf(sock);
    await once(sock, 'connect');
    let got = '';
    sock.on('data', (d: Buffer) => (got += d.toString('latin1')));
    sock.write(cmd('PING') + cmd('REPLCONF', 'listening-port', '1') + cmd('REPLCONF', 'capa', 'eof', 'capa', 'psync2') + psync);
    await waitFor(() => got.length >= 17 + first.length || undefined, { what: 'the replies to the pipelined handshake' });
    t.equal(got.slice(0, 17 + first.length), `+PONG\r\n+OK\r\n+OK\r\n${first}`, `${first.trim()}: after the replies to the commands before it`);
    sock.destroy();
    await closed;
  }
});

t.test("a Valkey 8 replica's dual-channel handshake gets the classic +FULLRESYNC and the RDB on the same connection", async (t) => {
  // What valkey-server 8.0.1 sends with dual-channel-replication-enabled yes (syncWithPrimary): the relay must not
  // answer +DUALCHANNELSYNC (it has no RDB channel), so the replica falls back to a classic full sync.
  const cmd = (...a: string[]): string => `*${a.length}\r\n${a.map((s) => `$${Buffer.byteLength(s)}\r\n${s}\r\n`).join('')}`;
  const sock = connect({ port: relay.port, host: '127.0.0.1' });
  const closed = closeOf(sock);
  await once(sock, 'connect');
  let got = '';
  sock.on('data', (d: Buffer) => (got += d.toString('latin1')));
  sock.write(cmd('PING'));
  await waitFor(() => got === '+PONG\r\n' || undefined, { what: 'PONG' });
  sock.write(cmd('REPLCONF', 'listening-port', '1') + cmd('REPLCONF', 'capa', 'eof', 'capa', 'psync2', 'capa', 'dual-channel') + cmd('REPLCONF', 'version', '8.0.1'));
  const replies = '+PONG\r\n+OK\r\n+OK\r\n+OK\r\n';
  await waitFor(() => got === replies || undefined, { what: 'three +OK' });
  sock.write(cmd('PSYNC', '?', '-1'));
  // +FULLRESYNC right after the +OKs (not +DUALCHANNELSYNC), then the payload header (newlines may come first).
  const head = /^\+FULLRESYNC ([0-9a-f]{40}) (\d+)\r\n\n*\$(EOF:[0-9a-zA-Z]{40}|\d+)\r\n/;
  const m = await waitFor(() => head.exec(got.slice(replies.length)) ?? undefined, { what: '+FULLRESYNC and the RDB payload header' });
  await waitFor(() => got.startsWith('REDIS', replies.length + m[0].length) || undefined, { what: 'the RDB after its header' });
  const info = await x.info('replication');
  t.equal(m[1], info['master_replid'], '+FULLRESYNC names the relay replid');
  sock.destroy();
  await closed;
});
