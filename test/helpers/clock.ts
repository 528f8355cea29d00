import type { Test } from 'tap';

export interface FakeClock {
  /** The current fake time (ms). */
  readonly now: number;
  /** Moves the clock forward. */
  advance(ms: number): void;
}

/**
 * Replaces Date.now() for the rest of test `t` (restored at its teardown): code that measures durations with
 * Date.now() (lag clocks, deadlines) sees exactly the time the test sets, so a test states "299 ms is not yet
 * the limit, 300 ms is" instead of sleeping and hoping. Timers (setTimeout, setInterval) are untouched.
 */
export function fakeNow(t: Test, start = 1_000_000): FakeClock {
  const real = Date.now;
  let now = start;
  Date.now = () => now;
  t.teardown(() => {
    Date.now = real;
  });
  return {
    get now() {
      return now;
    },
    advance(ms: number) {
      now += ms;
    },
  };
}
