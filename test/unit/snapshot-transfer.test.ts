/**
 * A full sync from a snapshot file, cut short by the replica: the transfer ends without touching the lease's file
 * descriptor, which only the lease closes. A descriptor closed twice is a descriptor the process may have reused
 * for a socket or a log segment in between: closing it again closes that (libuv then aborts the process, or a
 * connection fails with a bogus error).
 */
import t from 'tap';
import { fstatSync, promises as fsp } from 'node:fs';
import type { Socket } from 'node:net';
import { SnapshotStore } from '../../src/backlog/snapshot-store.js';
import { crc64 } from '../../src/backlog/crc64.js';
import { nodeFileIo, type FileIo } from '../../src/backlog/file-io.js';
import { ReplLog } from '../../src/backlog/repl-log.js';
import { ReplicaSession, ReplicaState } from '../../src/downstream/replica-session.js';
import { Telemetry } from '../../src/observability/telemetry.js';
import { createLogger } from '../../src/log.js';
import { loopbackPair } from '../helpers/raw.js';
import { waitFor } from '../helpers/wait.js';

const REPLID = '0123456789abcdef0123456789abcdef01234567';

/** nodeFileIo, recording for each handle closed whether its descriptor was still open at that moment. */
function recordingIo(closes: Array<{ fd: number; open: boolean }>): FileIo {
  return {
    ...nodeFileIo,
    open: async (path, flags, mode) => {
      const h = await nodeFileIo.open(path, flags, mode);
      return {
        ...h,
        fd: h.fd,
        writev: (b, p) => h.writev(b, p),
        read: (b, o, l, p) => h.read(b, o, l, p),
        datasync: () => h.datasync(),
        sync: () => h.sync(),
        stat: () => h.stat(),
        close: async () => {
          let open = true;
          try {
            fstatSync(h.fd);
          } catch {
            open = false;
          }
          closes.push({ fd: h.fd, open });
          await h.close().catch(() => {});
        },
      };
    },
  };
}

/** A replica session on `socket` (the relay's side), told a full sync at offset 100; it sees the socket close. */
function fullSyncSession(socket: Socket, onClose: () => void): ReplicaSession {
  const session = new ReplicaSession({
    socket,
    log: new ReplLog(1024 * 1024, 100),
    logger: createLogger('silent'),
    telemetry: new Telemetry('snapshot-transfer-test'),
    maxLag: 1 << 30,
    caps: { psync2: true, eof: true, rdbOnly: false, rdbFilterEmpty: false, plainSync: false },
    onClose,
  });
  socket.on('close', () => session.closed());
  session.beginFull(101);
  return session;
}

t.test('a replica gone in the middle of its RDB leaves the snapshot descriptor to the lease, closed once', async (t) => {
  const dir = t.testdir({});
  const closes: Array<{ fd: number; open: boolean }> = [];
  const store = new SnapshotStore(dir, { io: recordingIo(closes) });
  await store.init();
  const tmp = store.tempPath();
  const rdb = Buffer.concat([Buffer.from('REDIS0010'), Buffer.alloc(32 * 1024 * 1024, 7)]);
  await fsp.writeFile(tmp, rdb);
  const meta = await store.commit(tmp, { replid: REPLID, offset: 100, epoch: 1 });

  // The pair handles both sides' 'error', as ClientConnection does for every socket (a replica going is a reset).
  const { server: socket, client } = await loopbackPair(t);
  let got = 0;
  client.on('data', (d: Buffer) => {
    got += d.length;
    // Gone once a few MB have arrived: the file is still being read.
    if (got > 4 * 1024 * 1024) client.destroy();
  });

  const session = fullSyncSession(socket, () => {});
  // Descriptor numbers are reused: only closes after the lease was taken count.
  const before = closes.length;
  const lease = await store.lease(meta);
  await session.sendPayload(Buffer.from(`+FULLRESYNC ${REPLID} 100\r\n`), { lease });
  await waitFor(() => session.state === ReplicaState.Closed || undefined, { what: 'the session closed' });
  t.ok(got < rdb.length, 'the replica went away before the whole RDB');
  t.equal(store.leases, 0, 'the lease is released');
  const leaseCloses = closes.slice(before).filter((c) => c.fd === lease.fh.fd);
  t.same(leaseCloses.map((c) => c.open), [true], 'the lease closed its descriptor once, while it was still open');
});

t.test('a replica that closes after the whole RDB, while the transfer still releases its file, is known not to have loaded it', async (t) => {
  const dir = t.testdir({});
  const store = new SnapshotStore(dir, { io: nodeFileIo });
  await store.init();
  const tmp = store.tempPath();
  // With its CRC-64 trailer: the transfer sends the last 8 bytes only once the rest match them.
  const body = Buffer.concat([Buffer.from('REDIS0010'), Buffer.alloc(256 * 1024, 7)]);
  const rdb = Buffer.concat([body, crc64(body)]);
  await fsp.writeFile(tmp, rdb);
  const meta = await store.commit(tmp, { replid: REPLID, offset: 100, epoch: 1 });

  const header = Buffer.from(`+FULLRESYNC ${REPLID} 100\r\n`);
  // A `capa eof` replica: the RDB between `$EOF:<40-byte mark>\r\n` and the mark.
  const whole = header.length + '$EOF:\r\n'.length + 40 + rdb.length + 40;
  const { server: socket, client } = await loopbackPair(t);
  let got = 0;
  // A replica that cannot load the RDB: it reads all of it, then closes its link without acknowledging the stream.
  client.on('data', (d: Buffer) => {
    got += d.length;
    if (got >= whole) client.destroy();
  });

  // What the relay counts is read when the session ends (ReplicationService's #countLoad, from onClose).
  let atClose: boolean | null | undefined;
  const session: ReplicaSession = fullSyncSession(socket, () => (atClose = session.loadedSnapshot));
  const lease = await store.lease(meta);
  // The release of the file is slow (a thread pool busy with a slow disk): the replica's close comes first.
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const sending = session.sendPayload(header, {
    lease: Object.assign(Object.create(lease) as typeof lease, { release: async () => (await gate, lease.release()) }),
  });
  await waitFor(() => session.state === ReplicaState.Closed || undefined, { what: 'the replica closed its link' });
  open();
  await sending;
  t.equal(got, whole, 'the replica had the whole RDB');
  t.equal(atClose, false, 'the session ended counted as a failed load');
  t.equal(store.leases, 0, 'the lease is released');
});
