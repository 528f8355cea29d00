import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TimeMarks } from '../../src/pitr/time-marks.js';
import { createLogger } from '../../src/log.js';
import { waitFor } from '../helpers/wait.js';
import { tempDir } from '../helpers/temp-dir.js';

const logger = createLogger('silent');
const file = (dir: string, epoch: number) => join(dir, `marks-${String(epoch).padStart(10, '0')}.log`);

/** Marks of history `epoch` in a fresh directory. */
async function fresh(epoch: number): Promise<{ dir: string; m: TimeMarks }> {
  const dir = tempDir('marks-');
  const m = new TimeMarks(dir, logger);
  await m.load(epoch, 0);
  return { dir, m };
}

t.test('at most one mark a second, plus the end of a burst after a quiet second', async (t) => {
  const { m } = await fresh(1);
  m.note(100, 1, 10_000);
  m.note(200, 1, 10_400);
  m.note(300, 1, 10_900);
  m.note(400, 1, 11_000); // a second after the first mark
  m.note(500, 1, 11_200);
  m.note(600, 1, 15_000); // after a quiet stretch: 500 was held from 11 200 on
  t.same(m.all, [
    { offset: 100, ms: 10_000 },
    { offset: 400, ms: 11_000 },
    { offset: 500, ms: 11_200 },
    { offset: 600, ms: 15_000 },
  ]);
  t.same(m.atOrBefore(14_000), { offset: 500, ms: 11_200 }, 'a time in the quiet stretch is the end of the burst');
  t.equal(m.atOrBefore(9_000), null, 'before the first mark: unknown');
  t.equal(m.timeOf(250), 11_000, 'an offset is dated by the first mark at or after it');
  t.equal(m.timeOf(600), 15_000);
});

t.test('marks survive a restart up to the recovered end, and another history starts empty', async (t) => {
  const { dir, m: a } = await fresh(3);
  a.note(100, 1, 1_000);
  a.note(200, 1, 2_000);
  a.note(300, 1, 3_000);
  await waitFor(() => readFileSync(file(dir, 3), 'utf8').split('\n').length === 4 || undefined, { what: 'three marks written' });
  const b = new TimeMarks(dir, logger);
  await b.load(3, 250);
  t.same(b.all, [
    { offset: 100, ms: 1_000 },
    { offset: 200, ms: 2_000 },
  ], 'marks past the recovered log end are dropped');
  b.reset(4);
  t.same(b.all, []);
  await waitFor(() => { try { readFileSync(file(dir, 3)); return undefined; } catch { return true; } }, { what: 'the old history’s file removed' });
});

t.test('marks before the log start are forgotten and the file is compacted', async (t) => {
  const { dir, m } = await fresh(1);
  for (let i = 1; i <= 5000; i++) m.note(i * 10, i * 10, i * 1000);
  t.equal(m.all.length, 2, 'only the mark before the log start and the newest stay');
  await waitFor(() => readFileSync(file(dir, 1), 'utf8').split('\n').length < 2000 || undefined, { what: 'the file compacted' });
});

t.test('a torn last line (a crash or a full disk mid-append) is never joined with the next mark into a false one', async (t) => {
  const dir = tempDir('marks-');
  // The first mark whole, the second cut after "12" of "1234 2000".
  writeFileSync(file(dir, 1), '100 1000\n12');
  const m = new TimeMarks(dir, logger);
  await m.load(1, 1_000_000);
  t.same(m.all, [{ offset: 100, ms: 1_000 }], 'the torn line is not a mark');
  m.note(5678, 1, 3_000);
  await waitFor(() => readFileSync(file(dir, 1), 'utf8').includes('5678 3000 ') || undefined, { what: 'the new mark written' });
  const again = new TimeMarks(dir, logger);
  await again.load(1, 1_000_000);
  t.same(again.all, [{ offset: 100, ms: 1_000 }, { offset: 5678, ms: 3_000 }], 'after a restart: the marks noted, nothing else');
  t.equal(again.atOrBefore(3_500)?.offset, 5678);
});

t.test('a mark whose line changed on disk (a digit) is not used; a file of the earlier format (no checksums) still is', async (t) => {
  const { dir, m } = await fresh(1);
  m.note(100, 1, 1_000);
  m.note(200, 1, 2_000);
  m.note(300, 1, 3_000);
  await waitFor(() => readFileSync(file(dir, 1), 'utf8').split('\n').length === 4 || undefined, { what: 'three marks written' });
  const text = readFileSync(file(dir, 1), 'utf8');
  t.match(text, /^100 1000 [0-9a-f]{8}\n200 2000 [0-9a-f]{8}\n300 3000 [0-9a-f]{8}\n$/, 'each line carries its CRC-32');
  // 2000 becomes 2900: still in order, and a request for 2 500 would have resolved to offset 200.
  writeFileSync(file(dir, 1), text.replace('200 2000 ', '200 2900 '));
  const lines: string[] = [];
  const warned = new TimeMarks(dir, createLogger('warn', { write: (l: string) => void lines.push(l) }));
  await warned.load(1, 1_000_000);
  t.same(warned.all, [{ offset: 100, ms: 1_000 }, { offset: 300, ms: 3_000 }], 'the changed mark is skipped');
  t.equal(warned.atOrBefore(2_500)?.offset, 100);
  t.match(lines.join(''), /time marks that do not match their checksum skipped/);
  writeFileSync(file(dir, 1), '100 1000\n200 2000\n');
  const old = new TimeMarks(dir, logger);
  await old.load(1, 1_000_000);
  t.same(old.all, [{ offset: 100, ms: 1_000 }, { offset: 200, ms: 2_000 }], 'the earlier format is read');
});

t.test('the end of a burst not marked yet is the point of a time after it (the stream quiet since)', async (t) => {
  const { m } = await fresh(1);
  m.note(100, 1, 10_000); // SET a: marked
  m.note(200, 1, 10_300); // SET b 300 ms later: noted, not marked (no note comes a second later)
  t.same(m.all, [{ offset: 100, ms: 10_000 }]);
  t.same(m.atOrBefore(10_300), { offset: 200, ms: 10_300 }, 'at its own time: the second command');
  t.same(m.atOrBefore(60_000), { offset: 200, ms: 10_300 }, 'later (the stream quiet): the second command');
  t.same(m.atOrBefore(10_299), { offset: 100, ms: 10_000 }, 'just before the second note: the first command');
  t.equal(m.atOrBefore(9_999), null, 'before the first: unknown');
  m.note(300, 1, 10_500); // still inside the second: 300 is the end now
  t.same(m.atOrBefore(10_400), { offset: 100, ms: 10_000 }, 'between two notes of a busy second: the mark, earlier, never later');
  t.same(m.atOrBefore(10_500), { offset: 300, ms: 10_500 });
});

t.test('close() marks the end of the last burst with its own time and writes it before resolving', async (t) => {
  const { dir, m } = await fresh(2);
  m.note(100, 1, 10_000);
  m.note(200, 1, 10_300); // the end of the burst: not marked yet
  await m.close();
  t.match(readFileSync(file(dir, 2), 'utf8'), /^100 10000 [0-9a-f]{8}\n200 10300 [0-9a-f]{8}\n$/, 'on disk when close() resolves');
  const again = new TimeMarks(dir, logger);
  await again.load(2, 1_000_000);
  t.same(again.all, [{ offset: 100, ms: 10_000 }, { offset: 200, ms: 10_300 }], 'after a restart: dated by its own time');
  again.note(300, 1, 50_000); // the first note after the restart
  t.same(again.atOrBefore(30_000), { offset: 200, ms: 10_300 }, 'a time before the restart: the end of the burst');
  t.equal(again.timeOf(200), 10_300, 'not the restart time');
  await again.close();
  await again.close(); // nothing new: nothing written twice
  t.equal(readFileSync(file(dir, 2), 'utf8').split('\n').length, 4);
});

t.test('the end of a burst is marked and written a second after it when no byte follows: a SIGKILL then loses at most that second', async (t) => {
  // A quiet master sends its next byte (a PING) only every repl-ping-replica-period (10 s by default): the end of the
  // burst used to wait for it in memory.
  const { dir, m } = await fresh(3);
  const start = Date.now();
  m.note(100, 1, start);
  m.note(200, 1, start + 1); // the end of the burst: not marked yet
  t.same(m.all, [{ offset: 100, ms: start }], 'not at once');
  const onDisk = () => {
    try {
      return readFileSync(file(dir, 3), 'utf8');
    } catch {
      return '';
    }
  };
  await waitFor(() => /^200 /m.test(onDisk()) || undefined, { what: 'the end of the burst on disk, the stream quiet since', timeoutMs: 5000 });
  const again = new TimeMarks(dir, logger);
  await again.load(3, 1_000_000);
  t.same(again.all, [{ offset: 100, ms: start }, { offset: 200, ms: start + 1 }], 'read back after a restart (no close()): dated by its own time');
  m.note(300, 1, Date.now());
  await m.close();
});
