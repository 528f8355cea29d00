/**
 * History's transitions against a real data directory with faults injected (FaultyIo): what a restart finds after a
 * state write failed or the process died between two file operations. The oracle is what a restarted History would
 * claim: a (replid, offset) it continues must name the bytes its log and snapshot hold.
 */
import t, { type Test } from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { History, diskLimitFor } from '../../src/backlog/history.js';
import { emptyRdb } from '../../src/backlog/snapshot-store.js';
import { nodeFileIo, type FileIo } from '../../src/backlog/file-io.js';
import { createLogger } from '../../src/log.js';
import { Telemetry } from '../../src/observability/telemetry.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { FaultyIo } from '../helpers/faulty-io.js';
import { tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);

interface Rec {
  readonly msg: string;
  readonly [k: string]: unknown;
}

function open(t: Test, dir: string, io: FileIo = nodeFileIo): { h: History; records: Rec[] } {
  const records: Rec[] = [];
  const logger = createLogger('info', { write: (line: string) => void records.push(JSON.parse(line) as Rec) });
  const h = new History({ dir, memory: 1 << 20, disk: 1 << 20, diskQueue: 1 << 30, diskDirect: false, refreshHold: 0, logger, telemetry: new Telemetry('history-test'), io, diskRetryMinMs: 1, diskRetryMaxMs: 2 });
  t.teardown(() => h.close().catch(() => {}));
  return { h, records };
}

/** A full sync from upstream of history `replid` at `offset` (an empty RDB). */
async function fullSync(h: History, replid: string, offset: number): Promise<void> {
  const tmp = h.store.tempPath();
  await fsp.writeFile(tmp, emptyRdb(10));
  await h.fullSync(tmp, replid, offset);
}

/** `n` whole commands appended to the log, then waited for until the disk holds them. */
async function stream(h: History, tag: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const cmd = encodeCommand(['SET', `${tag}:${i}`, tag.repeat(50)]);
    h.log.append(cmd, h.log.endOffset + cmd.length);
  }
  await waitFor(() => h.disk!.writtenOffset === h.log.endOffset || undefined, { what: 'the log on disk', intervalMs: 1 });
}

/** A history opened in `dir`, full-synced from A at offset 100, with `n` commands of 'a' after it on disk. */
async function synced(t: Test, dir: string, n: number, io: FileIo = nodeFileIo): Promise<{ h: History; records: Rec[] }> {
  const opened = open(t, dir, io);
  await opened.h.recover();
  await fullSync(opened.h, A, 100);
  if (n > 0) await stream(opened.h, 'a', n);
  return opened;
}

t.test('a replid shift whose state write fails never lets a restart continue the old id with the new id\'s bytes', async (t) => {
  const dir = tempDir('history-');
  const io = new FaultyIo();
  const { h, records } = await synced(t, dir, 20, io);
  const fork = h.log.endOffset;
  // The disk refuses the state write (the next write: the log is idle), and only it.
  io.failWrites('ENOSPC', 1);
  t.equal(await h.continued(B), true, 'the relay follows the new id');
  t.equal(h.ids.replid, B);
  await stream(h, 'b', 20);
  t.ok(records.some((r) => r.msg.startsWith('could not persist replication state')), 'the failed write is logged');
  // SIGKILL before the retry (a second later) wrote the state.
  io.crashAt(io.ops + 1);
  await io.settled();

  const { h: after } = open(t, dir);
  await after.recover();
  const end = after.log.endOffset;
  t.notOk(after.ids.accepts(A, end + 1) && end > fork, `a restart does not continue ${A.slice(0, 6)}… past the fork (${fork}): it would at ${end}`);
  t.ok(after.hasHistory, 'a restart still holds a history it can prove');
});

t.test('a replid shift whose state can be neither written nor removed is refused: the ids stay, nothing of the new id is taken', async (t) => {
  const dir = tempDir('history-');
  const io = new FaultyIo();
  const { h, records } = await synced(t, dir, 5, io);
  const ids = { replid: h.ids.replid, replid2: h.ids.replid2, secondReplOffset: h.ids.secondReplOffset };
  // The write fails; so do the removal of its temp file and that of the state file.
  io.failWrites('EIO', 1);
  io.failOps('rm', 'EIO', 2);
  await t.rejects(h.continued(B), /cannot persist the new replid/, 'the link is told to fail (it reconnects and is continued again)');
  t.same({ replid: h.ids.replid, replid2: h.ids.replid2, secondReplOffset: h.ids.secondReplOffset }, ids, 'the ids are those the state file names');
  t.ok(records.some((r) => r.msg.startsWith('could not remove the state file naming the old replid')), 'logged');
  // The fault cleared: the next try (upstream continues us again) goes through.
  t.equal(await h.continued(B), true);
  const { h: after } = open(t, dir);
  await after.recover();
  t.equal(after.ids.replid, B, 'the state file names the new id');
  t.equal(after.ids.replid2, A);
  t.equal(after.log.endOffset, h.log.endOffset, 'and the log is kept');
});

t.test('a full sync whose snapshot cannot be published removes its RDB temp file', async (t) => {
  const dir = tempDir('history-');
  const io = new FaultyIo();
  const { h } = await synced(t, dir, 0, io);
  // The rename of the new RDB into place fails (a directory that needs a block on a full disk).
  io.failOps('rename', 'ENOSPC', 1);
  await t.rejects(fullSync(h, B, 5000), { code: 'ENOSPC' }, 'the link is told (it fails and reconnects)');
  t.same((await fsp.readdir(dir)).filter((n) => n.startsWith('temp-')), [], 'no RDB-sized temp file is left on the full disk until a restart');
});

t.test('a state file of another relay\'s history with the same epoch is not trusted: the restart continues from its own snapshot, not the other id', async (t) => {
  const dir = tempDir('history-');
  const { h } = await synced(t, dir, 10);
  await h.close();
  // Every relay's first history is epoch 1: a state.json copied from another one (a backup restored into the wrong
  // directory) names its own replid.
  await fsp.writeFile(join(dir, 'state.json'), JSON.stringify({ replid: B, replid2: '0'.repeat(40), secondReplOffset: -1, epoch: 1 }));
  const { h: after, records } = open(t, dir);
  await after.recover();
  t.notOk(after.ids.accepts(B, after.log.endOffset + 1), `${B.slice(0, 6)}… is not continued with ${A.slice(0, 6)}…'s bytes`);
  t.equal(after.ids.replid, A, 'the snapshot\'s own id is');
  t.equal(after.usableSnapshot()?.replid, A);
  t.ok(records.some((r) => r.msg.startsWith('state file does not name the history of the snapshots')), 'logged');
});

t.test('after failovers the state file still vouches for a snapshot taken ids ago: the restart keeps the disk log', async (t) => {
  const C = 'c'.repeat(40);
  const dir = tempDir('history-');
  const { h } = await synced(t, dir, 5);
  await h.continued(B);
  await stream(h, 'b', 5);
  await h.continued(C);
  await stream(h, 'c', 5);
  const end = h.log.endOffset;
  await h.close();
  const { h: after } = open(t, dir);
  await after.recover();
  t.same([after.ids.replid, after.ids.replid2, after.log.endOffset, after.usableSnapshot()?.replid], [C, B, end, A], 'ids, log and the snapshot of A are kept');
});

t.test('a snapshot of the old id fetched ahead of the log is dropped at a failover before its offset: never served under the new id', async (t) => {
  // The audit's case: the relay's upstream stalled at O while the snapshot source, another replica of the master,
  // went on to X; the fetched snapshot (A at X) waits for the log to reach X. The master dies; the stalled replica
  // is promoted (B) at O < X: B's history has none of A's writes after O.
  const dir = tempDir('history-');
  const { h, records } = await synced(t, dir, 5);
  const O = h.log.endOffset;
  const X = O + 2000;
  const tmp = h.store.tempPath();
  await fsp.writeFile(tmp, emptyRdb(10));
  t.ok(await h.commitSnapshot(tmp, { replid: A, offset: X }, h.epoch), 'a snapshot ahead of the log fits (the log will reach it)');
  await h.continued(B);
  await stream(h, 'b', 50);
  t.ok(h.log.endOffset > X, 'the log under B has passed X');
  // (It replaced the full sync's snapshot: one is kept per history.) A replica's full sync now waits for a fetch.
  t.equal(h.usableSnapshot(), null, "A's snapshot at X (A's writes after O) serves no full sync");
  t.same(h.snapshots(), [], 'nor a point in time');
  t.notOk(h.store.all.some((s) => s.offset === X), 'its file is removed');
  t.ok(records.some((r) => r.msg.includes('snapshots of an id past where this history follows it removed')), 'and that is logged');
});

t.test('after a crash between a failover and the removal of a snapshot ahead of it, the restart does not serve that snapshot', async (t) => {
  const dir = tempDir('history-');
  const { h } = await synced(t, dir, 5);
  await h.continued(B);
  await stream(h, 'b', 50);
  const end = h.log.endOffset;
  await h.close();
  // What the removal would have deleted: a snapshot of A past second_repl_offset (the full sync's file, renamed).
  const full = (await fsp.readdir(dir)).find((n) => n.startsWith('snapshot-') && n.includes(A))!;
  await fsp.copyFile(join(dir, full), join(dir, full.replace(/-\d{20}\.rdb$/, `-${String(end - 100).padStart(20, '0')}.rdb`)));
  const { h: after } = open(t, dir);
  await after.recover();
  t.equal(after.log.endOffset, end);
  t.same([after.usableSnapshot()?.replid, after.usableSnapshot()?.offset], [A, 100], 'the snapshot of A past the failover is not used');
});

t.test('after more failovers than the state file keeps ids for, it still vouches for the snapshot of the epoch\'s full sync: the restart keeps the disk log', async (t) => {
  const dir = tempDir('history-');
  const { h } = await synced(t, dir, 5);
  // Switchovers back and forth (each promotion a new id) with no full sync in between: the only snapshot is still A's.
  const ids = Array.from({ length: 20 }, (_, i) => i.toString(16).padStart(2, '0').repeat(20));
  for (const id of ids) {
    await h.continued(id);
    await stream(h, id.slice(0, 2), 2);
  }
  const end = h.log.endOffset;
  await h.close();
  const { h: after, records } = open(t, dir);
  await after.recover();
  t.notOk(records.some((r) => r.msg.startsWith('state file does not name the history of the snapshots')), 'the state file is trusted');
  t.same([after.ids.replid, after.ids.replid2, after.log.endOffset, after.usableSnapshot()?.replid], [ids[19], ids[18], end, A], 'ids, log and the snapshot of A are kept');
});

t.test('while the state naming a new replid is being written, no replica is continued under it: a crash then would leave it an id the restart does not know', async (t) => {
  const dir = tempDir('history-');
  const io = new FaultyIo();
  const { h } = await synced(t, dir, 5, io);
  const end = h.log.endOffset;
  // The state write waits (a slow fsync under a busy disk log); SIGKILL comes before it lands.
  io.hangOpens((path) => path.includes('state.json.tmp'));
  const shifted = h.continued(B);
  await waitFor(() => io.hungOpens > 0 || undefined, { what: 'the state write under way', intervalMs: 1 });
  t.notOk(h.ids.accepts(B, end + 1), `a replica asking ${B.slice(0, 6)}… is not continued before the state names it`);
  t.ok(h.ids.accepts(A, end + 1), `one asking ${A.slice(0, 6)}… still is`);
  const { h: after } = open(t, dir);
  await after.recover();
  t.equal(after.ids.replid, A, 'a restart now knows only the old id');
  io.release();
  t.equal(await shifted, true);
  t.same([h.ids.replid, h.ids.replid2, h.ids.secondReplOffset], [B, A, end + 1], 'the ids shift once the state names them');
});

t.test('a full sync from upstream while the state of a replid shift is being written wins: the shift is not taken after it', async (t) => {
  const C = 'c'.repeat(40);
  const dir = tempDir('history-');
  const io = new FaultyIo();
  const { h } = await synced(t, dir, 5, io);
  io.hangOpens((path) => path.includes('state.json.tmp'));
  const shifted = h.continued(B);
  await waitFor(() => io.hungOpens > 0 || undefined, { what: 'the state write under way', intervalMs: 1 });
  // The link failed meanwhile, reconnected and was given a full sync (a new history).
  const full = fullSync(h, C, 5000);
  await waitFor(() => h.ids.replid === C || undefined, { what: 'the full sync switched the ids', intervalMs: 1 });
  io.release();
  t.equal(await shifted, false, 'the shift is not announced');
  await full;
  t.same([h.ids.replid, h.ids.replid2, h.epoch], [C, '0'.repeat(40), 2], 'the ids are the full sync\'s');
  await h.close();
  const { h: after } = open(t, dir);
  await after.recover();
  t.same([after.ids.replid, after.epoch], [C, 2], 'and so is the state file');
});

t.test('a restart removes the temp files of state and time-mark writes a crash interrupted, and nothing else', async (t) => {
  const dir = tempDir('history-');
  const { h } = await synced(t, dir, 0);
  await h.close();
  const left = ['state.json.tmp-4242-m1abc-1', 'marks-0000000001.log.tmp-4242-m1abc-2'];
  for (const name of left) await fsp.writeFile(join(dir, name), '{"torn');
  await fsp.writeFile(join(dir, 'notes.tmp'), 'not ours');
  const { h: after } = open(t, dir);
  await after.recover();
  const names = await fsp.readdir(dir);
  t.same(names.filter((n) => left.includes(n)), [], 'the temp files are gone');
  t.ok(names.includes('notes.tmp') && names.includes('state.json'), 'other files stay');
  t.equal(after.ids.replid, A, 'the state file is read as before');
});

/** An RDB-looking file whose body names the history line and offset it stands for (zero checksum: not checked). */
const taggedRdb = (tag: string): Buffer => Buffer.concat([Buffer.from('REDIS0010', 'latin1'), Buffer.from(tag), Buffer.from([0xff]), Buffer.alloc(8)]);

t.test('a crash between any two file operations of full syncs, a failover and a snapshot refresh leaves a restart claiming only what its files hold', async (t) => {
  const C = 'c'.repeat(40);
  /** The stream of each line of history from its first offset: L1 is A's and then, from the fork, B's; L2 is C's. */
  const lines = { L1: { from: 101, bytes: [] as Buffer[] }, L2: { from: 5001, bytes: [] as Buffer[] } };
  let fork = 0;
  /** The line `replid` belongs to and the last offset the relay saw of it. */
  const lineOf = (replid: string): { line: keyof typeof lines; last: number } | null => {
    const end = (l: keyof typeof lines) => lines[l].from - 1 + Buffer.concat(lines[l].bytes).length;
    if (replid === A) return { line: 'L1', last: fork || end('L1') };
    if (replid === B) return { line: 'L1', last: end('L1') };
    if (replid === C) return { line: 'L2', last: end('L2') };
    return null;
  };
  const clean = (): void => {
    lines.L1.bytes = [];
    lines.L2.bytes = [];
    fork = 0;
  };
  async function feed(h: History, io: FaultyIo, line: keyof typeof lines, tag: string, n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      const cmd = encodeCommand(['SET', `${tag}:${i}`, tag.repeat(40 + i)]);
      h.log.append(cmd, h.log.endOffset + cmd.length);
      lines[line].bytes.push(cmd);
    }
    await waitFor(() => io.crashed || h.disk!.writtenOffset === h.log.endOffset || undefined, { what: 'the log on disk', intervalMs: 1 });
  }
  async function snapshot(h: History, tag: string): Promise<string> {
    const tmp = h.store.tempPath();
    await fsp.writeFile(tmp, taggedRdb(tag));
    return tmp;
  }
  async function run(dir: string, io: FaultyIo): Promise<void> {
    const records: Rec[] = [];
    const logger = createLogger('info', { write: (line: string) => void records.push(JSON.parse(line) as Rec) });
    const h = new History({ dir, memory: 1 << 20, disk: 1 << 20, diskQueue: 1 << 30, diskDirect: false, refreshHold: 0, logger, telemetry: new Telemetry('history-test'), io, diskRetryMinMs: 1, diskRetryMaxMs: 2 });
    try {
      await h.recover();
      await h.fullSync(await snapshot(h, 'L1@100'), A, 100);
      await feed(h, io, 'L1', 'a', 30);
      if (io.crashed) return;
      fork = h.log.endOffset;
      await h.continued(B);
      await feed(h, io, 'L1', 'b', 30);
      if (io.crashed) return;
      const at = h.log.endOffset;
      await h.commitSnapshot(await snapshot(h, `L1@${at}`), { replid: B, offset: at }, h.epoch);
      await h.fullSync(await snapshot(h, 'L2@5000'), C, 5000);
      await feed(h, io, 'L2', 'c', 30);
    } catch (err) {
      if (!io.crashed) throw err;
    } finally {
      // A dead process closes nothing: its disk log only stops (no timer keeps this test alive).
      if (io.crashed) await h.disk?.close(0).catch(() => {});
      else await h.close();
      await io.settled();
    }
  }
  const io0 = new FaultyIo();
  await run(tempDir('history-crash-'), io0);
  t.ok(io0.ops > 20, `a clean run makes ${io0.ops} file operations`);
  const problems: string[] = [];
  const kinds = new Set<string>();
  for (let k = 1; k <= io0.ops; k++) {
    clean();
    const dir = tempDir('history-crash-');
    const io = new FaultyIo();
    io.crashAt(k, k);
    await run(dir, io);
    const { h } = open(t, dir);
    await h.recover();
    const say = (what: string) => problems.push(`crash at operation ${k}: ${what}`);
    if (!h.hasHistory) {
      kinds.add('none');
      await h.close();
      continue;
    }
    const own = lineOf(h.ids.replid);
    const first = h.log.firstOffset;
    const end = h.log.endOffset;
    if (own === null) say(`continues an id it never had: ${h.ids.replid}`);
    else {
      const line = lines[own.line];
      kinds.add(`${own.line}:${h.ids.replid[0]}:${h.disk!.empty ? 'snapshot' : 'log'}`);
      if (end < line.from - 1 || end > own.last) say(`continues ${h.ids.replid[0]} at ${end + 1}, outside what it saw of that id (${line.from - 1}..${own.last})`);
      if (!h.disk!.empty) {
        const held = await readRange(h, first, end);
        const truth = Buffer.concat(line.bytes).subarray(first - line.from, end - line.from + 1);
        if (!held.equals(truth)) say(`its log [${first}, ${end}] is not ${h.ids.replid[0]}'s stream`);
      }
      if (h.ids.secondReplOffset >= 0) {
        const second = lineOf(h.ids.replid2);
        if (second === null || second.line !== own.line || h.ids.secondReplOffset - 1 > second.last) say(`replid2 ${h.ids.replid2[0]} up to ${h.ids.secondReplOffset} is not its history`);
      }
      const snap = h.usableSnapshot();
      if (snap) {
        const tag = (await fsp.readFile(snap.path)).subarray(9, -9).toString();
        if (tag !== `${own.line}@${snap.offset}`) say(`serves full syncs of ${h.ids.replid[0]} at ${snap.offset} from the snapshot ${tag}`);
      }
    }
    await h.close();
  }
  t.same(problems, [], `every one of ${io0.ops} crash points restarts into a history its files hold (${[...kinds].join(', ')})`);
});

/** The disk log's bytes from `first` to `end`. */
async function readRange(h: History, first: number, end: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let o = first; o <= end; ) {
    const b = await h.disk!.read(o, end - o + 1);
    parts.push(Buffer.from(b));
    o += b.length;
  }
  return Buffer.concat(parts);
}

t.test('the disk log limit is log.disk, or half of a filesystem smaller than twice it', async (t) => {
  t.equal(diskLimitFor(1 << 30, 100 << 30), 1 << 30, 'a large filesystem: log.disk');
  t.equal(diskLimitFor(1 << 30, 40 << 20), 20 << 20, 'a 40 MiB filesystem: 20 MiB');
  t.equal(diskLimitFor(1 << 30, 2 << 30), 1 << 30, 'exactly twice log.disk: log.disk');
  t.equal(diskLimitFor(1 << 30, 0), 1 << 30, 'a filesystem that reports no size: log.disk');
});

for (const [what, edit] of [
  ['replid', (s: Record<string, unknown>) => ({ ...s, replid: '1'.repeat(40) })],
  ['epoch', (s: Record<string, unknown>) => ({ ...s, epoch: Number(s['epoch']) + 1 })],
] as const) {
  t.test(`a state file whose ${what} was changed after it was written (a flipped bit, an edit) is not trusted: the restart continues the snapshot's id and epoch`, async (t) => {
    const dir = tempDir('history-');
    const { h } = await synced(t, dir, 10);
    await h.close();
    const file = join(dir, 'state.json');
    const state = JSON.parse(await fsp.readFile(file, 'utf8')) as Record<string, unknown>;
    t.type(state['crc32'], 'number', 'the file carries its checksum');
    await fsp.writeFile(file, JSON.stringify(edit(state)));
    const { h: after, records } = open(t, dir);
    await after.recover();
    // Trusted, the changed replid was served for this directory's bytes, and the changed epoch deleted every file of
    // the history as another's.
    t.equal(after.ids.replid, A, "the snapshot's id, not the file's");
    t.equal(after.usableSnapshot()?.replid, A, 'and its snapshot kept');
    t.ok(records.some((r) => r.msg.startsWith('state file not used') && /does not match its checksum/.test(String(r['reason']))), 'logged, naming the checksum');
  });
}

t.test('a state file without a checksum (an earlier version wrote it) is trusted as before', async (t) => {
  const dir = tempDir('history-');
  const { h } = await synced(t, dir, 10);
  const end = h.log.endOffset;
  await h.close();
  const file = join(dir, 'state.json');
  const { crc32: _, ...plain } = JSON.parse(await fsp.readFile(file, 'utf8')) as Record<string, unknown>;
  await fsp.writeFile(file, JSON.stringify(plain));
  const { h: after } = open(t, dir);
  await after.recover();
  t.same([after.ids.replid, after.log.endOffset], [A, end], 'ids and the log kept');
});

t.test('a graceful close marks the end of the last burst with its own time: a restart does not date it at the restart', async (t) => {
  const dir = tempDir('history-');
  const { h } = await synced(t, dir, 0);
  await stream(h, 'a', 1); // marked (the first command)
  await stream(h, 'b', 1); // within a second (most likely): noted, not marked
  const end = h.log.endOffset;
  const before = Date.now();
  await h.close();
  const { h: after } = open(t, dir);
  await after.recover();
  const last = after.marks.all.at(-1);
  t.equal(last?.offset, end, 'the end of the burst is marked');
  t.ok(last !== undefined && last.ms <= before, 'with the time it was received, not a later one');
  t.same(after.marks.atOrBefore(before), last, 'a time after it (before the restart) is the end of the burst');
});
