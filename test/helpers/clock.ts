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

export interface FrozenIntervals {
  /** How many intervals were set (and never fire) while frozen. */
  readonly count: number;
}

/**
 * For the rest of test `t`, setInterval() returns a handle whose callback never runs (restored at its teardown;
 * intervals set before stay real). What a component does on its periodic timer (a heartbeat, a sweep) then cannot
 * be what made something happen: the test proves an event-driven path instead of racing the period.
 */
export function freezeIntervals(t: Test): FrozenIntervals {
  const realSet = globalThis.setInterval;
  const realClear = globalThis.clearInterval;
  const frozen = new Set<object>();
  const fakeSet = (): NodeJS.Timeout => {
    const handle = {
      ref: () => handle,
      unref: () => handle,
      hasRef: () => false,
      refresh: () => handle,
      close: () => handle,
      [Symbol.toPrimitive]: () => -1,
      [Symbol.dispose]: () => undefined,
    };
    frozen.add(handle);
    return handle as unknown as NodeJS.Timeout;
  };
  globalThis.setInterval = fakeSet as unknown as typeof setInterval;
  globalThis.clearInterval = ((h?: NodeJS.Timeout | string | number) => {
    if (h !== undefined && frozen.has(h as object)) return;
    realClear(h);
  }) as typeof clearInterval;
  t.teardown(() => {
    globalThis.setInterval = realSet;
    globalThis.clearInterval = realClear;
  });
  return {
    get count() {
      return frozen.size;
    },
  };
}
