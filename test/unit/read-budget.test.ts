import t from 'tap';
import { ReadBudget, turnRead } from '../../src/upstream/read-budget.js';

t.test('reads that fill their buffer pause once max bytes came in during the turn', async (t) => {
  const b = new ReadBudget(() => 256);
  t.equal(b.spend(100, false), false);
  t.equal(b.spend(100, false), false);
  t.equal(b.spend(100, false), true, '300 bytes read without a break: pause');
  t.equal(b.spend(255, false), false, 'the count starts again after the pause');
  t.equal(b.spend(1, false), true);
});

t.test('a read that drains the socket ends the turn: the count starts again without a pause', async (t) => {
  const b = new ReadBudget(() => 256);
  // Each turn one short read: the loop turns after each, so no pause is needed however many come.
  for (let i = 0; i < 10; i++) t.equal(b.spend(100, true), false, `short read ${i + 1}`);
  t.equal(b.spend(200, false), false, 'a full read starts a new turn count');
  t.equal(b.spend(100, false), true, 'a turn of 300 bytes pauses');
});

t.test('a drained read never pauses, even past max: the loop turns anyway', async (t) => {
  const b = new ReadBudget(() => 256);
  t.equal(b.spend(200, false), false);
  t.equal(b.spend(56, true), false, 'drained: the turn ends by itself');
  t.equal(b.spend(255, false), false, 'new turn');
});

t.test('stream per turn: 256 KiB without a disk log; with one, 1/16 of log.disk-queue between 256 KiB and 2 MiB', async (t) => {
  const MiB = 1024 * 1024;
  t.equal(turnRead({ disk: 0, diskQueue: 128 * MiB }, false), 256 * 1024, 'memory only: what a pass hands each replica');
  t.equal(turnRead({ disk: 1024 * MiB, diskQueue: 128 * MiB }, true), 2 * MiB, 'the default log.disk-queue');
  t.equal(turnRead({ disk: 1024 * MiB, diskQueue: 1024 * MiB }, true), 2 * MiB, 'capped');
  t.equal(turnRead({ disk: 1024 * MiB, diskQueue: 8 * MiB }, true), 512 * 1024);
  t.equal(turnRead({ disk: 1024 * MiB, diskQueue: 1 * MiB }, true), 256 * 1024, 'floor: the smallest log.disk-queue');
});

t.test('stream per turn: a disk log given up (detached past log.disk-queue) reads like a memory-only relay', async (t) => {
  const MiB = 1024 * 1024;
  t.equal(turnRead({ disk: 1024 * MiB, diskQueue: 128 * MiB }, false), 256 * 1024, 'detached: replicas behind hold memory again');
  t.equal(turnRead({ disk: 1024 * MiB, diskQueue: 128 * MiB }, true), 2 * MiB, 'active (ok or failing)');
});

t.test('the budget follows its limit as it changes (the disk log detaches or comes back)', async (t) => {
  let max = 256;
  const b = new ReadBudget(() => max);
  t.equal(b.spend(200, false), false);
  max = 100;
  t.equal(b.spend(10, false), true, 'a lower limit applies at once');
  max = 1000;
  t.equal(b.spend(900, false), false, 'a higher one too');
  t.equal(b.spend(100, false), true);
});
