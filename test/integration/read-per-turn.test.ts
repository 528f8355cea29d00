import t, { type Test } from 'tap';
import type { Socket } from 'node:net';
import { startRelay } from '../helpers/relay.js';
import { startFakeMaster } from '../helpers/fake-master.js';
import { waitFor } from '../helpers/wait.js';
import { encodeCommand } from '../../src/resp/writer.js';
import { emptyRdb } from '../../src/backlog/snapshot-store.js';

const REPLID = 'a'.repeat(8) + '0123456789abcdef0123456789abcdef';
const MiB = 1024 * 1024;

/** Keeps the event loop busy for `ms`: a turn as long as a fan-out pass to many replicas. */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

/**
 * A relay with `log` config behind a fake master that floods 24 MiB of SETs, in a loop whose turns each take 4 ms
 * (as with a fan-out pass to many replicas), so the stream piles up in the socket: the most stream the relay read in
 * one turn, measured once per turn (an immediate that re-arms itself runs in the next turn's check phase). A fake
 * master because the test needs 24 MiB queued at the relay's socket at the moment the meter starts; a real master
 * sends at the pace of a load generator, which a starved machine slows too.
 */
async function mostPerTurn(t: Test, log: Record<string, unknown>): Promise<number> {
  const value = 'v'.repeat(1000);
  const one = encodeCommand(['SET', 'k', value]);
  const flood = Buffer.concat(Array.from({ length: Math.ceil((24 * MiB) / one.length) }, () => one));
  let acked: (socket: Socket) => void = () => undefined;
  const firstAck = new Promise<Socket>((resolve) => (acked = resolve));
  const fake = await startFakeMaster((socket: Socket) => {
    const rdb = emptyRdb(10);
    socket.write(Buffer.concat([Buffer.from(`+FULLRESYNC ${REPLID} 0\r\n$${rdb.length}\r\n`), rdb]));
    // Like a 7.0 master after an RDB: the stream waits for the relay's first ACK (here, also for the meter).
    socket.once('data', () => acked(socket));
  });
  t.teardown(() => fake.close());
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: fake.port }, log });
  t.teardown(() => relay.stop());
  const upstream = await firstAck;
  let last = relay.relay.status().masterReplOffset;
  let most = 0;
  let done = false;
  const tick = (): void => {
    const now = relay.relay.status().masterReplOffset;
    most = Math.max(most, now - last);
    last = now;
    if (now >= flood.length) done = true;
    else {
      busy(4);
      setImmediate(tick);
    }
  };
  setImmediate(tick);
  upstream.write(flood);
  await waitFor(() => done || undefined, { what: 'the whole flood read', timeoutMs: 60000 });
  return most;
}

t.test('with a disk log, a relay behind its master reads up to 2 MiB of stream per turn, and no more', async (t) => {
  const most = await mostPerTurn(t, { disk: '1gb', 'disk-queue': '128mb' });
  t.ok(most > 1 * MiB, `reads ahead of its replicas: ${most} bytes in one turn (at 256 KiB a turn the rest waits in the master's output buffer)`);
  t.ok(most <= 2 * MiB + 256 * 1024, `bounded: ${most} bytes in one turn (2 MiB, plus the read that crossed it)`);
});

t.test('with a small log.disk-queue, 1/16 of it per turn: a stalled disk write does not overflow the queue in a few turns', async (t) => {
  const most = await mostPerTurn(t, { disk: '1gb', 'disk-queue': '8mb' });
  t.ok(most > 256 * 1024, `more than 256 KiB in a turn: ${most}`);
  t.ok(most <= 512 * 1024 + 256 * 1024, `bounded: ${most} bytes in one turn (512 KiB, plus the read that crossed it)`);
});

t.test('without a disk log, 256 KiB per turn: the relay reads no faster than a fan-out pass hands each replica', async (t) => {
  const most = await mostPerTurn(t, { disk: 0 });
  t.ok(most > 128 * 1024, `it reads: ${most} bytes in one turn`);
  t.ok(most <= 512 * 1024, `bounded: ${most} bytes in one turn (256 KiB, plus the read that crossed it)`);
});
