import t from 'tap';
import { TurnMemo } from '../../src/util/turn-memo.js';

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

t.test('a turn memo computes once per turn of the event loop, and afresh in the next', async (t) => {
  let computed = 0;
  const memo = new TurnMemo(() => ++computed);
  t.same([memo.get(), memo.get(), memo.get()], [1, 1, 1], 'callers in one turn share one value');
  await Promise.resolve();
  t.equal(memo.get(), 1, 'microtasks of the turn too');
  await nextTurn();
  t.equal(memo.get(), 2, 'the next turn computes again');
  t.equal(computed, 2);
});

t.test('a turn memo whose computation throws computes again at the next call', async (t) => {
  let fail = true;
  let computed = 0;
  const memo = new TurnMemo(() => {
    computed++;
    if (fail) throw new Error('status unavailable');
    return 'ok';
  });
  t.throws(() => memo.get(), /status unavailable/);
  fail = false;
  t.equal(memo.get(), 'ok', 'the failure is not kept for the rest of the turn');
  t.equal(computed, 2);
});
