/** Capped exponential backoff with full jitter: attempt 0 waits up to `min`, each further attempt doubles, up to `max`. */
export function backoffDelay(attempt: number, min: number, max: number, random: () => number = Math.random): number {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return Math.round(min / 2 + random() * Math.max(0, ceiling - min / 2));
}
