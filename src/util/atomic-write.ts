import { randomBytes } from 'node:crypto';
import { closeSync, constants, fchmodSync, fchownSync, fsyncSync, lstatSync, openSync, readdirSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { failpoint } from './failpoint.js';

/** Random bytes in a temp file's name, written as hex: `.<name>.<16 hex digits>.tmp`. */
const TEMP_RANDOM_BYTES = 8;
const TEMP_RANDOM_RE = new RegExp(`^[0-9a-f]{${TEMP_RANDOM_BYTES * 2}}$`);

/**
 * Replaces `file` with `content` atomically: a temp file with an unpredictable name in the same directory, created
 * exclusively (O_EXCL, O_NOFOLLOW: a file or symlink planted there makes it fail, never followed), given the old
 * file's mode and owner, written and fsynced, renamed over `file`, then the directory fsynced so the rename survives
 * a crash. Synchronous: CONFIG REWRITE answers in order, inside MULTI too. Throws on any failure; one before the
 * rename leaves `file` as it was and no temp file behind. A failed directory fsync after it throws too (the new
 * content is in place but may not survive a power loss), as Redis's CONFIG REWRITE reports it.
 */
export function writeFileAtomicSync(file: string, content: string | Buffer): void {
  const old = statSync(file);
  const dir = dirname(file);
  const tmp = join(dir, `.${basename(file)}.${randomBytes(TEMP_RANDOM_BYTES).toString('hex')}.tmp`);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    try {
      // The umask applied at creation; set the old mode exactly (a 0600 file holding passwords stays 0600).
      fchmodSync(fd, old.mode & 0o7777);
      if (old.uid !== process.getuid?.() || old.gid !== process.getgid?.()) fchownSync(fd, old.uid, old.gid);
      const buf = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
      for (let off = 0; off < buf.length; ) off += writeSync(fd, buf, off, buf.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    failpoint('rename');
    renameSync(tmp, file);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // already renamed or gone
    }
    throw err;
  }
  const dfd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/** Whether `name` is the name of a temp file writeFileAtomicSync(…/`base`) creates. */
function isTempOf(name: string, base: string): boolean {
  const prefix = `.${base}.`;
  return name.length > prefix.length + 4 && name.startsWith(prefix) && name.endsWith('.tmp') && TEMP_RANDOM_RE.test(name.slice(prefix.length, -4));
}

/**
 * Removes the temp files that writes of `file` a crash interrupted left beside it (a SIGKILL between the temp
 * file's creation and the rename): the regular files named exactly as writeFileAtomicSync names them, nothing else
 * in that directory (a symlink or directory of that name is not one of them). Returns the names removed and those
 * that could not be (a read-only directory), and an error when the directory cannot be listed; throws nothing.
 */
export function removeAtomicWriteTempsSync(file: string): { removed: string[]; failed: Array<{ name: string; err: Error }> } {
  const dir = dirname(file);
  const base = basename(file);
  const removed: string[] = [];
  const failed: Array<{ name: string; err: Error }> = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    return { removed, failed: [{ name: dir, err: err as Error }] };
  }
  for (const name of names) {
    if (!isTempOf(name, base)) continue;
    try {
      if (!lstatSync(join(dir, name)).isFile()) continue;
      unlinkSync(join(dir, name));
      removed.push(name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') failed.push({ name, err: err as Error });
    }
  }
  return { removed, failed };
}
