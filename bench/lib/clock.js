// One clock for every benchmark process: CLOCK_MONOTONIC in milliseconds (process.hrtime is system-wide on
// Linux), read through performance.now() (cheap, no BigInt) plus this process's fixed offset to it.
import { performance } from 'node:perf_hooks';

function calibrate() {
  let best = Infinity;
  let origin = 0;
  for (let i = 0; i < 50; i++) {
    const a = performance.now();
    const h = Number(process.hrtime.bigint()) / 1e6;
    const b = performance.now();
    if (b - a < best) {
      best = b - a;
      origin = h - (a + b) / 2;
    }
  }
  return origin;
}

const ORIGIN = calibrate();

/** Monotonic milliseconds, comparable between processes on this machine. */
export function nowMs() {
  return performance.now() + ORIGIN;
}

/** Monotonic microseconds as an integer (for timestamps embedded in the stream). */
export function nowUs() {
  return Math.round((performance.now() + ORIGIN) * 1000);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
