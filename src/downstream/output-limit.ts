import type { OutputBufferLimit } from '../config/types.js';

/** Which of Redis's client-output-buffer-limit classes a client is in (replicas have replication.replica-*-lag). */
export type OutputClass = 'normal' | 'pubsub';

/** Why a client went past its class's limit: the config key and its value. */
export interface OutputLimitHit {
  readonly limit: string;
  readonly value: number;
}

/**
 * Redis checkClientOutputBufferLimits: past `hard` at once, or past `soft` continuously for longer than `softMs`.
 * `state.softSince` is when the client went over `soft` (0 = it is not over); updated here.
 */
export function checkOutputLimit(
  cls: OutputClass,
  limit: OutputBufferLimit,
  used: number,
  now: number,
  state: { softSince: number },
): OutputLimitHit | null {
  const key = `listen.client-output-buffer-limit.${cls}`;
  if (limit.hard > 0 && used >= limit.hard) return { limit: `${key}.hard`, value: limit.hard };
  if (limit.soft === 0 || used < limit.soft) {
    state.softSince = 0;
    return null;
  }
  if (state.softSince === 0) {
    state.softSince = now;
    return null;
  }
  return now - state.softSince > limit.softMs ? { limit: `${key}.soft`, value: limit.soft } : null;
}
