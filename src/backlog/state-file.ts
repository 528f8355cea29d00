import { dirname, join } from 'node:path';
import { nodeFileIo, writeFileAtomic, type FileIo } from './file-io.js';
import { StorageError } from '../errors.js';
import { crc32 } from './crc32.js';
import type { Logger } from '../log.js';

const STATE_FILE = 'state.json';

/** What survives a restart besides the snapshot files and the log segments. */
export interface PersistedState {
  readonly replid: string;
  readonly replid2: string;
  readonly secondReplOffset: number;
  /** History counter: snapshot files and log segments carry it in their names, and only those of this epoch are used. */
  readonly epoch: number;
  /**
   * Every replid this epoch went by, oldest first (its full sync's, then one per failover; when there were many,
   * the newest ones and those a snapshot file of the epoch still carries): the replids its snapshot files may carry.
   * Absent in files of earlier versions.
   */
  readonly lineage?: readonly string[];
}

/** How many of an epoch's replids the state file keeps. */
export const LINEAGE_MAX = 16;

const REPLID_RE = /^[0-9A-Za-z]{40}$/;

/** The fields of `s` in one order, as JSON: what the file's `crc32` covers. */
function canonical(s: PersistedState): string {
  const { replid, replid2, secondReplOffset, epoch, lineage } = s;
  return JSON.stringify({ replid, replid2, secondReplOffset, epoch, ...(lineage ? { lineage } : {}) });
}

/**
 * The state a previous run left in `dir`; null on a first start. Throws when the file exists but cannot be trusted
 * (torn, not JSON, fields missing or of the wrong type, or not what its CRC-32 says: a flipped bit in a replid or an
 * epoch still parses, and would put this directory's bytes under an id the master never had, or delete every file
 * of the history as another's): the caller says so and trusts the snapshots' names instead. A file without a
 * `crc32` (an earlier version's) is taken as it is.
 */
export async function readState(dir: string, io: FileIo = nodeFileIo): Promise<PersistedState | null> {
  let text: string;
  try {
    text = (await io.readFile(join(dir, STATE_FILE))).toString('utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  let s: Partial<PersistedState> & { crc32?: unknown };
  try {
    s = JSON.parse(text) as typeof s;
  } catch {
    throw new StorageError(`${STATE_FILE} is not JSON (${text.length === 0 ? 'empty' : `${text.length} bytes`}: torn or damaged)`);
  }
  const ok =
    typeof s.replid === 'string' && REPLID_RE.test(s.replid) &&
    typeof s.replid2 === 'string' && REPLID_RE.test(s.replid2) &&
    Number.isSafeInteger(s.secondReplOffset) && Number.isSafeInteger(s.epoch) && (s.epoch as number) >= 0;
  const lineage = s.lineage;
  if (!ok || (lineage !== undefined && !(Array.isArray(lineage) && lineage.every((id) => typeof id === 'string' && REPLID_RE.test(id))))) {
    throw new StorageError(`${STATE_FILE} has missing or malformed fields`);
  }
  const state: PersistedState = { replid: s.replid!, replid2: s.replid2!, secondReplOffset: s.secondReplOffset!, epoch: s.epoch!, ...(lineage ? { lineage } : {}) };
  if (s.crc32 !== undefined && s.crc32 !== crc32(Buffer.from(canonical(state)))) throw new StorageError(`${STATE_FILE} does not match its checksum (damaged or edited)`);
  return state;
}

/**
 * Removes the temp files of state writes a crash interrupted (writeFileAtomic names them `state.json.tmp-…`); never
 * read. A failure is only logged: such a file is never used.
 */
export async function removeStateTemps(dir: string, io: FileIo, logger: Logger): Promise<void> {
  for (const name of await io.readdir(dir)) {
    if (!name.startsWith(`${STATE_FILE}.tmp-`)) continue;
    await io.rm(join(dir, name)).catch((err: Error) => logger.warn({ err, file: name }, 'could not remove an unfinished state file write; it is not used'));
  }
}

/** Temp file, fsync, rename, fsync of the directory: a crash leaves the old state or the new one, never half of either. */
export function writeState(dir: string, state: PersistedState, io: FileIo = nodeFileIo): Promise<void> {
  const text = canonical(state);
  return writeFileAtomic(join(dir, STATE_FILE), `${text.slice(0, -1)},"crc32":${crc32(Buffer.from(text))}}`, io);
}

/**
 * Removes the state file (then fsyncs the directory): a restart then trusts nothing but what the snapshot files'
 * names vouch for. Works on a full disk, where a new state file cannot be written.
 */
export async function removeState(dir: string, io: FileIo = nodeFileIo): Promise<void> {
  const file = join(dir, STATE_FILE);
  await io.rm(file);
  await io.syncDir(dirname(file));
}
