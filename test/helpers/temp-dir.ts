import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Every data dir a test makes (relay logs, snapshots, RDBs) goes when its test process exits: a suite run used to
// leave about a gigabyte under /tmp, and a machine running the suite again and again filled its disk.
// KEEP_TEST_DIRS=1 keeps them, to look at after a failure.
const made = new Set<string>();
let hooked = false;

/** A fresh directory under os.tmpdir(), removed (with its contents) when this process exits. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.add(dir);
  if (!hooked) {
    hooked = true;
    // Registered on first use, so after the helpers' own 'exit' hooks that SIGKILL what is still running.
    process.once('exit', removeTempDirs);
  }
  return dir;
}

function removeTempDirs(): void {
  if (process.env['KEEP_TEST_DIRS'] === '1') return;
  for (const dir of made) {
    try {
      // A process killed a moment ago may still be closing a file in it: a few retries cover that.
      rmSync(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 20 });
    } catch {
      // Nothing to report to at exit; a leftover dir is harmless.
    }
  }
}
