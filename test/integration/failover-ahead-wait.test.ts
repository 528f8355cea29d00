import t from 'tap';
import { connect } from 'node:net';
import { once } from 'node:events';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { call, convergedPorts, infoOf, num, writeKeys } from '../helpers/failover.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

t.teardown(stopAll);

t.test('a replica ahead of the relay is held until the relay catches up, then continued partially', async (t) => {
  const m = await startRedis();
  const d = await startReplica(m.port);
  // A long reconnect backoff: once its link is cut, the relay stays behind for 2 to 4 s.
  const x = await startRelay({ upstream: { host: '127.0.0.1', port: m.port, 'backoff-min': '4s', 'backoff-max': '4s' } });
  t.teardown(() => x.stop());
  await writeKeys(m.port, 'first');
  await convergedPorts(m.port, [d.port], 'D follows M');
  await waitFor(async () => num(await infoOf(x.port), 'master_repl_offset') === num(await infoOf(m.port), 'master_repl_offset'), {
    what: 'the relay follows M',
  });

  // Cut the relay's link from the master's side, as an operator would: CLIENT KILL on M of its replica connection
  // that is not D's (D's is the one from D's end of its master link).
  const dLink = String(await call(d.port, 'CLIENT', 'LIST', 'TYPE', 'master'));
  const dAddr = /\bladdr=(\S+)/.exec(dLink)?.[1];
  t.ok(dAddr, `D's end of its master link: ${dAddr}`);
  const others = String(await call(m.port, 'CLIENT', 'LIST', 'TYPE', 'replica'))
    .split('\n')
    .filter((line) => line !== '' && !line.includes(` addr=${dAddr} `));
  t.equal(others.length, 1, "M has one replica connection besides D's: the relay's");
  t.equal(await call(m.port, 'CLIENT', 'KILL', 'ID', /^id=(\d+)/.exec(others[0]!)![1]!), 1, "M cuts the relay's link");
  await waitFor(async () => (await infoOf(x.port))['master_link_status'] === 'down', { what: 'the relay sees its link cut' });
  await writeKeys(m.port, 'ahead');
  const mOffset = num(await infoOf(m.port), 'master_repl_offset');
  await waitFor(async () => num(await infoOf(d.port), 'master_repl_offset') >= mOffset || undefined, { what: 'D has the new writes' });
  t.ok(num(await infoOf(x.port), 'master_repl_offset') < mOffset, 'the relay is behind D');
  const before = await infoOf(x.port, 'stats');

  // D moves from M to the relay: it asks for an offset the relay does not hold yet.
  t.equal(await call(d.port, 'REPLICAOF', '127.0.0.1', x.port), 'OK');
  await waitFor(
    async () => {
      const xi = await infoOf(x.port);
      return xi['master_link_status'] === 'down' && /state=wait_bgsave/.test(xi['slave0'] ?? '');
    },
    { what: 'the relay holds D while its upstream link is down' },
  );
  const held = await infoOf(x.port, 'stats');
  t.equal(num(held, 'sync_partial_err'), num(before, 'sync_partial_err'), 'not counted as a refusal while undecided');
  t.equal(num(held, 'sync_full'), num(before, 'sync_full'), 'no full sync started');

  await waitFor(async () => (await infoOf(d.port))['master_link_status'] === 'up', { what: 'D continued by the relay', timeoutMs: 10_000 });
  await writeKeys(m.port, 'after');
  await convergedPorts(m.port, [d.port], 'D converges with M through the relay');
  const after = await infoOf(x.port, 'stats');
  t.equal(num(after, 'sync_partial_ok') - num(before, 'sync_partial_ok'), 1, 'one partial resync');
  t.equal(num(after, 'sync_partial_err'), num(before, 'sync_partial_err'), 'no refusal');
  t.equal(num(after, 'sync_full'), num(before, 'sync_full'), 'no full sync');
  t.equal(num(await infoOf(d.port), 'master_port'), x.port, 'D follows the relay');
});

/**
 * Sends PSYNC on a raw connection that announces `tag` as its listening port (so INFO names it); `reply` resolves
 * with the first reply line (keepalive newlines skipped), `answered()` says whether it has arrived.
 */
async function psync(port: number, replid: string, offset: number | string, tag: number): Promise<{ reply: Promise<string>; answered(): boolean }> {
  const s = connect({ port, host: '127.0.0.1' });
  t.teardown(() => s.destroy());
  await once(s, 'connect');
  s.write(
    Buffer.concat([
      encodeCommand(['REPLCONF', 'listening-port', String(tag)]),
      encodeCommand(['REPLCONF', 'capa', 'eof', 'capa', 'psync2']),
      encodeCommand(['PSYNC', replid, String(offset)]),
    ]),
  );
  let text = '';
  s.on('data', (d: Buffer) => (text += d.toString('latin1')));
  const line = () => /^\+OK\r\n\+OK\r\n\n*(\+[A-Z]+[^\r]*)\r\n/.exec(text)?.[1];
  const reply = waitFor(line, { what: 'PSYNC reply', timeoutMs: 10_000 });
  return { reply, answered: () => line() !== undefined };
}

/** The INFO slaveN line of the raw replica announced as `tag`. */
async function replicaLine(port: number, tag: number): Promise<string> {
  const info = await infoOf(port);
  return Object.entries(info).find(([k, v]) => /^slave\d+$/.test(k) && v.includes(`port=${tag},`))?.[1] ?? '';
}

t.test('a replica too far ahead gets a full sync after ahead-wait (at once with 0, or for another replid)', async (t) => {
  const m = await startRedis();
  await writeKeys(m.port, 'data');
  const y = await startRelay({ upstream: { host: '127.0.0.1', port: m.port }, replication: { 'ahead-wait': '2s' } });
  const z = await startRelay({ upstream: { host: '127.0.0.1', port: m.port }, replication: { 'ahead-wait': 0 } });
  t.teardown(() => Promise.all([y.stop(), z.stop()]));
  for (const r of [y, z]) {
    await waitFor(async () => (await infoOf(r.port))['master_link_status'] === 'up', { what: 'relay linked' });
  }
  // Read M's ids once its replicas are attached: a master takes a new replid when its first replica arrives.
  const mi = await infoOf(m.port);

  const yBefore = await infoOf(y.port, 'stats');
  const ahead = num(mi, 'master_repl_offset') + 10_000;
  const held = await psync(y.port, mi['master_replid']!, ahead, 1001);
  await waitFor(async () => /state=wait_bgsave/.test(await replicaLine(y.port, 1001)), { what: 'y holds the PSYNC' });
  t.equal(num(await infoOf(y.port, 'stats'), 'sync_partial_err'), num(yBefore, 'sync_partial_err'), 'undecided while held');

  // Orderings instead of stopwatches: while y still holds that PSYNC (until its ahead-wait runs out), a PSYNC for
  // another replid and one to a relay with ahead-wait 0 are both answered.
  const other = await psync(y.port, 'f'.repeat(40), ahead, 1002);
  t.match(await other.reply, /^\+FULLRESYNC/, 'another replid is not waited for');
  const zero = await psync(z.port, mi['master_replid']!, ahead, 1003);
  t.match(await zero.reply, /^\+FULLRESYNC/, 'ahead-wait 0: full sync at once, as Redis');
  // An offset past 2^53, which no stream reaches (the relay refuses one upstream), is not waited for either: as a JS
  // number it was inexact and counted as ahead.
  const absurd = await psync(y.port, mi['master_replid']!, '9223372036854775807', 1004);
  t.match(await absurd.reply, /^\+FULLRESYNC/, 'an offset past 2^53: full sync at once');
  t.notOk(held.answered(), 'all answered while the first PSYNC is still held');
  t.match(await replicaLine(y.port, 1001), /state=wait_bgsave/, 'which y still holds, undecided');

  t.match(await held.reply, /^\+FULLRESYNC [0-9a-f]{40} \d+$/, 'full sync once the wait is over');
  const yAfter = await infoOf(y.port, 'stats');
  t.equal(num(yAfter, 'sync_partial_err') - num(yBefore, 'sync_partial_err'), 3, 'three refusals: the other replid, the offset past 2^53, then the held one');
  t.equal(num(yAfter, 'sync_full') - num(yBefore, 'sync_full'), 3);
});

t.test('replicas asking a relay that is receiving a full sync wait for the new history instead of getting the old one', async (t) => {
  // M's backlog is small, so the relay, cut off while M writes, must full-sync when it reconnects.
  // No diskless delay: +FULLRESYNC comes as soon as the relay asks (a 5 s wait for more replicas before it, by default).
  const m = await startRedis({ args: ['--repl-backlog-size', '16kb', '--repl-ping-replica-period', '3600', '--repl-diskless-sync-delay', '0'] });
  await writeKeys(m.port, 'first');
  const proxy = await TcpProxy.start(m.port);
  t.teardown(() => proxy.close());
  const wait = { 'ahead-wait': '1s' };
  const y = await startRelay({ upstream: { host: '127.0.0.1', port: proxy.port, 'backoff-min': '50ms', 'backoff-max': '200ms' }, replication: wait });
  // z tells the time without a stopwatch: its ahead-wait runs out like y's would. It follows a master of its own: a
  // replica of M slow to read would keep M's replication buffer, and so M's backlog, past its 16 KB (Redis 7), and M
  // would then continue y instead of full-syncing it.
  const other = await startRedis();
  const z = await startRelay({ upstream: { host: '127.0.0.1', port: other.port }, replication: wait });
  t.teardown(() => Promise.all([y.stop(), z.stop()]));
  for (const r of [y, z]) {
    await waitFor(async () => (await infoOf(r.port))['master_link_status'] === 'up', { what: 'relay linked' });
  }

  // y loses its link; its reconnect waits on M's +PONG (held) while M writes past its backlog.
  proxy.hold();
  proxy.cut();
  await waitFor(async () => (await infoOf(y.port))['master_link_status'] === 'down', { what: 'y sees its link cut' });
  await writeKeys(m.port, 'gap', 2000);
  const mi = await infoOf(m.port);
  const mOffset = num(mi, 'master_repl_offset');
  // M answers y's PSYNC with +FULLRESYNC; the RDB after it stays in the proxy: y is receiving a full sync.
  proxy.release('+FULLRESYNC');
  await waitFor(async () => (await infoOf(y.port))['master_sync_in_progress'] === '1', { what: 'y receives a full sync' });

  // A replica that followed M directly asks y for M's offset, which y's old history lacks.
  const held = await psync(y.port, mi['master_replid']!, mOffset + 1, 1001);
  await waitFor(async () => /state=wait_bgsave/.test(await replicaLine(y.port, 1001)), { what: 'y holds the PSYNC' });
  // A new replica asks too: it waits for the new history's snapshot rather than take the old one.
  const fresh = await psync(y.port, '?', -1, 1004);
  // Two ahead-waits run out on z, one after the other: y's for the held PSYNC has run out too by then.
  const oi = await infoOf(other.port);
  for (const tag of [1002, 1003]) {
    const control = await psync(z.port, oi['master_replid']!, num(oi, 'master_repl_offset') + 100_000, tag);
    t.match(await control.reply, /^\+FULLRESYNC/, `z full-syncs PSYNC ${tag} once its ahead-wait is over`);
  }
  t.notOk(held.answered(), 'y still holds the PSYNC while its full sync arrives');
  t.notOk(fresh.answered(), "the new replica is not sent the old history's snapshot");
  t.equal(num(await infoOf(y.port, 'stats'), 'sync_full'), 1, "one full sync counted, the new replica's: the held PSYNC is undecided");

  proxy.release();
  t.equal(await held.reply, `+CONTINUE ${mi['master_replid']}`, "continued at the new history's first byte: M's snapshot holds it all");
  t.equal(num(await infoOf(y.port), 'master_repl_offset'), mOffset, "y's new history starts at M's offset");
  t.equal(await fresh.reply, `+FULLRESYNC ${mi['master_replid']} ${mOffset}`, 'the new replica gets the new history, as it arrives');
});
