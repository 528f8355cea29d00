import type { Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, openSync, rmSync, writeSync } from 'node:fs';
import { tempDir } from './temp-dir.js';

/**
 * Mounts a small real filesystem at a fresh directory, unmounted at the end of `t`: a tmpfs, or ext4 (4 KiB blocks)
 * on a loop device over `<dir>.img` (a block device: O_DIRECT writes reach it, ENOSPC comes from block allocation,
 * and its bytes can be changed under the filesystem, see damage.ts). Throws (failing the test, never skipping it)
 * when that is not allowed: mounting needs root.
 */
export function smallFilesystem(t: Test, kind: 'tmpfs' | 'ext4', size: string): { dir: string; image: string } {
  const dir = tempDir(`relay-${kind}-`);
  const image = `${dir}.img`;
  try {
    if (kind === 'tmpfs') execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir]);
    else {
      execFileSync('truncate', ['-s', size, image]);
      execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', image]);
      execFileSync('mount', ['-o', 'loop', image, dir]);
    }
  } catch (err) {
    rmSync(image, { force: true });
    throw new Error(`this test needs root to mount a ${size} ${kind}: ${(err as Error).message}`);
  }
  t.teardown(() => {
    try {
      execFileSync('umount', ['-l', dir]);
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
    rmSync(image, { force: true });
  });
  return { dir, image };
}

/**
 * Writes zeros to a new file `path` until its filesystem is full (ENOSPC), then gives `leave` bytes of it back (a disk
 * with a few KB left); returns the bytes the file keeps. A ballast: removing or truncating it frees the space again.
 */
export function fillFilesystem(path: string, leave = 0): number {
  const fd = openSync(path, 'w');
  const block = Buffer.alloc(64 * 1024);
  let n = 0;
  try {
    for (;;) n += writeSync(fd, block);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  }
  try {
    if (leave > 0) ftruncateSync(fd, (n = Math.max(0, n - leave)));
  } finally {
    closeSync(fd);
  }
  return n;
}
