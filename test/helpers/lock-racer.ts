/**
 * One relay's start racing another's for a data directory (data-dir-lock.test.ts): takes the lock of `dir` as
 * `runId`, holds it 600 ms, releases it, and prints `acquired`, `refused <why>` and `lost` (its lock was taken over
 * while held). Every in-place write of the lock file (an `r+` open) waits `delayMs` first, which holds the window
 * between judging a lock stale and taking it open long enough for the other racer to judge it too.
 *   node --import=./test/loader/register.mjs test/helpers/lock-racer.ts <dir> <runId> <delayMs>
 */
import { promises as fsp } from 'node:fs';
import { pino } from 'pino';

const [dir, runId, delayMs] = process.argv.slice(2) as [string, string, string];
const open = fsp.open.bind(fsp);
(fsp as { open: typeof fsp.open }).open = (async (path: string, flags?: string, mode?: number) => {
  if (flags === 'r+') await new Promise((r) => setTimeout(r, Number(delayMs)));
  return open(path, flags, mode);
}) as typeof fsp.open;

const { DataDirLock } = await import('../../src/data-dir-lock.js');
try {
  const lock = await DataDirLock.acquire(dir, { runId, logger: pino({ level: 'silent' }), onLost: () => console.log('lost'), heartbeatMs: 50, staleMs: 400 });
  console.log('acquired');
  await new Promise((r) => setTimeout(r, 600));
  await lock.release();
} catch (err) {
  console.log(`refused ${(err as Error).message}`);
}
