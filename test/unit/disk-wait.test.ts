import t from 'tap';
import { DiskWait } from '../../src/backlog/disk-wait.js';
import { fakeNow } from '../helpers/clock.js';

const MB = 1024 * 1024;

t.test('under the mark the reads go on; past it, a healthy disk makes them wait until it is back under', async (t) => {
  fakeNow(t);
  const waited: number[] = [];
  const w = new DiskWait({ from: 64 * MB, onWaited: (ms) => waited.push(ms) });
  t.equal(w.check(64 * MB, true, 0), null, 'at the mark: no wait');
  const p = w.check(64 * MB + 1, true, 0);
  t.not(p, null, 'past it: wait');
  t.equal(w.check(70 * MB, true, 0), p, 'one wait for every reader of the burst');
  let released = false;
  void p!.then(() => (released = true));
  w.progressed(65 * MB);
  await Promise.resolve();
  t.equal(released, false, 'a write that leaves the disk past the mark keeps the reads waiting');
  w.progressed(60 * MB);
  await p;
  t.same(waited, [0], 'the burst is reported once it is over');
  t.equal(w.check(60 * MB, true, 0), null);
});

t.test('a failing disk, or a write out for the hung limit, is not waited for', async (t) => {
  const clock = fakeNow(t);
  const w = new DiskWait({ from: MB, hungMs: 1000 });
  t.equal(w.check(2 * MB, false, 0), null, 'failing: the reads go on (the queue decides)');
  t.equal(w.check(2 * MB, true, clock.now - 1000), null, 'a write out for 1 s: the disk may be hung');
  const p = w.check(2 * MB, true, clock.now - 999);
  t.not(p, null, 'a write out for less: wait');
  w.release();
  await p;
});

t.test('a burst waits at most maxWaitMs in all: a disk slower than the stream for longer is not waited for', async (t) => {
  const clock = fakeNow(t);
  const waited: number[] = [];
  const w = new DiskWait({ from: MB, maxWaitMs: 5000, hungMs: 1000, onWaited: (ms) => waited.push(ms) });
  const first = w.check(2 * MB, true, 0);
  t.not(first, null);
  w.release();
  await first;
  clock.advance(4999);
  const second = w.check(2 * MB, true, 0);
  t.not(second, null, 'still within the burst limit');
  w.release();
  await second;
  clock.advance(1);
  t.equal(w.check(2 * MB, true, 0), null, '5 s into the burst: the reads go on');
  t.equal(w.check(3 * MB, true, 0), null, 'for the rest of this burst');
  w.progressed(MB);
  t.same(waited, [5000], 'the burst ends once the disk is back under the mark');
  t.not(w.check(2 * MB, true, 0), null, 'the next burst waits again');
  w.release();
});

t.test('a waiting reader is woken to ask again within the hung limit, without any write returning', async (t) => {
  fakeNow(t);
  const w = new DiskWait({ from: MB, hungMs: 20 });
  const p = w.check(2 * MB, true, 0);
  t.not(p, null);
  // Resolves by the timer alone: a write that never returns cannot hold the reads past the hung limit.
  await p;
  t.not(w.check(2 * MB, true, 0), p, 'a new wait after the wake');
  w.release();
});
