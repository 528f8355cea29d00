import { closeSync, openSync, readSync, statSync, writeSync } from 'node:fs';

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
