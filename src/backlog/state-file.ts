import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from './snapshot-store.js';

const STATE_FILE = 'state.json';

/** What survives a restart besides the snapshot and the log segments. */
export interface PersistedState {
  readonly replid: string;
  readonly replid2: string;
  readonly secondReplOffset: number;
  /** History counter: a snapshot is good only for the history it was taken in. */
  readonly epoch: number;
  readonly snapshot: { readonly replid: string; readonly offset: number; readonly epoch: number } | null;
}

/** The state a previous run left in `dir`, or null (first start, or unreadable). */
export async function readState(dir: string): Promise<PersistedState | null> {
  try {
    const s = JSON.parse(await readFile(join(dir, STATE_FILE), 'utf8')) as PersistedState;
    return typeof s.replid === 'string' && typeof s.epoch === 'number' ? s : null;
  } catch {
    return null;
  }
}

/** Temp file, fsync, rename: a crash leaves the old state or the new one, never half of either. */
export function writeState(dir: string, state: PersistedState): Promise<void> {
  return writeFileAtomic(join(dir, STATE_FILE), JSON.stringify(state));
}
