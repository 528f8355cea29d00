import t from 'tap';
import { MemorySink, memoryTransfer } from '../../src/backlog/memory-snapshot.js';
import { mulberry32 } from '../helpers/chunks.js';

const write = (sink: MemorySink, chunk: Buffer) => new Promise<Error | null>((resolve) => sink.write(chunk, (err) => resolve(err ?? null)));

t.test('an RDB held in memory reads back the bytes written, at any position and length, across chunk boundaries', async (t) => {
  const rand = mulberry32(7);
  const sink = new MemorySink(1 << 20);
  const parts: Buffer[] = [];
  for (let i = 0; i < 40; i++) {
    const b = Buffer.alloc(1 + Math.floor(rand() * 3000));
    for (let j = 0; j < b.length; j++) b[j] = Math.floor(rand() * 256);
    parts.push(b);
    t.equal(await write(sink, b), null);
  }
  const whole = Buffer.concat(parts);
  const snap = memoryTransfer('a'.repeat(40), 1234, sink);
  t.same([snap.total(), snap.flushed(), snap.progress(), await snap.outcome], [whole.length, whole.length, 'complete', true]);
  const reader = snap.openReader();
  let mismatches = 0;
  for (let i = 0; i < 500; i++) {
    const pos = Math.floor(rand() * whole.length);
    const len = 1 + Math.floor(rand() * 9000);
    const got = await reader.read(pos, len);
    if (!got.equals(whole.subarray(pos, Math.min(whole.length, pos + len)))) mismatches++;
  }
  t.equal(mismatches, 0, '500 random reads');
  t.equal((await reader.read(whole.length, 10)).length, 0, 'nothing past the end');
  reader.close();
});

t.test('a sink refuses the write that would take it past its cap, and says so', async (t) => {
  const sink = new MemorySink(100);
  sink.on('error', () => {});
  t.equal(await write(sink, Buffer.alloc(60)), null);
  const err = await write(sink, Buffer.alloc(41));
  t.match(err?.message, /larger than replication\.full-sync-memory \(100 bytes\)/);
  t.equal(sink.overCap, true);
  t.equal(sink.size, 60, 'what it holds stays within the cap');
});
