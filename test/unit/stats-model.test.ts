import t from 'tap';
import { RelayStats } from '../../src/observability/stats.js';
import { Telemetry } from '../../src/observability/telemetry.js';

t.test('every message moves the counter that INFO, /status and /metrics read', async (t) => {
  const tel = new Telemetry('a');
  const stats = new RelayStats(tel);
  t.teardown(() => stats.close());
  tel.emit('connection', { result: 'accepted', peer: 'p' });
  tel.emit('connection', { result: 'max-clients', peer: 'p' });
  tel.emit('connection', { result: 'protected-mode', peer: 'p' });
  tel.emit('protocol-error', { peer: 'p', limit: 'listen.max-bulk-len' });
  tel.emit('access-denied', { reason: 'auth', peer: 'p' });
  tel.emit('access-denied', { reason: 'auth', peer: 'p' });
  tel.emit('access-denied', { reason: 'cmd', peer: 'p' });
  tel.emit('web.refused', { reason: 'origin', peer: 'p' });
  tel.emit('web.refused', { reason: 'token', peer: 'p' });
  tel.emit('web.refused', { reason: 'answers', peer: 'p' });
  tel.emit('replica.sync', { kind: 'full', peer: 'p' });
  tel.emit('replica.sync', { kind: 'partial', peer: 'p' });
  tel.emit('replica.sync', { kind: 'partial', peer: 'p' });
  tel.emit('replica.partial-refused', { peer: 'p', replid: 'r', offset: 1 });
  tel.emit('replica.dropped', { reason: 'lag', peer: 'p', detail: '' });
  tel.emit('replica.dropped', { reason: 'timeout', peer: 'p', detail: '' });
  tel.emit('replica.dropped', { reason: 'timeout', peer: 'p', detail: '' });
  tel.emit('upstream.sync', { kind: 'full', replid: 'r', offset: 0 });
  tel.emit('upstream.sync', { kind: 'partial', replid: 'r', offset: 9 });
  tel.emit('upstream.error', { message: 'first' });
  tel.emit('upstream.error', { message: 'second' });
  tel.emit('disk.write-error', { cause: 'ENOSPC' });
  tel.emit('disk.detached', { cause: 'log.disk-queue' });
  tel.emit('disk.read-error', { cause: 'EIO' });
  tel.emit('disk.read-wait', { ms: 1200 });
  tel.emit('disk.read-wait', { ms: 300 });
  tel.emit('snapshot.refresh', { phase: 'started', from: 'master', reason: null });
  tel.emit('snapshot.refresh', { phase: 'failed', from: 'master', reason: 'x' });
  tel.emit('snapshot.refresh', { phase: 'started', from: 'master', reason: null });
  tel.emit('snapshot.refresh', { phase: 'committed', from: 'master', reason: null });
  tel.emit('snapshot.given-up', { reason: 'damaged', cause: 'checksum mismatch' });
  tel.emit('snapshot.given-up', { reason: 'unreadable', cause: 'ENOENT' });
  tel.emit('stream.subscribed', { format: 'json' });
  tel.emit('stream.slow-disconnect', { buffered: 1 });
  tel.traffic.netOutputBytes += 100;
  tel.traffic.streamCommand(Buffer.from('SET'));
  tel.traffic.streamCommand(Buffer.from('set'));
  t.same(stats.snapshot(), {
    downstream: {
      totalConnectionsReceived: 3,
      totalCommandsProcessed: 0,
      rejectedConnections: 1,
      syncFull: 1,
      syncPartialOk: 2,
      syncPartialErr: 1,
      netInputBytes: 0,
      netOutputBytes: 100,
      replOutputBytes: 0,
      replicasDroppedLag: 1,
      replicasDroppedTimeout: 2,
      protocolErrors: 1,
      accessDenied: { auth: 2, cmd: 1, channel: 0 },
      diskReadBytes: 0,
      streamCommands: { set: 2 },
      compressedRawBytes: 0,
      compressedWireBytes: 0,
    },
    upstream: { fullSyncs: 1, partialSyncs: 1, bytesIn: 0, lastError: 'second' },
    snapshotRefreshes: { started: 2, committed: 1, failed: 1 },
    snapshotsGivenUp: 2,
    disk: { writeErrors: 1, detaches: 1, readErrors: 1, readWaits: 2, readWaitMs: 1500 },
    web: { subscribersTotal: 1, messagesSent: 0, bytesSent: 0, droppedMessages: 0, slowDisconnects: 1, refused: { host: 0, origin: 1, token: 1, subscribers: 0, answers: 1 } },
  });
});

t.test('a model counts only its own relay, and nothing once closed', async (t) => {
  const a = new Telemetry('a');
  const b = new Telemetry('b');
  const statsA = new RelayStats(a);
  const statsB = new RelayStats(b);
  t.teardown(() => statsB.close());
  a.emit('replica.sync', { kind: 'full', peer: 'p' });
  b.emit('replica.sync', { kind: 'full', peer: 'p' });
  b.emit('replica.sync', { kind: 'full', peer: 'p' });
  t.equal(statsA.snapshot().downstream.syncFull, 1);
  t.equal(statsB.snapshot().downstream.syncFull, 2);
  statsA.close();
  a.emit('replica.sync', { kind: 'full', peer: 'p' });
  t.equal(statsA.snapshot().downstream.syncFull, 1, 'closed: the channels no longer reach it');
});
