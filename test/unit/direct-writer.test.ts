import t, { type Test } from 'tap';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { DIRECT_ALIGN, DirectWriter } from '../../src/backlog/direct-writer.js';
import { nodeFileIo, type FileHandleIo } from '../../src/backlog/file-io.js';

/** A real file opened with O_DIRECT in the test dir (the writer's alignment is checked by the kernel). */
const dirs = new WeakMap<Test, string>();
async function directFile(t: Test, name = 'f.log'): Promise<{ path: string; fh: FileHandleIo }> {
  // One test dir per test: tap's testdir() makes a new, empty one at every call.
  if (!dirs.has(t)) dirs.set(t, t.testdir());
  const path = join(dirs.get(t)!, name);
  const fh = await nodeFileIo.open(path, 'w', 0o600, { direct: true });
  t.teardown(() => fh.close().catch(() => {}));
  return { path, fh };
}

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    b[i] = 1 + (x % 255); // never 0: padding is told apart from data
  }
  return b;
}

t.test('appends at any length: the file holds the bytes, then zeros to the end of one block', async (t) => {
  const { path, fh } = await directFile(t);
  const w = new DirectWriter(64 * 1024);
  const all = bytes(300_000, 1);
  const problems: string[] = [];
  let pos = 0;
  let x = 5;
  while (pos < all.length) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    const n = Math.min(all.length - pos, 1 + (x % 20_000));
    // Several pieces, as views of the memory log's blocks.
    const cut = Math.floor(n / 3);
    const { bytesWritten } = await w.write(fh, [all.subarray(pos, pos + cut), all.subarray(pos + cut, pos + n)], pos);
    if (bytesWritten !== n) problems.push(`write of ${n} at ${pos} took ${bytesWritten}`);
    pos += bytesWritten;
    const file = await fsp.readFile(path);
    if (file.length % DIRECT_ALIGN !== 0 || file.length - pos >= DIRECT_ALIGN) problems.push(`at ${pos}: the file is ${file.length} bytes`);
    if (!file.subarray(0, pos).equals(all.subarray(0, pos))) problems.push(`at ${pos}: the file is not the bytes written`);
    if (!file.subarray(pos).every((b) => b === 0)) problems.push(`at ${pos}: the padding is not zeros`);
  }
  t.same(problems, []);
});

t.test('bytes of a longer earlier write never show after the end of a shorter one', async (t) => {
  const w = new DirectWriter(64 * 1024);
  const a = await directFile(t, 'a.log');
  await w.write(a.fh, [bytes(20_000, 2)], 0);
  const b = await directFile(t, 'b.log');
  const small = bytes(10, 3);
  await w.write(b.fh, [small], 0);
  const file = await fsp.readFile(b.path);
  t.same([file.length, file.subarray(0, 10).equals(small), file.subarray(10).every((x) => x === 0)], [DIRECT_ALIGN, true, true]);
});

t.test('a partial block it did not write itself (a reopened file) is read back and kept', async (t) => {
  const first = bytes(5000, 4);
  const { path, fh } = await directFile(t);
  await new DirectWriter(8192).write(fh, [first], 0);
  await fh.truncate(5000);
  await fh.close();
  const again = await nodeFileIo.open(path, 'r+', 0o600, { direct: true });
  t.teardown(() => again.close().catch(() => {}));
  const more = bytes(3000, 5);
  const { bytesWritten } = await new DirectWriter(8192).write(again, [more], 5000);
  t.equal(bytesWritten, 3000);
  const file = await fsp.readFile(path);
  t.ok(file.subarray(0, 8000).equals(Buffer.concat([first, more])), 'the first run\'s partial block is intact');
});

t.test('a file shorter than the position it is asked to write at is an error, not a hole', async (t) => {
  const { fh } = await directFile(t);
  await new DirectWriter(8192).write(fh, [bytes(100, 6)], 0);
  await fh.truncate(100);
  await t.rejects(new DirectWriter(8192).write(fh, [bytes(10, 7)], 2000), /shorter than recorded/);
});

t.test('takes at most its capacity; a short write counts only the bytes the file took', async (t) => {
  const { path, fh } = await directFile(t);
  const w = new DirectWriter(8192);
  const all = bytes(30_000, 8);
  t.equal((await w.write(fh, [all], 0)).bytesWritten, 8192, 'capacity');
  // The kernel takes one block of the next write.
  let short = true;
  const shortFh: FileHandleIo = {
    ...fh,
    writev: (bufs, position) => (short ? ((short = false), fh.writev([bufs[0]!.subarray(0, DIRECT_ALIGN)], position)) : fh.writev(bufs, position)),
  };
  t.equal((await w.write(shortFh, [all.subarray(8192, 8192 + 6000)], 8192)).bytesWritten, DIRECT_ALIGN, 'one block taken');
  t.equal((await w.write(shortFh, [all.subarray(12288, 20000)], 12288)).bytesWritten, 20000 - 12288, 'continued where it stopped');
  t.ok((await fsp.readFile(path)).subarray(0, 20000).equals(all.subarray(0, 20000)));
});

t.test('a write that hangs keeps its buffer: the next write uses another, and the late one writes what it was given', async (t) => {
  const w = new DirectWriter(64 * 1024);
  const a = await directFile(t, 'a.log');
  const b = await directFile(t, 'b.log');
  const one = bytes(9000, 9);
  const two = bytes(20_000, 10);
  let go!: () => void;
  const gate = new Promise<void>((r) => (go = r));
  const hung: FileHandleIo = { ...a.fh, writev: async (bufs, position) => (await gate, a.fh.writev(bufs, position)) };
  const late = w.write(hung, [one], 0);
  await w.write(b.fh, [two], 0);
  go();
  t.equal((await late).bytesWritten, 9000);
  t.ok((await fsp.readFile(a.path)).subarray(0, 9000).equals(one), 'the hung write wrote its own bytes');
  t.ok((await fsp.readFile(b.path)).subarray(0, 20000).equals(two));
  // The writer still continues the file it wrote last without reading anything back.
  const more = bytes(100, 11);
  await w.write(b.fh, [more], 20000);
  t.ok((await fsp.readFile(b.path)).subarray(0, 20100).equals(Buffer.concat([two, more])));
});
