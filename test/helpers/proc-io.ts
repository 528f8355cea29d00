import { readFileSync } from 'node:fs';

/** Bytes this process has read through read(2) and the like (/proc/self/io `rchar`). */
export function bytesRead(): number {
  const m = /^rchar: (\d+)$/m.exec(readFileSync('/proc/self/io', 'latin1'));
  if (m === null) throw new Error('no rchar in /proc/self/io');
  return Number(m[1]);
}
