import t, { type Test } from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { LogRangeError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { DiskLog, DiskLogState, type DiskLogOptions } from '../../src/backlog/disk-log.js';
import { ReplLog } from '../../src/backlog/repl-log.js';
import { nodeFileIo } from '../../src/backlog/file-io.js';
import { CrashError, FaultyIo } from '../helpers/faulty-io.js';
import { flipByte } from '../helpers/damage.js';
import { pieceStart } from '../../src/backlog/segment-sums.js';
import { waitFor } from '../helpers/wait.js';
import { recordTelemetry, type TelemetryRecorder } from '../helpers/telemetry.js';

const silent = createLogger('silent');

/** A deterministic replication stream: SET commands of varied sizes (a few larger than a segment), with command ends. */
function makeStream(n: number, seed: number): { bytes: Buffer; ends: number[] } {
  let x = seed;
  const rand = (): number => {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    return x / 0x7fffffff;
  };
  const parts: Buffer[] = [];
  const ends: number[] = [];
  let off = 0;
  for (let i = 0; i < n; i++) {
    const size = rand() < 0.03 ? 9000 + Math.floor(rand() * 3000) : Math.floor(rand() * 300);
    const value = Buffer.alloc(size, 97 + (i % 26));
    const cmd = Buffer.concat([Buffer.from(`*3\r\n$3\r\nSET\r\n$${String(i).length + 4}\r\nkey:${i}\r\n$${size}\r\n`), value, Buffer.from('\r\n')]);
    parts.push(cmd);
    off += cmd.length;
    ends.push(off);
  }
  return { bytes: Buffer.concat(parts), ends };
}

/** Appends `bytes[from..to)` to the log in socket-like chunks, each with the last command boundary it completes. */
function feed(log: ReplLog, s: { bytes: Buffer; ends: number[] }, from: number, to: number, seed = 7): void {
  let x = seed;
  let o = from;
  let e = 0;
  while (o < to) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    const len = Math.min(to - o, 1 + (x % 6000));
    const chunkEnd = o + len; // offset of the chunk's last byte
    while (e < s.ends.length && s.ends[e]! <= chunkEnd) e++;
    const boundary = e > 0 ? s.ends[e - 1]! : 0;
    log.append(s.bytes.subarray(o, o + len), boundary);
    o += len;
  }
}

/** Feeds like a live link: a piece at a time, letting the disk keep up between pieces. */
async function feedPaced(log: ReplLog, disk: DiskLog, s: { bytes: Buffer; ends: number[] }, from: number, to: number): Promise<void> {
  for (let o = from; o < to; o += 16 * 1024) {
    feed(log, s, o, Math.min(to, o + 16 * 1024));
    await waitFor(() => disk.writtenOffset === log.endOffset || undefined, { what: 'the disk keeps up', intervalMs: 1 });
  }
}

/** The held bytes from `o`, from memory or through the log's shared disk reads. */
async function readAt(log: ReplLog, o: number): Promise<Buffer> {
  for (;;) {
    const v = o >= log.memFirstOffset ? log.read(o)! : log.diskView(o);
    if (Buffer.isBuffer(v)) return v;
    await v;
  }
}

interface Setup {
  dir: string;
  io: FaultyIo;
  disk: DiskLog;
  log: ReplLog;
  /** What the disk log published. */
  events: TelemetryRecorder;
}

async function setup(t: Test, opts: Partial<DiskLogOptions> & { memory?: number; dir?: string; io?: FaultyIo } = {}): Promise<Setup> {
  const dir = opts.dir ?? t.testdir();
  const io = opts.io ?? new FaultyIo();
  const events = recordTelemetry();
  t.teardown(() => events.close());
  const disk = await DiskLog.open({
    dir,
    maxBytes: 1 << 30,
    segmentBytes: 4096,
    maxPending: 1 << 30,
    memory: 1 << 30,
    epoch: 1,
    logger: silent,
    io,
    retryMinMs: 5,
    retryMaxMs: 20,
    telemetry: events.telemetry,
    ...opts,
  });
  const log = new ReplLog(opts.memory ?? 1024);
  log.reset(disk.endOffset);
  log.attachDisk(disk);
  t.teardown(() => disk.close(100));
  return { dir, io, disk, log, events };
}

/** `n` copies of `piece` appended to `log` about a millisecond apart, as a busy socket delivers a stream. */
async function arriveInPieces(log: ReplLog, piece: Buffer, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    log.append(piece, log.endOffset + piece.length);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** Segment files of `dir`, in offset order, with their start offsets and contents. */
async function segments(dir: string): Promise<Array<{ name: string; start: number; data: Buffer }>> {
  const names = (await fsp.readdir(dir)).filter((n) => n.startsWith('seg-') && n.endsWith('.log')).sort();
  return Promise.all(names.map(async (name) => ({ name, start: Number(name.slice(15, 35)), data: await fsp.readFile(join(dir, name)) })));
}

/**
 * The bytes on disk from the first segment on, checked to be contiguous. The segment being written may end in the
 * zero padding of O_DIRECT writes: it is checked to be zeros and left out (`disk` tells where the bytes end).
 */
async function onDisk(t: Test, dir: string, disk?: DiskLog): Promise<{ first: number; data: Buffer }> {
  const segs = await segments(dir);
  for (let i = 1; i < segs.length; i++) t.equal(segs[i]!.start, segs[i - 1]!.start + segs[i - 1]!.data.length, `${segs[i]!.name} follows the previous segment`);
  const first = segs[0]?.start ?? 0;
  let data = Buffer.concat(segs.map((s) => s.data));
  if (disk && data.length > disk.endOffset - first + 1) {
    const end = disk.endOffset - first + 1;
    t.ok(data.length - end < 4096 && data.subarray(end).every((b) => b === 0), 'after its last byte, the open segment holds only the zero padding of one block');
    data = data.subarray(0, end);
  }
  return { first, data };
}

const isBoundary = (s: { ends: number[] }, offset: number): boolean => offset === 0 || s.ends.includes(offset);

/** Test names say which write path they run: through the page cache, or O_DIRECT (DirectWriter). */
const mode = (direct: boolean): string => (direct ? ' (O_DIRECT)' : '');

for (const direct of [false, true]) {
  t.test(`the stream lands on disk byte for byte, each segment starting right after a whole command${mode(direct)}`, async (t) => {
    const s = makeStream(400, 1);
    const { dir, disk, log } = await setup(t, { direct });
    feed(log, s, 0, s.bytes.length);
    await waitFor(() => disk.writtenOffset === s.bytes.length, { what: 'everything written' });
    const { first, data } = await onDisk(t, dir, disk);
    t.equal(first, 1);
    t.ok(data.equals(s.bytes), 'the disk holds the stream');
    const segs = await segments(dir);
    t.ok(segs.length > 10, `rolled into ${segs.length} segments`);
    for (const seg of segs) t.ok(isBoundary(s, seg.start - 1), `${seg.name} starts after a command boundary`);
    t.equal(disk.state, DiskLogState.Ok);
    t.equal(disk.direct, direct, direct ? 'written with O_DIRECT (the test dir takes it)' : 'written through the page cache');
    t.ok(log.memFirstOffset > 1, 'memory was trimmed once the disk held the bytes');
    t.ok(log.size <= 1024 + 12000, 'memory stays near log.memory');
    await disk.close();
    t.ok((await onDiskQuiet(dir)).data.equals(s.bytes), 'closed, every segment file holds exactly its bytes (no padding)');
  });

  t.test(`a busy stream goes to disk in writes of 4 MiB or more, not one per arrival${mode(direct)}`, async (t) => {
    // No write by the timer in this test: only 4 MiB pending starts one.
    const { dir, disk, io, log } = await setup(t, { direct, segmentBytes: 64 << 20, memory: 64 << 20, flushDelayMs: 60_000 });
    // 16 MiB as a busy socket delivers it: 64 KiB per turn of the event loop, each piece whole commands.
    const value = 'v'.repeat(1000);
    const cmd = `*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$${value.length}\r\n${value}\r\n`;
    const piece = Buffer.from(cmd.repeat(Math.floor((64 * 1024) / cmd.length)));
    const pieces = Math.ceil((16 << 20) / piece.length);
    await arriveInPieces(log, piece, pieces);
    await waitFor(() => disk.writtenOffset >= log.endOffset - (4 << 20) || undefined, { what: 'all but the last 4 MiB written' });
    t.ok(io.writes.length >= 1 && io.writes.every((n) => n >= 4 << 20), `every write took 4 MiB or more: ${io.writes.join(', ')}`);
    await disk.close();
    t.equal(disk.writtenOffset, log.endOffset, 'close() wrote the rest');
    t.ok((await onDiskQuiet(dir)).data.equals(Buffer.concat(new Array<Buffer>(pieces).fill(piece))), 'the disk holds the stream');
  });

  t.test(`a stream that goes quiet is fsynced about a second after the last fsync, not left unsynced until the next write${mode(direct)}`, async (t) => {
    const { disk, io, log } = await setup(t, { direct, flushDelayMs: 1, segmentBytes: 1 << 20 });
    const s = makeStream(20, 4);
    feed(log, s, 0, s.bytes.length);
    await waitFor(() => disk.writtenOffset === s.bytes.length || undefined, { what: 'written' });
    await waitFor(() => io.segmentSyncs > 0 || undefined, { what: 'an fsync of the segment with no further write', timeoutMs: 5000 });
    t.equal(disk.state, DiskLogState.Ok);
  });

  t.test(`under a small log.memory a write starts once an eighth of it is pending, not 4 MiB${mode(direct)}`, async (t) => {
    const { disk, io, log } = await setup(t, { direct, segmentBytes: 64 << 20, memory: 1 << 20, flushDelayMs: 60_000 });
    const piece = Buffer.from(`*1\r\n$${64 * 1024 - 14}\r\n${'x'.repeat(64 * 1024 - 14)}\r\n`);
    t.equal(piece.length, 64 * 1024);
    await arriveInPieces(log, piece, 32);
    await waitFor(() => io.writes.length >= 2 || undefined, { what: 'two writes' });
    // The first write takes what is pending when 128 KiB is (the pieces are 64 KiB): 4 MiB under the default.
    t.ok(io.writes[0]! <= 192 * 1024, `the first write carried ${io.writes[0]} bytes`);
    await disk.close();
    t.equal(disk.writtenOffset, log.endOffset, 'close() wrote the rest');
  });

  t.test(`short writes are continued where they stopped, and only written bytes count${mode(direct)}`, async (t) => {
    const s = makeStream(60, 2);
    const { dir, io, disk, log } = await setup(t, { direct });
    // Every write is cut to 61 bytes (less than most commands, coprime to the 4 KiB segments): cuts land inside
    // headers, values and line ends, and across segment rolls. (7 bytes made 9 times the file operations.)
    io.shortWrites(61);
    feed(log, s, 0, s.bytes.length);
    let sawPartial = false;
    await waitFor(
      async () => {
        const w = disk.writtenOffset;
        const { data } = await onDiskQuiet(dir);
        // Never more counted than the files hold.
        if (data.length < w) throw new Error(`writtenOffset ${w} > ${data.length} bytes on disk`);
        if (w > 0 && w < s.bytes.length) sawPartial = true;
        return w === s.bytes.length || undefined;
      },
      { what: 'everything written in 61-byte pieces', intervalMs: 1 },
    );
    t.ok(sawPartial, 'progress was observed mid-way');
    t.ok((await onDisk(t, dir, disk)).data.equals(s.bytes));
  });

  for (const code of ['EIO', 'ENOSPC', 'EFBIG']) {
    t.test(`${code} on writes: forwarding goes on from memory, the writes are retried, nothing is lost or shifted${mode(direct)}`, async (t) => {
      const s = makeStream(300, 3);
      const { dir, io, disk, log, events } = await setup(t, { direct });
      feed(log, s, 0, 20000);
      await waitFor(() => disk.writtenOffset === 20000, { what: 'the first part written' });
      io.failWrites(code, 6);
      feed(log, s, 20000, s.bytes.length);
      await waitFor(() => disk.state === DiskLogState.Failing || undefined, { what: 'failing' });
      t.match(disk.problem?.cause, new RegExp(code));
      // While failing, everything the disk lacks is still in memory and every held offset reads the true byte.
      t.ok(log.memFirstOffset <= disk.writtenOffset + 1, 'memory keeps what the disk has not taken');
      for (let o = log.firstOffset; o <= log.endOffset; o += 997) {
        const b = await readAt(log, o);
        t.equal(b[0], s.bytes[o - 1], `offset ${o}`);
      }
      await waitFor(() => disk.writtenOffset === s.bytes.length, { what: 'retries succeed' });
      t.equal(disk.state, DiskLogState.Ok);
      t.same(
        events.messages('disk.state').map((m) => [m.from, m.to]),
        [
          ['ok', 'failing'],
          ['failing', 'ok'],
        ],
        'disk.state: failing, then ok',
      );
      t.equal(events.messages('disk.write-error').length, 6, 'one disk.write-error per failed write');
      t.match(events.messages('disk.write-error')[0], { cause: new RegExp(code) });
      t.ok((await onDisk(t, dir, disk)).data.equals(s.bytes), 'the disk holds the stream, with no hole and no shift');
    });
  }

  t.test(`a hung write: reported failing, then past log.disk-queue the disk history is dropped and memory is bounded${mode(direct)}`, async (t) => {
    const s = makeStream(2000, 4);
    const { dir, io, disk, log, events } = await setup(t, { direct, maxPending: 64 * 1024, hungMs: 20, memory: 16 * 1024 });
    feed(log, s, 0, 30000);
    await waitFor(() => disk.writtenOffset === 30000, { what: 'the first part written' });
    io.hangWrites();
    feed(log, s, 30000, 50000);
    await waitFor(() => disk.state === DiskLogState.Failing || undefined, { what: 'the hung write reported' });
    t.match(disk.problem?.cause, /has not returned/);
    t.equal(log.firstOffset, 1, 'the disk history still serves the start');
    feed(log, s, 50000, 150000);
    t.equal(disk.state, DiskLogState.Detached, 'detached once the disk is past log.disk-queue');
    t.match(disk.problem?.cause, /log\.disk-queue/);
    t.ok(log.size <= 16 * 1024 + 6000, `memory is trimmed back to log.memory (${log.size})`);
    t.ok(log.firstOffset > 30000, 'offsets only on the dropped disk history are no longer held');
    t.notOk(log.holds(1));
    // The disk comes back: a new history starts at a command boundary, never spliced onto the old one.
    io.release();
    await waitFor(() => (disk.state === DiskLogState.Ok && disk.writtenOffset === log.endOffset) || undefined, { what: 'resumed and caught up' });
    const { first, data } = await onDisk(t, dir, disk);
    t.ok(first > 50000, `the new history starts at ${first}`);
    t.ok(isBoundary(s, first - 1), 'right after a whole command');
    t.ok(data.equals(s.bytes.subarray(first - 1, log.endOffset)), 'and holds the stream from there');
    await feedPaced(log, disk, s, 150000, s.bytes.length);
    t.ok((await onDisk(t, dir, disk)).data.equals(s.bytes.subarray(first - 1)));
    t.match(events.messages('disk.detached'), [{ cause: /log\.disk-queue/ }], 'one disk.detached');
  });
}

for (const direct of [false, true]) {
  t.test(`a hung checksum write (.sum) is reported as a hung write; the log catches up once it returns${mode(direct)}`, async (t) => {
    const s = makeStream(2000, 4);
    const { dir, io, disk, log } = await setup(t, { direct, hungMs: 20 });
    feed(log, s, 0, 30000);
    await waitFor(() => disk.writtenOffset === 30000, { what: 'the first part written' });
    io.hangWrites('sums');
    feed(log, s, 30000, 60000);
    // Both at once: on a loaded machine an ordinary write slower than hungMs is reported too, and returns.
    await waitFor(() => (io.hungWrites > 0 && disk.state === DiskLogState.Failing) || undefined, { what: 'a checksum write hung, and reported' });
    t.match(disk.problem?.cause, /has not returned/);
    io.release();
    await waitFor(() => (disk.state === DiskLogState.Ok && disk.writtenOffset === log.endOffset) || undefined, { what: 'resumed and caught up' });
    t.ok((await onDisk(t, dir, disk)).data.equals(s.bytes.subarray(0, 60000)), 'the disk holds the stream');
  });
}

/** Feeds like the upstream socket: read straight into the log's reserved space (read blocks, reused once dropped). */
function readFeed(log: ReplLog, s: { bytes: Buffer; ends: number[] }, from: number, to: number): void {
  let e = 0;
  for (let o = from; o < to; ) {
    const space = log.reserve(1024, 5000);
    const n = Math.min(to - o, space.length);
    s.bytes.copy(space, 0, o, o + n);
    while (e < s.ends.length && s.ends[e]! <= o + n) e++;
    log.commit(space, n, e > 0 ? s.ends[e - 1]! : 0);
    o += n;
  }
}

for (const refused of ['open', 'write'] as const) {
  t.test(`a filesystem that refuses O_DIRECT at ${refused}: the log writes through the page cache, nothing lost`, async (t) => {
    const s = makeStream(300, 12);
    const io = new FaultyIo();
    io.refuseDirect(refused);
    const { dir, disk, log, events } = await setup(t, { direct: true, io });
    feed(log, s, 0, s.bytes.length);
    await waitFor(() => disk.writtenOffset === s.bytes.length || undefined, { what: 'everything written' });
    t.equal(disk.direct, false, 'O_DIRECT given up');
    t.equal(disk.state, DiskLogState.Ok, 'never failing');
    t.same(events.messages('disk.write-error'), [], 'no write error reported');
    t.ok((await onDisk(t, dir, disk)).data.equals(s.bytes));
  });
}

t.test('a failed fsync of the directory after a new segment is reported as a write error and done again on the next fsync', async (t) => {
  const io = new FaultyIo();
  const { disk, log, events } = await setup(t, { io, segmentBytes: 1 << 20 });
  const s = makeStream(400, 21);
  const half = Math.floor(s.bytes.length / 2);
  io.failOps('syncDir', 'EIO', 1);
  feed(log, s, 0, half);
  await waitFor(() => events.messages('disk.write-error').length > 0 || undefined, { what: 'the failed directory fsync reported' });
  t.match(events.messages('disk.write-error')[0], { cause: /EIO/ }, 'reported with its errno');
  feed(log, s, half, s.bytes.length);
  // The new segment's directory entry is not durable until a directory fsync works: the next fsync does one.
  await waitFor(() => (io.dirSyncs > 0 && disk.writtenOffset === s.bytes.length) || undefined, { what: 'a directory fsync that worked, everything written', timeoutMs: 5000 });
  t.equal(disk.state, DiskLogState.Ok, 'writing again');
});

t.test('stream bytes that arrive while the log closes start no write: nothing is opened, written or failed after close', async (t) => {
  const io = new FaultyIo();
  // Writes start at once, as under a busy stream.
  const { disk, log, events } = await setup(t, { io, segmentBytes: 1 << 20, flushDelayMs: 0 });
  const s = makeStream(400, 31);
  const half = Math.floor(s.bytes.length / 2);
  feed(log, s, 0, half);
  await waitFor(() => disk.writtenOffset === half || undefined, { what: 'the first half written' });
  const opsBefore = io.ops;
  const closing = disk.close(100);
  // The relay still receives while its disk log closes (a shutdown, a test's teardown).
  feed(log, s, half, s.bytes.length);
  await closing;
  const opsAtClose = io.ops;
  await new Promise((r) => setImmediate(r));
  await io.settled();
  t.equal(disk.state, DiskLogState.Closed);
  t.equal(disk.writtenOffset, half, 'nothing written after close began');
  t.same(events.messages('disk.write-error'), [], 'no write failed');
  t.equal(io.ops, opsAtClose, 'no file operation after close returned');
  t.ok(opsAtClose > opsBefore, 'close did its own (cut, fsync)');
});

for (const op of ['truncate', 'datasync'] as const) {
  t.test(`a failed ${op} when a segment closes is done again before the next segment starts: a restart reads back every byte (O_DIRECT)`, async (t) => {
    const dir = t.testdir();
    const s = makeStream(2500, 5);
    const io = new FaultyIo();
    io.failSegment(op, 'EIO', 1);
    const disk = await DiskLog.open({ dir, maxBytes: 1 << 30, segmentBytes: 256 * 1024, maxPending: 1 << 30, memory: 1 << 30, epoch: 1, logger: silent, io, direct: true, retryMinMs: 1, retryMaxMs: 2 });
    const log = new ReplLog(1024);
    log.reset(0);
    log.attachDisk(disk);
    feed(log, s, 0, s.bytes.length);
    await waitFor(() => disk.writtenOffset === s.bytes.length || undefined, { what: 'written' });
    await disk.close();
    const segs = await segments(dir);
    t.ok(segs.length >= 4, `${segs.length} segments`);
    for (let i = 1; i < segs.length; i++) t.equal(segs[i]!.start, segs[i - 1]!.start + segs[i - 1]!.data.length, `${segs[i]!.name} follows the previous segment's last byte`);
    for (const seg of segs) {
      t.ok(io.synced.includes(seg.name) && io.synced.includes(seg.name.replace(/\.log$/, '.sum')), `${seg.name} and its checksums were synced`);
    }
    const d = await DiskLog.open({ dir, maxBytes: 1 << 30, segmentBytes: 256 * 1024, maxPending: 1 << 30, memory: 1 << 30, epoch: 1, logger: silent });
    t.teardown(() => d.close(100));
    t.equal(d.firstOffset, 1, 'the whole history is kept');
    t.equal(d.endOffset, s.bytes.length);
    const back = await d.read(1, s.bytes.length);
    t.ok(back.equals(s.bytes.subarray(0, back.length)) && back.length > 0, 'what it reads back is the stream');
  });
}

t.test('a new history started while a failed segment close is being done again gets files of its own, whatever the offsets', async (t) => {
  const io = new FaultyIo();
  io.failSegment('truncate', 'EIO', 1);
  // The close done again reopens the segment ('r+'): that open returns only once the new history has begun.
  io.hangOpens((path, flags) => flags === 'r+' && path.endsWith('.log'));
  const { dir, disk, log } = await setup(t, { io, direct: true });
  const s = makeStream(200, 6);
  feed(log, s, 0, s.bytes.length);
  await waitFor(() => io.hungOpens === 1 || undefined, { what: 'the close done again, opening the segment' });
  const first = (await segments(dir))[0]!;
  // The new history starts where the old segment did: the same start offset, another epoch.
  await log.resetHistory(first.start - 1, 2);
  io.release();
  const next = makeStream(50, 7);
  feed(log, next, 0, next.bytes.length);
  await waitFor(() => disk.writtenOffset === first.start - 1 + next.bytes.length || undefined, { what: 'the new history written' });
  await disk.close();
  const segs = await segments(dir);
  t.ok(segs.length > 0 && segs.every((x) => x.name.startsWith('seg-0000000002-')), `only the new history's segments: ${segs.map((x) => x.name).join(' ')}`);
  t.ok(Buffer.concat(segs.map((x) => x.data)).equals(next.bytes), 'holding the new history byte for byte');
});

t.test('a crash after O_DIRECT writes leaves zero padding: recovery cuts it and ends at the last byte written', async (t) => {
  const s = makeStream(300, 13);
  const dir = t.testdir();
  const io = new FaultyIo();
  const { disk, log } = await setup(t, { direct: true, io, dir, segmentBytes: 1 << 20 });
  const half = s.ends[150]!;
  feed(log, s, 0, half);
  await waitFor(() => disk.writtenOffset === half || undefined, { what: 'written' });
  const [seg] = await segments(dir);
  t.ok(seg!.data.length > half && seg!.data.length % 4096 === 0, `the file is padded to a block (${seg!.data.length} bytes for ${half})`);
  // The process dies here: no close. The next run recovers from the files alone.
  io.crashAt(io.ops + 1);
  const d = await DiskLog.open({ dir, maxBytes: 1 << 30, segmentBytes: 1 << 20, maxPending: 1 << 30, memory: 1 << 30, epoch: 1, logger: silent, direct: true });
  t.equal(d.endOffset, half, 'recovered up to the last byte written');
  t.ok((await onDiskQuiet(dir)).data.equals(s.bytes.subarray(0, half)), 'the padding is cut from the file');
  const log2 = new ReplLog(1024);
  log2.reset(d.endOffset);
  log2.attachDisk(d);
  t.teardown(() => d.close(100));
  feed(log2, s, half, s.bytes.length);
  await waitFor(() => d.writtenOffset === s.bytes.length || undefined, { what: 'the rest written after the restart' });
  t.ok((await onDisk(t, dir, d)).data.equals(s.bytes), 'writing goes on in the partial block the last run left');
});

t.test('a write in flight holds the memory it writes from: the log reuses none of it until the write returns', async (t) => {
  const s = makeStream(4000, 4);
  const { io, disk, log } = await setup(t, { maxPending: 64 * 1024, hungMs: 20, memory: 16 * 1024 });
  readFeed(log, s, 0, 30000);
  await waitFor(() => disk.writtenOffset === 30000 || undefined, { what: 'the first part written' });
  io.hangWrites();
  readFeed(log, s, 30000, 50000);
  await waitFor(() => disk.heldFrom === 30001 || undefined, { what: 'a write of offset 30001 on in flight' });
  // Past log.disk-queue: detached, so memory drops the bytes that write still reads, and the log reads on.
  readFeed(log, s, 50000, s.bytes.length);
  t.equal(disk.state, DiskLogState.Detached);
  t.ok(log.memFirstOffset > 100000, 'memory dropped the blocks the write reads from');
  t.equal(disk.heldFrom, 30001, 'the hung write still holds them');
  io.release();
  await waitFor(() => io.releasedWrites.length > 0 || undefined, { what: 'the hung write released' });
  const w = io.releasedWrites[0]!;
  t.ok(w.data.length > 0 && w.data.equals(s.bytes.subarray(30000, 30000 + w.data.length)), 'it wrote the stream bytes it was given, not reused memory');
  await waitFor(() => disk.heldFrom === Infinity || undefined, { what: 'the write returned and holds nothing' });
  // Done only once the disk took a new history and caught up: no file is being created while the test dir goes.
  await waitFor(() => (disk.state === DiskLogState.Ok && disk.writtenOffset === log.endOffset) || undefined, { what: 'resumed and caught up' });
});

t.test('an O_DIRECT write in flight holds no log memory: it copied its bytes before it went to the device', async (t) => {
  const s = makeStream(4000, 4);
  const { dir, io, disk, log } = await setup(t, { direct: true, maxPending: 64 * 1024, hungMs: 20, memory: 16 * 1024 });
  readFeed(log, s, 0, 30000);
  await waitFor(() => disk.writtenOffset === 30000 || undefined, { what: 'the first part written' });
  io.hangWrites();
  readFeed(log, s, 30000, 50000);
  await waitFor(() => io.hungWrites > 0 || undefined, { what: 'a write of offset 30001 on in flight' });
  t.equal(disk.heldFrom, Infinity, 'the write in flight holds no log memory');
  const segStart = (await segments(dir)).pop()!.start;
  // Past log.disk-queue: detached, memory drops and reuses its blocks, and the log reads on.
  readFeed(log, s, 50000, s.bytes.length);
  t.ok(log.memFirstOffset > 100000, 'memory moved on past the bytes of the hung write');
  io.release();
  await waitFor(() => io.releasedWrites.length > 0 || undefined, { what: 'the hung write released' });
  // Whole blocks from the aligned position at or before offset 30001: the stream, then zero padding.
  const { position, data } = io.releasedWrites[0]!;
  const from = segStart - 1 + position;
  let n = 0;
  while (n < data.length && from + n < s.bytes.length && data[n] === s.bytes[from + n]) n++;
  t.ok(from <= 30000 && from + n > 30000, `it wrote the stream through offset 30001 and on (${n} bytes from offset ${from + 1})`);
  t.ok(data.subarray(n).every((b) => b === 0), 'then only zero padding: no reused memory');
  t.equal(data.length % 4096, 0, 'whole blocks');
  await waitFor(() => (disk.state === DiskLogState.Ok && disk.writtenOffset === log.endOffset) || undefined, { what: 'resumed and caught up' });
});

for (const direct of [false, true]) {
  t.test(`a disk that keeps failing past log.disk-queue is detached and retried until it takes writes${mode(direct)}`, async (t) => {
    const s = makeStream(1500, 5);
    const { dir, io, disk, log } = await setup(t, { direct, maxPending: 32 * 1024, memory: 8 * 1024 });
    io.failWrites('ENOSPC', 1_000_000);
    feed(log, s, 0, 100000);
    t.equal(disk.state, DiskLogState.Detached);
    // The detached history's files go; a restart (retryMinMs later) may already have begun a new history, after a
    // boundary no further back than half of log.disk-queue (32 KiB here), whose writes fail too.
    const restartFrom = log.endOffset - 16 * 1024;
    await waitFor(async () => (await segments(dir)).every((g) => g.start > restartFrom) || undefined, { what: 'the detached history deleted' });
    t.ok(log.size <= 8 * 1024 + 6000, 'memory bounded');
    io.failWrites('ENOSPC', 0);
    await waitFor(() => (disk.state === DiskLogState.Ok && disk.writtenOffset === log.endOffset) || undefined, { what: 'writes resume by themselves' });
    const { first, data } = await onDisk(t, dir, disk);
    t.ok(data.equals(s.bytes.subarray(first - 1, log.endOffset)));
  });

  t.test(`reset() removes every segment and starts a new history after the given offset${mode(direct)}`, async (t) => {
    const s = makeStream(200, 6);
    const { dir, disk, log } = await setup(t, { direct });
    feed(log, s, 0, s.bytes.length);
    await waitFor(() => disk.writtenOffset === s.bytes.length, { what: 'written' });
    await log.resetHistory(5000, 2);
    t.same(await segments(dir), []);
    t.equal(disk.epoch, 2);
    const next = makeStream(50, 7);
    feed(log, { bytes: next.bytes, ends: next.ends }, 0, next.bytes.length);
    await waitFor(() => disk.writtenOffset === 5000 + next.bytes.length, { what: 'the new history written' });
    const segs = await segments(dir);
    t.match(segs[0]!.name, /^seg-0000000002-00000000000000005001\.log$/);
    t.ok((await onDisk(t, dir, disk)).data.equals(next.bytes));
  });

  t.test(`dropOldest keeps the segment being written; reads never return bytes past writtenOffset${mode(direct)}`, async (t) => {
    const s = makeStream(300, 8);
    const { disk, log } = await setup(t, { direct, maxBytes: 16 * 1024 });
    feed(log, s, 0, s.bytes.length);
    await waitFor(() => disk.writtenOffset === s.bytes.length, { what: 'written' });
    while (await disk.dropOldest());
    t.equal(disk.segmentCount, 1);
    const first = disk.firstOffset;
    const b = await disk.read(first, 1 << 20);
    t.ok(b.equals(s.bytes.subarray(first - 1, first - 1 + b.length)));
    await t.rejects(disk.read(disk.writtenOffset + 1), LogRangeError);
    await t.rejects(disk.read(first - 1), LogRangeError);
  });
}

t.test('a segment that cannot be read back goes with the older ones; one that is busy (EMFILE) stays', async (t) => {
  const s = makeStream(300, 8);
  const { disk, log, io, events } = await setup(t);
  feed(log, s, 0, s.bytes.length);
  await waitFor(() => disk.writtenOffset === s.bytes.length, { what: 'written' });
  t.ok(disk.segmentCount >= 4, `${disk.segmentCount} segments`);
  const third = (await segments(t.testdirName)).at(2)!.start;

  io.failReads('EMFILE', 1);
  await t.rejects(disk.read(third), { code: 'EMFILE' });
  t.equal(disk.firstOffset, 1, 'out of descriptors says nothing about the segment: nothing given up');

  io.failReads('EIO', 1);
  await t.rejects(disk.read(third), { code: 'EIO' });
  t.ok(disk.firstOffset > third, 'the unreadable segment and those before it are given up');
  t.equal(disk.state, DiskLogState.Ok, 'the rest of the history stays');
  t.ok(log.firstOffset > third, 'the log no longer offers those offsets: a replica there full-syncs');
  const b = await disk.read(disk.firstOffset);
  t.ok(b.equals(s.bytes.subarray(disk.firstOffset - 1, disk.firstOffset - 1 + b.length)), 'what remains reads back whole');
  t.match(events.messages('disk.read-error'), [{ cause: /unreadable: EIO/ }], 'one disk.read-error');
  await waitFor(async () => (await segments(t.testdirName)).every((g) => g.start >= disk.firstOffset) || undefined, { what: 'their files deleted' });

  io.failReads('EIO', 1);
  await t.rejects(disk.read(disk.writtenOffset), { code: 'EIO' });
  t.equal(disk.state, DiskLogState.Detached, 'the segment being written: the whole history is given up');
  // A detach restarts a new history by itself (retryMinMs later): let it, so that no file appears during teardown.
  await waitFor(() => (disk.state === DiskLogState.Ok && disk.writtenOffset === log.endOffset) || undefined, { what: 'a new history on disk' });
});

for (const direct of [false, true]) {
  t.test(`checksums${mode(direct)}`, async (t) => {
    // Segments of 256 KiB: several 64 KiB pieces each, the first and last cut by the segment's ends.
    const s = makeStream(2500, 5);
    const opts = { maxBytes: 1 << 30, segmentBytes: 256 * 1024, maxPending: 1 << 30, memory: 1 << 30, epoch: 1, logger: silent };
    /** A log holding the stream up to `to` (inside a command: the torn tail a SIGKILL leaves, CRCs and all). */
    async function written(dir: string, to = s.bytes.length): Promise<DiskLog> {
      const disk = await DiskLog.open({ dir, ...opts, direct });
      const log = new ReplLog(1024);
      log.reset(0);
      log.attachDisk(disk);
      feed(log, s, 0, to);
      await waitFor(() => disk.writtenOffset === to, { what: 'written' });
      return disk;
    }
    const reopen = (dir: string) => DiskLog.open({ dir, ...opts });
    t.ok(s.bytes.length > 1_000_000, `a stream of ${s.bytes.length} bytes`);

    t.test('reads from any offset and of any length come back exact: widened to whole pieces, checked, and cut to what was asked', async (t) => {
      const dir = t.testdir();
      const disk = await written(dir);
      t.teardown(() => disk.close(100));
      let x = 11;
      for (let i = 0; i < 300; i++) {
        x = (x * 1103515245 + 12345) & 0x7fffffff;
        const o = 1 + (x % s.bytes.length);
        const max = 1 + ((x >>> 8) % 300_000);
        const b = await disk.read(o, max, i % 2 === 0 ? Buffer.alloc(max) : undefined);
        if (!b.equals(s.bytes.subarray(o - 1, o - 1 + b.length)) || b.length === 0 || b.length > max) {
          t.fail(`read(${o}, ${max}) returned ${b.length} bytes that are not the stream's`);
          return;
        }
      }
      t.equal(disk.state, DiskLogState.Ok, '300 reads, every one exact');
    });

    t.test('a byte changed in an older segment is never read back, even by a read that stops before it: the segment goes with those before it', async (t) => {
      const dir = t.testdir();
      const events = recordTelemetry();
      t.teardown(() => events.close());
      const disk = await DiskLog.open({ dir, ...opts, direct, telemetry: events.telemetry });
      t.teardown(() => disk.close(100));
      const log = new ReplLog(1024);
      log.reset(0);
      log.attachDisk(disk);
      feed(log, s, 0, s.bytes.length);
      await waitFor(() => disk.writtenOffset === s.bytes.length, { what: 'written' });
      const segs = await segments(dir);
      t.ok(segs.length >= 4, `${segs.length} segments`);
      const victim = segs[1]!;
      const changed = victim.start + flipByte(join(dir, victim.name), 150_000);
      const from = Math.max(victim.start, pieceStart(changed));
      t.ok(from < changed - 10, 'the read below starts in the same piece, before the changed byte');
      await t.rejects(disk.read(from, 10), /do not match their checksum/, 'ten bytes before the change, in the same piece: refused');
      t.equal(disk.firstOffset, segs[2]!.start, 'the segment and those before it are given up');
      t.equal(disk.state, DiskLogState.Ok, 'the rest of the history stays');
      t.match(events.messages('disk.read-error'), [{ cause: /do not match their checksum/ }], 'one disk.read-error');
      const b = await disk.read(disk.firstOffset);
      t.ok(b.equals(s.bytes.subarray(disk.firstOffset - 1, disk.firstOffset - 1 + b.length)), 'what remains reads back whole');
    });

    t.test('a byte changed in the piece still being written is refused too: the whole history goes', async (t) => {
      const dir = t.testdir();
      const disk = await written(dir);
      t.teardown(() => disk.close(100));
      const last = (await segments(dir)).at(-1)!;
      const end = last.start + (disk.endOffset - last.start + 1) - 1;
      t.ok(end % (64 * 1024) !== 0, 'the last piece is incomplete');
      flipByte(join(dir, last.name), end - last.start - 2);
      await t.rejects(disk.read(end - 1), /do not match their checksum/);
      t.equal(disk.state, DiskLogState.Detached);
      // Closed before the test directory goes: a detached log starts a new history by itself (its files would appear
      // while the directory is removed: ENOTEMPTY).
      await disk.close(100);
    });

    t.test('recovery checks the last segment: a byte changed there cuts the log back to the last whole command before its piece', async (t) => {
      const dir = t.testdir();
      await (await written(dir)).close();
      const segs = await segments(dir);
      const last = segs.at(-1)!;
      const changed = last.start + flipByte(join(dir, last.name), Math.floor(last.data.length * 0.7));
      const d = await reopen(dir);
      t.ok(d.endOffset < Math.max(last.start, pieceStart(changed)) && isBoundary(s, d.endOffset), `ends at ${d.endOffset}, a command boundary before the changed piece`);
      t.ok(d.endOffset >= last.start - 1, 'the segments before are kept');
      const b = await d.read(d.endOffset - 100, 100);
      t.ok(b.equals(s.bytes.subarray(d.endOffset - 101, d.endOffset - 1)), 'the kept bytes read back whole');
      await d.close();
      const again = await reopen(dir);
      t.equal(again.endOffset, d.endOffset, 'the cut segment and its checksums agree at the next start');
      await again.close();
    });

    t.test('a log closed with no write since it opened still leaves the last piece checked at the next start', async (t) => {
      const dir = t.testdir();
      await (await written(dir)).close();
      await (await reopen(dir)).close();
      const last = (await segments(dir)).at(-1)!;
      const changed = last.start + flipByte(join(dir, last.name), last.data.length - 3);
      const d = await reopen(dir);
      t.ok(d.endOffset < Math.max(last.start, pieceStart(changed)), `ends at ${d.endOffset}, before the changed piece`);
      await d.close();
    });

    t.test('a disk too full for the checksum files at recovery does not keep the log from opening; the old file stays and a restart still checks', async (t) => {
      const dir = t.testdir();
      await (await written(dir)).close();
      const segs = await segments(dir);
      const lastSum = segs.at(-1)!.name.replace(/\.log$/, '.sum');
      await fsp.truncate(join(dir, segs.at(-1)!.name), segs.at(-1)!.data.length - 5);
      const io = new FaultyIo();
      io.failWrites('ENOSPC', 1000);
      const d = await DiskLog.open({ dir, ...opts, io });
      t.ok(d.endOffset < s.bytes.length && isBoundary(s, d.endOffset), 'the torn tail is cut as ever');
      t.ok((await fsp.readdir(dir)).includes(lastSum), 'the checksum file it could not rewrite stays (a missing one would trust nothing)');
      const b = await d.read(d.endOffset - 1000, 1000);
      t.ok(b.equals(s.bytes.subarray(d.endOffset - 1001, d.endOffset - 1001 + b.length)), 'the cut segment reads back');
      const end = d.endOffset;
      await d.close(100);
      // A crash before any write: the old CRCs still cover every byte kept, and the file was left uncut with them.
      const again = await reopen(dir);
      t.equal(again.endOffset, end, 'a restart keeps what was kept');
      const c = await again.read(again.endOffset - 1000, 1000);
      t.ok(c.equals(s.bytes.subarray(again.endOffset - 1001, again.endOffset - 1001 + c.length)), 'and reads back exact');
      await again.close(100);
    });

    /** The start of the last segment of the whole stream, and a torn offset in its first piece (between two commands' ends). */
    async function tornInFirstPiece(): Promise<number> {
      const dir = join(t.testdir(), 'whole');
      await (await written(dir)).close();
      const start = (await segments(dir)).at(-1)!.start;
      const ends = s.ends.filter((e) => e > start && e < start + 60_000);
      return Math.floor((ends[0]! + ends[1]!) / 2);
    }

    // The cut falls in a later piece of the last segment, or in its first one (the CRCs recovery settles on are then a
    // tail CRC alone, no complete piece); the disk refuses every write, or takes the checksums in place (a full disk
    // does) but not the rename of a new checksum file nor the segment's bytes.
    for (const [cut, inPlace] of [['a later piece', false], ['its first piece', false], ['a later piece', true], ['its first piece', true]] as const) {
    t.test(`a disk too full for the checksum files at recovery (cut in ${cut}${inPlace ? ', the .sum file written in place' : ''}), then a crash after the first append fails: the next start cuts at the same place and logs no damage`, async (t) => {
      const dir = t.testdir();
      const torn = cut === 'a later piece' ? s.ends[s.ends.length - 2]! + 100 : await tornInFirstPiece();
      await (await written(dir, torn)).close();
      const io = new FaultyIo();
      if (inPlace) {
        io.failOps('rename', 'ENOSPC', 1);
        io.failWrites('ENOSPC', 1_000_000, true);
      } else io.failWrites('ENOSPC', 1_000_000);
      const d = await DiskLog.open({ dir, ...opts, io, retryMinMs: 1, retryMaxMs: 2 });
      const end = d.endOffset;
      t.ok(end < torn && isBoundary(s, end), `recovery cut ${torn} back to ${end}`);
      const log = new ReplLog(1 << 20);
      log.reset(end);
      log.attachDisk(d);
      log.append(s.bytes.subarray(end, s.ends.at(-1)!), s.ends.at(-1)!);
      await waitFor(() => d.state === DiskLogState.Failing || undefined, { what: 'the append fails on the full disk' });
      // The process dies here, with the next attempt's first write: it never happens (a crash point of FaultyIo's
      // would tear it anywhere, also inside one 4-byte CRC, which no disk does).
      io.hangWrites();
      await waitFor(() => io.hungWrites > 0 || undefined, { what: 'the next attempt at its first write' });
      const damage: string[] = [];
      const again = await DiskLog.open({ dir, ...opts, logger: createLogger('error', { write: (line: string) => void damage.push(line) }) });
      t.equal(again.endOffset, end, 'the next start keeps what the last one kept');
      t.same(damage, [], 'and logs nothing at error level: no byte on disk was wrong');
      await again.close(100);
      io.release();
      await d.close(0).catch(() => {});
      await io.settled();
    });
    }

    t.test('a last segment shorter than its checksums record is reported as lost writes, not as changed bytes', async (t) => {
      const dir = t.testdir();
      // A last segment of some 200 KB: several pieces.
      await (await written(dir, s.ends.filter((e) => e <= 1_250_000).at(-1)!)).close();
      const last = (await segments(dir)).at(-1)!;
      t.ok(last.data.length > 140_000, `a last segment of ${last.data.length} bytes`);
      // What a power loss can leave: the file lost bytes whose writes returned (and whose CRCs were written), past
      // the end of a piece.
      await fsp.truncate(join(dir, last.name), last.data.length - 70_000);
      const lines: string[] = [];
      const d = await DiskLog.open({ dir, ...opts, logger: createLogger('error', { write: (line: string) => void lines.push(line) }) });
      t.ok(d.endOffset < s.bytes.length && isBoundary(s, d.endOffset), 'cut back to a whole command');
      t.match(lines.join(''), /log segment shorter than its checksums record/, 'the error names what happened');
      t.notMatch(lines.join(''), /do not match their checksum/);
      await d.close(100);
    });

    t.test('a last segment that cannot be read at recovery (EIO) is given up; the log opens and ends with the one before', async (t) => {
      const dir = t.testdir();
      await (await written(dir)).close();
      const segs = await segments(dir);
      const io = new FaultyIo();
      io.failReads('EIO', 1);
      const d = await DiskLog.open({ dir, ...opts, io });
      t.equal(d.endOffset, segs.at(-1)!.start - 1, 'it ends where the last segment began, a command boundary');
      t.ok(isBoundary(s, d.endOffset));
      await d.close(100);
    });

    for (const damage of ['cut short', 'missing'] as const) {
      t.test(`an older segment whose checksum file is ${damage} is given up with the segments before it: none of its bytes is kept`, async (t) => {
        const dir = t.testdir();
        await (await written(dir)).close();
        const segs = await segments(dir);
        t.ok(segs.length >= 4, `${segs.length} segments`);
        const victim = segs[1]!;
        const sum = join(dir, victim.name.replace(/\.log$/, '.sum'));
        if (damage === 'missing') await fsp.rm(sum);
        else await fsp.truncate(sum, 4); // the first piece's CRC only
        // A byte no stored CRC covers any more changes.
        flipByte(join(dir, victim.name), victim.data.length - 1000);
        const d = await reopen(dir);
        t.teardown(() => d.close(100));
        t.equal(d.firstOffset, segs[2]!.start, 'the log starts with the segment after it');
        t.equal(d.endOffset, s.bytes.length, 'the newer segments are kept');
        const names = await fsp.readdir(dir);
        t.notOk(names.includes(victim.name) || names.includes(segs[0]!.name), 'its file and the older one are removed');
        const b = await d.read(d.firstOffset, 300_000);
        t.ok(b.equals(s.bytes.subarray(d.firstOffset - 1, d.firstOffset - 1 + b.length)), 'what is kept reads back exact');
      });
    }

    t.test('the last segment without a checksum file is given up: none of its bytes is kept', async (t) => {
      const dir = t.testdir();
      await (await written(dir)).close();
      const segs = await segments(dir);
      const last = segs.at(-1)!;
      await fsp.rm(join(dir, last.name.replace(/\.log$/, '.sum')));
      flipByte(join(dir, last.name), Math.floor(last.data.length / 2));
      const d = await reopen(dir);
      t.teardown(() => d.close(100));
      t.equal(d.endOffset, last.start - 1, 'the log ends where that segment began');
      const b = await d.read(d.endOffset - 1000, 1000);
      t.ok(b.equals(s.bytes.subarray(d.endOffset - 1001, d.endOffset - 1001 + b.length)), 'what is kept reads back exact');
    });

    t.test('checksum files of segments that are gone are removed at recovery', async (t) => {
      const dir = t.testdir();
      await (await written(dir)).close();
      const segs = await segments(dir);
      await fsp.rm(join(dir, segs[0]!.name));
      const d = await reopen(dir);
      await d.close();
      t.notOk((await fsp.readdir(dir)).includes(segs[0]!.name.replace(/\.log$/, '.sum')));
    });
  });
}

for (const direct of [false, true]) {
  t.test(`recovery${mode(direct)}`, async (t) => {
    const s = makeStream(500, 9);
    async function written(dir: string): Promise<void> {
      const io = new FaultyIo();
      const disk = await DiskLog.open({ dir, maxBytes: 1 << 30, segmentBytes: 4096, maxPending: 1 << 30, memory: 1 << 30, epoch: 1, logger: silent, io, direct });
      const log = new ReplLog(1024);
      log.reset(0);
      log.attachDisk(disk);
      feed(log, s, 0, s.bytes.length);
      await waitFor(() => disk.writtenOffset === s.bytes.length, { what: 'written' });
      await disk.close();
    }
    const reopen = (dir: string, epoch: number | null = 1) =>
      DiskLog.open({ dir, maxBytes: 1 << 30, segmentBytes: 4096, maxPending: 1 << 30, memory: 1 << 30, epoch, logger: silent });

    t.test('a clean log reopens whole', async (t) => {
      const dir = t.testdir();
      await written(dir);
      const d = await reopen(dir);
      t.equal(d.firstOffset, 1);
      t.equal(d.endOffset, s.bytes.length);
    });

    t.test('a torn tail is cut back to the last whole command', async (t) => {
      const dir = t.testdir();
      await written(dir);
      const segs = await segments(dir);
      const last = segs[segs.length - 1]!;
      await fsp.truncate(join(dir, last.name), last.data.length - 5);
      const d = await reopen(dir);
      const end = d.endOffset;
      t.ok(end < s.bytes.length && isBoundary(s, end), `ends at ${end}, a command boundary`);
      t.ok(end >= last.start - 1);
    });

    t.test('a crash between any two file operations of cutting a torn tail: the next start keeps the same bytes and logs no damage', async (t) => {
      // The torn tail of a SIGKILL: the last write ended inside a command, and the .sum file covers all it wrote.
      const torn = s.ends[s.ends.length - 2]! + 7;
      const root = t.testdir();
      const dir = join(root, 'torn');
      const io = new FaultyIo();
      const disk = await DiskLog.open({ dir, maxBytes: 1 << 30, segmentBytes: 4096, maxPending: 1 << 30, memory: 1 << 30, epoch: 1, logger: silent, io, direct });
      const log = new ReplLog(1024);
      log.reset(0);
      log.attachDisk(disk);
      feed(log, s, 0, torn);
      await waitFor(() => disk.writtenOffset === torn || undefined, { what: 'written' });
      await disk.close();
      const copy = async (to: string): Promise<void> => fsp.cp(dir, to, { recursive: true });
      const damage: string[] = [];
      const logger = createLogger('error', { write: (line: string) => void damage.push(line) });
      const clean = join(root, 'clean');
      await copy(clean);
      const want = (await DiskLog.open({ dir: clean, maxBytes: 1 << 30, segmentBytes: 4096, maxPending: 1 << 30, memory: 1 << 30, epoch: 1, logger })).endOffset;
      t.ok(want < torn && isBoundary(s, want), `a clean recovery cuts ${torn} back to ${want}`);
      const problems: string[] = [];
      let k = 1;
      for (; k < 50; k++) {
        const at = join(root, `k${k}`);
        await copy(at);
        const faulty = new FaultyIo();
        faulty.crashAt(k, k);
        // Recovery goes on past a failed operation (a failing disk must not keep the relay from starting): the crash
        // is what FaultyIo saw, whether or not open() returned.
        await DiskLog.open({ dir: at, maxBytes: 1 << 30, segmentBytes: 4096, maxPending: 1 << 30, memory: 1 << 30, epoch: 1, logger: silent, io: faulty }).catch((err: Error) => {
          if (!(err instanceof CrashError)) throw err;
        });
        await faulty.settled();
        const survived = !faulty.crashed;
        damage.length = 0;
        const d = await DiskLog.open({ dir: at, maxBytes: 1 << 30, segmentBytes: 4096, maxPending: 1 << 30, memory: 1 << 30, epoch: 1, logger });
        if (d.endOffset !== want) problems.push(`crash at operation ${k}: the next start ends at ${d.endOffset}, not ${want}`);
        for (const line of damage) problems.push(`crash at operation ${k}: the next start logged ${line.trim()}`);
        if (survived) break;
      }
      t.ok(k > 2 && k < 50, `recovery makes ${k - 1} file operations, each a crash point`);
      t.same(problems, [], 'after a crash at any of them, recovery finds what it wrote consistent');
    });

    t.test('a last segment holding only part of a command is removed; the one before ends at a boundary', async (t) => {
      const dir = t.testdir();
      await written(dir);
      const segs = await segments(dir);
      const last = segs[segs.length - 1]!;
      await fsp.truncate(join(dir, last.name), 3);
      const d = await reopen(dir);
      t.equal(d.endOffset, last.start - 1);
      t.ok(isBoundary(s, d.endOffset));
      t.equal(d.segmentCount, segs.length - 1);
    });

    t.test('an empty last segment (created at a roll, never written) is removed', async (t) => {
      const dir = t.testdir();
      await written(dir);
      const segs = await segments(dir);
      await fsp.writeFile(join(dir, `seg-0000000001-${String(s.bytes.length + 1).padStart(20, '0')}.log`), '');
      const d = await reopen(dir);
      t.equal(d.endOffset, s.bytes.length);
      t.equal(d.segmentCount, segs.length);
    });

    t.test('a gap keeps only the newest contiguous run', async (t) => {
      const dir = t.testdir();
      await written(dir);
      const segs = await segments(dir);
      await fsp.rm(join(dir, segs[3]!.name));
      const d = await reopen(dir);
      t.equal(d.firstOffset, segs[4]!.start);
      t.equal(d.endOffset, s.bytes.length);
      t.equal((await segments(dir)).length, segs.length - 4, 'the segments before the gap are removed');
    });

    t.test('segments of another history, of the old format, and with no trusted history are removed', async (t) => {
      const dir = t.testdir();
      await written(dir);
      await fsp.writeFile(join(dir, `seg-0000000000-${'1'.padStart(20, '0')}.log`), '*1\r\n$4\r\nPING\r\n');
      await fsp.writeFile(join(dir, `seg-${'1'.padStart(20, '0')}.log`), 'old');
      await fsp.writeFile(join(dir, 'index.json'), '{}');
      const d = await reopen(dir);
      t.equal(d.endOffset, s.bytes.length);
      const names = await fsp.readdir(dir);
      t.notOk(names.some((n) => n.startsWith('seg-0000000000-') || n === 'index.json' || /^seg-\d{20}\.log$/.test(n)));
      const none = await reopen(dir, null);
      t.ok(none.empty, 'epoch null trusts nothing');
      t.same(await fsp.readdir(dir), []);
    });
  });
}

/**
 * Commands in the stream of the crash runs below. Each crash point replays the run up to it, so their cost grows with
 * the square of the stream: 150 commands (80 KB, 69 file operations, 3 times the 24 KiB disk limit: rolls, drops and
 * every kind of operation, checked below) by default; DISKLOG_CRASH_COMMANDS=250 (135 operations) or more by hand.
 */
const CRASH_COMMANDS = Number(process.env['DISKLOG_CRASH_COMMANDS'] ?? 150);
/** Every kind of mutating file operation a disk log makes while it writes, rolls and drops segments. */
const CRASH_KINDS = ['open:w .sum', 'open:w .log', 'writev .log', 'writev .sum', 'datasync .log', 'datasync .sum', 'ftruncate .log', 'syncDir', 'rm .log', 'rm .sum'];

for (const direct of [false, true]) {
  t.test(`a crash between any two file operations recovers a prefix of the stream that ends at a whole command${mode(direct)}`, async (t) => {
    const s = makeStream(CRASH_COMMANDS, 11);
    // How many mutating file operations a clean run makes (opening, writing, fsyncing, rolling, dropping segments).
    async function run(dir: string, io: FaultyIo): Promise<void> {
      const disk = await DiskLog.open({ dir, maxBytes: 24 * 1024, segmentBytes: 4096, maxPending: 1 << 30, memory: 1 << 30, epoch: 1, logger: silent, io, direct, retryMinMs: 1, retryMaxMs: 2, flushDelayMs: 0 });
      const log = new ReplLog(2048);
      log.reset(0);
      log.attachDisk(disk);
      disk.onOverLimit = () => void disk.dropOldest().catch(() => {});
      for (let part = 0; part < 5; part++) {
        feed(log, s, Math.floor((s.bytes.length * part) / 5), Math.floor((s.bytes.length * (part + 1)) / 5), part + 1);
        await waitFor(() => io.crashed || disk.writtenOffset === log.endOffset || undefined, { what: 'written or crashed', intervalMs: 1 });
        if (io.crashed) break;
      }
      await disk.close(0).catch(() => {});
      await io.settled();
    }
    const clean = new FaultyIo();
    await run(t.testdir(), clean);
    t.ok(clean.ops > 30, `a clean run makes ${clean.ops} file operations`);
    const missing = CRASH_KINDS.filter((k) => !clean.kinds.has(k));
    t.same(missing, [], `a clean run makes every kind of file operation, each a crash point below: ${[...clean.kinds].join(', ')}`);
    const problems: string[] = [];
    let recovered = 0;
    for (let k = 1; k <= clean.ops; k++) {
      const dir = join(t.testdir(), String(k));
      await fsp.mkdir(dir, { recursive: true });
      const io = new FaultyIo();
      io.crashAt(k, k);
      await run(dir, io).catch((err: Error) => {
        if (!(err instanceof CrashError)) throw err;
      });
      // A segment holding bytes with no .sum file would only be parsed at recovery, not checked.
      const names = await fsp.readdir(dir);
      for (const seg of await segments(dir)) {
        if (seg.data.length > 0 && !names.includes(seg.name.replace(/\.log$/, '.sum'))) problems.push(`crash at operation ${k}: ${seg.name} holds bytes and has no .sum file`);
      }
      const d = await DiskLog.open({ dir, maxBytes: 1 << 30, segmentBytes: 4096, maxPending: 1 << 30, memory: 1 << 30, epoch: 1, logger: silent, io: nodeFileIo });
      if (d.empty) continue;
      recovered++;
      const end = d.endOffset;
      if (!isBoundary(s, end)) problems.push(`crash at operation ${k}: recovery ends at ${end}, inside a command`);
      const { first, data } = await onDiskQuiet(dir);
      if (first !== d.firstOffset || first - 1 + data.length !== end) problems.push(`crash at operation ${k}: files [${first}, +${data.length}) disagree with [${d.firstOffset}, ${end}]`);
      if (!data.equals(s.bytes.subarray(first - 1, first - 1 + data.length))) problems.push(`crash at operation ${k}: the recovered bytes are not the stream`);
      const b = await d.read(end, 1);
      if (b[0] !== s.bytes[end - 1]) problems.push(`crash at operation ${k}: read() of the last byte is wrong`);
    }
    t.same(problems, [], `every one of ${clean.ops} crash points leaves every segment with bytes a .sum file, and recovers a whole-command prefix of the stream`);
    t.ok(recovered > clean.ops / 2, `most crash points leave a log to recover (${recovered})`);
  });
}

async function onDiskQuiet(dir: string): Promise<{ first: number; data: Buffer }> {
  const segs = await segments(dir);
  return { first: segs[0]?.start ?? 0, data: Buffer.concat(segs.map((s) => s.data)) };
}
