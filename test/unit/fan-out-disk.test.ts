import t, { type Test } from 'tap';
import type { Socket } from 'node:net';
import { ReplLog } from '../../src/backlog/repl-log.js';
import { DiskLog } from '../../src/backlog/disk-log.js';
import { ReplicaSession, ReplicaState } from '../../src/downstream/replica-session.js';
import { DISK_FLUSH, DISK_FLUSH_MIN, Fanout, type FanoutMember } from '../../src/downstream/fanout.js';
import { createLogger } from '../../src/log.js';
import { Telemetry } from '../../src/observability/telemetry.js';
import { waitFor } from '../helpers/wait.js';
import { SocketStandIn } from '../helpers/fake-socket.js';

const logger = createLogger('silent');
const MiB = 1024 * 1024;
/** One turn of the event loop. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * A replica socket on a busy machine: every write fills it (write() returns false), and it drains at the next turn
 * of the event loop, as a loopback socket whose reader keeps up does.
 */
class DrainingSocket extends SocketStandIn {
  /** Bytes handed over in each corked batch (one writev). */
  readonly batches: number[] = [];
  #corked = false;
  override cork(): void {
    this.#corked = true;
    this.batches.push(0);
  }
  override uncork(): void {
    this.#corked = false;
  }
  write(buf: Buffer | string): boolean {
    if (this.destroyed) return false;
    this.written += buf.length;
    if (this.#corked) this.batches[this.batches.length - 1]! += buf.length;
    if (this.writableLength === 0) {
      setImmediate(() => {
        this.writableLength = 0;
        this.emit('drain');
      });
    }
    this.writableLength += buf.length;
    return false;
  }
}

/** A command of `size` bytes, whole, so that the disk log knows where it ends. */
const command = (size: number, fill: number): Buffer => {
  const head = Buffer.from(`*1\r\n$${size - 13}\r\n`);
  return Buffer.concat([head, Buffer.alloc(size - head.length - 2, fill), Buffer.from('\r\n')]);
};

/** A log with a 1 MiB memory tail over a disk log holding `behind` bytes, all written to disk. */
async function backlog(t: Test, behind: number): Promise<{ log: ReplLog; disk: DiskLog }> {
  const log = new ReplLog(MiB);
  const disk = await DiskLog.open({ dir: t.testdir(), maxBytes: 1 << 30, segmentBytes: 64 * MiB, maxPending: 1 << 30, memory: 1 << 30, epoch: 1, logger });
  t.teardown(() => disk.close());
  log.reset(0);
  log.attachDisk(disk);
  for (let i = 0; log.endOffset < behind; i++) log.append(command(64 * 1024, i), log.endOffset + 64 * 1024);
  await waitFor(() => disk.writtenOffset === log.endOffset || undefined, { what: 'the disk holds the stream' });
  log.trim();
  return { log, disk };
}

function session(log: ReplLog, fanout: Fanout, socket: DrainingSocket): ReplicaSession {
  const s = new ReplicaSession({
    fanout,
    socket: socket as unknown as Socket,
    log,
    logger,
    telemetry: new Telemetry('test'),
    maxLag: 1 << 30,
    caps: { psync2: true, eof: true, rdbOnly: false, rdbFilterEmpty: false, plainSync: false },
    onClose: () => undefined,
  });
  log.onAppend((bytes) => fanout.appended(bytes));
  s.continueFrom(1);
  return s;
}

/** Blocks the event loop for `ms`: what a busy /stream or many clients do to a turn. */
function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

t.test('a replica reading the disk log catches up while long turns bring 1 MiB each: more than 256 KiB a flush', async (t) => {
  const { log } = await backlog(t, 24 * MiB);
  const fanout = new Fanout();
  const socket = new DrainingSocket();
  const s = session(log, fanout, socket);
  t.teardown(() => s.close('test done'));
  t.ok(log.memFirstOffset > 1, 'it starts behind the memory tail');
  const start = s.lagBytes;
  for (let i = 0; i < 40; i++) {
    log.append(command(MiB, i), log.endOffset + MiB);
    busy(10);
    await turn();
  }
  t.equal(s.state, ReplicaState.Online);
  t.ok(s.lagBytes < start, `its lag went down from ${start} to ${s.lagBytes} bytes while 40 MiB came in`);
  t.ok(Math.max(...socket.batches) > DISK_FLUSH, `flushes of up to ${Math.max(...socket.batches)} bytes`);
});

t.test('replicas far apart in the disk log hold at most the fan-out\'s allowance of disk bytes, past 256 KiB each', async (t) => {
  const { log } = await backlog(t, 48 * MiB);
  const fanout = new Fanout();
  const sockets: DrainingSocket[] = [];
  const sessions: ReplicaSession[] = [];
  // Sockets that never drain: whatever they were handed, they hold.
  for (let i = 0; i < 40; i++) {
    const socket = new DrainingSocket();
    socket.write = function (this: DrainingSocket, buf: Buffer | string): boolean {
      this.written += buf.length;
      this.writableLength += buf.length;
      return false;
    };
    sockets.push(socket);
    const s = session(log, fanout, socket);
    sessions.push(s);
  }
  t.teardown(() => sessions.forEach((s) => s.close('test done')));
  await waitFor(() => sockets.every((s) => s.written > 0) || undefined, { what: 'every replica handed its first bytes' });
  const held = sockets.reduce((n, s) => n + s.written, 0);
  t.ok(held <= 16 * MiB + 40 * DISK_FLUSH, `${held} bytes held by 40 sockets`);
  t.equal(fanout.diskHeld, held, 'the fan-out counts them');
  sessions[0]!.close('gone');
  t.equal(fanout.diskHeld, held - sockets[0]!.written, 'a closed replica releases what its socket held');
});

t.test("each disk reader's floor is a chunk (1 MiB) up to 128 readers, then less, never under 256 KiB: what sockets hold stays bounded", async (t) => {
  const allowanceWith = (readers: number, heldEach: number): number => {
    const fanout = new Fanout();
    const member: FanoutMember = { flush: () => 0, checkLag: () => undefined };
    for (let i = 0; i < readers; i++) fanout.holdDisk(i === 0 ? member : { ...member }, heldEach);
    return fanout.diskAllowance();
  };
  t.equal(allowanceWith(1, 0), 4 * MiB, 'one reader: up to 4 MiB a flush');
  t.equal(allowanceWith(100, DISK_FLUSH), DISK_FLUSH, '100 readers whose sockets are full: 1 MiB a flush each');
  t.equal(allowanceWith(512, DISK_FLUSH), 256 * 1024, '512 readers: 128 MiB shared, 256 KiB each');
  t.equal(allowanceWith(1000, DISK_FLUSH_MIN), DISK_FLUSH_MIN, '1,000 readers: the 256 KiB floor');
});
