import t from 'tap';
import { connect } from 'node:net';
import { once } from 'node:events';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { startReplica } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { call, convergedPorts, infoOf, num, writeKeys } from '../helpers/failover.js';
import { encodeCommand } from '../../src/resp/writer.js';

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

  x.relay.link.reconnect('test: fall behind');
  await writeKeys(m.port, 'ahead');
  const mOffset = num(await infoOf(m.port), 'master_repl_offset');
  await waitFor(async () => num(await infoOf(d.port), 'master_repl_offset') === mOffset, { what: 'D has the new writes' });
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

/** Sends PSYNC on a raw connection and resolves with the first reply line (keepalive newlines skipped) and the time it took. */
async function psync(port: number, replid: string, offset: number): Promise<{ line: string; ms: number }> {
  const s = connect({ port, host: '127.0.0.1' });
  await once(s, 'connect');
  const started = Date.now();
  s.write(Buffer.concat([encodeCommand(['REPLCONF', 'capa', 'eof', 'capa', 'psync2']), encodeCommand(['PSYNC', replid, String(offset)])]));
  let text = '';
  s.on('data', (d: Buffer) => (text += d.toString('latin1')));
  const line = await waitFor(() => /^\+OK\r\n\n*(\+[A-Z]+[^\r]*)\r\n/.exec(text)?.[1], { what: 'PSYNC reply', timeoutMs: 10_000 });
  s.destroy();
  return { line, ms: Date.now() - started };
}

t.test('a replica too far ahead gets a full sync after ahead-wait (at once with 0)', async (t) => {
  const m = await startRedis();
  await writeKeys(m.port, 'data');
  const y = await startRelay({ upstream: { host: '127.0.0.1', port: m.port }, replication: { 'ahead-wait': '1s' } });
  const z = await startRelay({ upstream: { host: '127.0.0.1', port: m.port }, replication: { 'ahead-wait': 0 } });
  t.teardown(() => Promise.all([y.stop(), z.stop()]));
  for (const r of [y, z]) {
    await waitFor(async () => (await infoOf(r.port))['master_link_status'] === 'up', { what: 'relay linked' });
  }
  // Read M's ids once its replicas are attached: a master takes a new replid when its first replica arrives.
  const mi = await infoOf(m.port);

  const yBefore = await infoOf(y.port, 'stats');
  const ahead = num(mi, 'master_repl_offset') + 10_000;
  const pending = psync(y.port, mi['master_replid']!, ahead);
  await waitFor(async () => /state=wait_bgsave/.test((await infoOf(y.port))['slave0'] ?? ''), { what: 'y holds the PSYNC' });
  t.equal(num(await infoOf(y.port, 'stats'), 'sync_partial_err'), num(yBefore, 'sync_partial_err'), 'undecided while held');
  const { line, ms } = await pending;
  t.match(line, /^\+FULLRESYNC [0-9a-f]{40} \d+$/, 'full sync once the wait is over');
  t.ok(ms >= 900, `held about ahead-wait (${ms} ms)`);
  const yAfter = await infoOf(y.port, 'stats');
  t.equal(num(yAfter, 'sync_partial_err') - num(yBefore, 'sync_partial_err'), 1);
  t.equal(num(yAfter, 'sync_full') - num(yBefore, 'sync_full'), 1);

  const other = await psync(y.port, 'f'.repeat(40), ahead);
  t.match(other.line, /^\+FULLRESYNC/, 'another replid is not waited for');
  t.ok(other.ms < 900, 'at once');
  const zero = await psync(z.port, mi['master_replid']!, ahead);
  t.match(zero.line, /^\+FULLRESYNC/, 'ahead-wait 0: full sync at once, as Redis');
  t.ok(zero.ms < 900, 'at once');
});
