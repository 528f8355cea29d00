import t from 'tap';
import { WritePacer } from '../../src/downstream/write-pacer.js';

t.test('paced writes run in order, with their results, spread over turns once the turn budget is spent', async (t) => {
  // A budget of 0 ms: every write spends it, so each turn runs exactly one.
  const pacer = new WritePacer(0);
  const ran: number[] = [];
  let turn = 0;
  const turns: number[] = [];
  // Counts turns of the event loop: an immediate that queues the next one runs once per turn.
  let counting = true;
  const tick = (): void => {
    turn++;
    if (counting) setImmediate(tick);
  };
  setImmediate(tick);
  const results = await Promise.all(
    [1, 2, 3, 4, 5].map((i) =>
      pacer.run(() => {
        ran.push(i);
        turns.push(turn);
        return i * 10;
      }),
    ),
  );
  counting = false;
  t.same(ran, [1, 2, 3, 4, 5], 'in the order queued');
  t.same(results, [10, 20, 30, 40, 50], 'each resolves with what its write returned');
  t.equal(new Set(turns).size, 5, `one write per turn: turns ${turns.join(', ')}`);
  t.equal(pacer.stats.yields, 4);
});

t.test('a paced write that throws rejects its own promise only', async (t) => {
  const pacer = new WritePacer();
  const a = pacer.run(() => {
    throw new Error('socket gone');
  });
  const b = pacer.run(() => 'ok');
  await t.rejects(a, /socket gone/);
  t.equal(await b, 'ok');
});

t.test('with budget left, the writes queued in one turn all run in the next', async (t) => {
  const pacer = new WritePacer(1000);
  const got = await Promise.all(Array.from({ length: 100 }, (_, i) => pacer.run(() => i)));
  t.equal(got.length, 100);
  t.equal(pacer.stats.runs, 1, 'one drain');
  t.equal(pacer.stats.yields, 0);
});
