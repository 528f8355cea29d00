/**
 * Point-in-time replicas against real processes: a fresh redis-server pointed at the port RELAY PITR returns ends
 * with exactly the master's dataset as it was at the chosen point (DEBUG DIGEST), its master_repl_offset is the
 * chosen offset, and nothing after that point reaches it. Targets: BEFORE FLUSHALL, BEFORE DEL <pattern>, OFFSET
 * and TIME (across snapshot refreshes and a relay restart), a point inside MULTI/EXEC, and points outside the window.
 */
import t, { type Test } from 'tap';
import { startRedis, stopAll, type RedisServer } from '../helpers/redis-server.js';
import { startRelay, type TestRelay } from '../helpers/relay.js';
import { digest, startReplica, stat } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';
import { freePort } from '../helpers/ports.js';
import { benchmarkLoad } from '../helpers/load.js';
import { connect } from 'node:net';
import { encodeCommand } from '../../src/resp/writer.js';
import { subscribe } from '../../src/observability/telemetry.js';

t.teardown(stopAll);

const RELAY_CONFIG = {
  log: { memory: '256kb', disk: '64mb' },
  // A fresh snapshot every second, so targets are served from older snapshots too. Thirty kept: the window (from the
  // oldest) must still hold the first writes when a test on a loaded machine asks for them many seconds later.
  history: { 'keep-snapshots': 30, 'snapshot-interval': '1s', 'pitr-idle-timeout': '60s' },
  replication: { 'snapshot-refresh-min-interval': '0s' },
};

/** A relay of the master on `masterPort` (with `extra` config: a web port), linked, and a client of it; closed with `t`. */
async function linkedRelay(t: Test, masterPort: number, dir?: string, extra: Record<string, unknown> = {}): Promise<{ relay: TestRelay; x: RedisClient }> {
  const relay = await startRelay({ ...RELAY_CONFIG, ...extra, upstream: { host: '127.0.0.1', port: masterPort } }, dir);
  t.teardown(() => relay.stop());
  const x = await relay.client();
  t.teardown(() => x.close());
  await waitFor(async () => (await x.info('replication'))['master_link_status'] === 'up' || undefined, { what: 'relay linked' });
  return { relay, x };
}

/** The master's offset and digest once the relay holds everything the master has. */
async function settled(m: RedisClient, x: RedisClient): Promise<{ offset: number; digest: string }> {
  return waitFor(
    async () => {
      const offset = stat(await m.info('replication'), 'master_repl_offset');
      if (stat(await x.info('replication'), 'master_repl_offset') !== offset) return undefined;
      const d = await digest(m);
      return stat(await m.info('replication'), 'master_repl_offset') === offset ? { offset, digest: d } : undefined;
    },
    { what: 'the relay holding the master stream' },
  );
}

async function writeBatch(m: RedisClient, tag: string, n = 200): Promise<void> {
  const cmds = [];
  for (let i = 0; i < n; i++) {
    cmds.push(['SET', `${tag}:${i}`, `v${i}-${tag}`]);
    cmds.push(['INCR', `counter:${i % 7}`]);
    cmds.push(['RPUSH', `list:${tag}`, String(i)]);
  }
  await m.pipeline(cmds);
}

/** A field of the RELAY HISTORY reply (field/value pairs). */
async function historyField(x: RedisClient, name: string): Promise<unknown[][]> {
  const h = (await x.call('RELAY', 'HISTORY')) as unknown[];
  const i = h.findIndex((v) => String(v) === name);
  return h[i + 1] as unknown[][];
}

interface Pitr {
  port: number;
  offset: number;
  time: string | null;
}

async function pitr(x: RedisClient, ...args: (string | number)[]): Promise<Pitr> {
  const r = (await x.call('RELAY', 'PITR', ...args)) as [number, number, Buffer | null];
  return { port: Number(r[0]), offset: Number(r[1]), time: r[2] === null ? null : r[2].toString() };
}

/** A fresh redis-server replica of the point-in-time port, once it holds the dataset at `offset`. */
async function replicaAt(t: Test, p: Pitr): Promise<{ server: RedisServer; c: RedisClient }> {
  const server = await startReplica(p.port);
  const c = await server.client();
  t.teardown(async () => {
    await c.close();
    await server.stop();
  });
  await waitFor(
    async () => {
      const i = await c.info('replication');
      return (i['master_link_status'] === 'up' && stat(i, 'master_repl_offset') === p.offset) || undefined;
    },
    { what: `the point-in-time replica at offset ${p.offset}`, timeoutMs: 30_000 },
  );
  return { server, c };
}

t.test('RELAY PITR BEFORE FLUSHALL: a fresh replica of the returned port holds the dataset the FLUSHALL wiped', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const { x } = await linkedRelay(t, master.port);
  await writeBatch(m, 'a');
  await m.call('MULTI');
  await m.call('SET', 'in-multi', '1');
  await m.call('INCR', 'counter:0');
  await m.call('EXEC');
  await writeBatch(m, 'b');
  const before = await settled(m, x);
  await m.call('FLUSHALL');
  await writeBatch(m, 'c');
  const after = await settled(m, x);
  t.not(after.digest, before.digest);

  const p = await pitr(x, 'BEFORE', 'FLUSHALL');
  t.equal(p.offset, before.offset, 'the point is the last byte before the FLUSHALL');
  t.ok(p.time !== null && !Number.isNaN(Date.parse(p.time)), `an ISO 8601 time (${p.time})`);
  const r = await replicaAt(t, p);
  t.equal(await digest(r.c), before.digest, 'the replica holds the dataset as it was before FLUSHALL');
  const listener = await RedisClient.connect(p.port);
  await t.rejects(listener.call('SHUTDOWN'), /^ERR not on a point-in-time listener/, 'SHUTDOWN is not for a point-in-time listener');
  t.equal(await listener.call('PING'), 'PONG', 'which still answers');
  // It serves as a master (its INFO says role:master): ROLE says so too, with its online replica as Redis lists one.
  const rPort = Number((await r.c.call('CONFIG', 'GET', 'port') as Buffer[])[1]);
  await waitFor(async () => {
    const role = (await listener.call('ROLE')) as [Buffer, number, [Buffer, Buffer, Buffer][]];
    return (String(role[0]) === 'master' && role[1] === p.offset && role[2].length === 1 && Number(String(role[2][0]![1])) === rPort && Number(String(role[2][0]![2])) === p.offset) || undefined;
  }, { what: `ROLE: master ${p.offset} [[127.0.0.1, ${rPort}, ${p.offset}]]` });
  t.match(await listener.callString('INFO', 'replication'), /role:master/);
  await listener.close();

  // More writes upstream never reach it; it stays connected, held at its offset by newline keepalives.
  await writeBatch(m, 'd');
  const later = await settled(m, x);
  const keepalivesFrom = Date.now();
  await waitFor(async () => (Date.now() - keepalivesFrom > 2500 && (await r.c.info('replication'))['master_link_status'] === 'up') || undefined, {
    what: 'keepalives for 2.5 s',
  });
  const ri = await r.c.info('replication');
  t.equal(stat(ri, 'master_repl_offset'), before.offset, 'its offset stays at the point after keepalives');
  t.ok(later.offset > before.offset);
  t.equal(await digest(r.c), before.digest, 'its dataset stays at the point');

  const listeners = await historyField(x, 'listeners');
  t.same(
    listeners.map((l) => Number(l[0])),
    [p.port],
    'RELAY HISTORY lists the open listener',
  );
  t.equal(await x.callString('RELAY', 'PITR', 'CLOSE', p.port), 'OK');
  await waitFor(async () => (await r.c.info('replication'))['master_link_status'] === 'down' || undefined, { what: 'the replica cut off by CLOSE' });
  t.equal(await digest(r.c), before.digest, 'a replica whose listener closed keeps its dataset');
});

t.test('BEFORE DEL <pattern>, a point inside MULTI/EXEC, OFFSET and TIME across snapshot refreshes and a restart', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const first = await linkedRelay(t, master.port);
  let x = first.x;

  await writeBatch(m, 'a');
  const atA = await settled(m, x);
  const quiet = Date.now();
  // The stream is quiet for a while after A: a time inside that stretch is the state after A.
  await waitFor(() => Date.now() - quiet > 1500 || undefined, { what: 'a quiet stretch of 1.5 s' });
  const timeA = Date.now() - 500;
  await writeBatch(m, 'b');
  await m.call('DEL', 'b:1', 'b:2');
  const beforeDel = await settled(m, x);
  await m.call('DEL', 'a:1');
  await m.call('DEL', 'unrelated');
  await m.call('MULTI');
  await m.call('SET', 'tx', '1');
  await m.call('INCR', 'counter:1');
  await m.call('EXEC');
  const afterTx = await settled(m, x);
  t.ok(afterTx.offset > beforeDel.offset);

  // Snapshots are taken every second: wait for one after A, so that A's point starts from an older one.
  await waitFor(
    async () => {
      const snaps = await historyField(x, 'snapshots');
      return snaps.some((s) => Number(s[0]) > afterTx.offset) || undefined;
    },
    { what: 'a snapshot refresh after the writes' },
  );

  const del = await pitr(x, 'BEFORE', 'del', 'a:*');
  t.equal(del.offset, beforeDel.offset, 'just before the last DEL on a matching key (not the later DEL on another key)');
  const delReplica = await replicaAt(t, del);
  t.equal(await delReplica.c.callString('GET', 'a:1'), 'v1-a', 'a:1 still exists just before its DEL');
  t.equal(await delReplica.c.call('GET', 'b:1'), null, 'the earlier DEL of b:1 is applied');

  // OFFSET inside the MULTI/EXEC block: moved back to just before MULTI.
  const tx = await pitr(x, 'OFFSET', afterTx.offset - 3);
  t.ok(tx.offset < afterTx.offset);
  const txReplica = await replicaAt(t, tx);
  t.equal(await txReplica.c.call('GET', 'tx'), null, 'no part of the transaction is applied');

  const byTime = await pitr(x, 'TIME', timeA);
  t.equal(byTime.offset, atA.offset, 'a time in the quiet stretch after A is the point after A');
  const timeReplica = await replicaAt(t, byTime);
  t.equal(await digest(timeReplica.c), atA.digest);

  // Outside the window: a clear error naming it.
  await t.rejects(x.call('RELAY', 'PITR', 'OFFSET', afterTx.offset * 100), /outside the window: the window is offsets \d+\.\.\d+/);
  await t.rejects(x.call('RELAY', 'PITR', 'BEFORE', 'FLUSHALL'), /no FLUSHALL in the window/);
  await t.rejects(x.call('RELAY', 'PITR', 'TIME', Date.now() + 3_600_000), /outside the window/);

  // After a restart the snapshots and times are still there.
  await first.relay.stop();
  const second = await linkedRelay(t, master.port, first.relay.dir);
  x = second.x;
  const again = await pitr(x, 'OFFSET', beforeDel.offset);
  t.equal(again.offset, beforeDel.offset);
  const againReplica = await replicaAt(t, again);
  t.equal(await digest(againReplica.c), beforeDel.digest, 'OFFSET after a restart');
  const timeAgain = await pitr(x, 'TIME', timeA);
  t.equal(timeAgain.offset, atA.offset, 'TIME after a restart');
});

t.test('RELAY PITR is refused to non-admin users and inside MULTI, and its arguments are checked', async (t) => {
  const master = await startRedis();
  const relay = await startRelay({
    ...RELAY_CONFIG,
    upstream: { host: '127.0.0.1', port: master.port },
    listen: { password: 'adminpw', users: [{ name: 'repl', password: 'pw', role: 'replication' }] },
  });
  t.teardown(() => relay.stop());
  const x = await relay.client();
  t.teardown(() => x.close());
  await t.rejects(x.call('RELAY', 'HISTORY'), /NOAUTH/);
  await x.call('AUTH', 'repl', 'pw');
  await t.rejects(x.call('RELAY', 'PITR', 'OFFSET', 1), /NOPERM/);
  await x.call('AUTH', 'adminpw');
  await t.rejects(x.call('RELAY', 'PITR', 'OFFSET', 'x'), /not an integer/);
  await t.rejects(x.call('RELAY', 'PITR', 'SOMEDAY'), /unknown RELAY PITR target/);
  await t.rejects(x.call('RELAY', 'PITR', 'CLOSE', 1), /no point-in-time listener on port 1/);
  await x.call('MULTI');
  await t.rejects(x.call('RELAY', 'HISTORY'), /not allowed inside a transaction/);
  await x.call('DISCARD');
  // A pipelined command after RELAY PITR is answered after it.
  const replies = await x.pipeline([['RELAY', 'PITR', 'BEFORE', 'NOSUCHCOMMAND'], ['PING']]);
  t.match((replies[0] as { message: string }).message, /no NOSUCHCOMMAND in the window|no point in time can be served/);
  t.equal(replies[1], 'PONG');
});

t.test('POST /pitr with the real service: a replica of the port it returns holds the dataset before FLUSHALL', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const { relay, x } = await linkedRelay(t, master.port, undefined, { web: { port: await freePort(), token: 'tok' } });
  await writeBatch(m, 'w');
  const before = await settled(m, x);
  await m.call('FLUSHALL');
  await settled(m, x);
  const base = `http://127.0.0.1:${relay.relay.webPort}`;
  const headers = { authorization: 'Bearer tok', 'content-type': 'application/json' };
  const res = await fetch(`${base}/pitr`, { method: 'POST', headers, body: JSON.stringify({ before: 'flushall' }) });
  t.equal(res.status, 200);
  const answer = (await res.json()) as { port: number; offset: number; time: string };
  t.equal(answer.offset, before.offset);
  const r = await replicaAt(t, { port: answer.port, offset: answer.offset, time: answer.time });
  t.equal(await digest(r.c), before.digest);
  const hist = (await (await fetch(`${base}/history`, { headers })).json()) as { listeners: { port: number }[]; lastOffset: number };
  t.same(hist.listeners.map((l) => l.port), [answer.port]);
  t.ok(hist.lastOffset > answer.offset);
  const outside = await fetch(`${base}/pitr`, { method: 'POST', headers, body: JSON.stringify({ offset: before.offset * 1000 }) });
  t.equal(outside.status, 409);
  t.match(((await outside.json()) as { error: string }).error, /outside the window/);
  t.equal((await fetch(`${base}/pitr/${answer.port}`, { method: 'DELETE', headers })).status, 200);
});

t.test('without a disk log, a point-in-time replica that stops reading is dropped at replica-max-lag, not left pinning memory', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const relay = await startRelay({
    upstream: { host: '127.0.0.1', port: master.port },
    log: { memory: '64mb', disk: 0 },
    history: { 'snapshot-interval': 0 },
    replication: { 'replica-max-lag': '40mb' },
  });
  t.teardown(() => relay.stop());
  const drops: string[] = [];
  const off = subscribe('replica.dropped', (msg) => msg.relay === relay.relay.runId && drops.push(msg.detail));
  t.teardown(off);
  const x = await relay.client();
  t.teardown(() => x.close());
  await waitFor(async () => (await x.info('replication'))['master_link_status'] === 'up' || undefined, { what: 'relay linked' });
  // 32 MB between the snapshot and the target: more than the sockets between relay and replica hold (with 12 MB the
  // test timed out in 2 of 4 runs, as if the sockets took it all and the replica, at its target, pinned nothing),
  // less than replica-max-lag: what it still has to be sent is within the limit, what it pins in memory soon is not.
  await benchmarkLoad(master.port, 32_000, 1024, 1000);
  const at = await settled(m, x);
  const p = await pitr(x, 'OFFSET', at.offset);
  const socket = connect(p.port, '127.0.0.1');
  socket.on('error', () => {});
  t.teardown(() => socket.destroy());
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.write(encodeCommand(['PSYNC', '?', '-1']));
  socket.pause(); // never reads: the relay's socket to it fills up short of the target
  // The stream goes on upstream; the session holds its place in the log, which keeps everything after it.
  await waitFor(
    async () => {
      if (drops.length > 0) return true;
      await benchmarkLoad(master.port, 4000, 1024, 1000);
      return undefined;
    },
    { what: 'the non-reading point-in-time replica dropped', timeoutMs: 90_000 },
  );
  t.match(drops[0], /over replica-max-lag/);
});

t.test('a TIME past the range of a date (RESP and POST /pitr) is refused naming the window, not an internal error', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const { relay, x } = await linkedRelay(t, master.port, undefined, { web: { port: await freePort(), token: 'tok' } });
  await writeBatch(m, 'w', 20);
  await settled(m, x);
  // 8.64e15 ms is the last instant a JavaScript Date can hold; both are integers RELAY PITR and POST /pitr accept.
  for (const ms of ['8640000000000001', '9999999999999999']) {
    await t.rejects(x.call('RELAY', 'PITR', 'TIME', ms), /is outside the window: the window is offsets \d+\.\.\d+/, `RELAY PITR TIME ${ms}`);
  }
  const res = await fetch(`http://127.0.0.1:${relay.relay.webPort}/pitr`, {
    method: 'POST',
    headers: { authorization: 'Bearer tok', 'content-type': 'application/json' },
    body: JSON.stringify({ time: 9_000_000_000_000_000 }),
  });
  t.equal(res.status, 409, 'POST /pitr: 409, as for any point outside the window');
  t.match(((await res.json()) as { error: string }).error, /outside the window/);
  t.same(await historyField(x, 'listeners'), [], 'nothing opened');
  t.equal(await x.call('PING'), 'PONG');
});

t.test('RELAY PITR BEFORE with a huge command name or pattern that matches nothing: a short error naming the window', async (t) => {
  const master = await startRedis();
  const m = await master.client();
  t.teardown(() => m.close());
  const { x } = await linkedRelay(t, master.port);
  await writeBatch(m, 'w', 20);
  await settled(m, x);
  // Up to listen.max-bulk-len (512mb) per argument; the refusal must not echo it back whole.
  const huge = '*a'.repeat(512 * 1024) + '*b';
  for (const args of [['SET', huge], ['X'.repeat(1024 * 1024)]]) {
    const err = await x.call('RELAY', 'PITR', 'BEFORE', ...args).then(
      () => null,
      (e: Error) => e.message,
    );
    t.match(err, /in the window: the window is offsets \d+\.\.\d+/, 'refused, naming the window');
    t.ok(err !== null && err.length < 1024, `the error is short (${err?.length} characters)`);
  }
  t.equal(await x.call('PING'), 'PONG');
});
