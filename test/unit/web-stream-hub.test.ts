import t from 'tap';
import { ReplLog } from '../../src/backlog/repl-log.js';
import { ReplIds } from '../../src/backlog/repl-ids.js';
import { createLogger } from '../../src/log.js';
import { StreamScanner, type ScannedCommand } from '../../src/resp/stream-scanner.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { CloseCode, StreamHub, type StreamSink, type StreamSource } from '../../src/web/stream-hub.js';
import { parseStreamOptions, type StreamMessage as Msg } from '../../src/web/stream-message.js';
import { mulberry32 } from '../helpers/chunks.js';
import { recordTelemetry } from '../helpers/telemetry.js';
import { TurnBudget } from '../../src/downstream/turn-budget.js';


/**
 * The hub's StreamSource (its public constructor dependency), built from the public ReplLog and ReplIds modules: a
 * link scanner that reports commands, then appends the chunk to the log. No Relay: this is the relay as the hub sees it.
 */
class FakeSource implements StreamSource {
  readonly log: ReplLog;
  readonly ids = new ReplIds();
  epoch = 0;
  readonly #history = new Set<() => void>();
  snapshot: { offset: number } | null = { offset: 0 };
  readonly #listeners = new Set<(cmd: ScannedCommand) => void>();
  readonly #scanner = new StreamScanner((cmd) => {
    for (const fn of this.#listeners) fn(cmd);
  });

  constructor(limit = 64 * 1024 * 1024) {
    this.log = new ReplLog(limit);
  }
  onCommand(fn: (cmd: ScannedCommand) => void): () => void {
    this.#listeners.add(fn);
    this.#scanner.decodeArgs = true;
    return () => {
      this.#listeners.delete(fn);
      this.#scanner.decodeArgs = this.#listeners.size > 0;
    };
  }
  get decoding(): boolean {
    return this.#scanner.decodeArgs;
  }
  usableSnapshot(): { offset: number } | null {
    return this.snapshot;
  }
  onNewHistory(fn: () => void): () => void {
    this.#history.add(fn);
    return () => this.#history.delete(fn);
  }
  feed(chunk: Buffer): void {
    const { error } = this.#scanner.scan(chunk);
    if (error !== null) throw new Error(error);
    this.log.append(chunk);
  }
  /** A new history (full sync): the log restarts at `offset`. */
  fullSync(offset: number): void {
    this.log.reset(offset);
    this.ids.reset('f'.repeat(40));
    this.#scanner.reset(offset);
    this.epoch++;
    for (const fn of this.#history) fn();
  }
}

class FakeSink implements StreamSink {
  readonly messages: Msg[] = [];
  readonly raw: Buffer[] = [];
  readonly texts: string[] = [];
  buffered = 0;
  closed: { code: number; reason: string } | null = null;
  send(msg: string | Uint8Array, binary: boolean): void {
    if (this.closed) throw new Error('send after end');
    if (binary) this.raw.push(Buffer.from(msg as Uint8Array));
    else if (this.texts.length === 0 && this.raw.length === 0 && String(msg).includes('"replid"')) this.texts.push(String(msg));
    else this.messages.push(JSON.parse(String(msg)) as Msg);
  }
  bufferedAmount(): number {
    return this.buffered;
  }
  end(code: number, reason: string): void {
    this.closed ??= { code, reason };
  }
  cork(fn: () => void): void {
    fn();
  }
}

/** A socket that never drains: what it is sent stays buffered. */
class FillingSink extends FakeSink {
  override send(msg: string | Uint8Array, binary: boolean): void {
    super.send(msg, binary);
    this.buffered += typeof msg === 'string' ? Buffer.byteLength(msg) : msg.byteLength;
  }
}

const MiB = 1024 * 1024;
/** A turn budget that never runs out: these tests feed synchronously and the budget's clock is real. */
const endless = (): TurnBudget => new TurnBudget(Number.POSITIVE_INFINITY);
/**
 * A CPU clock that never moves: live delivery is never charged. These tests feed many reads' worth of commands in one
 * synchronous call, which the relay's share of live delivery (its own test below) would take for one costly read.
 */
const noCpu = (): number => 0;
const logger = createLogger('silent');
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
/** Turns of the event loop until `done` (at most 1,000). */
async function waitForTicks(done: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !done(); i++) await tick();
  if (!done()) throw new Error('not done after 1,000 turns');
}
const opts = (q: string) => parseStreamOptions(q);

interface Written {
  start: number;
  end: number;
  db: number | null;
  cmd: string;
  args: string[];
}

/** A random workload: SELECTs, SETs with small and large (> 64 byte, so straddling) values, MULTI/EXEC, PING, GETACK. */
function workload(rand: () => number, n: number, startOffset = 0): { bytes: Buffer; cmds: Written[] } {
  const cmds: Written[] = [];
  const bufs: Buffer[] = [];
  let off = startOffset;
  let db: number | null = null;
  for (let i = 0; i < n; i++) {
    const r = rand();
    let args: string[];
    if (i === 0 || r < 0.08) args = ['SELECT', String(Math.floor(rand() * 4))];
    else if (r < 0.12) args = ['PING'];
    else if (r < 0.14) args = ['REPLCONF', 'GETACK', '*'];
    else if (r < 0.17) args = ['MULTI'];
    else if (r < 0.2) args = ['EXEC'];
    else {
      const len = rand() < 0.1 ? 3000 + Math.floor(rand() * 3000) : Math.floor(rand() * 120);
      args = ['SET', `k:${i}`, 'v'.repeat(len)];
    }
    const b = encodeCommand(args);
    bufs.push(b);
    if (args[0] === 'SELECT') db = Number(args[1]);
    cmds.push({ start: off + 1, end: off + b.length, db, cmd: args[0]!.toLowerCase(), args: args.slice(1) });
    off += b.length;
  }
  return { bytes: Buffer.concat(bufs), cmds };
}

function split(bytes: Buffer, rand: () => number, max: number): Buffer[] {
  const out: Buffer[] = [];
  for (let pos = 0; pos < bytes.length; ) {
    const n = 1 + Math.floor(rand() * max);
    out.push(Buffer.from(bytes.subarray(pos, pos + n)));
    pos += n;
  }
  return out;
}

const view = (m: Msg | Written) => ({ offset: 'offset' in m ? m.offset : m.end, db: m.db, cmd: m.cmd, args: m.args });

t.test('subscribers joining anywhere get every later command once, in order, with its db', async (t) => {
  let refused = 0;
  t.teardown(() => t.comment(`${refused} from= joins without a known boundary before them were refused`));
  for (let seed = 1; seed <= 40; seed++) {
    const rand = mulberry32(seed);
    const source = new FakeSource();
    source.snapshot = seed % 5 === 0 ? null : { offset: 0 };
    const hub = new StreamHub(source, { maxBuffered: 1 << 30, slowClient: 'disconnect', logger, turn: endless(), cpu: noCpu });
    const { bytes, cmds } = workload(rand, 300);
    const chunks = split(bytes, rand, seed % 3 === 0 ? 7 : 900);
    const subs: { sink: FakeSink; expect: Written[]; name: string; head: number; sub: unknown }[] = [];
    for (let i = 0; i < chunks.length; i++) {
      if (rand() < 12 / chunks.length) {
        // Join now: from the head, or from= a command boundary already in the log.
        const sink = new FakeSink();
        const head = source.log.endOffset;
        const done = cmds.filter((c) => c.end <= head);
        if (rand() < 0.5 && done.length > 0) {
          const from = done[Math.floor(rand() * done.length)]!.start;
          const sub = hub.subscribe(sink, opts(`from=${from}`));
          // Without a known boundary before `from` (no snapshot, no live checkpoint yet) it cannot be checked: 4011.
          const expect = cmds.filter((c) => c.start >= from);
          subs.push({ sink, expect, name: `seed ${seed} from=${from}`, head: Infinity, sub });
        } else {
          const sub = hub.subscribe(sink, opts(''));
          // With an anchor the command in progress is included; without one the next command to start is first.
          const expect = cmds.filter((c) => c.end > head);
          subs.push({ sink, expect, name: `seed ${seed} join@${head}`, head, sub });
        }
      }
      if (subs.length > 0 && rand() < 4 / chunks.length) {
        // A subscriber leaves (maybe the last one: decoding stops, and restarts mid-command with the next).
        const [gone] = subs.splice(Math.floor(rand() * subs.length), 1);
        (gone!.sub as { closed(): void }).closed();
      }
      source.feed(chunks[i]!);
      if (rand() < 0.5) await tick();
    }
    await tick();
    await tick();
    for (const s of subs) {
      if (source.snapshot === null && s.head === Infinity && s.sink.closed?.code === CloseCode.NotBoundary) {
        t.equal(s.sink.messages.length, 0, `${s.name}: no known boundary before it, refused with nothing sent`);
        refused++;
        continue;
      }
      t.equal(s.sink.closed, null, `${s.name}: still open`);
      const got = s.sink.messages.map(view);
      let want = s.expect.map(view);
      if (source.snapshot === null) {
        // Without a snapshot anchor, a live checkpoint may still let a joiner pick up the command in progress.
        if (got.length === want.length - 1 && s.expect[0] && s.expect[0].start <= s.head) want = want.slice(1);
        // db may be unknown (null) until a SELECT; where known it must be right.
        const anyDb = (m: ReturnType<typeof view>) => ({ ...m, db: 0 });
        t.strictSame(got.map(anyDb), want.map(anyDb), `${s.name}: commands`);
        const bad = got.filter((m, i) => m.db !== null && m.db !== want[i]?.db);
        t.strictSame(bad, [], `${s.name}: known dbs are right`);
      } else {
        t.strictSame(got, want, `${s.name}: commands and dbs`);
      }
    }
    hub.close();
    t.equal(source.decoding, false, 'decoding off once every subscriber left');
  }
});

t.test('internal, cmd, key and db filters', async (t) => {
  const source = new FakeSource();
  const hub = new StreamHub(source, { maxBuffered: 1 << 30, slowClient: 'disconnect', logger, turn: endless(), cpu: noCpu });
  const sinks = {
    all: new FakeSink(),
    noInternal: new FakeSink(),
    set: new FakeSink(),
    key: new FakeSink(),
    db: new FakeSink(),
  };
  hub.subscribe(sinks.all, opts(''));
  hub.subscribe(sinks.noInternal, opts('internal=0'));
  hub.subscribe(sinks.set, opts('cmd=SET,del'));
  hub.subscribe(sinks.key, opts('key=user:*&key=x%3F'));
  hub.subscribe(sinks.db, opts('db=2'));
  const cmds = [
    ['SELECT', '0'],
    ['SET', 'user:1', 'a'],
    ['PING'],
    ['SET', 'other', 'b'],
    ['DEL', 'q', 'user:2'],
    ['MSET', 'x1', '1', 'user:3', 'x'],
    ['SELECT', '2'],
    ['REPLCONF', 'GETACK', '*'],
    ['HSET', 'xy', 'f', 'v'],
    ['SET', Buffer.from([0xff, 0x00]), 'bin'],
  ];
  source.feed(Buffer.concat(cmds.map((c) => encodeCommand(c))));
  await tick();
  const names = (s: FakeSink) => s.messages.map((m) => m.cmd + (m.internal ? '!' : ''));
  t.strictSame(names(sinks.all), ['select', 'set', 'ping!', 'set', 'del', 'mset', 'select', 'replconf!', 'hset', 'set']);
  t.strictSame(names(sinks.noInternal), ['select', 'set', 'set', 'del', 'mset', 'select', 'hset', 'set']);
  t.strictSame(names(sinks.set), ['set', 'set', 'del', 'set']);
  t.strictSame(
    sinks.key.messages.map((m) => m.args[0]),
    ['user:1', 'q', 'x1', 'xy'],
    'key globs match any key of the command (DEL, MSET keys too)',
  );
  t.strictSame(names(sinks.db), ['select', 'replconf!', 'hset', 'set']);
  const bin = sinks.all.messages.at(-1)!;
  t.equal(bin.b64, true, 'a non-UTF-8 argument turns on base64');
  t.strictSame(bin.args, [Buffer.from([0xff, 0x00]).toString('base64'), Buffer.from('bin').toString('base64')]);
  hub.close();
});

t.test('from= outside the log or not at a command boundary is refused', async (t) => {
  const source = new FakeSource();
  const hub = new StreamHub(source, { maxBuffered: 1 << 30, slowClient: 'disconnect', logger, turn: endless(), cpu: noCpu });
  const a = encodeCommand(['SET', 'a', '1']);
  source.feed(Buffer.concat([a, a]));
  const ahead = new FakeSink();
  hub.subscribe(ahead, opts(`from=${source.log.endOffset + 2}`));
  t.equal(ahead.closed?.code, CloseCode.OffsetGone);
  const mid = new FakeSink();
  hub.subscribe(mid, opts(`from=${a.length}`));
  await tick();
  t.equal(mid.closed?.code, CloseCode.NotBoundary);
  const other = new FakeSink();
  hub.subscribe(other, opts(`from=1&replid=${'ab'.repeat(20)}`));
  t.equal(other.closed?.code, CloseCode.OffsetGone, 'another history');
  const ok = new FakeSink();
  hub.subscribe(ok, opts(`from=${a.length + 1}&replid=${source.ids.replid}`));
  await tick();
  t.equal(ok.closed, null);
  t.strictSame(ok.messages.map((m) => m.offset), [2 * a.length]);
  // No anchor: the scan starts at `from` itself and fails on the first byte.
  source.snapshot = null;
  const blind = new FakeSink();
  hub.subscribe(blind, opts(`from=3`));
  await tick();
  t.equal(blind.closed?.code, CloseCode.NotBoundary);
  hub.close();
  t.equal(ok.closed?.code, CloseCode.GoingAway);
});

t.test('a live subscriber past max-buffered is disconnected, or its messages dropped and counted', async (t) => {
  const source = new FakeSource();
  const events = recordTelemetry();
  t.teardown(() => events.close());
  const hub = new StreamHub(source, { maxBuffered: 1000, slowClient: 'disconnect', logger, telemetry: events.telemetry, turn: endless(), cpu: noCpu });
  const sink = new FakeSink();
  hub.subscribe(sink, opts(''));
  source.feed(encodeCommand(['SET', 'a', '1']));
  await tick();
  t.equal(sink.messages.length, 1);
  sink.buffered = 990;
  source.feed(encodeCommand(['SET', 'b', 'x'.repeat(100)]));
  await tick();
  t.equal(sink.closed?.code, CloseCode.SlowConsumer);
  t.equal(events.messages('stream.slow-disconnect').length, 1, 'one stream.slow-disconnect message');
  t.equal(hub.jsonSubscribers, 0);
  t.equal(source.decoding, false, 'decoding stops with the last JSON subscriber');

  const hub2 = new StreamHub(source, { maxBuffered: 1000, slowClient: 'drop', logger, telemetry: events.telemetry, turn: endless(), cpu: noCpu });
  const s2 = new FakeSink();
  hub2.subscribe(s2, opts(''));
  s2.buffered = 900;
  source.feed(encodeCommand(['SET', 'c', 'x'.repeat(100)]));
  source.feed(encodeCommand(['SET', 'd', '1']));
  await tick();
  t.strictSame(s2.messages.map((m) => m.args[0]), ['d'], 'the message that did not fit was dropped, the next sent');
  t.equal(events.telemetry.traffic.webDroppedMessages, 1, 'the drop is counted');
  t.equal(s2.closed, null);
  hub2.close();
});

t.test('a live subscriber that does not read is handed 256 KiB; the rest waits in the hub, counted, until max-buffered closes it', async (t) => {
  const source = new FakeSource();
  const hub = new StreamHub(source, { maxBuffered: 4 * MiB, slowClient: 'disconnect', logger, turn: endless(), cpu: noCpu });
  const sink = new FillingSink();
  hub.subscribe(sink, opts(''));
  const cmd = encodeCommand(['SET', 'k', 'v'.repeat(1000)]);
  const feed = async (bytes: number): Promise<void> => {
    for (let fed = 0; fed < bytes; fed += cmd.length) {
      source.feed(cmd);
      await Promise.resolve();
    }
    await tick();
  };
  await feed(3 * MiB);
  t.equal(sink.closed, null, 'under max-buffered: still open');
  t.ok(sink.buffered <= 256 * 1024 + 2048, `its socket was handed at most 256 KiB and a message (${sink.buffered} bytes)`);
  t.ok(hub.bufferedBytes > 3 * MiB - 2048, `what waits is counted as its queue (${hub.bufferedBytes} bytes)`);
  await feed(2 * MiB);
  t.equal(sink.closed?.code, CloseCode.SlowConsumer, 'past max-buffered: closed as a slow consumer');
  t.ok(sink.buffered <= 256 * 1024 + 2048, `its socket still held at most 256 KiB and a message (${sink.buffered} bytes)`);
  t.equal(hub.jsonSubscribers, 0);
  hub.close();
});

t.test('after a message larger than max-buffered is read, later messages are delivered (slow-client drop and disconnect)', async (t) => {
  for (const slowClient of ['drop', 'disconnect'] as const) {
    for (const told of [true, false]) {
      const source = new FakeSource();
      const hub = new StreamHub(source, { maxBuffered: 1000, slowClient, logger, turn: endless(), cpu: noCpu });
      const sink = new FillingSink();
      const sub = hub.subscribe(sink, opts(''));
      source.feed(encodeCommand(['SET', 'big', 'x'.repeat(5000)]));
      await tick();
      t.equal(sink.messages.length, 1, 'the large message is sent to an empty socket');
      sink.buffered = 0; // the client read it
      if (told) sub.drain();
      source.feed(encodeCommand(['SET', 'after', '1']));
      await tick();
      const what = `${slowClient}, ${told ? 'with' : 'before'} the drain event`;
      t.equal(sink.closed, null, `${what}: still open`);
      t.strictSame(sink.messages.at(-1)?.args, ['after', '1'], `${what}: the next message is delivered`);
      hub.close();
    }
  }
});

t.test('from= more than 64 MiB after the last known boundary: checked from the snapshot (a value that looks like a command is refused with 4011; a real boundary gets its db)', async (t) => {
  const source = new FakeSource(128 * MiB);
  source.snapshot = { offset: 0 };
  const hub = new StreamHub(source, { maxBuffered: 1 << 30, slowClient: 'disconnect', logger, turn: endless(), cpu: noCpu });
  source.feed(encodeCommand(['SELECT', '2']));
  const filler = 'f'.repeat(MiB);
  for (let i = 0; i < 66; i++) source.feed(encodeCommand(['SET', `filler:${i}`, filler]));
  const forged = '*3\r\n$3\r\nDEL\r\n$7\r\naccount\r\n$5\r\nadmin\r\n';
  const before = source.log.endOffset;
  const innocent = encodeCommand(['SET', 'innocent', forged]);
  source.feed(innocent);
  const inside = before + innocent.indexOf('*3', 4) + 1;
  source.feed(encodeCommand(['SET', 'next', '1']));
  const real = source.log.endOffset + 1;
  source.feed(encodeCommand(['SET', 'k', 'v']));

  const forgery = new FakeSink();
  hub.subscribe(forgery, opts(`from=${inside}`));
  await waitForTicks(() => forgery.closed !== null || forgery.messages.length > 0);
  t.equal(forgery.closed?.code, CloseCode.NotBoundary, 'a from= inside a value is refused with 4011');
  t.notOk(forgery.messages.some((m) => m.cmd === 'del'), 'no command the master never ran');

  const resumed = new FakeSink();
  hub.subscribe(resumed, opts(`from=${real}`));
  await waitForTicks(() => resumed.messages.length > 0 || resumed.closed !== null);
  t.strictSame(view(resumed.messages[0]!), { offset: source.log.endOffset, db: 2, cmd: 'set', args: ['k', 'v'] }, 'a from= at a command gets it, with its db');
  hub.close();
});

t.test('live messages to many subscribers share a turn budget: the rest are sent on later turns, all of them, in order', async (t) => {
  const source = new FakeSource();
  let now = 0;
  const turn = new TurnBudget(5, () => now);
  const hub = new StreamHub(source, { maxBuffered: MiB, slowClient: 'disconnect', logger, turn, cpu: noCpu });
  class SlowSink extends FakeSink {
    override send(msg: string | Uint8Array, binary: boolean): void {
      super.send(msg, binary);
      now += 1; // each send takes a millisecond
    }
  }
  const sinks = Array.from({ length: 20 }, () => new SlowSink());
  for (const s of sinks) hub.subscribe(s, opts(''));
  for (let i = 0; i < 3; i++) source.feed(encodeCommand(['SET', `k${i}`, 'v']));
  await Promise.resolve();
  const first = sinks.filter((s) => s.messages.length > 0).length;
  t.ok(first > 0 && first < sinks.length, `the first turn served some subscribers, not all (${first} of ${sinks.length})`);
  await waitForTicks(() => sinks.every((s) => s.messages.length === 3));
  for (const s of sinks) t.strictSame(s.messages.map((m) => m.args[0]), ['k0', 'k1', 'k2']);
  hub.close();
});

t.test("raw subscribers' queues count toward web.max-buffered-total: past it the one holding the most is closed", async (t) => {
  const source = new FakeSource();
  const hub = new StreamHub(source, { maxBuffered: 64 * 1024, maxBufferedTotal: 100_000, slowClient: 'disconnect', logger, turn: endless(), cpu: noCpu });
  const cmd = encodeCommand(['SET', 'k', 'v'.repeat(1000)]);
  const a = new FillingSink();
  const b = new FillingSink();
  hub.subscribe(a, opts('format=raw'));
  for (let i = 0; i < 40; i++) source.feed(cmd);
  hub.subscribe(b, opts('format=raw'));
  for (let i = 0; i < 80; i++) source.feed(cmd);
  t.equal(a.closed?.code, CloseCode.SlowConsumer, 'the one holding the most is closed');
  t.equal(b.closed, null, 'the other stays');
  t.equal(hub.rawSubscribers, 1);
  hub.close();
});

t.test('a catching-up subscriber is paced by its socket and closed when the log drops its next byte', async (t) => {
  const source = new FakeSource(16 * 1024);
  source.snapshot = null;
  const hub = new StreamHub(source, { maxBuffered: 4096, slowClient: 'disconnect', logger, turn: endless(), cpu: noCpu });
  const cmd = encodeCommand(['SET', 'k', 'v'.repeat(100)]);
  for (let i = 0; i < 50; i++) source.feed(cmd);
  const sink = new FakeSink();
  sink.buffered = 10_000;
  const from = Math.ceil((source.log.firstOffset - 1) / cmd.length) * cmd.length + 1;
  source.snapshot = { offset: from - 1 }; // a known boundary: from= is checked there
  const sub = hub.subscribe(sink, opts(`from=${from}`));
  await tick();
  t.equal(sink.closed, null, 'paused, not closed');
  const before = sink.messages.length;
  t.ok(before < 10, 'paced: little sent while the socket is full');
  for (let i = 0; i < 400; i++) source.feed(cmd);
  await tick();
  t.equal(sink.messages.length, before, 'nothing sent while paused');
  sink.buffered = 0;
  sub.drain();
  t.equal(sink.closed?.code, CloseCode.FellBehind, 'the log trimmed past it while it was paused');
  t.equal(hub.jsonSubscribers, 0);
  hub.close();
});

t.test('a raw subscriber gets the offset, then the bytes, paced, and is closed when it falls out of the log', async (t) => {
  const source = new FakeSource(16 * 1024);
  const hub = new StreamHub(source, { maxBuffered: 8192, slowClient: 'disconnect', logger, turn: endless(), cpu: noCpu });
  const cmd = encodeCommand(['SET', 'k', 'v'.repeat(200)]);
  source.feed(cmd);
  const sink = new FakeSink();
  const sub = hub.subscribe(sink, opts('format=raw&from=1'));
  t.strictSame(JSON.parse(sink.texts[0]!), { offset: 1, replid: source.ids.replid });
  t.strictSame(Buffer.concat(sink.raw), cmd);
  source.feed(cmd);
  t.strictSame(Buffer.concat(sink.raw), Buffer.concat([cmd, cmd]));
  sink.buffered = 9000;
  for (let i = 0; i < 200; i++) source.feed(cmd);
  t.equal(Buffer.concat(sink.raw).length, 2 * cmd.length, 'paused at max-buffered');
  sink.buffered = 0;
  sub.drain();
  t.equal(sink.closed?.code, CloseCode.FellBehind);
  t.equal(hub.rawSubscribers, 0);
  hub.close();
});

t.test('a full resync upstream closes every subscriber with 4012', async (t) => {
  const source = new FakeSource();
  const hub = new StreamHub(source, { maxBuffered: 1 << 20, slowClient: 'disconnect', logger, turn: endless(), cpu: noCpu });
  const a = new FakeSink();
  const b = new FakeSink();
  hub.subscribe(a, opts(''));
  hub.subscribe(b, opts('format=raw'));
  source.feed(encodeCommand(['SET', 'a', '1']));
  source.fullSync(5000);
  t.equal(a.closed?.code, CloseCode.NewHistory);
  t.equal(b.closed?.code, CloseCode.NewHistory);
  t.equal(hub.jsonSubscribers + hub.rawSubscribers, 0);
  // A failover (new replid, the old one as replid2) keeps the history and the subscribers.
  const d = new FakeSink();
  hub.subscribe(d, opts(''));
  source.ids.shift('e'.repeat(40), source.log.endOffset);
  t.equal(d.closed, null, 'a failover (a new replid, the history continues) is not a new history');
  source.fullSync(source.log.endOffset);
  t.equal(d.closed?.code, CloseCode.NewHistory, 'a full sync is');
  const c = new FakeSink();
  hub.subscribe(c, opts(''));
  source.feed(encodeCommand(['SELECT', '1']));
  source.feed(encodeCommand(['SET', 'b', '2']));
  await tick();
  t.strictSame(c.messages.map((m) => [m.offset > 5000, m.db, m.cmd]), [[true, 1, 'select'], [true, 1, 'set']]);
  hub.close();
});

t.test('live delivery takes at most half the relay\'s time: past it live subscribers are closed as slow (or miss messages, counted, with slow-client drop) and the stream goes on', async (t) => {
  for (const slowClient of ['disconnect', 'drop'] as const) {
    const source = new FakeSource();
    // Each upstream read (here: 100 commands, then a turn) costs 20 ms of CPU in 10 ms of wall time, four times the
    // share the relay gives: the burst allowance runs out within the 20 reads.
    let now = 0;
    let cpu = 0;
    const hub = new StreamHub(source, { maxBuffered: 64 * MiB, slowClient, logger, turn: endless(), now: () => now, cpu: () => cpu });
    const sinks = Array.from({ length: 3 }, () => new FakeSink());
    const subs = sinks.map((s) => hub.subscribe(s, opts('')));
    let fed = 0;
    for (let i = 0; i < 2000; i++) {
      const cmd = encodeCommand(['SET', `k${i}`, 'v']);
      source.feed(cmd);
      fed += cmd.length;
      if (i % 100 === 99) {
        // An upstream read's worth: its commands were delivered, the charge is taken after it; then a turn.
        cpu += 20;
        now += 10;
        await tick();
      }
    }
    await waitForTicks(() => sinks.every((s, i) => s.closed !== null || s.messages.length + subs[i]!.stats.dropped >= 2000));
    for (const [i, s] of sinks.entries()) {
      if (slowClient === 'disconnect') {
        t.equal(s.closed?.code, CloseCode.SlowConsumer, `${slowClient}: subscriber ${i} closed as slow`);
        t.ok(s.messages.length > 0 && s.messages.length < 2000, `${slowClient}: after ${s.messages.length} messages`);
      } else {
        t.equal(s.closed, null, `${slowClient}: subscriber ${i} stays`);
        t.ok(subs[i]!.stats.dropped > 0, `${slowClient}: ${subs[i]!.stats.dropped} messages dropped and counted`);
        const args = s.messages.map((m) => Number(m.args[0]!.slice(1)));
        t.strictSame(args, [...args].sort((a, b) => a - b), `${slowClient}: what it got is in order`);
      }
    }
    t.equal(source.log.endOffset, fed, `${slowClient}: the log has every byte`);
    hub.close();
  }

  // Half of the relay's time: each read costs what its wall time earns back, and everyone gets everything.
  const source = new FakeSource();
  let now = 0;
  let cpu = 0;
  const hub = new StreamHub(source, { maxBuffered: 64 * MiB, slowClient: 'disconnect', logger, turn: endless(), now: () => now, cpu: () => cpu });
  const sink = new FakeSink();
  hub.subscribe(sink, opts(''));
  for (let i = 0; i < 2000; i++) {
    source.feed(encodeCommand(['SET', `k${i}`, 'v']));
    if (i % 100 === 99) {
      cpu += 5;
      now += 10;
      await tick();
    }
  }
  await waitForTicks(() => sink.messages.length === 2000);
  t.equal(sink.closed, null, 'within its share: nobody is closed');
  hub.close();
});
