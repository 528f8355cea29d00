// The shared replication log (dist/backlog/repl-log.js, optionally backed by dist/backlog/disk-log.js):
// append throughput with R readers that each read every new byte after each append (as replica cursors do),
// for large chunks (kept as they arrive, no copy) and small ones (packed into 16 KiB blocks, copied); and with
// the disk log attached, until every byte is written to the segment files (page cache; fsync once a second).
//   node bench/micro/log.js [--quick] [--json]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as turn } from 'node:timers/promises';
import { pino } from 'pino';
import { ReplLog } from '../../dist/backlog/repl-log.js';
import { DiskLog } from '../../dist/backlog/disk-log.js';
import { QUICK, chunksOf, medianSeconds, report, setStream } from './common.js';

const MB = 1e6;
const LIMIT = 64 * 1024 * 1024; // log.memory default
/** Bytes appended per round: less for the slow small-append cases, so the whole file runs in seconds. */
const scale = QUICK ? 0.25 : 1;
const totalFor = (chunkSize, readers, disk) => scale * (chunkSize < 4096 ? (disk || readers > 1 ? 16 : 64) : 256) * MB;
const rounds = QUICK ? 3 : 5;
/** The append loop yields to the event loop every this many bytes, as socket reads arrive one per turn. */
const TURN_BYTES = 1024 * 1024;

const source = setStream(4 * MB, 1024);
const fmtMB = (b) => `${Math.round(b / MB)} MB`;

/** Appends `total` bytes of `chunkSize` pieces; each of `readers` cursors reads everything new after each append. */
async function appendRead(log, chunkSize, readers, total) {
  const chunks = chunksOf(source, chunkSize);
  const cursors = [];
  for (let i = 0; i < readers; i++) {
    const c = { offset: log.endOffset };
    cursors.push(c);
    log.addReader(c);
  }
  let appended = 0;
  let sinceTurn = 0;
  let reads = 0;
  for (let i = 0; appended < total; i++) {
    const chunk = chunks[i % chunks.length];
    log.append(chunk, -1);
    appended += chunk.length;
    for (const c of cursors) {
      for (let b = log.read(c.offset + 1); b !== null; b = log.read(c.offset + 1)) {
        c.offset += b.length;
        reads++;
      }
    }
    sinceTurn += chunk.length;
    if (sinceTurn >= TURN_BYTES) {
      sinceTurn = 0;
      await turn();
    }
  }
  for (const c of cursors) log.removeReader(c);
  return { appended, reads };
}

const logger = pino({ level: 'silent' });
const results = [];

for (const [chunkSize, readers] of [
  [64 * 1024, 1],
  [64 * 1024, 100],
  [1024, 1],
  [1024, 100],
]) {
  const log = new ReplLog(LIMIT);
  let out = null;
  const seconds = await medianSeconds(rounds, async () => {
    log.reset(log.endOffset);
    out = await appendRead(log, chunkSize, readers, totalFor(chunkSize, readers, false));
  });
  results.push({
    case: `memory, ${chunkSize} B appends, ${readers} reader${readers > 1 ? 's' : ''}`,
    mbps: out.appended / MB / seconds,
    opsPerSec: out.appended / chunkSize / seconds,
    note: `${fmtMB(out.appended)} per round, ${(out.reads / (out.appended / chunkSize)).toFixed(1)} reads per append`,
  });
}

for (const chunkSize of [64 * 1024, 1024]) {
  const dir = mkdtempSync(join(tmpdir(), 'psync-bench-micro-log-'));
  try {
    // direct: as the relay's default (log.disk-direct); disk.direct says whether the filesystem took it.
    const disk = await DiskLog.open({ dir, maxBytes: 1024 * 1024 * 1024, segmentBytes: 64 * 1024 * 1024, maxPending: 1024 * 1024 * 1024, memory: 1024 * 1024 * 1024, epoch: 1, logger, direct: true });
    disk.onOverLimit = () => void disk.dropOldest();
    const log = new ReplLog(LIMIT);
    log.attachDisk(disk);
    let out = null;
    const seconds = await medianSeconds(rounds, async () => {
      out = await appendRead(log, chunkSize, 1, totalFor(chunkSize, 1, true));
      while (disk.writtenOffset < log.endOffset) await new Promise((r) => setTimeout(r, 1));
    });
    results.push({
      case: `memory + disk log, ${chunkSize} B appends, 1 reader`,
      mbps: out.appended / MB / seconds,
      opsPerSec: out.appended / chunkSize / seconds,
      note: `${fmtMB(out.appended)} per round, until written${disk.direct ? ', O_DIRECT' : ', page cache'}`,
    });
    await disk.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

report('ReplLog append + read', results);
