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

/** A planner over `cmds` appended after a snapshot at offset 1000; with the first byte of each command. */
function plannerOver(cmds: string[][]): { planner: PitrPlanner; starts: number[] } {
  const log = new ReplLog(1 << 20, 1000);
  const starts: number[] = [];
  for (const c of cmds) {
    const buf = encodeCommand(c);
    starts.push(log.endOffset + 1);
    log.append(buf, log.endOffset + buf.length);
  }
  const marks = new TimeMarks(t.testdir({}), createLogger('silent'));
  return { planner: new PitrPlanner({ log, marks, snapshots: () => [snapshot(1000)] }), starts };
}

t.test('BEFORE <cmd> <glob> matches key arguments only, not values or hash fields', async (t) => {
  const { planner: p, starts } = plannerOver([
    ['SELECT', '0'],
    ['SET', 'user:1', 'alice'],
    ['SET', 'user:1', 'GARBAGE'],
    ['SET', 'audit:last', 'user:1 edited'],
    ['HSET', 'session:9', 'owner', 'user:2'],
    ['DEL', 'tmp', 'user:7'],
    ['FLUSHALL'],
  ]);
  const set = await p.plan({ kind: 'before', command: 'SET', pattern: 'user:*' });
  t.equal(set.offset, starts[2]! - 1, 'just before SET user:1 GARBAGE, not the later SET whose value names user:1');
  t.equal((await p.plan({ kind: 'before', command: 'set', pattern: 'audit:*' })).offset, starts[3]! - 1);
  await t.rejects(p.plan({ kind: 'before', command: 'HSET', pattern: 'user:*' }), { message: /^no HSET on user:\* in the window/ }, 'a hash field value is no key');
  t.equal((await p.plan({ kind: 'before', command: 'HSET', pattern: 'session:*' })).offset, starts[4]! - 1);
  t.equal((await p.plan({ kind: 'before', command: 'DEL', pattern: 'user:*' })).offset, starts[5]! - 1, 'any of the keys of a multi-key command');
  await t.rejects(p.plan({ kind: 'before', command: 'FLUSHALL', pattern: '*' }), { message: /^no FLUSHALL on \* in the window/ }, 'a keyless command never matches a pattern');
  t.equal((await p.plan({ kind: 'before', command: 'FLUSHALL', pattern: null })).offset, starts[6]! - 1);
});
