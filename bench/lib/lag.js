// Replica lag from two series sampled in different processes on one clock (CLOCK_MONOTONIC ms):
//   master: [[t, master_repl_offset], ...] from bench/probe.js (t = arrival of the ROLE reply)
//   sink:   [[t, lowest offset among the replicas], ...] from bench/sink.js
// lag bytes at t   = the master's offset at t (its last sample at or before t) - the lowest replica offset
// lag seconds at t = t - the time the master first held the byte that replica needs next (its first sample at or
//                    above offset + 1), i.e. the age of the oldest byte some replica has not received yet.
// Both are slightly understated (by up to one master sample period), never overstated.

/** Index of the last element with e[0] <= t, or -1. */
function lastAtOrBefore(series, t) {
  let lo = 0;
  let hi = series.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (series[mid][0] <= t) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found;
}

/** Index of the first element with e[1] >= off (offsets never decrease), or -1. */
function firstReaching(series, off) {
  let lo = 0;
  let hi = series.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (series[mid][1] >= off) {
      found = mid;
      hi = mid - 1;
    } else lo = mid + 1;
  }
  return found;
}

/** Max lag in bytes and seconds over sink samples taken in [from, to]. */
export function lagStats(master, sink, { from = -Infinity, to = Infinity } = {}) {
  let maxBytes = 0;
  let maxSeconds = 0;
  let atBytes = null;
  let atSeconds = null;
  let samples = 0;
  for (const [t, off] of sink) {
    if (t < from || t > to) continue;
    samples++;
    const i = lastAtOrBefore(master, t);
    if (i >= 0) {
      const bytes = master[i][1] - off;
      if (bytes > maxBytes) {
        maxBytes = bytes;
        atBytes = t;
      }
    }
    const j = firstReaching(master, off + 1);
    if (j >= 0 && master[j][0] <= t) {
      const seconds = (t - master[j][0]) / 1000;
      if (seconds > maxSeconds) {
        maxSeconds = seconds;
        atSeconds = t;
      }
    }
  }
  return {
    maxBytes,
    maxSeconds,
    atBytesSeconds: atBytes === null || from === -Infinity ? null : (atBytes - from) / 1000,
    atSecondsSeconds: atSeconds === null || from === -Infinity ? null : (atSeconds - from) / 1000,
    samples,
    masterSamples: master.length,
  };
}
