import { inspect } from 'node:util';

export interface WaitForOptions {
  /** Overall deadline in ms (default 20000). */
  timeoutMs?: number;
  /** Pause between attempts in ms (default 50). */
  intervalMs?: number;
  /** What is being waited for; appears in the timeout error. */
  what?: string;
  /** Stop polling early: waitFor rejects with `signal.reason` (e.g. the polled process died). */
  signal?: AbortSignal;
}

type Falsy = undefined | false;

function describe(v: unknown): string {
  if (v instanceof Error) return `error ${v.message}`;
  return inspect(v, { depth: 4, breakLength: Infinity, maxStringLength: 500 });
}

const EXPIRED = Symbol('expired');

/** Resolves with EXPIRED after `ms` (or ends early, rejecting, when `signal` aborts); `cancel` clears the timer. */
function delay(ms: number, signal: AbortSignal | undefined): { done: Promise<typeof EXPIRED>; cancel: () => void } {
  let cancel = (): void => undefined;
  const done = new Promise<typeof EXPIRED>((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(EXPIRED);
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
    cancel = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
  });
  done.catch(() => undefined);
  return { done, cancel };
}

/**
 * Poll `fn` until it returns something other than `undefined` or `false`, and resolve with that.
 * An attempt that throws/rejects counts as "not yet" (e.g. ECONNREFUSED while a server restarts); the error is kept as
 * the last value seen. An attempt still pending at the deadline is abandoned.
 * On timeout throws `Error("timed out after Nms waiting for <what>; last seen: <value>")` with the last error as `cause`.
 * `opts.signal` aborts the polling: waitFor rejects with `signal.reason`.
 */
export async function waitFor<T>(
  fn: () => Promise<T | Falsy> | T | Falsy,
  opts: WaitForOptions = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const intervalMs = opts.intervalMs ?? 50;
  const what = opts.what ?? 'condition';
  const { signal } = opts;
  const started = Date.now();
  const deadline = started + timeoutMs;
  let last: unknown = '(no attempt completed)';

  for (let attempt = 0; ; attempt++) {
    signal?.throwIfAborted();
    const remaining = deadline - Date.now();
    if (remaining <= 0 && attempt > 0) break;
    const limit = delay(Math.max(remaining, 1), signal);
    let v: T | Falsy | typeof EXPIRED;
    try {
      v = await Promise.race([Promise.resolve().then(fn), limit.done]);
      if (v !== EXPIRED) last = v;
    } catch (err) {
      signal?.throwIfAborted();
      v = undefined;
      last = err;
    } finally {
      limit.cancel();
    }
    if (v === EXPIRED) {
      last = '(last attempt still pending at the deadline)';
      break;
    }
    if (v !== undefined && v !== false) return v;
    const pause = Math.min(intervalMs, deadline - Date.now());
    if (pause <= 0) break;
    const sleep = delay(pause, signal);
    await sleep.done; // rejects on abort
  }

  const elapsed = Date.now() - started;
  throw new Error(`timed out after ${elapsed}ms waiting for ${what}; last seen: ${describe(last)}`, {
    cause: last instanceof Error ? last : undefined,
  });
}
