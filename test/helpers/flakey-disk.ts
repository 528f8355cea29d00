import type { Test } from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from './temp-dir.js';

const DAEMON = fileURLToPath(new URL('./flakey-disk-daemon.mjs', import.meta.url));

/** One fault of the table: requests overlapping device bytes [from, to) get it. */
export interface FaultRule {
  readonly from?: number;
  readonly to?: number;
  /** error: EIO; corrupt: one byte changed per 512 bytes returned. */
  readonly read?: 'error' | 'corrupt';
  /** error: EIO; drop: acknowledged and never written (dm-flakey drop_writes). */
  readonly write?: 'error' | 'drop';
  /** EIO on every fsync of the device (the loop device's flushes). */
  readonly sync?: 'error';
  readonly delayMs?: number;
}

export interface FlakeyDiskStats {
  reads: number;
  writes: number;
  syncs: number;
  readErrors: number;
  writeErrors: number;
  dropped: number;
  corrupted: number;
  syncErrors: number;
}

export interface FlakeyDisk {
  /** The ext4 mounted over the faulty device. */
  readonly dir: string;
  /** Replaces the fault table, at once (as `dmsetup load` + `resume` of a flakey or error table). */
  set(rules: FaultRule[]): Promise<void>;
  /** No fault. */
  heal(): Promise<void>;
  stats(): Promise<FlakeyDiskStats>;
  /** Drops the page cache, so that reads reach the device. */
  dropCaches(): void;
}

/**
 * An ext4 filesystem (4 KiB blocks) on a block device whose faults the test switches live, as dm-flakey, dm-error and
 * dm-delay tables do, for kernels without device-mapper: a loop device over a file of a FUSE filesystem that this
 * test's daemon serves from memory (flakey-disk-daemon.mjs), answering each request of the device as its fault table
 * says. Needs root and /dev/fuse; fails (never skips) without them. Everything is unmounted, detached and stopped at
 * the end of `t`, failed or not.
 */
export async function flakeyDisk(t: Test, sizeMb = 192): Promise<FlakeyDisk> {
  const base = tempDir('relay-flakey-');
  const fuseDir = join(base, 'fuse');
  const dir = join(base, 'fs');
  const image = join(base, 'image');
  mkdirSync(fuseDir);
  mkdirSync(dir);
  const size = sizeMb * 1024 * 1024;
  execFileSync('truncate', ['-s', String(size), image]);
  // No journal: an EIO on a journal write aborts ext4's journal and remounts it read-only for good (EROFS until an
  // unmount), whichever file the fault was meant for; without one, a fault reaches the write or fsync that met it.
  execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-O', '^has_journal', '-E', 'nodiscard', image]);
  const daemon = spawn(process.execPath, [DAEMON, fuseDir, String(size), image], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  daemon.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const lines = createInterface({ input: daemon.stdout });
  const waiting: Array<(line: string) => void> = [];
  const early: string[] = [];
  lines.on('line', (line) => {
    const w = waiting.shift();
    if (w) w(line);
    else early.push(line);
  });
  const exited = new Promise<never>((_, reject) => daemon.once('exit', (code) => reject(new Error(`flakey disk daemon exited (${code}): ${stderr}`))));
  exited.catch(() => {});
  const next = (): Promise<string> => Promise.race([new Promise<string>((resolve) => (early.length > 0 ? resolve(early.shift()!) : waiting.push(resolve))), exited]);
  const command = async (cmd: object): Promise<string> => {
    const answer = next();
    daemon.stdin.write(`${JSON.stringify(cmd)}\n`);
    return answer;
  };

  let loop = '';
  let mounted = false;
  t.teardown(async () => {
    // Healed first: a device that fails cannot flush what unmounting writes.
    if (daemon.exitCode === null) await command({ op: 'set', rules: [] }).catch(() => {});
    if (mounted) {
      try {
        execFileSync('umount', [dir]);
      } catch {
        execFileSync('umount', ['-l', dir], { stdio: 'ignore' });
      }
    }
    if (loop !== '') execFileSync('losetup', ['-d', loop], { stdio: 'ignore' });
    try {
      execFileSync('umount', [fuseDir], { stdio: 'ignore' });
    } catch {
      execFileSync('umount', ['-l', fuseDir], { stdio: 'ignore' });
    }
    daemon.stdin.end();
    if (daemon.exitCode === null) {
      const gone = new Promise((resolve) => daemon.once('exit', resolve));
      const timer = setTimeout(() => daemon.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    }
    rmSync(base, { recursive: true, force: true });
  });
  try {
    const ready = await next();
    if (ready !== 'ready') throw new Error(`flakey disk daemon said ${ready}`);
    rmSync(image);
    loop = execFileSync('losetup', ['-f', '--show', join(fuseDir, 'disk')], { encoding: 'utf8' }).trim();
    execFileSync('mount', ['-o', 'errors=continue', loop, dir]);
    mounted = true;
  } catch (err) {
    throw new Error(`this test needs root, /dev/fuse and a loop device for a faulty disk: ${(err as Error).message}`, { cause: err });
  }
  return {
    dir,
    set: async (rules) => {
      const full = rules.map((r) => ({ from: 0, to: Number.MAX_SAFE_INTEGER, ...r }));
      const a = await command({ op: 'set', rules: full });
      if (a !== 'ok set') throw new Error(`flakey disk: ${a}`);
    },
    heal: async () => {
      await command({ op: 'set', rules: [] });
    },
    stats: async () => JSON.parse((await command({ op: 'stats' })).slice(3)) as FlakeyDiskStats,
    dropCaches: () => {
      execFileSync('sync');
      execFileSync('sh', ['-c', 'echo 3 > /proc/sys/vm/drop_caches']);
    },
  };
}
