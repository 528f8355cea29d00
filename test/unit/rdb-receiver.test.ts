import t from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { RdbReceiver, RdbReceiverState } from '../../src/upstream/rdb-receiver.js';
import { ProtocolError } from '../../src/errors.js';
import { Crc64 } from '../../src/backlog/crc64.js';
import { ways, mulberry32, randomSplit } from '../helpers/chunks.js';
import { waitFor } from '../helpers/wait.js';
import { smallFilesystem } from '../helpers/small-fs.js';

const MARK = 'f3a1c9e07b5d2486aa0193cc7e5f1b2d4c6e8a90';

/** An RDB-looking payload with bytes that look like protocol: newlines, `$`, CR LF, and a prefix of the mark. */
function payload(len: number, seed = 1): Buffer {
  const rand = mulberry32(seed);
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = Math.floor(rand() * 256);
  Buffer.from('REDIS0011').copy(b, 0);
  if (len > 200) {
    Buffer.from('\r\n$EOF:\n\n$12\r\n').copy(b, 50);
    // Almost the mark (39 of its 40 bytes), near the end: must not end the transfer.
    Buffer.from(MARK.slice(0, 39), 'latin1').copy(b, len - 100);
  }
  return b;
}

const STREAM = Buffer.from('*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n', 'latin1');

interface Fed {
  done: boolean;
  /** Index of the chunk whose push reported done. */
  doneAt: number;
  /** Bytes reported after the payload: the done push's rest, then whole chunks pushed after it. */
  rest: Buffer;
  states: string[];
  receivedLog: number[];
  file: Buffer;
  rx: RdbReceiver;
}

async function feed(path: string, chunks: Buffer[], stopAtDone = false): Promise<Fed> {
  const rx = new RdbReceiver(path);
  let done = false;
  let doneAt = -1;
  const rest: Buffer[] = [];
  const states: string[] = [];
  const receivedLog: number[] = [];
  for (const [i, c] of chunks.entries()) {
    const r = rx.push(c);
    states.push(rx.state);
    receivedLog.push(rx.received);
    if (r.done && !done) {
      done = true;
      doneAt = i;
      if (r.rest === null) throw new Error('done without rest');
      rest.push(Buffer.from(r.rest));
      if (stopAtDone) break;
    } else if (done) {
      if (!r.done || r.rest === null) throw new Error('not done after done');
      rest.push(Buffer.from(r.rest));
    } else if (r.rest !== null) {
      throw new Error('rest before done');
    }
  }
  await rx.finish();
  return { done, doneAt, rest: Buffer.concat(rest), states, receivedLog, file: await fsp.readFile(path), rx };
}

const bulk = (rdb: Buffer, keepalives = '') => Buffer.concat([Buffer.from(`${keepalives}$${rdb.length}\r\n`), rdb]);
const eof = (rdb: Buffer, keepalives = '') => Buffer.concat([Buffer.from(`${keepalives}$EOF:${MARK}\r\n`), rdb, Buffer.from(MARK, 'latin1')]);

t.test('$<len> payload followed by stream bytes', async (t) => {
  const rdb = payload(5000);
  for (const keepalives of ['', '\n', '\n\n\n\n']) {
    const input = Buffer.concat([bulk(rdb, keepalives), STREAM]);
    for (const [how, chunks] of ways(input, 7, 4)) {
      t.test(`${JSON.stringify(keepalives)} keepalives, ${how}`, async (t) => {
        const dir = t.testdir();
        const r = await feed(join(dir, 'x.rdb'), chunks);
        t.ok(r.done);
        t.ok(r.file.equals(rdb), 'file content equals the RDB bytes');
        t.ok(r.rest.equals(STREAM), 'rest holds the bytes after the payload');
        t.equal(r.rx.received, rdb.length);
        t.equal(r.rx.total, rdb.length);
        t.notOk(r.rx.eofMarked);
        t.equal(r.rx.state, RdbReceiverState.Done);
        // received never runs ahead of what was fed and never goes backwards.
        let fed = 0;
        const headerLen = input.length - STREAM.length - rdb.length;
        for (const [i, c] of chunks.entries()) {
          fed += c.length;
          const want = Math.min(rdb.length, Math.max(0, fed - headerLen));
          if (r.receivedLog[i] !== want) t.fail(`after chunk ${i}: received ${r.receivedLog[i]}, want ${want}`);
        }
      });
    }
  }
});

t.test('an RDB saved without checksums (rdbchecksum no) is written with the CRC-64 of its bytes as they arrived in its zero trailer', async (t) => {
  const rand = mulberry32(7);
  const dir = t.testdir();
  const wrong: string[] = [];
  for (let round = 0; round < 40; round++) {
    const size = 9 + 8 + Math.floor(rand() * 3000);
    const rdb = payload(size, round + 2000);
    rdb.fill(0, size - 8);
    const crc = new Crc64();
    crc.update(rdb, 0, size - 8);
    const sealed = Buffer.concat([rdb.subarray(0, size - 8), crc.digestLE()]);
    const useEof = round % 2 === 0;
    const input = useEof ? eof(rdb) : Buffer.concat([bulk(rdb), STREAM]);
    const r = await feed(join(dir, `z${round}.rdb`), randomSplit(input, rand));
    if (!r.done || !r.file.equals(sealed) || !r.rest.equals(useEof ? Buffer.alloc(0) : STREAM)) wrong.push(`round ${round} (size ${size}, eof ${useEof})`);
    r.rx.verify();
  }
  t.same(wrong, [], 'every round: the file holds the RDB with its computed CRC-64 as the trailer');
  const old = payload(100, 5);
  Buffer.from('REDIS0004').copy(old, 0);
  old.fill(0, 92);
  t.ok((await feed(join(dir, 'v4.rdb'), [bulk(old)])).file.equals(old), 'an RDB older than version 5 has no trailer: its last bytes are left as they are');
});

t.test('$<len> payload ending exactly at a chunk end has an empty rest', async (t) => {
  const rdb = payload(300);
  const r = await feed(join(t.testdir(), 'x.rdb'), [bulk(rdb)]);
  t.ok(r.done);
  t.equal(r.rest.length, 0);
  t.ok(r.file.equals(rdb));
});

t.test('$EOF:<mark> payload', async (t) => {
  for (const size of [1, 39, 40, 41, 5000]) {
    const rdb = payload(size, size);
    for (const keepalives of ['', '\n\n\n']) {
      const input = eof(rdb, keepalives);
      for (const [how, chunks] of ways(input, size, 4)) {
        t.test(`${size} bytes, ${JSON.stringify(keepalives)} keepalives, ${how}`, async (t) => {
          const r = await feed(join(t.testdir(), 'x.rdb'), chunks);
          t.ok(r.done);
          t.equal(r.doneAt, chunks.length - 1, 'done on the last chunk');
          t.ok(r.file.equals(rdb), 'file content equals the RDB bytes, mark excluded');
          t.equal(r.rest.length, 0);
          t.equal(r.rx.received, rdb.length);
          t.equal(r.rx.total, null);
          t.ok(r.rx.eofMarked);
        });
      }
    }
  }
});

t.test('random splits of many payload sizes', async (t) => {
  const rand = mulberry32(99);
  const dir = t.testdir();
  const wrong: string[] = [];
  let eofRounds = 0;
  for (let round = 0; round < 60; round++) {
    const size = Math.floor(rand() * 3000);
    const rdb = payload(size, round + 1000);
    const useEof = size > 0 && round % 2 === 0;
    if (useEof) eofRounds++;
    const input = useEof ? eof(rdb, '\n'.repeat(round % 3)) : Buffer.concat([bulk(rdb, '\n'.repeat(round % 3)), STREAM]);
    const r = await feed(join(dir, `r${round}.rdb`), randomSplit(input, rand));
    const got = { done: r.done, file: r.file.equals(rdb), rest: r.rest.equals(useEof ? Buffer.alloc(0) : STREAM), received: r.rx.received };
    const want = { done: true, file: true, rest: true, received: size };
    if (JSON.stringify(got) !== JSON.stringify(want)) wrong.push(`round ${round} (size ${size}, eof ${useEof}): ${JSON.stringify(got)}`);
  }
  t.same(wrong, [], 'every round: done, the file holds the RDB, the rest is the stream, received = size');
  t.ok(eofRounds > 10 && eofRounds < 50, `both kinds of payload were fed (${eofRounds} of 60 EOF-marked)`);
});

t.test('zero-length payload', async (t) => {
  for (const [how, chunks] of ways(Buffer.concat([Buffer.from('\n$0\r\n'), STREAM]))) {
    t.test(how, async (t) => {
      const r = await feed(join(t.testdir(), 'x.rdb'), chunks);
      t.ok(r.done);
      t.equal(r.file.length, 0);
      t.ok(r.rest.equals(STREAM));
      t.equal(r.rx.received, 0);
      t.equal(r.rx.total, 0);
    });
  }
  t.test('header alone completes the transfer', async (t) => {
    const r = await feed(join(t.testdir(), 'x.rdb'), [Buffer.from('$0\r\n')]);
    t.ok(r.done);
    t.equal(r.rest.length, 0);
  });
});

t.test('keepalives alone leave the receiver waiting for the header', async (t) => {
  const rx = new RdbReceiver(join(t.testdir(), 'x.rdb'));
  for (const c of ['\n', '\n\n', '\r\n', '$1', '2']) {
    const r = rx.push(Buffer.from(c));
    t.same(r, { done: false, rest: null, backpressure: false }, JSON.stringify(c));
    t.equal(rx.state, RdbReceiverState.Header);
  }
  t.equal(rx.total, null);
  rx.push(Buffer.from('\r\n'));
  t.equal(rx.state, RdbReceiverState.Bulk);
  t.equal(rx.total, 12);
  await rx.abort();
});

t.test('bad headers are protocol errors', async (t) => {
  const bad: Array<[string, string]> = [
    ['+OK\r\n', 'not a bulk header'],
    ['*1\r\n', 'an array'],
    ['$abc\r\n', 'a non-numeric length'],
    ['$-1\r\n', 'a negative length'],
    ['$12x\r\n', 'trailing garbage'],
    ['$1.5\r\n', 'a fractional length'],
    ['$EOF:short\r\n', 'a short EOF mark'],
    [`$EOF:${MARK}x\r\n`, 'a long EOF mark'],
    ['-ERR something went wrong\r\n', 'an -ERR line'],
    ['\n\n-LOADING Redis is loading\r\n', 'an error after keepalives'],
    ['$' + '1'.repeat(300), 'a header too long without newline'],
  ];
  for (const [input, what] of bad) {
    for (const [how, chunks] of ways(input, 3, 2)) {
      t.test(`${what}, ${how}`, async (t) => {
        const rx = new RdbReceiver(join(t.testdir(), 'x.rdb'));
        let thrown: unknown = null;
        try {
          for (const c of chunks) rx.push(c);
        } catch (err) {
          thrown = err;
        }
        t.type(thrown, ProtocolError);
        t.equal((thrown as ProtocolError).code, 'RELAY_ERR_PROTOCOL');
        await rx.abort();
      });
    }
  }
});

t.test("an upstream that does not know SYNC (a Sentinel, a proxy) is named as no Redis master, with what to do", async (t) => {
  const rx = new RdbReceiver(join(t.testdir(), 'x.rdb'));
  t.throws(() => rx.push(Buffer.from("-ERR unknown command 'SYNC', with args beginning with: \r\n")), {
    code: 'RELAY_ERR_PROTOCOL',
    message: /^upstream aborted the transfer: -ERR unknown command 'SYNC'.* it is no Redis master; if it is a Sentinel, list it in upstream\.sentinel\.nodes/,
  });
  await rx.abort();
  const other = new RdbReceiver(join(t.testdir(), 'y.rdb'));
  t.throws(() => other.push(Buffer.from('-ERR Unable to perform background save\r\n')), { message: 'upstream aborted the transfer: -ERR Unable to perform background save' }, "a master's own refusal gets no hint");
  await other.abort();
});

t.test('a payload length that is not plain digits is a protocol error', async (t) => {
  for (const header of ['$', '$ 3', '$+3', '$0x3', '$3e0', '$3.0']) {
    const rx = new RdbReceiver(join(t.testdir(), `x${header.length}${header.charCodeAt(1) || 0}.rdb`));
    t.throws(() => rx.push(Buffer.from(`${header}\r\nREDIS0011`)), { code: 'RELAY_ERR_PROTOCOL' }, header);
    await rx.abort();
  }
});

t.test('push after done returns the whole chunk as rest', async (t) => {
  const rx = new RdbReceiver(join(t.testdir(), 'x.rdb'));
  t.ok(rx.push(Buffer.from('$2\r\nab')).done);
  const r = rx.push(Buffer.from('more'));
  t.ok(r.done);
  t.equal(r.rest?.toString(), 'more');
  t.equal(rx.received, 2);
  await rx.finish();
});

t.test('a large chunk reports backpressure and drained() resolves', async (t) => {
  const path = join(t.testdir(), 'x.rdb');
  const rdb = payload(1 << 20);
  const rx = new RdbReceiver(path);
  const r = rx.push(bulk(rdb));
  t.ok(r.done);
  t.ok(r.backpressure, 'a 1 MiB write exceeds the stream buffer');
  await rx.drained();
  await rx.finish();
  t.ok((await fsp.readFile(path)).equals(rdb));
});

/** The error an empty push (which changes nothing) throws, or undefined. */
function pushError(rx: RdbReceiver): NodeJS.ErrnoException | undefined {
  try {
    rx.push(Buffer.alloc(0));
    return undefined;
  } catch (err) {
    return err as NodeJS.ErrnoException;
  }
}

t.test('drained() resolves at once without backpressure', async (t) => {
  const rx = new RdbReceiver(join(t.testdir(), 'x.rdb'));
  rx.push(Buffer.from('$3\r\nab'));
  // "At once": within the same turn, before a microtask queued after the call (a wait for 'drain' comes later).
  const order: string[] = [];
  const drained = rx.drained().then(() => order.push('drained'));
  await Promise.resolve().then(() => order.push('queued after'));
  await drained;
  t.same(order, ['drained', 'queued after']);
  await rx.abort();
});

t.test('abort() stops writing and resolves; a second abort() too', async (t) => {
  const path = join(t.testdir(), 'x.rdb');
  const rx = new RdbReceiver(path);
  rx.push(Buffer.from('$100\r\nabc'));
  await t.resolves(rx.abort(), 'the first abort() resolves');
  await t.resolves(rx.abort(), 'so does a second one');
  // abort() resolved on the file's 'close': nothing is pending, and bytes pushed after it never reach the file.
  rx.push(Buffer.from('def'));
  t.ok('abc'.startsWith(await fsp.readFile(path, 'latin1')), 'the file holds at most what was pushed before abort()');
});

t.test('a file error surfaces on the next push and in finish()', async (t) => {
  const rx = new RdbReceiver(join(t.testdir(), 'missing-dir', 'x.rdb'));
  // The open fails asynchronously: poll with empty pushes until one reports it.
  const err = await waitFor(() => pushError(rx), { what: 'a push to report the failed open', intervalMs: 5 });
  t.equal(err.code, 'ENOENT');
  t.throws(() => rx.push(Buffer.from('$1\r\na')), { code: 'ENOENT' }, 'every later push reports it');
  await t.rejects(rx.finish(), { code: 'ENOENT' });
});

t.test('a reader taking the RDB as it arrives reads the exact bytes, from memory while it keeps pace and from the file after', async (t) => {
  const rdb = payload(12 * 1024 * 1024, 7); // more than the 8 MiB kept in memory
  for (const [name, framed] of [['$<len>', bulk(rdb)], ['EOF-marked', eof(rdb)]] as const) {
    const dir = t.testdir({});
    const rx = new RdbReceiver(join(dir, `rx-${name === '$<len>' ? 'bulk' : 'eof'}.rdb`), { shareReads: true });
    const reader = rx.openReader();
    const rnd = mulberry32(name.length);
    let read = 0;
    for (const chunk of randomSplit(framed, rnd)) {
      rx.push(chunk);
      // Reads of every size, spanning pieces, each checked against the payload.
      const upTo = rx.flushed;
      while (read < upTo) {
        const n = Math.min(upTo - read, 1 + Math.floor(rnd() * 300_000));
        const got = await reader.read(read, n);
        t.equal(got.length, n);
        if (!got.equals(rdb.subarray(read, read + n))) t.fail(`${name}: bytes ${read}..${read + n} differ`);
        read += n;
      }
      await rx.drained();
      await rx.waitBeyond(Math.min(read, rdb.length - 1));
    }
    await rx.finish();
    // Long after: the oldest bytes come from the file.
    t.ok((await reader.read(0, 4096)).equals(rdb.subarray(0, 4096)), `${name}: the first bytes, from the file`);
    t.ok((await reader.read(rdb.length - 100, 100)).equals(rdb.subarray(rdb.length - 100)), `${name}: the last bytes`);
    reader.close();
    rx.releaseReaders();
  }
});

t.test('a full disk mid-transfer fails it at once: it never waits on a file that failed, and the RDB cut short is never taken as received', async (t) => {
  const { dir } = smallFilesystem(t, 'tmpfs', '64k');
  const rx = new RdbReceiver(join(dir, 'x.rdb'));
  // Past the file's write buffer (1 MiB): the socket waits for drained().
  const p = payload(3 * 1024 * 1024, 7);
  let failed: unknown = null;
  let stuck: NodeJS.Timeout | undefined;
  try {
    // As the upstream socket delivers it: 16 KiB reads, the file's backpressure honoured.
    const all = Buffer.concat([Buffer.from(`$${p.length}\r\n`), p]);
    const receive = async () => {
      for (let o = 0; o < all.length; o += 16 * 1024) {
        if (rx.push(all.subarray(o, o + 16 * 1024)).backpressure) await rx.drained();
      }
      await rx.finish();
    };
    // A deadline only to fail this test rather than hang it: drained() must settle once the file failed.
    const hung = new Promise<never>((_, reject) => (stuck = setTimeout(() => reject(new Error('the transfer hung waiting for drained()')), 5000)));
    await Promise.race([receive(), hung]);
  } catch (err) {
    failed = err;
  } finally {
    clearTimeout(stuck);
  }
  t.match(failed, { code: 'ENOSPC' }, 'the transfer fails with ENOSPC');
  t.ok((await fsp.stat(join(dir, 'x.rdb'))).size < p.length, 'the file holds less than the payload');
});

t.test('a write that ran out of room, the stream destroyed before its error event: finish() rejects with ENOSPC, not with the destroyed stream', async (t) => {
  // A full disk must be told apart from any other failure (a fetch that ran out of room waits for room instead of
  // forking the master again at once): CI's snapshot fetch failed with 'Cannot call end after a stream was destroyed'.
  // Closing takes a while, as a file's descriptor does: its 'error' event waits for that.
  const sink = new Writable({ write: (_chunk, _enc, cb) => cb(), destroy: (err, cb) => void setTimeout(() => cb(err), 20) });
  const rx = new RdbReceiver(join(t.testdir(), 'x.rdb'), { sink });
  rx.push(Buffer.from('$4\r\nabcd'));
  // As a write that failed destroys a file stream: at once, its 'error' event once the descriptor is closed.
  sink.destroy(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));
  await t.rejects(rx.finish(), { code: 'ENOSPC' });
});
