/**
 * History's transitions against a real data directory with faults injected (FaultyIo): what a restart finds after a
 * state write failed or the process died between two file operations. The oracle is what a restarted History would
 * claim: a (replid, offset) it continues must name the bytes its log and snapshot hold.
 */
import t, { type Test } from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { History } from '../../src/backlog/history.js';
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

t.test('a replid shift whose state write fails never lets a restart continue the old id with the new id\'s bytes', async (t) => {
  const dir = tempDir('history-');
  const io = new FaultyIo();
  const { h, records } = open(t, dir, io);
  await h.recover();
  await fullSync(h, A, 100);
  await stream(h, 'a', 20);
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
  const { h, records } = open(t, dir, io);
  await h.recover();
  await fullSync(h, A, 100);
  await stream(h, 'a', 5);
  const ids = { replid: h.ids.replid, replid2: h.ids.replid2, secondReplOffset: h.ids.secondReplOffset };
  // The write fails; so do the removal of its temp file and that of the state file.
  io.failWrites('EIO', 1);
  io.failRemoves('EIO', 2);
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
