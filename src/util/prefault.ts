import { closeSync, openSync, readSync } from 'node:fs';

/**
 * Backs every page of `bufs` now, for user space and for the kernel, and leaves them zeroed.
 *
 * A fresh buffer's pages are backed one at a time on first touch. On a VM that shadows the guest's page tables
 * (measured on the 2-vCPU bench VM) a page costs a trap the first time user space touches it and another the first
 * time the kernel copies into or out of it, whichever wrote it first. 64 MiB of socket reads into fresh 1 MiB
 * blocks, each read then sampled by user space every 64 bytes (the scanner touches every command header), took,
 * first pass against second (`/tmp` script, bench/README.md "the memory tail is backed for both modes"):
 * - not backed: 310 ms against 15;
 * - written by fill(0) only: 135 ms (the kernel's copies);
 * - written by a read of /dev/zero only: 130-170 ms (user space's reads);
 * - both: 43-46 ms.
 * So both are done: fill(0) from user space, then a read of /dev/zero, which the kernel writes. Where /dev/zero
 * cannot be read (a minimal container) only the first is.
 */
export function prefault(bufs: readonly Buffer[], zeroDevice = '/dev/zero'): void {
  for (const buf of bufs) buf.fill(0);
  let fd: number;
  try {
    fd = openSync(zeroDevice, 'r');
  } catch {
    return;
  }
  try {
    for (const buf of bufs) {
      for (let done = 0; done < buf.length; ) {
        const n = readSync(fd, buf, done, buf.length - done, null);
        if (n <= 0) break;
        done += n;
      }
    }
  } catch {
    // Not a readable zero device after all: the user-space half is done, and the buffers hold zeros.
  } finally {
    closeSync(fd);
  }
}
