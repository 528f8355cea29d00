import t from 'tap';
import { Fanout, Flush, type FanoutMember } from '../../src/downstream/fanout.js';
import { DownstreamReplication, type ReplicationSource } from '../../src/downstream/replication.js';
import { ReplLog } from '../../src/backlog/repl-log.js';
import { createLogger } from '../../src/log.js';
import { Telemetry } from '../../src/observability/telemetry.js';

/** One turn of the event loop: the pass scheduled before it has run. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * A replica socket under a full kernel buffer: each flush hands over its whole budget (Node queues what the kernel
 * cannot take, past the high-water mark), then waits for 'drain', which comes at the next turn.
 */
class Reader implements FanoutMember {
  left = 0;
  readonly flushes: number[] = [];
  constructor(readonly fanout: Fanout) {}
  flush(budget: number): Flush {
    const n = Math.min(budget, this.left);
    this.left -= n;
    this.flushes.push(n);
    if (this.left === 0) return Flush.Idle;
    setImmediate(() => this.fanout.wake(this));
    return Flush.Wait;
  }
  checkLag(): void {}
}

t.test('fan-out: a pass hands each replica at least what came in since the last pass, so long turns do not leave replicas behind', async (t) => {
  const f = new Fanout({ memberBudget: 256 * 1024 });
  const r = new Reader(f);
  f.add(r);
  f.wake(r);
  // Turn after turn the upstream link reads 2 MiB (its limit with a disk log) while something else makes the turns
  // long: one pass per turn, and one flush per drain, must keep up with it.
  for (let i = 0; i < 5; i++) {
    for (let k = 0; k < 8; k++) {
      r.left += 256 * 1024;
      f.appended(256 * 1024);
    }
    await turn();
  }
  t.ok(r.left <= 2 * 1024 * 1024, `the replica is at most one turn's intake behind after five turns (${r.left} bytes still to send)`);
  t.ok(r.flushes.every((n) => n <= 2 * 1024 * 1024), 'no more than the intake in one flush');
});

t.test('fan-out: with little intake a replica behind gets the usual budget a pass, not more', async (t) => {
  const f = new Fanout({ memberBudget: 1000 });
  const r = new Reader(f);
  r.left = 10_000;
  f.add(r);
  f.wake(r);
  f.appended(10);
  await turn();
  t.equal(r.flushes[0], 1000, 'one budget');
});

t.test('fan-out: one made on a log that already holds megabytes (a point-in-time listener) gives its first pass the usual budget, not the whole log', async (t) => {
  const MiB = 1024 * 1024;
  const log = new ReplLog(64 * MiB);
  for (let i = 0; i < 32; i++) log.append(Buffer.alloc(MiB, 'x'));
  // Only the log is read by the fan-out's wiring; the rest of the source is never called here.
  const downstream = new DownstreamReplication({
    source: { log } as unknown as ReplicationSource,
    telemetry: new Telemetry('test'),
    logger: createLogger('silent'),
    maxLag: 40 * MiB,
    replicaTimeoutMs: 60_000,
  });
  t.teardown(() => downstream.close());
  // A replica at the start of those 32 MB whose socket takes nothing (one that stopped reading).
  const r = new Reader(downstream.fanout);
  r.left = 32 * MiB;
  downstream.fanout.add(r);
  downstream.fanout.wake(r);
  log.append(Buffer.from('*1\r\n$4\r\nPING\r\n'));
  await turn();
  t.same(r.flushes, [256 * 1024], 'one flush of 256 KiB (before: 32 MiB at once, which replica-max-lag could not see)');
});
