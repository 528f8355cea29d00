import t, { type Test } from 'tap';
import { writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import WebSocket from 'ws';
import { startRedis, stopAll } from '../helpers/redis-server.js';
import { startRelayProcess } from '../helpers/relay-process.js';
import { freePort } from '../helpers/ports.js';
import { RedisClient } from '../helpers/redis-client.js';
import { startReplica, waitConverged, digest } from '../helpers/replication.js';
import { waitFor } from '../helpers/wait.js';
import { tempDir } from '../helpers/temp-dir.js';

t.teardown(stopAll);

const MAX_BUFFERED = 4 * 1024 * 1024;
const VALUE = 64 * 1024;
const COUNT = 600; // ~38 MiB of stream, ~150x web.max-buffered

interface Client {
  readonly ws: WebSocket;
  readonly socket: Socket;
  readonly offsets: number[];
  readonly closed: Promise<number>;
  isClosed(): boolean;
}

function connect(port: number, query = ''): Promise<Client> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/stream${query}`);
  const offsets: number[] = [];
  let done = false;
  const closed = new Promise<number>((resolve) =>
    ws.on('close', (code) => {
      done = true;
      resolve(code);
    }),
  );
  ws.on('message', (data: Buffer) => {
    offsets.push((JSON.parse(data.toString()) as { offset: number }).offset);
  });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, socket: (ws as unknown as { _socket: Socket })._socket, offsets, closed, isClosed: () => done }));
    ws.once('error', reject);
  });
}

async function get(webPort: number, path: string): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${webPort}${path}`, { headers: { connection: 'close' } });
  return r.text();
}

async function metric(webPort: number, name: string): Promise<number> {
  const text = await get(webPort, '/metrics');
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  if (line === undefined) throw new Error(`no sample ${name}`);
  return Number(line.slice(name.length + 1));
}

/** Writes COUNT SETs of VALUE bytes in batches; after each batch `probe` runs (it samples the relay). */
async function writeWorkload(m: RedisClient, tag: string, probe: () => Promise<void>): Promise<void> {
  const value = Buffer.alloc(VALUE, 'x');
  for (let i = 0; i < COUNT; i += 50) {
    const batch: (string | Buffer)[][] = [];
    for (let j = i; j < i + 50; j++) batch.push(['SET', `${tag}:${j}`, value]);
    await m.pipeline(batch);
    await probe();
  }
}

const master = await startRedis();
const m = await master.client();
t.teardown(() => m.close().catch(() => {}));

/**
 * An empty master (the relay and its replica full-sync nothing left by another test), then a relay process (its
 * memory is its own) with `web` settings besides its port, and a redis-server replica of it in sync.
 */
async function relayWithReplica(t: Test, web: string): Promise<{ webPort: number; port: number; rc: RedisClient; relayRss: () => Promise<number> }> {
  await m.call('FLUSHALL');
  const dir = tempDir('psync-relay-web-bp-');
  const [port, webPort] = [await freePort(), await freePort()];
  const config = join(dir, 'relay.yaml');
  writeFileSync(
    config,
    [
      `upstream: { host: 127.0.0.1, port: ${master.port}, backoff-min: 50ms, backoff-max: 500ms }`,
      `log: { memory: 1mb }`,
      `web: { port: ${webPort}${web} }`,
      `logging: { level: warn }`,
      `dir: ${dir}`,
      '',
    ].join('\n'),
  );
  const relay = await startRelayProcess(['--config', config, '--port', String(port)]);
  t.teardown(() => relay.stop());
  const relayRss = async (): Promise<number> => (JSON.parse(await get(webPort, '/status')) as { memory: { rss: number } }).memory.rss;
  await waitFor(async () => JSON.parse(await get(webPort, '/status')).upstream.linkUp === true, { what: 'relay streaming' });
  const replica = await startReplica(relay.port);
  t.teardown(() => replica.stop());
  const rc = await replica.client();
  t.teardown(() => rc.close().catch(() => {}));
  await waitConverged(m, [rc], 'replica in sync before the workload');
  return { webPort, port: relay.port, rc, relayRss };
}

for (const policy of ['disconnect', 'drop'] as const) {
  t.test(`a client that never reads (slow-client: ${policy}) does not slow replication or grow memory`, async (t) => {
    const { webPort, rc, relayRss } = await relayWithReplica(t, `, max-buffered: ${MAX_BUFFERED}, slow-client: ${policy}`);

    const slow = await connect(webPort, '?cmd=set');
    slow.socket.pause(); // never reads: the kernel buffers fill, then the relay's
    // A light reader (keys *:1? only: 10 per round) next to it keeps getting its messages.
    const good = await connect(webPort, '?cmd=set&key=*:1%3F');
    const rssBefore = await relayRss();

    // Three rounds. Buffering what the slow client does not read would hold at least the JSON of the whole stream.
    const rounds = 3;
    let maxBuffered = 0;
    let resumed = false;
    const probe = async (): Promise<void> => {
      maxBuffered = Math.max(maxBuffered, await metric(webPort, 'psync_relay_web_buffered_bytes'));
      // Once the relay has dropped the slow client, let it read again at once: its close frame (4008) waits behind
      // what it did not read, and the server gives a close handshake only so long before it cuts the connection.
      if (policy === 'disconnect' && !resumed && (await metric(webPort, 'psync_relay_web_slow_disconnects_total')) >= 1) {
        resumed = true;
        slow.socket.resume();
      }
    };
    const rss: number[] = [];
    for (let round = 0; round < rounds; round++) {
      await writeWorkload(m, `${policy}:${round}`, probe);
      const { digest: d } = await waitConverged(m, [rc], `replica converges while the slow client does not read (round ${round + 1})`);
      t.equal(await digest(rc), d, 'replica digest equals master digest');
      rss.push(await relayRss());
    }
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    const stream = rounds * COUNT * VALUE;
    // Two subscribers, each at most web.max-buffered plus one message (a 64 KiB value as JSON).
    t.ok(maxBuffered <= 2 * (MAX_BUFFERED + 2 * VALUE), `queued bytes stay bounded: at most ${mib(maxBuffered)} seen`);
    t.comment(`relay rss: ${mib(rssBefore)} before, ${rss.map(mib).join(', ')} after each ${mib(COUNT * VALUE)} round`);
    t.ok(rss.at(-1)! - rssBefore < stream, `memory stays bounded: grew by less than the ${mib(stream)} the slow client did not read`);

    await waitFor(() => good.offsets.length >= rounds * 10 || good.isClosed(), { what: 'the reading client got its SETs' });
    t.notOk(good.isClosed(), `the reading client is still connected (got ${good.offsets.length})`);
    t.equal(good.offsets.length, rounds * 10, 'a reading client is not affected');
    t.equal(await metric(webPort, 'psync_relay_web_slow_disconnects_total'), policy === 'disconnect' ? 1 : 0);
    if (policy === 'disconnect') {
      await waitFor(async () => (await metric(webPort, 'psync_relay_web_subscribers{format="json"}')) === 1, { what: 'slow subscriber dropped' });
      t.ok(resumed, 'the relay dropped the slow client during the workload');
      t.ok(slow.offsets.length < COUNT, 'the slow client was cut off');
      t.equal(await slow.closed, 4008, 'told why: close code 4008');
    } else {
      const dropped = await metric(webPort, 'psync_relay_web_dropped_messages_total');
      t.ok(dropped > 0, `messages dropped and counted (${dropped})`);
      t.equal(await metric(webPort, 'psync_relay_web_subscribers{format="json"}'), 2, 'the slow client stays connected');
      slow.socket.resume();
      await m.call('SET', `${policy}:marker`, 'end');
      await waitFor(() => slow.offsets.length + dropped >= rounds * COUNT + 1, { what: 'the slow client catches up with what was not dropped' });
      t.equal(slow.offsets.length + dropped, rounds * COUNT + 1, 'every SET was either sent or counted as dropped');
      t.ok(
        slow.offsets.every((o, i) => i === 0 || o > slow.offsets[i - 1]!),
        'what it gets is in order',
      );
      slow.ws.close();
    }
    good.ws.close();
  });
}

t.test('ninety-nine subscribers that never read (the default web limits): the relay holds one copy of their queues, drops them all, and keeps replicating', async (t) => {
  const { webPort, port, rc, relayRss } = await relayWithReplica(t, '');

  const subscribers: Client[] = [];
  for (let i = 0; i < 99; i++) {
    const c = await connect(webPort);
    c.socket.pause(); // never reads
    subscribers.push(c);
  }
  t.teardown(() => subscribers.forEach((c) => c.ws.terminate()));
  const before = await relayRss();
  let peak = before;
  await writeWorkload(m, 'many', async () => {
    peak = Math.max(peak, await relayRss());
  });
  await waitConverged(m, [rc], 'the replica converges while 99 subscribers do not read');
  await waitFor(async () => (await metric(webPort, 'psync_relay_web_subscribers{format="json"}')) === 0, { what: 'every subscriber dropped as a slow consumer' });
  peak = Math.max(peak, await relayRss());
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  // Their sockets hold 256 KiB each at most; the JSON they did not read is shared: 25 MiB and one web.max-buffered
  // (16 MiB) of strings, against 99 times 16 MiB in native buffers (cut to web.max-buffered-total, 256 MiB) before.
  t.ok(peak - before < 192 * 2 ** 20, `the relay's RSS grew by ${mib(peak - before)} (less than 192 MiB)`);
  t.equal(await metric(webPort, 'psync_relay_web_slow_disconnects_total'), 99, 'each closed as a slow consumer');
  const c = await RedisClient.connect(port);
  t.equal(await c.callString('PING'), 'PONG', 'the relay answers PING');
  await c.close();
});
