import t from 'tap';
import { connect } from 'node:net';
import { once } from 'node:events';
import WebSocket from 'ws';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelay } from '../helpers/relay.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';
import type { RedisClient } from '../helpers/redis-client.js';
import type { StreamMessage as Msg } from '../../src/web/stream-message.js';
import { encodeCommand } from '../../src/resp/writer.js';

t.teardown(stopAll);


interface Sub {
  readonly ws: WebSocket;
  readonly msgs: Msg[];
  readonly texts: string[];
  readonly raw: Buffer[];
  readonly closed: Promise<{ code: number; reason: string }>;
  isClosed(): boolean;
}

function subscribe(port: number, query = ''): Promise<Sub> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/stream${query ? `?${query}` : ''}`);
  const msgs: Msg[] = [];
  const texts: string[] = [];
  const raw: Buffer[] = [];
  let done = false;
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on('close', (code, reason) => {
      done = true;
      resolve({ code, reason: reason.toString() });
    }),
  );
  ws.on('message', (data: Buffer, isBinary) => {
    if (isBinary) raw.push(Buffer.from(data));
    else if (query.includes('format=raw')) texts.push(data.toString());
    else msgs.push(JSON.parse(data.toString()) as Msg);
  });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, msgs, texts, raw, closed, isClosed: () => done }));
    ws.once('unexpected-response', (req, res) => {
      req.destroy();
      reject(new Error(`HTTP ${res.statusCode}`));
    });
    ws.once('error', reject);
  });
}

/**
 * The relay's stream from offset `from` to `end` (both included) as a replica continuing at `from` receives it:
 * `PSYNC <replid> <from>` on a plain connection, then the bytes after `+CONTINUE`.
 */
async function replicated(port: number, replid: string, from: number, end: number): Promise<Buffer> {
  const s = connect(port, '127.0.0.1');
  s.on('error', () => undefined);
  const chunks: Buffer[] = [];
  let size = 0;
  s.on('data', (d: Buffer) => {
    chunks.push(d);
    size += d.length;
  });
  await once(s, 'connect');
  try {
    s.write(Buffer.concat([encodeCommand(['REPLCONF', 'capa', 'psync2']), encodeCommand(['PSYNC', replid, String(from)])]));
    const head = `+OK\r\n+CONTINUE ${replid}\r\n`;
    const want = end - from + 1;
    return await waitFor(
      () => {
        const got = Buffer.concat(chunks);
        if (got.length >= head.length && got.toString('latin1', 0, head.length) !== head) {
          throw new Error(`not continued: ${JSON.stringify(got.toString('latin1', 0, 80))}`);
        }
        return size >= head.length + want && got.subarray(head.length, head.length + want);
      },
      { what: `the stream ${from}..${end} over PSYNC` },
    );
  } finally {
    s.destroy();
  }
}

type Cmd = (string | number | Buffer)[];

/** Commands Redis propagates verbatim (no SET EX, EXPIRE, EVAL: those are rewritten), across dbs, with transactions. */
function workload(tag: string, n: number): Cmd[] {
  const cmds: Cmd[] = [];
  for (let i = 0; i < n; i++) {
    cmds.push(['SET', `${tag}:s:${i}`, `v${i}`]);
    if (i % 50 === 7) cmds.push(['SELECT', (i / 50) % 4 | 0]);
    if (i % 97 === 3) cmds.push(['MULTI'], ['INCR', `${tag}:ctr`], ['HSET', `${tag}:h`, 'f', i], ['EXEC']);
    if (i % 131 === 5) cmds.push(['SET', `${tag}:bin:${i}`, Buffer.from([0xff, 0xfe, i & 0xff])]);
  }
  cmds.push(['RPUSH', `${tag}:l`, 'a', 'b'], ['SADD', `${tag}:set`, 'x'], ['SET', `${tag}:d`, 'x'], ['DEL', `${tag}:d`], ['MSET', `${tag}:m1`, '1', `${tag}:m2`, '2']);
  cmds.push(['SELECT', 2], ['SET', `${tag}:big`, Buffer.alloc(1024 * 1024 + 17, 'b')], ['LPUSH', `${tag}:l2`, 'z']);
  cmds.push(['SELECT', 0]);
  return cmds;
}

interface Expected {
  db: number;
  cmd: string;
  args: string[];
  b64: boolean;
}

/** What a subscriber should see for `cmds` sent on a connection whose db is `db0`: every command but the client's SELECTs. */
function expected(cmds: Cmd[], db0: number): { list: Expected[]; db: number } {
  let db = db0;
  const list: Expected[] = [];
  for (const c of cmds) {
    const name = String(c[0]).toLowerCase();
    if (name === 'select') {
      db = Number(c[1]);
      continue;
    }
    const bufs = c.slice(1).map((a) => (Buffer.isBuffer(a) ? a : Buffer.from(String(a))));
    const b64 = bufs.some((x) => !Buffer.from(x.toString('utf8'), 'utf8').equals(x));
    list.push({ db, cmd: name, args: bufs.map((x) => x.toString(b64 ? 'base64' : 'utf8')), b64 });
  }
  return { list, db };
}

const seen = (msgs: Msg[]): Expected[] =>
  msgs.filter((m) => m.cmd !== 'select').map((m) => ({ db: m.db ?? -1, cmd: m.cmd, args: m.args, b64: m.b64 === true }));

const master = await startRedis();
const m: RedisClient = await master.client();
const relay = await startRelay({ upstream: { host: '127.0.0.1', port: master.port }, web: { port: await freePort() } });
t.teardown(() => relay.stop());
t.teardown(() => m.close().catch(() => {}));
await waitFor(() => relay.relay.status().upstream.linkUp, { what: 'relay streaming' });
const web = relay.relay.webPort;
let clientDb = 0;

t.test('a WebSocket client receives exactly the commands written, in order, with their db', async (t) => {
  const sub = await subscribe(web, 'internal=0');
  const cmds = workload('w1', 600);
  const { list, db } = expected(cmds, clientDb);
  clientDb = db;
  await m.pipeline(cmds);
  await waitFor(() => seen(sub.msgs).length >= list.length, { what: 'all commands on the stream' });
  t.strictSame(seen(sub.msgs), list, 'same commands, same order, right db');
  for (const s of sub.msgs.filter((x) => x.cmd === 'select')) t.equal(s.db, Number(s.args[0]), 'a SELECT carries the db it selects');
  const offsets = sub.msgs.map((x) => x.offset);
  t.ok(
    offsets.every((o, i) => i === 0 || o > offsets[i - 1]!),
    'offsets increase',
  );
  // (The master may have sent a PING since: hidden here, it can move the relay offset further.)
  const last = offsets.at(-1)!;
  const status = relay.relay.status();
  t.ok(last <= status.masterReplOffset, 'offsets are relay stream offsets');
  const around = await replicated(relay.port, status.replid, last - 1, last);
  t.equal(around.toString('latin1'), '\r\n', 'an offset is the last byte of its command');
  const multi = seen(sub.msgs).findIndex((x) => x.cmd === 'multi');
  t.strictSame(
    seen(sub.msgs)
      .slice(multi, multi + 4)
      .map((x) => x.cmd),
    ['multi', 'incr', 'hset', 'exec'],
    'a transaction keeps its order',
  );
  sub.ws.close();
});

t.test('from= resumes after a disconnect with no gap and no duplicate, also while writes go on', async (t) => {
  const first = await subscribe(web, 'internal=0');
  const w2 = workload('w2', 200);
  const e2 = expected(w2, clientDb);
  await m.pipeline(w2);
  await waitFor(() => seen(first.msgs).length >= e2.list.length, { what: 'w2 on the stream' });
  first.ws.close();
  await first.closed;
  const last = first.msgs.at(-1)!.offset;

  const w3 = workload('w3', 300);
  const e3 = expected(w3, e2.db);
  await m.pipeline(w3);
  // Reconnect while w4 is being written: the replay from the log hands over to the live feed.
  const w4 = workload('w4', 400);
  const e4 = expected(w4, e3.db);
  clientDb = e4.db;
  const writing = m.pipeline(w4);
  const second = await subscribe(web, `from=${last + 1}&internal=0&replid=${relay.relay.status().replid}`);
  await writing;
  const want = [...e3.list, ...e4.list];
  await waitFor(() => seen(second.msgs).length >= want.length, { what: 'w3 and w4 on the resumed stream' });
  t.strictSame(seen(second.msgs), want, 'the resumed stream is exactly what was written since');
  t.ok(second.msgs[0]!.offset > last, 'nothing already seen is repeated');
  second.ws.close();
});

t.test('from= outside the log or inside a command is refused with a close code', async (t) => {
  const ahead = await subscribe(web, `from=${relay.relay.status().masterReplOffset + 100}`);
  t.equal((await ahead.closed).code, 4010);
  const sub = await subscribe(web, 'internal=0');
  await m.call('SET', 'edge', 'x');
  await waitFor(() => sub.msgs.find((x) => x.cmd === 'set' && x.args[0] === 'edge'));
  const end = sub.msgs.find((x) => x.args[0] === 'edge')!.offset;
  const mid = await subscribe(web, `from=${end - 3}`);
  const c = await mid.closed;
  t.equal(c.code, 4011, 'mid-command offset refused');
  t.match(c.reason, /not the start of a command/);
  const other = await subscribe(web, `from=${end + 1}&replid=${'0'.repeat(39)}1`);
  t.equal((await other.closed).code, 4010, 'another history refused');
  sub.ws.close();
  await t.rejects(subscribe(web, 'from=abc'), /HTTP 400/, 'malformed options get 400 before the upgrade');
});

t.test('filters: cmd, key glob, db; the master PING / REPLCONF GETACK are flagged internal', async (t) => {
  const all = await subscribe(web, '');
  const hidden = await subscribe(web, 'internal=0');
  const sets = await subscribe(web, 'cmd=hset');
  const keys = await subscribe(web, 'key=flt:a*');
  const db5 = await subscribe(web, 'db=5');
  // WAIT after a write (not yet acknowledged) makes the master send REPLCONF GETACK * down the stream.
  await m.pipeline([
    ['SET', 'flt:pre', '1'],
    ['WAIT', 1, 2000],
  ]);
  await m.pipeline([
    ['SET', 'flt:a1', '1'],
    ['HSET', 'flt:b', 'f', 'v'],
    ['SELECT', 5],
    ['SET', 'flt:a2', '2'],
    ['SELECT', 0],
    ['SET', 'flt:done', '1'],
  ]);
  await waitFor(() => all.msgs.some((x) => x.args[0] === 'flt:done') && hidden.msgs.some((x) => x.args[0] === 'flt:done'));
  await waitFor(() => keys.msgs.length >= 2 && sets.msgs.length >= 1 && db5.msgs.some((x) => x.args[0] === 'flt:a2'));
  const getack = all.msgs.find((x) => x.cmd === 'replconf');
  t.ok(getack, 'GETACK seen');
  t.equal(getack?.internal, true);
  t.strictSame(getack?.args, ['GETACK', '*']);
  t.notOk(hidden.msgs.some((x) => x.internal), 'internal=0 hides them');
  t.strictSame(sets.msgs.map((x) => x.cmd), ['hset']);
  t.strictSame(keys.msgs.map((x) => x.args[0]), ['flt:a1', 'flt:a2']);
  t.strictSame(keys.msgs.map((x) => x.db), [0, 5]);
  t.ok(db5.msgs.every((x) => x.db === 5));
  for (const s of [all, hidden, sets, keys, db5]) s.ws.close();
});

t.test('/stream filters are bounded (each is matched against every replicated command, on the replication path): more is 400 before the upgrade', async (t) => {
  const globs = (n: number, len = 8): string => Array.from({ length: n }, (_, i) => `${'k'.repeat(len - 2)}${String(i).padStart(2, '0')}`.slice(-len)).join(',');
  await t.rejects(subscribe(web, `key=${globs(17)}`), /HTTP 400/, '17 key globs');
  await t.rejects(subscribe(web, `key=a*&key=${globs(16)}`), /HTTP 400/, '17 key globs, repeated and comma-separated');
  await t.rejects(subscribe(web, `key=${'*a'.repeat(128)}b`), /HTTP 400/, 'a key glob of more than 256 bytes');
  await t.rejects(subscribe(web, `cmd=${Array.from({ length: 65 }, (_, i) => `c${i}`).join(',')}`), /HTTP 400/, '65 commands');
  await t.rejects(subscribe(web, `db=${Array.from({ length: 65 }, (_, i) => i).join(',')}`), /HTTP 400/, '65 dbs');
  const most = await subscribe(web, `key=${globs(15, 256)},bnd:*&cmd=${Array.from({ length: 63 }, (_, i) => `c${i}`).join(',')},set&db=${Array.from({ length: 64 }, (_, i) => i).join(',')}`);
  await m.call('SET', 'bnd:1', 'x');
  const got = await waitFor(() => most.msgs.find((x) => x.args[0] === 'bnd:1'), { what: 'the SET through the largest filters allowed' });
  t.match(got, { cmd: 'set', db: Number }, '16 key globs of up to 256 bytes, 64 commands and 64 dbs are served');
  most.ws.close();
});

t.test('format=raw sends the offset, then the stream bytes as the relay holds them', async (t) => {
  const from = relay.relay.status().log.firstOffset;
  const raw = await subscribe(web, `format=raw&from=${from}`);
  await m.call('SET', 'raw:k', 'v');
  const { masterReplOffset: end, replid } = relay.relay.status();
  await waitFor(() => raw.raw.reduce((n, b) => n + b.length, 0) >= end - from + 1, { what: 'raw bytes' });
  t.strictSame(JSON.parse(raw.texts[0]!), { offset: from, replid });
  const got = Buffer.concat(raw.raw).subarray(0, end - from + 1);
  // The relay's stream as a replica continuing at `from` gets it (PSYNC): what the relay holds, byte for byte.
  t.ok(got.equals(await replicated(relay.port, replid, from, end)), 'byte for byte');
  raw.ws.close();
});

t.test('from= replays from the disk log when memory no longer holds the offset', async (t) => {
  const small = await startRelay({
    upstream: { host: '127.0.0.1', port: master.port },
    log: { memory: '16kb', disk: '64mb' },
    web: { port: await freePort() },
  });
  t.teardown(() => small.stop());
  await waitFor(() => small.relay.status().upstream.linkUp, { what: 'second relay streaming' });
  const live = await subscribe(small.relay.webPort, 'internal=0');
  const cmds: Cmd[] = [];
  for (let i = 0; i < 3000; i++) cmds.push(['SET', `disk:${i}`, 'x'.repeat(200)]);
  await m.pipeline(cmds);
  const want = expected(cmds, clientDb).list;
  await waitFor(() => seen(live.msgs).length >= want.length, { what: 'live subscriber got the workload' });
  // The master sends a SELECT before the first write after a full sync, so disk:0 has a predecessor.
  const first = live.msgs.findIndex((x) => x.args[0] === 'disk:0');
  t.ok(first > 0, 'a message precedes disk:0');
  const startOfFirst = live.msgs[first - 1]!.offset + 1;
  const memFirstOffset = (): number => small.relay.status().log.memFirstOffset;
  // Bytes leave memory once the disk log has written them.
  await waitFor(() => startOfFirst < memFirstOffset(), { what: 'the start of the workload to be on disk only' });
  t.ok(startOfFirst < memFirstOffset(), `offset ${startOfFirst} is on disk only (memory from ${memFirstOffset()})`);
  const replay = await subscribe(small.relay.webPort, `from=${startOfFirst}&internal=0`);
  await waitFor(() => seen(replay.msgs).length >= want.length, { what: 'replay from disk' });
  t.strictSame(seen(replay.msgs), want, 'the replay from disk is exact');
  const raw = await subscribe(small.relay.webPort, `format=raw&from=${startOfFirst}`);
  const total = small.relay.status().masterReplOffset - startOfFirst + 1;
  await waitFor(() => raw.raw.reduce((n, b) => n + b.length, 0) >= total, { what: 'raw replay from disk' });
  const bytes = Buffer.concat(raw.raw);
  t.equal(bytes.length, total);
  t.ok(bytes.subarray(0, 20).toString('latin1').startsWith('*3\r\n$3\r\nSET\r\n'), 'raw bytes start at the command');
  for (const s of [live, replay, raw]) s.ws.close();
});
