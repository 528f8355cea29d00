/**
 * An RDB alone (`redis-cli --rdb`: a backup, told no offset) is owed the data as of its request, as a Redis replica
 * forks for it. The relay's snapshots may be `history.snapshot-interval` old, so it fetches a fresh one when its
 * newest is older (one fork upstream), asks an upstream relay for the same (src/rdb-from.ts), and refuses where an
 * RDB cannot be as of the point served (a point-in-time listener).
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { execFileSync } from 'node:child_process';
import { basename, dirname, join } from 'node:path';
import { startRedis, stopAll, type RedisServer } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { digest, stat } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { tempDir } from '../helpers/temp-dir.js';
import { rawConnect } from '../helpers/raw.js';
import { startLoggedRelay } from '../helpers/logged-relay.js';
import { RedisClient } from '../helpers/redis-client.js';

t.teardown(stopAll);

/**
 * `redis-cli --rdb` against `port`: its exit code, what it printed, and the keys in the file it wrote. Killed after
 * 30 s (it waits as long as the relay sends keepalive newlines), which the output then says.
 */
async function dumpRdb(port: number): Promise<{ code: number; output: string; keys: number; file: string }> {
  const file = join(tempDir('rdb-only-'), 'dump.rdb');
  const cli = spawn('redis-cli', ['-p', String(port), '--rdb', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  cli.stdout.on('data', (d: Buffer) => (output += d.toString()));
  cli.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const timer = setTimeout(() => {
    output += ' [no RDB within 30 s: killed]';
    cli.kill('SIGKILL');
  }, 30_000);
  const [code] = (await once(cli, 'exit')) as [number | null];
  clearTimeout(timer);
  if (code === null) return { code: -1, output, keys: -1, file };
  if (code !== 0) return { code, output, keys: -1, file };
  const check = execFileSync('redis-check-rdb', [file], { encoding: 'utf8' });
  const m = /(\d+) keys read/.exec(check);
  return { code, output, keys: m ? Number(m[1]) : -1, file };
}

/** DEBUG DIGEST of a fresh redis-server that loaded the RDB `file` (the data oracle). */
async function loadedDigest(file: string): Promise<string> {
  const server = await startRedis({ dir: dirname(file), args: ['--dbfilename', basename(file)] });
  const c = await server.client();
  try {
    return await digest(c);
  } finally {
    await c.close();
    await server.stop();
  }
}

async function writeKeys(m: RedisClient, prefix: string, n: number): Promise<void> {
  const cmds: (string | number)[][] = [];
  for (let i = 0; i < n; i++) cmds.push(['SET', `${prefix}:${i}`, i]);
  await m.pipeline(cmds);
}

/** Waits until `x` (a relay) holds a usable snapshot and the master's whole stream. */
async function caughtUp(x: RedisClient, m: RedisClient, what: string): Promise<void> {
  await waitFor(
    async () => {
      const i = await x.info('replication');
      const target = stat(await m.info('replication'), 'master_repl_offset');
      return (i['relay_snapshot_usable'] === '1' && stat(i, 'master_repl_offset') === target) || undefined;
    },
    { what, timeoutMs: 20_000 },
  );
}

const resp = (...args: string[]): string => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

/** An RDB-only PSYNC ? -1 (with `capa` values): the offset its +FULLRESYNC names, once the relay closed it after the RDB. */
async function rdbOnlyPsync(port: number, ...capa: string[]): Promise<number> {
  const c = await rawConnect(port, '127.0.0.1', {
    send: resp('REPLCONF', 'rdb-only', '1') + capa.map((v) => resp('REPLCONF', 'capa', v)).join('') + resp('PSYNC', '?', '-1'),
  });
  const got = await c.closed;
  const m = /\+FULLRESYNC [0-9a-f]{40} (\d+)\r\n/.exec(got);
  if (!m) throw new Error(`no +FULLRESYNC in ${JSON.stringify(got.slice(0, 200))}`);
  return Number(m[1]);
}

const forks = async (m: RedisClient): Promise<number> => stat(await m.info('stats'), 'total_forks');

// No PINGs in the stream: an idle master's offset stays where the last write left it.
const master = await startRedis({ args: ['--repl-ping-replica-period', '3600'] });
const m = await master.client();
t.teardown(() => m.close());
await writeKeys(m, 'before', 1000);

/**
 * A relay of the master that holds a snapshot, then `n` more keys written after it: `snapshotAt` is its snapshot's
 * offset, `end` the master's offset it then holds.
 */
async function relayPastSnapshot(
  t: Test,
  prefix: string,
  n: number,
  of: { port: number; client: RedisClient } = { port: master.port, client: m },
  config: Record<string, unknown> = {},
): Promise<{ port: number; x: RedisClient; snapshotAt: number; end: number }> {
  const relay = await startRelay({ ...config, upstream: { host: '127.0.0.1', port: of.port, ...(config['upstream'] as object | undefined) } });
  t.teardown(() => relay.stop());
  const x = await relay.client();
  t.teardown(() => x.close());
  await caughtUp(x, of.client, 'the relay holds a snapshot and the stream');
  const snapshotAt = stat(await x.info('replication'), 'relay_snapshot_offset');
  await writeKeys(of.client, prefix, n);
  await caughtUp(x, of.client, 'the relay holds the writes after its snapshot');
  return { port: relay.port, x, snapshotAt, end: stat(await x.info('replication'), 'master_repl_offset') };
}

t.test('redis-cli --rdb gets the keys written after the relay took its snapshot, at the cost of one fork', async (t) => {
  const { port, x, snapshotAt, end: asked } = await relayPastSnapshot(t, 'after', 500);
  t.ok(asked > snapshotAt, 'the relay holds stream past its snapshot');
  const forksBefore = await forks(m);

  const first = await dumpRdb(port);
  t.equal(first.code, 0, `redis-cli --rdb exits 0 (${first.output.trim()})`);
  t.equal(first.keys, 1500, 'the RDB holds every key written before the request');
  t.equal(await loadedDigest(first.file), await digest(m), 'loaded, it has the master\'s DEBUG DIGEST');
  t.equal(await forks(m), forksBefore + 1, 'the master forked once for it');
  t.ok(stat(await x.info('replication'), 'relay_snapshot_offset') >= asked, 'the relay now holds a snapshot as of the request');

  const second = await dumpRdb(port);
  t.equal(second.keys, 1500, 'a second dump with nothing written since holds the same keys');
  t.equal(await forks(m), forksBefore + 1, 'and is served from that snapshot: no second fork');
});

/** Two relays in a chain below the master at `masterPort` (`top`: more of the top relay's upstream config), stopped when `t` ends. */
async function relayChain(t: Test, masterPort: number, top: Record<string, unknown> = {}): Promise<{ bottomPort: number; xt: RedisClient; xb: RedisClient }> {
  const upper = await startRelay({ upstream: { host: '127.0.0.1', port: masterPort, ...top } });
  t.teardown(() => upper.stop());
  const lower = await startRelay({ upstream: { host: '127.0.0.1', port: upper.port } });
  t.teardown(() => lower.stop());
  const xt = await upper.client();
  const xb = await lower.client();
  t.teardown(() => Promise.all([xt.close(), xb.close()]));
  return { bottomPort: lower.port, xt, xb };
}

/** A master of its own, for a test that stops it: `n` keys written. */
async function ownMaster(prefix: string, n: number): Promise<{ server: RedisServer; client: RedisClient }> {
  const server = await startRedis({ args: ['--repl-ping-replica-period', '3600'] });
  const client = await server.client();
  await writeKeys(client, prefix, n);
  return { server, client };
}

/** Stops the master under relay client `x` and waits until that relay sees its link down. */
async function masterGone(own: { server: RedisServer; client: RedisClient }, x: RedisClient): Promise<void> {
  await own.client.close();
  await own.server.stop();
  await waitFor(async () => (await x.info('replication'))['master_link_status'] === 'down', { what: 'the relay sees its upstream gone' });
}

t.test('a relay below a relay passes the need up: redis-cli --rdb at the bottom gets every key', async (t) => {
  const { bottomPort, xt, xb } = await relayChain(t, master.port);
  await caughtUp(xt, m, 'the top relay holds a snapshot and the stream');
  await caughtUp(xb, m, 'the bottom relay holds a snapshot and the stream');

  await writeKeys(m, 'chain', 300);
  await caughtUp(xb, m, 'the bottom relay holds the writes after its snapshot');
  const keys = Number(await m.call('DBSIZE'));
  const forksBefore = await forks(m);

  const dump = await dumpRdb(bottomPort);
  t.equal(dump.code, 0, `redis-cli --rdb exits 0 (${dump.output.trim()})`);
  t.equal(dump.keys, keys, 'the RDB holds every key the master holds');
  t.equal(await loadedDigest(dump.file), await digest(m), 'loaded, it has the master\'s DEBUG DIGEST');
  t.equal(await forks(m), forksBefore + 1, 'one fork on the master, for the top relay; the bottom one fetched from it');
});

t.test("an RDB-only PSYNC is told its snapshot's offset: the newest held, at once; an offset asked past the relay's end is capped at it", async (t) => {
  const { port, snapshotAt, end } = await relayPastSnapshot(t, 'psync', 200);
  const forksBefore = await forks(m);

  t.equal(await rdbOnlyPsync(port), snapshotAt, 'without the capa: the snapshot held, its offset named');
  t.equal(await forks(m), forksBefore, 'no fork');

  const far = await rdbOnlyPsync(port, 'psync-relay-rdb-from:999999999999');
  t.ok(far >= end, `an offset past the relay's end gets a snapshot as of that end (${far} >= ${end})`);
  t.equal(await forks(m), forksBefore + 1, 'one fork for it');
  t.equal(await rdbOnlyPsync(port, 'psync-relay-rdb-from:999999999999'), far, 'asked again, it is served that snapshot');
  t.equal(await forks(m), forksBefore + 1, 'with no second fork');
});

t.test("history.snapshot-interval's fetch says so in its log line, not that a full sync needs one", async (t) => {
  const r = await startLoggedRelay(t, { upstream: { host: '127.0.0.1', port: master.port }, history: { 'snapshot-interval': '1s' } });
  const line = await waitFor(() => r.lines.find((l) => /fetching a fresh/.test(String(l['msg']))), { what: 'a snapshot fetch' });
  t.match(line, { msg: 'the newest snapshot is history.snapshot-interval old: fetching a fresh one from upstream', intervalMs: 1000 });
  t.notOk(r.lines.some((l) => /full sync/.test(String(l['msg'])) && /fetching/.test(String(l['msg']))), 'no replica waits: no line says one does');
});

t.test('REPLCONF rdb-only takes 0 or 1, with the errors a redis-server gives (an out-of-range value was taken as 0: a full replica sync)', async (t) => {
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port } });
  t.teardown(() => relay.stop());
  const x = await relay.client();
  t.teardown(() => x.close());
  const answer = (c: RedisClient, v: string) => c.call('REPLCONF', 'rdb-only', v).then(String, (err: Error) => err.message);
  for (const v of ['2', '-1', 'abc', '1', '0', ' 1']) t.equal(await answer(x, v), await answer(m, v), `REPLCONF rdb-only ${JSON.stringify(v)}`);
});

t.test('redis-cli --rdb against a point-in-time listener is refused with the reason', async (t) => {
  const { x, end } = await relayPastSnapshot(t, 'pitr', 100);
  const [port] = (await x.call('RELAY', 'PITR', 'OFFSET', end)) as [number];
  t.teardown(() => x.call('RELAY', 'PITR', 'CLOSE', port).catch(() => {}));

  const dump = await dumpRdb(Number(port));
  t.not(dump.code, 0, 'redis-cli --rdb fails');
  t.match(dump.output, /point-in-time listener serves replicas only/, 'and prints why');
});

t.test('redis-cli --rdb while the upstream is out of reach: an error naming why after upstream.connect-timeout, not an endless wait', async (t) => {
  const own = await ownMaster('down', 100);
  const { port, x } = await relayPastSnapshot(t, 'after', 10, { port: own.server.port, client: own.client }, { upstream: { 'connect-timeout': 1 } });
  await masterGone(own, x);
  // Read after the master went: a stopping master sends its replicas a last GETACK.
  const { relay_snapshot_offset: snapshotAt, master_repl_offset: end } = await x.info('replication');

  const dump = await dumpRdb(port);
  t.equal(dump.code, 1, 'redis-cli --rdb fails instead of waiting');
  const behind = Number(end) - Number(snapshotAt);
  t.match(
    dump.output,
    // Which of the two comes first depends on the link's state at the request: a fetch tried while the link waits
    // to reconnect fails at once; one not tried (the link is connecting) leaves the wait to upstream.connect-timeout.
    new RegExp(
      "SYNC with (master|primary) failed: -ERR psync-relay(('s upstream has been out of reach for \\d+ s)|( could not fetch a snapshot as of now from its upstream \\(connect ECONNREFUSED [^)]+\\))): " +
        `an RDB as of now needs a fresh snapshot from it \\(the newest held is at offset ${snapshotAt}, ${behind} bytes behind\\); retry`,
    ),
  );
  t.match((await x.info('replication'))['connected_slaves'], '0', 'the refused client is gone');
});

t.test("redis-cli --rdb below a relay whose upstream is out of reach: the refusal comes down the chain, with the top relay's reason", async (t) => {
  const own = await ownMaster('chain-down', 100);
  const { bottomPort, xt, xb } = await relayChain(t, own.server.port, { 'connect-timeout': 1 });
  await caughtUp(xb, own.client, 'the bottom relay holds a snapshot and the stream');
  await writeKeys(own.client, 'chain-after', 10);
  await caughtUp(xb, own.client, 'the bottom relay holds writes past its snapshot');
  await masterGone(own, xt);
  t.equal((await xb.info('replication'))['master_link_status'], 'up', 'the bottom relay still streams from the top one');

  const dump = await dumpRdb(bottomPort);
  t.equal(dump.code, 1, 'redis-cli --rdb at the bottom fails instead of waiting');
  t.match(dump.output, /SYNC with (master|primary) failed: -ERR psync-relay could not fetch a snapshot as of now from its upstream \(snapshot fetch refused: -ERR psync-relay('s upstream has been out of reach| could not fetch a snapshot as of now from its upstream \(connect ECONNREFUSED)/);
});

t.test('redis-cli --rdb whose fetch is abandoned (the stream outgrew log.refresh-hold during it) gets the reason at once', async (t) => {
  const own = await ownMaster('hold', 20_000);
  const { port } = await relayPastSnapshot(t, 'hold-after', 10, { port: own.server.port, client: own.client }, { log: { memory: '1mb', disk: 0, 'refresh-hold': '1mb' } });
  // The fetch's BGSAVE takes 2 s (100 us a key): the stream meanwhile goes past 1 MB of refresh-hold.
  await own.client.call('CONFIG', 'SET', 'rdb-key-save-delay', '100');
  let dumped = false;
  const dumping = dumpRdb(port).finally(() => (dumped = true));
  // Written until the dump ends: the stream must run while the fetch holds the log, whenever it starts.
  const payload = 'x'.repeat(4000);
  for (let mb = 0; !dumped && mb < 300; mb++) await own.client.pipeline(Array.from({ length: 250 }, (_, j) => ['SET', `hold-stream:${j}`, payload]));
  const dump = await dumping;
  t.equal(dump.code, 1, 'redis-cli --rdb fails instead of waiting for the next fetch (a minute later)');
  t.match(dump.output, /SYNC with (master|primary) failed: -ERR psync-relay could not fetch a snapshot as of now from its upstream \(log\.refresh-hold exceeded\)/);
  await own.client.close();
  await own.server.stop();
});

t.test('RDB-only requests waiting for a fresher snapshot log at most a burst of lines, however many clients ask at once', async (t) => {
  const { port, lines } = await startLoggedRelay(t, { upstream: { host: '127.0.0.1', port: master.port } });
  const x = await RedisClient.connect(port);
  t.teardown(() => x.close());
  await caughtUp(x, m, 'the relay holds a snapshot and the stream');
  await writeKeys(m, 'loglines', 10);
  await caughtUp(x, m, 'the relay holds the writes after its snapshot');
  // What redis-cli --rdb sends: each is owed the data as of now, newer than the snapshot the relay holds.
  const clients = await Promise.all(Array.from({ length: 100 }, () => rawConnect(port, '127.0.0.1', { send: 'REPLCONF rdb-only 1\r\nSYNC\r\n' })));
  t.teardown(() => clients.forEach((c) => c.socket.destroy()));
  // A plain SYNC is answered with the RDB's length line, no +FULLRESYNC.
  await waitFor(() => clients.every((c) => /\+OK\r\n\$\d+\r\n/.test(c.received())) || undefined, { what: 'every client sent its RDB' });
  const logged = lines.filter((l) => l['msg'] === 'RDB-only sync waits for a snapshot as of its request: the newest held is older').length;
  t.ok(logged >= 1 && logged <= 10, `${logged} lines for 100 RDB-only requests`);
});
