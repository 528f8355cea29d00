/**
 * What RELAY PITR says when no snapshot can start a point-in-time replica: none held yet (a full sync from upstream
 * still being saved: the stream already flows), or none the log still follows.
 */
import t from 'tap';
import { ReplLog } from '../../src/backlog/repl-log.js';
import type { SnapshotMeta } from '../../src/backlog/snapshot-store.js';
import { PitrPlanner } from '../../src/pitr/planner.js';
import { TimeMarks } from '../../src/pitr/time-marks.js';
import { createLogger } from '../../src/log.js';
import { encodeCommand } from '../../src/resp/writer.js';

function planner(offset: number, snapshots: SnapshotMeta[]): PitrPlanner {
  // A 1 KiB memory log that received 1 MiB of stream after `offset`: it holds only its last block.
  const log = new ReplLog(1024, offset);
  const set = encodeCommand(['SET', 'k', 'v'.repeat(100)]);
  for (let n = 0; n < 1 << 20; n += set.length) log.append(set, log.endOffset + set.length);
  const marks = new TimeMarks(t.testdir({}), createLogger('silent'));
  return new PitrPlanner({ log, marks, snapshots: () => snapshots });
}

const snapshot = (offset: number): SnapshotMeta => ({ replid: 'a'.repeat(40), offset, epoch: 1, size: 100, rdbVersion: 10, createdAt: 0, path: '/nowhere' });

t.test('no snapshot held yet (the full sync from upstream still being saved): RELAY PITR says so, and to ask again', async (t) => {
  await t.rejects(planner(18045, []).plan({ kind: 'offset', offset: 18100 }), { message: /^no point in time can be served yet: the relay holds no snapshot of its current history; ask again$/ });
});

t.test('a snapshot the log no longer follows: RELAY PITR says that', async (t) => {
  await t.rejects(planner(18045, [snapshot(18045)]).plan({ kind: 'offset', offset: 18045 + (1 << 20) - 200 }), { message: /the log no longer follows any snapshot the relay holds/ });
});
