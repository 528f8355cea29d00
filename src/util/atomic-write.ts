import { randomBytes } from 'node:crypto';
import { closeSync, constants, fchmodSync, fchownSync, fsyncSync, openSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

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
  const tmp = join(dir, `.${basename(file)}.${randomBytes(8).toString('hex')}.tmp`);
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
