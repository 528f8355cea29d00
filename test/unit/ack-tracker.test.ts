/**
 * The FACK the relay sends upstream (WAITAOF on a Redis 7.2+ master): what its replicas fsynced to their AOF, by
 * the ack policy, never falling, never past the ACK it goes with; none under `self`.
 */
import t from 'tap';
import { AckTracker } from '../../src/downstream/ack-policy.js';
import type { AckPolicy } from '../../src/config/types.js';

function tracker(policy: AckPolicy, replicas: { ack: number; aof: number }[], disk = { written: 1000, acksSent: 0, writesAsked: 0 }): AckTracker {
  return new AckTracker(policy, {
    acks: () => replicas.map((r) => r.ack),
    aofAcks: () => replicas.map((r) => r.aof),
    endOffset: () => 1000,
    durableOffset: () => disk.written,
    writeDiskNow: () => void disk.writesAsked++,
    linkUp: () => true,
    ackNow: () => void disk.acksSent++,
  });
}

t.test('min and quorum acknowledge no more than the disk log has written, and at once when it writes more; self what it holds', async (t) => {
  const disk = { written: 500, acksSent: 0, writesAsked: 0 };
  const replicas = [{ ack: 900, aof: -1 }];
  const a = tracker({ kind: 'min' }, replicas, disk);
  t.equal(a.offsetFor(1000), 500, 'the replica holds 900, the disk 500: a restart after a SIGKILL would come back at 500');
  a.replicaAcked();
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(disk.writesAsked, 1, 'the replica acknowledged more than the disk holds: the disk is asked to write now');
  t.equal(disk.acksSent, 0, 'and nothing new is acknowledged yet');
  disk.written = 950;
  a.replicaAcked();
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(disk.acksSent, 1, 'the disk wrote more: an ACK goes at once (WAIT returns promptly)');
  t.equal(a.offsetFor(1000), 900, 'now what the replica holds');
  t.equal(tracker({ kind: 'quorum', n: 1 }, replicas, { written: 300, acksSent: 0, writesAsked: 0 }).offsetFor(1000), 300, 'quorum too');
  t.equal(tracker({ kind: 'self' }, replicas, { written: 300, acksSent: 0, writesAsked: 0 }).offsetFor(1000), 1000, 'self: what it holds, as a Redis replica');
});

t.test('min: the smallest AOF offset, none while a replica never said one, and never lower than what was sent', async (t) => {
  const replicas = [
    { ack: 900, aof: 800 },
    { ack: 950, aof: 850 },
  ];
  const a = tracker({ kind: 'min' }, replicas);
  t.equal(a.aofOffsetFor(a.offsetFor(1000)), 800, 'the smallest');
  replicas.push({ ack: 990, aof: -1 });
  t.equal(a.aofOffsetFor(a.offsetFor(1000)), 800, 'a replica without an AOF joins: no more than before');
  replicas.pop();
  replicas[0]!.aof = 700; // a reconnected replica starts lower
  t.equal(a.aofOffsetFor(a.offsetFor(1000)), 800, 'never lower than already sent');
  t.equal(a.aofOffsetFor(600), 600, 'never past the ACK it goes with');
});

t.test('min with no replica ever saying one sends none; quorum:2 counts the replicas that said', async (t) => {
  t.equal(tracker({ kind: 'min' }, [{ ack: 900, aof: -1 }]).aofOffsetFor(900), null, 'none said: no FACK');
  t.equal(tracker({ kind: 'min' }, []).aofOffsetFor(900), null, 'no replica: no FACK');
  const q = tracker({ kind: 'quorum', n: 2 }, [
    { ack: 990, aof: 900 },
    { ack: 990, aof: -1 },
    { ack: 990, aof: 700 },
    { ack: 990, aof: 800 },
  ]);
  t.equal(q.aofOffsetFor(990), 800, 'the 2nd highest of those that said');
  t.equal(tracker({ kind: 'quorum', n: 2 }, [{ ack: 990, aof: 900 }, { ack: 990, aof: -1 }]).aofOffsetFor(990), null, 'fewer than 2 said: none');
});

t.test('self sends no FACK, whatever the replicas said', async (t) => {
  t.equal(tracker({ kind: 'self' }, [{ ack: 900, aof: 900 }]).aofOffsetFor(900), null);
});
