import t from 'tap';
import { backoffDelay } from '../../src/upstream/backoff.js';

const zero = () => 0;
const one = () => 1;

t.test('attempt 0 waits between min/2 and min', async (t) => {
  t.equal(backoffDelay(0, 100, 10_000, zero), 50);
  t.equal(backoffDelay(0, 100, 10_000, one), 100);
  t.equal(backoffDelay(0, 100, 10_000, () => 0.5), 75);
});

t.test('the ceiling doubles with each attempt until max', async (t) => {
  const min = 100;
  const max = 10_000;
  const tops = Array.from({ length: 10 }, (_, i) => backoffDelay(i, min, max, one));
  t.same(tops, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]);
});

t.test('for many attempts, random() = 0 gives min/2 and random() = 1 gives the capped ceiling', async (t) => {
  for (const [min, max] of [
    [100, 10_000],
    [1, 30_000],
    [250, 250],
    [1000, 60_000],
    [7, 1000],
  ] as const) {
    const wrong: string[] = [];
    for (let attempt = 0; attempt <= 200; attempt++) {
      const low = backoffDelay(attempt, min, max, zero);
      const high = backoffDelay(attempt, min, max, one);
      const ceiling = Math.min(max, min * 2 ** attempt);
      if (low !== Math.round(min / 2)) wrong.push(`attempt ${attempt}: low ${low}, want ${Math.round(min / 2)}`);
      if (high !== ceiling) wrong.push(`attempt ${attempt}: high ${high}, want ${ceiling}`);
      if (!Number.isInteger(low) || !Number.isInteger(high)) wrong.push(`attempt ${attempt}: ${low}, ${high} not whole milliseconds`);
    }
    t.same(wrong, [], `min ${min} max ${max}: bounds hold for attempts 0..200`);
  }
});

t.test('delays stay within [min/2, max] for random values in between', async (t) => {
  let bad = 0;
  for (let attempt = 0; attempt < 100; attempt++) {
    for (const r of [0, 0.001, 0.25, 0.5, 0.999, 1]) {
      const d = backoffDelay(attempt, 200, 5000, () => r);
      if (d < 100 || d > 5000 || !Number.isFinite(d)) bad++;
    }
  }
  t.equal(bad, 0);
});

t.test('huge attempt numbers do not overflow to Infinity or NaN', async (t) => {
  for (const attempt of [31, 1000, 1e6, Number.MAX_SAFE_INTEGER]) {
    t.equal(backoffDelay(attempt, 100, 30_000, one), 30_000, `attempt ${attempt}`);
    t.equal(backoffDelay(attempt, 100, 30_000, zero), 50);
  }
});

t.test('the default random source stays within bounds and spreads the delays', async (t) => {
  const delays = Array.from({ length: 200 }, () => backoffDelay(5, 100, 1000));
  t.ok(Math.min(...delays) >= 50, `no delay under min/2 (lowest ${Math.min(...delays)})`);
  t.ok(Math.max(...delays) <= 1000, `no delay over max (highest ${Math.max(...delays)})`);
  t.ok(new Set(delays).size > 20, `jitter: ${new Set(delays).size} distinct delays in 200`);
});
