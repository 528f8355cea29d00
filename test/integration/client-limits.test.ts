/**
 * What one client may cost the relay, over real sockets: Redis 7's limits before AUTH, the cap on all clients'
 * buffers together (listen.max-clients-memory), output-buffer limits for normal and pub/sub clients, the MULTI
 * queue cap, and TLS connections that never finish their handshake. Each limit hit is logged with its key, and the
 * other clients keep being served.
 */
import t, { type Test } from 'tap';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';
import { RedisClient } from '../helpers/redis-client.js';
import { rawConnect } from '../helpers/raw.js';
import { makeCerts } from '../helpers/tls.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { startLoggedRelay } from '../helpers/logged-relay.js';

/** An in-process relay with no upstream whose log lines are kept; `listen` as in the config file. */
const relay = (t: Test, listen: Record<string, unknown> = {}) => startLoggedRelay(t, { listen });

/** Writes `chunk` to `socket` until it closes (honouring backpressure); fails past `maxBytes`. */
async function floodUntilClosed(socket: Socket, chunk: Buffer, maxBytes: number): Promise<number> {
  let sent = 0;
  let closed = false;
  socket.once('close', () => (closed = true));
  while (!closed) {
    if (sent > maxBytes) throw new Error(`still open after ${sent} bytes`);
    sent += chunk.length;
    // Not events.once: it rejects on the ECONNRESET the close may bring.
    if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve).once('close', resolve));
  }
  return sent;
}

t.test('before AUTH: at most 10 arguments and 16 KiB per bulk (Redis 7 texts); after AUTH the usual limits', async (t) => {
  const { port, logged } = await relay(t, { password: 'pw' });
  const many = await rawConnect(port, '127.0.0.1', { send: '*11\r\n' });
  t.equal(await many.closed, '-ERR Protocol error: unauthenticated multibulk length\r\n');
  t.match(await logged('unauthenticated-multibulk-len'), { value: 10 });
  const huge = await rawConnect(port, '127.0.0.1', { send: `*1048576\r\n${'$0\r\n\r\n'.repeat(1000)}` });
  t.equal(await huge.closed, '-ERR Protocol error: unauthenticated multibulk length\r\n', 'refused at the header, before any argument is kept');
  const big = await rawConnect(port, '127.0.0.1', { send: '*2\r\n$4\r\nECHO\r\n$16385\r\n' });
  t.equal(await big.closed, '-ERR Protocol error: unauthenticated bulk length\r\n');
  t.match(await logged('unauthenticated-bulk-len'), { value: 16384 });

  const c = await RedisClient.connect(port);
  t.teardown(() => c.close());
  await t.rejects(c.call('ECHO', 'x'.repeat(16384)), { message: 'NOAUTH Authentication required.' }, '16 KiB exactly is a command');
  // AUTH pipelined with what only an authenticated client may send: the limits lift between the two.
  const [ok, echoed] = await c.pipeline([['AUTH', 'pw'], ['ECHO', 'y'.repeat(100_000)]]);
  t.equal(ok, 'OK');
  t.equal(String(echoed).length, 100_000, 'a 100 KB bulk after AUTH');
  await t.rejects(c.call('PING', ...Array.from({ length: 10 }, () => 'a')), /^ERR wrong number of arguments/, '11 arguments after AUTH');
  t.equal(await c.call('RESET'), 'RESET');
  await t.rejects(c.call('ECHO', 'z'.repeat(20_000)), /unauthenticated bulk length/, 'RESET logs out: the limits are back');
});

t.test('without auth configured there are no pre-auth limits (as Redis)', async (t) => {
  const { client } = await relay(t);
  const c = await client();
  t.equal(String(await c.call('ECHO', 'x'.repeat(20_000))).length, 20_000);
});

t.test('listen.max-clients-memory: the client holding the most is closed with an error; the others are served', async (t) => {
  const { port, logged, client } = await relay(t, { 'max-clients-memory': '1mb' });
  const bystander = await client();
  t.equal(await bystander.callString('PING'), 'PONG');
  const hog = await rawConnect(port, '127.0.0.1', { send: Buffer.concat([Buffer.from('*2\r\n$4\r\nECHO\r\n$3000000\r\n'), Buffer.alloc(1_500_000, 120)]) });
  t.match(await hog.closed, /^-ERR client evicted: the clients' buffers went past listen\.max-clients-memory \(1048576 bytes\) and this client held the most \(\d+ bytes\)\r\n$/);
  t.match(await logged('listen.max-clients-memory'), { value: 1024 * 1024, used: Number });
  t.equal(await bystander.callString('PING'), 'PONG', 'the other client is untouched');
});

t.test('a client evicted at listen.max-clients-memory holds none of its input once closed', async (t) => {
  const { port } = await relay(t, { 'max-clients-memory': '16mb' });
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  const before = process.memoryUsage().arrayBuffers;
  // A command of many 256 KiB arguments that never ends: what it holds grows with what it sends.
  const hog = await rawConnect(port, '127.0.0.1', { send: '*1000\r\n$4\r\nECHO\r\n' });
  const bulk = Buffer.concat([Buffer.from('$262144\r\n'), Buffer.alloc(256 * 1024, 120), Buffer.from('\r\n')]);
  const sent = await floodUntilClosed(hog.socket, bulk, 64 * 1024 * 1024);
  t.ok(sent > 16 * 1024 * 1024, `evicted after ${(sent / 1048576).toFixed(0)} MB`);
  // An evicted client that reconnects at once starts a new buffer: the old one must be garbage already, not in 5 s
  // (the close timer that kept it). Polled: V8 frees the memory of dead ArrayBuffers on a thread of its own, after gc().
  let held = Infinity;
  await waitFor(
    () => {
      gc();
      held = process.memoryUsage().arrayBuffers - before;
      return held < 4 * 1024 * 1024 || undefined;
    },
    { what: 'the evicted client holding no buffer', timeoutMs: 2000 },
  ).catch(() => undefined);
  t.ok(held < 4 * 1024 * 1024, `${(held / 1048576).toFixed(1)} MB of buffers held after the eviction (polled for 2 s)`);
});

t.test('a bulk announced past listen.max-clients-memory is counted from its header, as Redis counts its query buffer: the client is closed before sending it', async (t) => {
  const { port, logged, client } = await relay(t, { 'max-clients-memory': '16mb' });
  const hog = await rawConnect(port, '127.0.0.1', { send: '*2\r\n$4\r\nECHO\r\n$100000000\r\n' });
  t.match(await hog.closed, /^-ERR client evicted: the clients' buffers went past listen\.max-clients-memory \(16777216 bytes\) and this client held the most \(100000\d{3} bytes\)\r\n$/);
  t.match(await logged('listen.max-clients-memory'), { value: 16 * 1024 * 1024 });
  // Under the cap, a big argument sent in pieces is answered whole.
  const c = await client();
  t.equal(String(await c.call('ECHO', 'e'.repeat(8 * 1024 * 1024))).length, 8 * 1024 * 1024);
});

t.test('a client that never reads its replies is closed at listen.max-clients-memory, before AUTH too', async (t) => {
  const { port, logged, client } = await relay(t, { password: 'pw', 'max-clients-memory': '2mb' });
  const reader = await client();
  t.equal(await reader.call('AUTH', 'pw'), 'OK');
  const silent = await rawConnect(port);
  silent.socket.pause();
  // Each PING gets NOAUTH (34 bytes for 6); nothing is read.
  const sent = await floodUntilClosed(silent.socket, Buffer.from('PING\r\n'.repeat(10_000)), 512 * 1024 * 1024);
  t.ok(sent > 2 * 1024 * 1024 / 6, `closed after ${sent} bytes of requests`);
  t.match(await logged('listen.max-clients-memory'), { value: 2 * 1024 * 1024 });
  t.equal(await reader.callString('PING'), 'PONG');
});

t.test("a client's replies to one turn leave as one write: 200,000 unread replies queue a few thousand entries (CLIENT LIST oll)", async (t) => {
  const { port, relay: r, client } = await relay(t);
  const admin = await client();
  const n = 200_000;
  const done = r.status().stats.totalCommandsProcessed + n;
  const flood = await rawConnect(port);
  t.teardown(() => flood.socket.destroy());
  flood.socket.pause();
  // 21 MB of replies: more than the kernel takes from a connection that does not read.
  flood.socket.write(`ECHO ${'e'.repeat(100)}\r\n`.repeat(n));
  await waitFor(() => r.status().stats.totalCommandsProcessed >= done, { what: 'every ECHO run' });
  const line = String(await admin.call('CLIENT', 'LIST')).split('\n').find((l) => !l.includes('cmd=client'));
  const oll = Number(/ oll=(\d+) /.exec(line ?? '')?.[1]);
  // A turn runs at most 128 commands; their replies go out together. One entry per reply cost 60 bytes of heap
  // each, uncounted, and closing such a client (max-clients-memory, output limits) failed every entry one by one:
  // a flood of PINGs evicted at 256mb stalled the relay 13 s.
  t.ok(oll > 0 && oll <= n / 64, `${oll} writes queued for ${n} unread replies`);
});

t.test('a client name counts toward listen.max-clients-memory: names cannot hold memory past the cap', async (t) => {
  const { port, logged, client } = await relay(t, { 'max-clients-memory': '1mb' });
  const bystander = await client();
  const named = await Promise.all([0, 1].map(() => rawConnect(port)));
  // 600 KB each: the query buffer holding one goes when the command is done; the name stays as long as the client.
  for (const c of named) {
    c.socket.write(encodeCommand(['CLIENT', 'SETNAME', 'n'.repeat(600 * 1024)]));
    await waitFor(() => c.received() !== '', { what: 'CLIENT SETNAME answered' });
  }
  t.match(await logged('listen.max-clients-memory'), { value: 1024 * 1024 });
  await waitFor(() => named.some((c) => c.socket.destroyed || c.received().includes('client evicted')), { what: 'a named client evicted' });
  t.equal(await bystander.callString('PING'), 'PONG');
});

t.test("a replica's input counts toward listen.max-clients-memory: past it the replica is closed, with no error in its stream", async (t) => {
  const { port, logged, client } = await relay(t, { 'max-clients-memory': '1mb' });
  const bystander = await client();
  // After PSYNC a replica sends only REPLCONF; this one sends a bulk that never ends.
  const hog = await rawConnect(port, '127.0.0.1', { send: 'PSYNC ? -1\r\n*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$100000000\r\n' });
  const sent = await floodUntilClosed(hog.socket, Buffer.alloc(64 * 1024, 49), 64 * 1024 * 1024);
  t.ok(sent > 1024 * 1024, `closed after ${sent} bytes`);
  t.match(await logged('listen.max-clients-memory'), { value: 1024 * 1024, used: Number });
  t.notMatch(hog.received(), /client evicted/, 'its stream carries no error reply');
  t.equal(await bystander.callString('PING'), 'PONG', 'the other client is untouched');
});

t.test('listen.client-output-buffer-limit normal: a client past the hard limit is closed', async (t) => {
  const { port, logged, client } = await relay(t, { 'client-output-buffer-limit': { normal: { hard: '1mb' } } });
  const other = await client();
  const silent = await rawConnect(port);
  silent.socket.pause();
  await floodUntilClosed(silent.socket, encodeCommand(['ECHO', 'e'.repeat(64 * 1024)]), 512 * 1024 * 1024);
  t.match(await logged('listen.client-output-buffer-limit.normal.hard'), { value: 1024 * 1024, used: Number });
  t.equal(await other.callString('PING'), 'PONG');
});

async function subscriber(port: number): Promise<Socket> {
  const s = await rawConnect(port, '127.0.0.1', { send: encodeCommand(['SUBSCRIBE', 'news']) });
  await waitFor(() => s.received().includes('news'), { what: 'the subscription is confirmed' });
  s.socket.pause();
  return s.socket;
}

/** Publishes `message` until nobody receives it (the subscriber, which never reads, was cut); fails past 512 MB. */
async function publishUntilCut(pub: RedisClient, message: Buffer): Promise<void> {
  for (let sent = 0; (await pub.call('PUBLISH', 'news', message)) !== 0; sent += message.length) {
    if (sent > 512 * 1024 * 1024) throw new Error('the subscriber is still connected');
  }
}

t.test('pub/sub: a subscriber that does not read is cut at the hard limit; the publisher is unaffected', async (t) => {
  const { port, relay: r, logged, client } = await relay(t, { 'client-output-buffer-limit': { pubsub: { hard: '1mb', soft: 0 } } });
  const pub = await client();
  await subscriber(port);
  await publishUntilCut(pub, Buffer.alloc(64 * 1024, 109));
  t.match(await logged('listen.client-output-buffer-limit.pubsub.hard'), { value: 1024 * 1024 });
  t.strictSame(await pub.call('PUBSUB', 'NUMSUB', 'news'), [Buffer.from('news'), 0], 'its subscription is gone');
  t.equal(r.status().connectedClients, 1, 'only the publisher is left');
});

t.test('pub/sub: a subscriber over the soft limit for longer than soft-seconds is cut', async (t) => {
  const { port, logged, client } = await relay(t, { 'client-output-buffer-limit': { pubsub: { hard: 0, soft: '256kb', 'soft-seconds': '200ms' } } });
  const pub = await client();
  await subscriber(port);
  await publishUntilCut(pub, Buffer.alloc(16 * 1024, 109));
  t.match(await logged('listen.client-output-buffer-limit.pubsub.soft'), { value: 256 * 1024 });
});

t.test('listen.max-multi-commands: the transaction past it is aborted (EXECABORT) and logged; the client goes on', async (t) => {
  const { logged, client } = await relay(t, { 'max-multi-commands': 3 });
  const c = await client();
  const replies = await c.pipeline([['MULTI'], ['PING'], ['PING'], ['PING'], ['PING'], ['PING'], ['EXEC'], ['PING']]);
  t.strictSame(replies.slice(0, 4), ['OK', 'QUEUED', 'QUEUED', 'QUEUED']);
  t.match(replies[4], { message: /^ERR MULTI queue full: listen\.max-multi-commands is 3; the transaction is aborted/ });
  t.equal(replies[5], 'QUEUED', 'later commands are acknowledged, not kept');
  t.match(replies[6], { message: /^EXECABORT Transaction discarded because of previous errors\./ });
  t.equal(replies[7], 'PONG');
  t.match(await logged('listen.max-multi-commands'), { value: 3 });
});

t.test('PSYNC and SYNC inside MULTI are refused, as Redis 7 does (no-multi); EXEC then answers EXECABORT', async (t) => {
  const { client } = await relay(t);
  const c = await client();
  const replies = await c.pipeline([['MULTI'], ['PSYNC', '?', '-1'], ['SYNC'], ['EXEC'], ['PING']]);
  t.equal(replies[0], 'OK');
  t.match(replies[1], { message: 'ERR Command not allowed inside a transaction' });
  t.match(replies[2], { message: 'ERR Command not allowed inside a transaction' });
  t.match(replies[3], { message: /^EXECABORT Transaction discarded because of previous errors\./ });
  t.equal(replies[4], 'PONG', 'the client stays a normal client');
});

t.test('a queued MULTI command holds its own bytes, not the read it came in (what listen.max-clients-memory counts)', async (t) => {
  const { port } = await relay(t);
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  const before = process.memoryUsage().arrayBuffers;
  // Each command in a read of its own, padded to 60 KB with `*0` (no command): 300 reads, 18 MB.
  const padded = Buffer.concat([encodeCommand(['ECHO', 'a']), Buffer.from('*0\r\n'.repeat(15_000))]);
  const c = await rawConnect(port, '127.0.0.1', { send: 'MULTI\r\n' });
  t.teardown(() => c.socket.destroy());
  c.socket.setNoDelay(true);
  for (let k = 1; k <= 300; k++) {
    c.socket.write(padded);
    await waitFor(() => c.received().split('+QUEUED').length > k, { what: `command ${k} queued`, intervalMs: 1 });
  }
  gc();
  const held = process.memoryUsage().arrayBuffers - before;
  // Counted: about 400 bytes per command (its two arguments and their overhead), 120 KB in all.
  t.ok(held < 4 * 1024 * 1024, `300 queued commands hold ${(held / 1048576).toFixed(1)} MB of buffers`);
});

t.test('a command of a million arguments holds its bytes, counted in CLIENT LIST, and gets a clear error; the client goes on', async (t) => {
  const { port, client } = await relay(t);
  const admin = await client();
  const n = 1_000_000;
  const head = Buffer.from(`*${n + 1}\r\n$4\r\nPING\r\n` + '$0\r\n\r\n'.repeat(n - 1));
  const c = await rawConnect(port, '127.0.0.1', { send: head });
  t.teardown(() => c.socket.destroy());
  // Unfinished: what it holds is what it sent, counted as that (before, each argument was a Buffer: 20 such clients
  // took the relay to 1.2 GB under the 256 MB listen.max-clients-memory).
  const fields = async (): Promise<Record<string, number>> => {
    const line = String(await admin.call('CLIENT', 'LIST')).split('\n').find((l) => l.includes(' cmd=NULL ')) ?? '';
    return Object.fromEntries([...line.matchAll(/ (qbuf|argv-mem|tot-mem)=(\d+)/g)].map((m) => [m[1]!, Number(m[2])]));
  };
  let seen: Record<string, number> = {};
  await waitFor(async () => ((seen = await fields()).qbuf === head.length) || undefined, { what: 'the relay holding the whole unfinished command' });
  t.ok(seen['argv-mem']! <= 64 * 256, `argv-mem ${seen['argv-mem']}: the 64 arguments kept only`);
  t.ok(seen['tot-mem']! >= head.length && seen['tot-mem']! < head.length * 1.1, `tot-mem ${seen['tot-mem']} for ${head.length} bytes held`);
  c.socket.write('$0\r\n\r\nPING\r\n');
  await waitFor(() => c.received().includes('+PONG') || undefined, { what: 'the PING after it answered' });
  t.equal(c.received(), "-ERR too many arguments for 'ping' command: psync-relay reads at most 64\r\n+PONG\r\n");
  // Unknown commands keep what their error shows; MULTI refuses the command at once.
  const unknown = encodeCommand(['NOSUCH', ...Array.from({ length: 100_000 }, (_, i) => String(i))]);
  const d = await rawConnect(port, '127.0.0.1', { send: Buffer.concat([unknown, Buffer.from('MULTI\r\n'), encodeCommand(['INFO', ...Array(100).fill('x')]), Buffer.from('EXEC\r\n')]) });
  t.teardown(() => d.socket.destroy());
  await waitFor(() => d.received().includes('EXECABORT') || undefined, { what: 'the transaction answered' });
  t.match(d.received(), /^-ERR unknown command 'NOSUCH', with args beginning with: '0' '1' '2' [^\r]*\r\n\+OK\r\n-ERR too many arguments for 'info' command: psync-relay reads at most 64\r\n-EXECABORT /);
});

t.test('TLS: a handshake never finished is closed after listen.handshake-timeout and holds a max-clients slot meanwhile', async (t) => {
  const certs = makeCerts();
  const tlsPort = await freePort();
  const { port, lines, logged, client } = await relay(t, {
    'max-clients': 2,
    'handshake-timeout': '1s',
    tls: { port: tlsPort, cert: certs.serverCert, key: certs.serverKey },
  });
  const stalled = await Promise.all([0, 1].map(() => rawConnect(tlsPort)));
  await waitFor(async () => {
    const third = await rawConnect(port);
    return (await third.closed) === '-ERR max number of clients reached\r\n';
  }, { what: 'two stalled TLS handshakes take both slots' });
  for (const s of stalled) t.equal(await s.closed, '', 'closed by the relay without a handshake');
  t.match(await logged('listen.handshake-timeout'), { value: 1000 });
  t.ok(lines.some((l) => /TLS handshake not finished within the handshake timeout/.test(String(l['msg']))));
  const c = await client();
  t.equal(await c.callString('PING'), 'PONG', 'the slots are free again');
  const secure = tlsConnect({ port: tlsPort, host: '127.0.0.1', ca: readFileSync(certs.ca) });
  await once(secure, 'secureConnect');
  secure.write(encodeCommand(['PING']));
  const [reply] = (await once(secure, 'data')) as [Buffer];
  t.equal(reply.toString(), '+PONG\r\n', 'a TLS client that finishes its handshake is served');
  secure.destroy();
});

t.test('client text is cut to 128 characters in replies and logs; repeated warnings are rate limited', async (t) => {
  const { lines, client } = await relay(t, { password: 'pw' });
  const c = await client();
  const long = 'L'.repeat(100_000);
  const lengths = async (args: string[]) => {
    const e = (await c.pipeline([args]))[0] as { message: string };
    return e.message.length;
  };
  // Before AUTH a bulk may hold 16 KiB at most.
  t.ok((await lengths(['AUTH', 'U'.repeat(16 * 1024), 'x'])) < 100, 'WRONGPASS does not echo');
  for (let i = 0; i < 30; i++) await c.call('AUTH', `user${i}`, 'wrong').catch(() => undefined);
  t.equal(await c.call('AUTH', 'pw'), 'OK');
  t.ok((await lengths([long, ...Array.from({ length: 30 }, () => long)])) < 400, 'unknown command: name and arguments cut');
  t.ok((await lengths(['CLIENT', long])) < 200, 'CLIENT unknown subcommand');
  t.ok((await lengths(['CONFIG', long])) < 200, 'CONFIG unknown subcommand');
  t.ok((await lengths(['HELLO', '2', long])) < 200, 'HELLO unknown option');
  t.ok((await lengths(['PUBSUB', long])) < 250, 'PUBSUB unknown subcommand');
  t.ok((await lengths(['CLIENT', 'KILL', 'TYPE', long])) < 200, 'CLIENT KILL unknown type');
  const failed = lines.filter((l) => l['msg'] === 'auth failed');
  t.equal(failed.length, 10, '31 failed AUTHs, 10 warnings (then suppressed for the minute)');
  t.equal(failed[0]!['user'], `${'U'.repeat(128)}...`, 'the user name logged is cut');
  t.ok(lines.every((l) => JSON.stringify(l).length < 1024), 'no log line carries the 100 KB');
});

t.test("a client's long pipeline runs a slice per turn: another client's PING is answered before the pipeline's last reply", async (t) => {
  const { port, client } = await relay(t);
  const bystander = await client();
  t.equal(await bystander.callString('PING'), 'PONG');
  // 4,000 INFOs for a section that does not exist, in one write (one read of 48 KB): each builds the relay's status
  // (a few hundred milliseconds of work in all) and answers an empty bulk, so the replies leave at once.
  const n = 4000;
  const hog = await rawConnect(port);
  const replies = () => hog.received().split('$').length - 1;
  hog.socket.write('INFO nosuch\r\n'.repeat(n));
  await waitFor(() => replies() > 0, { what: 'the first replies to the pipeline' });
  t.equal(await bystander.callString('PING'), 'PONG');
  const when = replies();
  t.ok(when < n, `the PONG came with ${when} of the ${n} replies to the pipeline`);
  await waitFor(() => replies() === n, { what: 'every INFO answered', timeoutMs: 60_000 });
  t.equal(hog.received(), '$0\r\n\r\n'.repeat(n), 'each reply whole, in order');
  hog.socket.destroy();
});
