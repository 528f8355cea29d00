import t from 'tap';
import { prefault } from '../../src/util/prefault.js';
import { bytesRead } from '../helpers/proc-io.js';

t.test('prefault() leaves buffers zeroed, written by user space and by the kernel (a read of /dev/zero into them)', async (t) => {
  const MiB = 1024 * 1024;
  const bufs = [Buffer.alloc(MiB, 0xab), Buffer.alloc(3 * MiB + 17, 0xcd)];
  const before = bytesRead();
  prefault(bufs);
  const read = bytesRead() - before;
  t.ok(bufs.every((b) => b.every((byte) => byte === 0)), 'every byte is zero');
  t.ok(read >= 4 * MiB + 17, `the kernel wrote every byte: they came through read(2) (${read} bytes read)`);
});

t.test('prefault() without a readable /dev/zero still zeroes the buffers, from user space, and does not throw', async (t) => {
  for (const device of ['/nonexistent/zero', '/']) {
    const bufs = [Buffer.alloc(64 * 1024, 0xee)];
    t.doesNotThrow(() => prefault(bufs, device), `with ${device}`);
    t.ok(bufs[0]!.every((byte) => byte === 0), `every byte is zero with ${device}`);
  }
});
