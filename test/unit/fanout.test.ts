import t from 'tap';
import { Fanout, Flush, type FanoutMember } from '../../src/downstream/fanout.js';

/** One turn of the event loop: the pass scheduled before it has run. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A member with `left` bytes to send; records every flush. */
class Member implements FanoutMember {
  flushes: number[] = [];
  lagChecks = 0;
  /** What flush returns when it sent something but has bytes left (More), or when it must wait. */
  blocked = false;
  onFlush: (() => void) | null = null;
  constructor(
    readonly name: string,
    public left: number,
    readonly log: string[],
  ) {}
  flush(budget: number): Flush {
    this.onFlush?.();
    if (this.blocked) return Flush.Wait;
    const n = Math.min(budget, this.left);
    this.left -= n;
    this.flushes.push(n);
    this.log.push(this.name);
    return this.left > 0 ? Flush.More : Flush.Idle;
  }
  checkLag(): void {
    this.lagChecks++;
  }
}

t.test('fan-out: woken members are served round-robin, a budget each per pass', async (t) => {
  const log: string[] = [];
  const f = new Fanout({ memberBudget: 100, passMs: 1000 });
  const a = new Member('a', 250, log);
  const b = new Member('b', 100, log);
  const c = new Member('c', 150, log);
  for (const m of [a, b, c]) {
    f.add(m);
    f.wake(m);
  }
  t.same(log, [], 'nothing is written from wake(): only in the pass');
  await turn();
  t.same(log, ['a', 'b', 'c', 'a', 'c', 'a'], 'one budget per member at a time, those with more go behind the others');
  t.same(a.flushes, [100, 100, 50]);
  t.same(b.flushes, [100]);
  t.same(c.flushes, [100, 50]);
});

t.test('fan-out: a pass stops after passMs and the rest goes first in the next pass', async (t) => {
  const log: string[] = [];
  const f = new Fanout({ memberBudget: 10, passMs: 5 });
  const slow = new Member('slow', 1000, log);
  const other = new Member('other', 10, log);
  // Each of slow's flushes takes 3 ms: a pass holds at most two of them.
  slow.onFlush = () => {
    const until = performance.now() + 3;
    while (performance.now() < until);
  };
  f.add(slow);
  f.add(other);
  f.wake(slow);
  f.wake(other);
  const passes = f.stats.passes;
  await turn();
  t.ok(log.length <= 3, `the first pass yielded (${log.join(',')})`);
  t.ok(f.stats.yields >= 1);
  let turns = 0;
  while (slow.left > 0 && turns++ < 1000) await turn();
  t.equal(slow.left, 0, 'the rest was sent over the next turns');
  t.ok(f.stats.passes - passes > 2);
  t.equal(log[1], 'other', 'the other member was served right after slow\'s first budget, not after all of it');
});

t.test('fan-out: an append wakes idle members once per turn; waiting members have their lag checked', async (t) => {
  const log: string[] = [];
  const f = new Fanout({ memberBudget: 100 });
  const idle = new Member('idle', 10, log);
  const waiting = new Member('waiting', 10, log);
  f.add(idle);
  f.add(waiting);
  f.wake(idle);
  waiting.blocked = true;
  f.wake(waiting);
  await turn();
  t.same(log, ['idle'], 'the waiting one could not send');
  idle.left = 50;
  for (let i = 0; i < 5; i++) f.appended();
  await turn();
  t.same(log, ['idle', 'idle'], 'five appends in one turn: one flush');
  t.equal(waiting.lagChecks, 1, 'a member waiting for its socket has its lag checked as the log grows');
  waiting.blocked = false;
  f.wake(waiting); // its socket drained
  await turn();
  t.same(log, ['idle', 'idle', 'waiting']);
});

t.test('fan-out: a member removed, or closed during its flush, is not served again', async (t) => {
  const log: string[] = [];
  const f = new Fanout({ memberBudget: 10 });
  const a = new Member('a', 100, log);
  const b = new Member('b', 100, log);
  f.add(a);
  f.add(b);
  f.wake(a);
  f.wake(b);
  a.onFlush = () => f.remove(a);
  f.remove(b);
  await turn();
  f.appended();
  await turn();
  t.same(log, ['a'], 'a flushed once, then was gone; b never');
});

t.test('fan-out: a wake during the member\'s own flush puts it back in line', async (t) => {
  const log: string[] = [];
  const f = new Fanout({ memberBudget: 10 });
  const a = new Member('a', 10, log);
  f.add(a);
  f.wake(a);
  let once = true;
  a.onFlush = () => {
    if (once) {
      once = false;
      a.left = 30;
      f.wake(a);
    }
  };
  a.blocked = false;
  await turn();
  for (let i = 0; i < 5 && a.left > 0; i++) await turn();
  t.equal(a.left, 0);
});

t.test('fan-out: close() stops every pass', async (t) => {
  const log: string[] = [];
  const f = new Fanout();
  const a = new Member('a', 10, log);
  f.add(a);
  f.wake(a);
  f.close();
  await turn();
  f.appended();
  f.wake(a);
  await turn();
  t.same(log, []);
});
