import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Changes one bit of one byte of a file in place, as bit rot or a bad sector returning other bytes would: by default
 * in the middle of the file (inside a value, for the files the relay keeps: the bytes still parse). Returns the
 * position changed.
 */
export function flipByte(path: string, at = Math.floor(statSync(path).size / 2)): number {
  const fd = openSync(path, 'r+');
  try {
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0x01;
    writeSync(fd, b, 0, 1, at);
  } finally {
    closeSync(fd);
  }
  return at;
}

/**
 * Changes one bit of the byte at `at` of `path`, a file on the ext4 mounted from `image` (small-fs.ts), under the
 * filesystem: in the image's block, not through the file. The file's ctime and mtime stay, as with bit rot or a
 * sector the disk returns wrong; the page cache is dropped so that the next read of the file reaches the device.
 */
export function rotUnderFilesystem(image: string, path: string, at = Math.floor(statSync(path).size / 2)): number {
  execFileSync('sync');
  flipByte(image, deviceOffset(path, at));
  execFileSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '1');
  return at;
}

/** Where byte `at` of `path` (a file on an ext4 with 4 KiB blocks) lies on the device under the filesystem. */
export function deviceOffset(path: string, at: number): number {
  // filefrag -v -b4096: "ext: logical_offset: physical_offset: length: ..." in 4 KiB blocks.
  const block = Math.floor(at / 4096);
  const extents = execFileSync('filefrag', ['-v', '-b4096', path], { encoding: 'utf8' });
  let physical = -1;
  for (const m of extents.matchAll(/^\s*\d+:\s*(\d+)\.\.\s*(\d+):\s*(\d+)\.\.\s*\d+:/gm)) {
    const [from, to, start] = [Number(m[1]), Number(m[2]), Number(m[3])];
    if (block >= from && block <= to) physical = start + block - from;
  }
  if (physical < 0) throw new Error(`no extent of ${path} holds block ${block}:\n${extents}`);
  return physical * 4096 + (at % 4096);
}

/**
 * The disk log's last segment in `logDir` and where its stream bytes end: an O_DIRECT segment is written in whole
 * 4 KiB blocks, its tail zeros until the next write.
 */
export function lastSegmentEnd(logDir: string): { path: string; end: number } {
  const name = readdirSync(logDir).filter((n) => n.startsWith('seg-') && n.endsWith('.log')).sort().pop();
  if (name === undefined) throw new Error(`no log segment in ${logDir}`);
  const path = join(logDir, name);
  const bytes = readFileSync(path);
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0) end--;
  return { path, end };
}
