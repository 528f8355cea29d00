import t from 'tap';
import { promises as fsp, existsSync, symlinkSync } from 'node:fs';
import { join, dirname, basename } from 'node:path';
import { SnapshotStore, SnapshotCorruptError, parseRdbVersion, emptyRdb, writeFileAtomic } from '../../src/backlog/snapshot-store.js';
import { Crc64 } from '../../src/backlog/crc64.js';
import { nodeFileIo, type FileIo } from '../../src/backlog/file-io.js';
import { FaultyIo } from '../helpers/faulty-io.js';

const REPLID = '0123456789abcdef0123456789abcdef01234567';
const OTHER = 'f'.repeat(40);

/** An RDB-looking payload: header, some body, EOF opcode and a checksum. */
function rdb(version: number, bodyLen = 100): Buffer {
  const body = Buffer.alloc(bodyLen);
  for (let i = 0; i < bodyLen; i++) body[i] = (i * 7 + 3) & 0xff;
  return Buffer.concat([Buffer.from(`REDIS${String(version).padStart(4, '0')}`, 'latin1'), body, Buffer.from([0xff]), Buffer.alloc(8, 1)]);
}

async function storeIn(dir: string, keep = 1): Promise<SnapshotStore> {
  const store = new SnapshotStore(dir, { keep });
  await store.init();
  return store;
}

async function commit(store: SnapshotStore, meta: { replid: string; offset: number; epoch: number }, payload = rdb(10, 100)) {
  const tmp = store.tempPath();
  await fsp.writeFile(tmp, payload);
  return store.commit(tmp, meta);
}

t.test('commit publishes the temp file under a name carrying epoch, replid and offset', async (t) => {
  const dir = t.testdir();
  const store = await storeIn(dir);
  t.same(store.all, []);
  const tmp = store.tempPath();
  t.equal(dirname(tmp), dir);
  const payload = rdb(11, 1234);
  await fsp.writeFile(tmp, payload);
  const meta = await store.commit(tmp, { replid: REPLID, offset: 4242, epoch: 3 });
  t.match(meta, { replid: REPLID, offset: 4242, epoch: 3, size: payload.length, rdbVersion: 11 });
  t.equal(basename(meta.path), `snapshot-0000000003-${REPLID}-00000000000000004242.rdb`);
  t.ok(Object.isFrozen(meta));
  t.notOk(existsSync(tmp), 'the temp file is gone');
  t.ok((await fsp.readFile(meta.path)).equals(payload), 'the file holds the payload');
  t.same(await fsp.readdir(dir), [basename(meta.path)], 'nothing else: no separate metadata file to disagree with');
  t.equal(store.newest(3), meta);
  t.equal(store.newest(2), null, 'another history has none');
});

t.test('a commit whose directory fsync fails (EIO) is refused and leaves no file: its name might not survive a power loss', async (t) => {
  const dir = t.testdir();
  const io = new FaultyIo();
  const store = new SnapshotStore(dir, { io });
  await store.init();
  io.failOps('syncDir', 'EIO', 1);
  await t.rejects(commit(store, { replid: REPLID, offset: 10, epoch: 1 }), { code: 'EIO' });
  t.same(store.all, [], 'nothing published');
  t.same(await fsp.readdir(dir), [], 'no snapshot file left');
  const meta = await commit(store, { replid: REPLID, offset: 10, epoch: 1 });
  t.same(store.all, [meta], 'the next commit publishes');
});

t.test('a commit that is not an RDB is refused and the snapshot list is unchanged', async (t) => {
  const store = await storeIn(t.testdir());
  const tmp = store.tempPath();
  await fsp.writeFile(tmp, 'hello');
  await t.rejects(store.commit(tmp, { replid: REPLID, offset: 0, epoch: 1 }), /not an RDB/);
  t.same(store.all, []);
});

t.test('a replid that cannot be part of a file name is refused', async (t) => {
  const store = await storeIn(t.testdir());
  const tmp = store.tempPath();
  await fsp.writeFile(tmp, rdb(10));
  await t.rejects(store.commit(tmp, { replid: '../../etc/passwd'.padEnd(40, 'x'), offset: 0, epoch: 1 }), /bad replid/);
});

t.test('recover() finds the snapshots of a history and removes those of other histories', async (t) => {
  const dir = t.testdir();
  const first = await storeIn(dir, 5);
  const a = await commit(first, { replid: REPLID, offset: 100, epoch: 2 });
  const b = await commit(first, { replid: REPLID, offset: 900, epoch: 2 }, rdb(10, 300));
  const old = await commit(first, { replid: OTHER, offset: 50, epoch: 1 });
  t.ok(existsSync(old.path), 'a snapshot of another history is kept while no prune ran for it');

  const second = await storeIn(dir, 5);
  t.same(second.all, [], 'nothing until recover()');
  const got = await second.recover(2);
  t.same(got.map((s) => [s.replid, s.offset, s.epoch, s.size]), [
    [REPLID, 100, 2, a.size],
    [REPLID, 900, 2, b.size],
  ]);
  t.notOk(existsSync(old.path), 'the other history is removed');
  t.equal(second.newest(2)?.offset, 900);
  t.equal(second.newestWhere(2, (s) => s.offset < 500)?.offset, 100, 'the newest that fits');
});

t.test('recover(null) keeps every history: the caller picks', async (t) => {
  const dir = t.testdir();
  const first = await storeIn(dir, 5);
  await commit(first, { replid: OTHER, offset: 50, epoch: 1 });
  await commit(first, { replid: REPLID, offset: 10, epoch: 4 });
  const got = await new SnapshotStore(dir).recover(null);
  t.same(got.map((s) => [s.epoch, s.offset]), [[1, 50], [4, 10]], 'ordered by epoch, then offset');
});

t.test('recover() removes a snapshot file that is not an RDB (torn by a crash before its rename? never: but a disk can lie)', async (t) => {
  const dir = t.testdir();
  const store = await storeIn(dir);
  const meta = await commit(store, { replid: REPLID, offset: 7, epoch: 1 });
  await fsp.writeFile(meta.path, 'garbage');
  t.same(await new SnapshotStore(dir).recover(1), []);
  t.notOk(existsSync(meta.path));
});

t.test('prune keeps the newest `keep` of the current history and drops other histories', async (t) => {
  const dir = t.testdir();
  const store = await storeIn(dir, 2);
  const old = await commit(store, { replid: OTHER, offset: 5, epoch: 1 });
  const a = await commit(store, { replid: REPLID, offset: 10, epoch: 2 });
  const b = await commit(store, { replid: REPLID, offset: 20, epoch: 2 });
  const c = await commit(store, { replid: REPLID, offset: 30, epoch: 2 });
  await store.prune(2);
  t.same(store.all.map((s) => s.offset), [20, 30]);
  for (const [s, present] of [[old, false], [a, false], [b, true], [c, true]] as const) t.equal(existsSync(s.path), present, `offset ${s.offset}`);
});

t.test('prune with `followed`: of those kept, the ones not followed go, the newest too; the ones dropped for it are returned', async (t) => {
  const dir = t.testdir();
  const store = await storeIn(dir, 3);
  const a = await commit(store, { replid: REPLID, offset: 10, epoch: 2 });
  const b = await commit(store, { replid: REPLID, offset: 20, epoch: 2 });
  const c = await commit(store, { replid: REPLID, offset: 30, epoch: 2 });
  const dropped = await store.prune(2, (s) => s.offset >= 20);
  t.same(dropped.map((s) => s.offset), [10], 'the one the log no longer follows');
  t.same(store.all.map((s) => s.offset), [20, 30]);
  t.same((await store.prune(2, (s) => s.offset >= 30)).map((s) => s.offset), [20]);
  t.same((await store.prune(2, () => false)).map((s) => s.offset), [30], 'the newest too');
  t.same(store.all, []);
  for (const s of [a, b, c]) t.notOk(existsSync(s.path), `offset ${s.offset} deleted`);
});

t.test('prune does not return a snapshot the disk refused to delete (a read-only disk): the relay would say it removed it', async (t) => {
  const dir = t.testdir();
  let refuse = false;
  const io: FileIo = { ...nodeFileIo, rm: async (path) => (refuse ? Promise.reject(Object.assign(new Error('EROFS: read-only file system'), { code: 'EROFS' })) : nodeFileIo.rm(path)) };
  const store = new SnapshotStore(dir, { keep: 3, io });
  await store.init();
  const a = await commit(store, { replid: REPLID, offset: 10, epoch: 2 });
  await commit(store, { replid: REPLID, offset: 20, epoch: 2 });
  refuse = true;
  t.same(await store.prune(2, (s) => s.offset >= 20), [], 'nothing said removed');
  t.same(store.all.map((s) => s.offset), [20], 'but no longer offered');
  t.ok(existsSync(a.path), 'the file is still there (it goes at the next start)');
});

t.test('a leased snapshot is kept until its transfer releases it, and the lease reads the whole file', async (t) => {
  const dir = t.testdir();
  const store = await storeIn(dir);
  const payload = rdb(10, 5000);
  const a = await commit(store, { replid: REPLID, offset: 10, epoch: 1 }, payload);
  const lease = await store.lease(a);
  t.equal(store.leases, 1);
  const b = await commit(store, { replid: REPLID, offset: 20, epoch: 1 });
  await store.prune(1);
  t.ok(existsSync(a.path), 'superseded but still being read');
  t.same(store.all.map((s) => s.offset), [20], 'no longer offered');
  const buf = await lease.read(0, a.size);
  t.equal(buf.length, a.size);
  t.ok(buf.equals(payload), 'the lease reads the snapshot it was given');
  await lease.release();
  await lease.release();
  t.equal(store.leases, 0, 'a second release changes nothing');
  t.notOk(existsSync(a.path), 'deleted once released');
  t.same(store.all, [b]);
});

/** rdb() with the CRC-64 trailer Redis writes (over every byte before it). */
function checkedRdb(bodyLen: number): Buffer {
  const r = rdb(10, bodyLen);
  new Crc64().update(r, 0, r.length - 8).digestLE().copy(r, r.length - 8);
  return r;
}

/** Reads a lease the way a transfer does: the body in chunks, then verify(), then the trailer. */
async function transfer(lease: Awaited<ReturnType<SnapshotStore['lease']>>, chunk: number): Promise<void> {
  const body = lease.meta.size - lease.trailer;
  for (let pos = 0; pos < body; ) pos += (await lease.read(pos, Math.min(chunk, body - pos))).length;
  await lease.verify();
}

t.test('a snapshot whose bytes match its CRC-64 trailer verifies, whether the transfers read it or not', async (t) => {
  const dir = t.testdir();
  const store = await storeIn(dir);
  const a = await commit(store, { replid: REPLID, offset: 10, epoch: 1 }, checkedRdb(300_000));
  const [x, y] = [await store.lease(a), await store.lease(a)];
  t.equal(x.trailer, 8, 'the 8 trailer bytes wait for the check');
  await Promise.all([transfer(x, 65536), transfer(y, 100_000)]);
  await Promise.all([x.release(), y.release()]);
  const z = await store.lease(a);
  await z.verify();
  await z.release();
  t.same(store.all, [a], 'still offered');
});

t.test('a snapshot with one byte changed on disk fails verify() for every transfer, and is no longer offered', async (t) => {
  const dir = t.testdir();
  const store = await storeIn(dir);
  const payload = checkedRdb(300_000);
  const a = await commit(store, { replid: REPLID, offset: 10, epoch: 1 }, payload);
  const fh = await fsp.open(a.path, 'r+');
  await fh.write(Buffer.from([payload[150_000]! ^ 0x20]), 0, 1, 150_000);
  await fh.close();
  const [x, y] = [await store.lease(a), await store.lease(a)];
  await t.rejects(transfer(x, 65536), SnapshotCorruptError, 'the first transfer is refused the trailer');
  await t.rejects(transfer(y, 65536), /checksum mismatch/, 'and so is the second');
  t.same(store.all, [], 'no longer offered');
  t.ok(existsSync(a.path), 'kept while transfers hold it');
  await Promise.all([x.release(), y.release()]);
  t.notOk(existsSync(a.path), 'deleted once released');
});

t.test('a second snapshot of the same history and offset while the first is read: both transfers verify, none is taken for damaged', async (t) => {
  const dir = t.testdir();
  const store = await storeIn(dir);
  const a = await commit(store, { replid: REPLID, offset: 10, epoch: 1 }, checkedRdb(300_000));
  const x = await store.lease(a);
  // A refresh (or a snapshot source) brings the same point again, saved anew: another size.
  t.equal(await commit(store, { replid: REPLID, offset: 10, epoch: 1 }, checkedRdb(200_000)), a, 'the snapshot held of that point stays the one offered');
  const y = await store.lease(store.newest(1)!);
  await Promise.all([transfer(x, 65536), transfer(y, 65536)]);
  await Promise.all([x.release(), y.release()]);
  t.equal(store.all.length, 1, 'one snapshot of that point is offered');
  t.ok(existsSync(store.all[0]!.path), 'and its file is there');
  t.same((await fsp.readdir(dir)).filter((n) => n.startsWith('temp-')), [], 'the new temp file is removed');
});

t.test('a snapshot of a point given up while still read: a new one of that point is refused, not renamed under its readers', async (t) => {
  const dir = t.testdir();
  const store = await storeIn(dir);
  const a = await commit(store, { replid: REPLID, offset: 10, epoch: 1 }, checkedRdb(300_000));
  const x = await store.lease(a);
  await store.remove(a);
  await t.rejects(commit(store, { replid: REPLID, offset: 10, epoch: 1 }, checkedRdb(200_000)), /still being read/);
  await transfer(x, 65536);
  await x.release();
  t.same(await fsp.readdir(dir), [], 'the file given up goes with its last reader, and the new temp file with the refusal');
});

t.test('a snapshot that matched is not checked again until the file changes', async (t) => {
  const dir = t.testdir();
  let reads = 0;
  const store = new SnapshotStore(dir, { io: readHookedIo(() => (reads++, null)) });
  await store.init();
  const payload = checkedRdb(300_000);
  const a = await commit(store, { replid: REPLID, offset: 10, epoch: 1 }, payload);
  const x = await store.lease(a);
  await transfer(x, 65536);
  await x.release();
  reads = 0;
  const y = await store.lease(a);
  await y.verify();
  await y.release();
  t.equal(reads, 0, 'the next transfer is not made to wait for a second pass over the file');
  // Any write sets the file's ctime, whatever the bytes: one byte changed and put back counts.
  const fh = await fsp.open(a.path, 'r+');
  await fh.write(Buffer.from([payload[1000]! ^ 1]), 0, 1, 1000);
  const z = await store.lease(a);
  await t.rejects(z.verify(), SnapshotCorruptError, 'a file changed since is checked again');
  await fh.write(Buffer.from([payload[1000]!]), 0, 1, 1000);
  await fh.close();
  await z.release();
});

/** nodeFileIo whose reads return the byte at file offset `at()` changed (when >= 0): a disk returning other bytes. */
function rottingIo(at: () => number): FileIo {
  return readHookedIo(
    () => null,
    (buf, offset, position, bytesRead) => {
      const o = at();
      if (o >= position && o < position + bytesRead) buf[offset + o - position]! ^= 0x20;
    },
  );
}

t.test('a snapshot that changes on disk after it matched, its ctime unchanged (bit rot, a bad sector), is refused before the changed bytes go out', async (t) => {
  const dir = t.testdir();
  let rot = -1;
  const store = new SnapshotStore(dir, { io: rottingIo(() => rot) });
  await store.init();
  const payload = checkedRdb(300_000);
  // In the body, and in the trailer.
  for (const at of [200_000, payload.length - 3]) {
    rot = -1;
    const b = await commit(store, { replid: REPLID, offset: 20 + at, epoch: 1 }, payload);
    const first = await store.lease(b);
    await transfer(first, 65536);
    await first.release();
    rot = at;
    const y = await store.lease(b);
    const got: Buffer[] = [];
    const read = async () => {
      for (let pos = 0; pos < b.size; ) {
        if (pos === b.size - y.trailer) await y.verify();
        const chunk = await y.read(pos, Math.min(65536, b.size - y.trailer - pos || y.trailer));
        got.push(chunk);
        pos += chunk.length;
      }
    };
    await t.rejects(read(), SnapshotCorruptError, `the byte at ${at} changed: the transfer fails`);
    const sent = Buffer.concat(got);
    t.ok(sent.length <= at && sent.equals(payload.subarray(0, sent.length)), `only bytes before it were read (${sent.length})`);
    t.notOk(store.all.includes(b), 'no longer offered');
    await y.release();
  }
});

t.test('an RDB saved without checksums (zero trailer, rdbchecksum no) and one older than version 5 are sent as they are', async (t) => {
  const dir = t.testdir();
  const store = await storeIn(dir);
  const zero = rdb(10, 1000);
  zero.fill(0, zero.length - 8);
  const a = await commit(store, { replid: REPLID, offset: 10, epoch: 1 }, zero);
  const x = await store.lease(a);
  await transfer(x, 4096);
  await x.release();
  const b = await commit(store, { replid: REPLID, offset: 20, epoch: 1 }, rdb(4, 1000));
  const y = await store.lease(b);
  t.equal(y.trailer, 0, 'RDB 4 has no trailer to hold back');
  await y.verify();
  await y.release();
});

/** The real file system, with `onRead` in front of every handle's read (it may fail the read instead). */
/** nodeFileIo whose reads fail with what `onRead` returns, if anything, and are shown to `afterRead` when done. */
function readHookedIo(onRead: () => Error | null, afterRead?: (buf: Buffer, offset: number, position: number, bytesRead: number) => void): FileIo {
  return {
    ...nodeFileIo,
    open: async (...args) => {
      const fh = await nodeFileIo.open(...args);
      return {
        ...fh,
        fd: fh.fd,
        read: async (buf: Buffer, offset: number, length: number, position: number) => {
          const err = onRead();
          if (err) throw err;
          const r = await fh.read(buf, offset, length, position);
          afterRead?.(buf, offset, position, r.bytesRead);
          return r;
        },
      };
    },
  };
}

t.test('transfers of one snapshot share their reads: one read per chunk, the same bytes for every lease', async (t) => {
  const dir = t.testdir();
  let reads = 0;
  const store = new SnapshotStore(dir, { io: readHookedIo(() => (reads++, null)) });
  await store.init();
  const payload = rdb(10, 300_000);
  const meta = await commit(store, { replid: REPLID, offset: 10, epoch: 1 }, payload);
  reads = 0; // the commit read the header
  const leases = await Promise.all([store.lease(meta), store.lease(meta), store.lease(meta)]);
  const chunk = 128 * 1024;
  for (let pos = 0; pos < meta.size; pos += chunk) {
    const n = Math.min(chunk, meta.size - pos);
    const got = await Promise.all(leases.map((l) => l.read(pos, n)));
    for (const g of got) t.ok(g.equals(payload.subarray(pos, pos + n)), `bytes ${pos}..${pos + n - 1}`);
  }
  t.equal(reads, Math.ceil(meta.size / chunk), 'one read per chunk for three leases');
  t.ok((await leases[0]!.read(0, 10)).equals(payload.subarray(0, 10)), 'a shorter read of a shared chunk is cut to its length');
  await t.rejects(leases[1]!.read(meta.size, 10), /snapshot file ended at/, 'past the end: an error, not an empty chunk');
  for (const l of leases) await l.release();
  const again = await store.lease(meta);
  const before = reads;
  await again.read(0, chunk);
  t.equal(reads, before + 1, 'once every lease is released, nothing is kept');
  await again.release();
});

t.test('a shared read that failed is not kept: the next transfer reads again', async (t) => {
  const dir = t.testdir();
  let failNext = 0;
  let reads = 0;
  const eio = () => Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
  const store = new SnapshotStore(dir, { io: readHookedIo(() => (reads++, failNext-- > 0 ? eio() : null)) });
  await store.init();
  const payload = rdb(10, 1000);
  const meta = await commit(store, { replid: REPLID, offset: 10, epoch: 1 }, payload);
  const [a, b] = await Promise.all([store.lease(meta), store.lease(meta)]);
  reads = 0;
  failNext = 1;
  await t.rejects(a.read(0, meta.size), /EIO/);
  t.ok((await b.read(0, meta.size)).equals(payload), 'read again, and right');
  t.equal(reads, 2);
  await a.release();
  await b.release();
});

t.test('the leases of one snapshot share one open handle, closed with the last release; a failed open is not kept', async (t) => {
  const dir = t.testdir();
  const opens: Array<{ closed: boolean }> = [];
  let failOpen = false;
  const io: FileIo = {
    ...nodeFileIo,
    open: async (...args) => {
      if (failOpen) throw Object.assign(new Error('EMFILE: too many open files, open'), { code: 'EMFILE' });
      const fh = await nodeFileIo.open(...args);
      const o = { closed: false };
      opens.push(o);
      return { ...fh, fd: fh.fd, close: async () => ((o.closed = true), fh.close()) };
    },
  };
  const store = new SnapshotStore(dir, { io });
  await store.init();
  const payload = rdb(10, 1000);
  const meta = await commit(store, { replid: REPLID, offset: 10, epoch: 1 }, payload);
  opens.length = 0; // the commit's own opens
  const leases = await Promise.all(Array.from({ length: 50 }, () => store.lease(meta)));
  t.equal(opens.length, 1, 'fifty leases, one open');
  for (const l of leases.slice(1)) await l.release();
  t.notOk(opens[0]!.closed, 'open while a lease holds it');
  t.ok((await leases[0]!.read(0, meta.size)).equals(payload), 'the last lease still reads');
  await leases[0]!.release();
  t.ok(opens[0]!.closed, 'closed with the last release');
  failOpen = true;
  await t.rejects(store.lease(meta), /EMFILE/);
  t.equal(store.leases, 0, 'the failed lease holds nothing');
  failOpen = false;
  const again = await store.lease(meta);
  t.equal(opens.length, 2, 'the next lease opens again');
  t.ok((await again.read(0, meta.size)).equals(payload));
  await again.release();
});

t.test('a lease on a file that changed size or vanished fails and holds nothing', async (t) => {
  const dir = t.testdir();
  const store = await storeIn(dir);
  const a = await commit(store, { replid: REPLID, offset: 10, epoch: 1 });
  await fsp.appendFile(a.path, 'x');
  await t.rejects(store.lease(a), /expected/);
  t.equal(store.leases, 0);
  await fsp.rm(a.path);
  await t.rejects(store.lease(a), { code: 'ENOENT' });
  t.equal(store.leases, 0);
  await store.remove(a);
  t.same(store.all, []);
});

t.test('init() removes temp files, unfinished atomic writes and the files of the old layout', async (t) => {
  const dir = t.testdir({
    'temp-123-1.rdb': 'partial',
    'temp-999-42.rdb': 'partial',
    'snapshot.rdb': 'old layout',
    'snapshot.json': '{}',
    [`snapshot-0000000001-${REPLID}-00000000000000000001.rdb.tmp-1-x-1`]: 'unfinished',
    'temp-notes.txt': 'keep',
    'other.rdb': 'keep',
  });
  await new SnapshotStore(dir).init();
  t.same((await fsp.readdir(dir)).sort(), ['other.rdb', 'temp-notes.txt']);
});

t.test('init() creates a missing data directory', async (t) => {
  const dir = join(t.testdir(), 'a', 'b');
  await new SnapshotStore(dir).init();
  t.ok((await fsp.stat(dir)).isDirectory());
});

t.test('discard() removes a temp file and tolerates a missing one', async (t) => {
  const store = await storeIn(t.testdir());
  const tmp = store.tempPath();
  await fsp.writeFile(tmp, 'x');
  await store.discard(tmp);
  t.notOk(existsSync(tmp));
  await store.discard(tmp);
});

t.test('writeFileAtomic writes the data with mode 0600 and leaves no temp file', async (t) => {
  const dir = t.testdir({ 'f.json': 'old' });
  await writeFileAtomic(join(dir, 'f.json'), 'new');
  t.equal(await fsp.readFile(join(dir, 'f.json'), 'utf8'), 'new');
  t.equal((await fsp.stat(join(dir, 'f.json'))).mode & 0o777, 0o600);
  await writeFileAtomic(join(dir, 'g.bin'), Buffer.from([0, 1, 2]));
  t.same([...(await fsp.readFile(join(dir, 'g.bin')))], [0, 1, 2]);
  t.same((await fsp.readdir(dir)).sort(), ['f.json', 'g.bin']);
});

t.test('writeFileAtomic never follows a symlink planted at its temp name', async (t) => {
  const dir = t.testdir({ 'victim.txt': 'precious' });
  // An attacker who wins the race plants a link exactly at the temp name just before it is opened.
  const racing: FileIo = {
    ...nodeFileIo,
    open: (path, flags, mode) => {
      if (path.includes('.tmp-')) symlinkSync(join(dir, 'victim.txt'), path);
      return nodeFileIo.open(path, flags, mode);
    },
  };
  await t.rejects(writeFileAtomic(join(dir, 'state.json'), 'mine', racing), { code: 'EEXIST' });
  t.equal(await fsp.readFile(join(dir, 'victim.txt'), 'utf8'), 'precious', 'the link target is untouched');
  t.notOk(existsSync(join(dir, 'state.json')));
});

t.test('parseRdbVersion reads REDISnnnn headers', async (t) => {
  t.equal(parseRdbVersion(Buffer.from('REDIS0010')), 10);
  t.equal(parseRdbVersion(Buffer.from('REDIS0011rest-of-file')), 11);
  t.equal(parseRdbVersion(Buffer.from('REDIS0009')), 9);
  t.equal(parseRdbVersion(Buffer.from('REDIS001')), 0, 'too short');
  t.equal(parseRdbVersion(Buffer.alloc(0)), 0);
  t.equal(parseRdbVersion(Buffer.from('RDB000010')), 0, 'wrong magic');
  t.equal(parseRdbVersion(Buffer.from('redis0010')), 0, 'magic is case sensitive');
  t.equal(parseRdbVersion(Buffer.from('REDISabcd')), 0, 'not a number');
  t.equal(parseRdbVersion(Buffer.from('REDIS00.5')), 0, 'not an integer');
});

t.test('emptyRdb produces REDIS00xx, the EOF opcode and a zero checksum', async (t) => {
  for (const [v, header] of [
    [10, 'REDIS0010'],
    [11, 'REDIS0011'],
    [9, 'REDIS0009'],
    [0, 'REDIS0010'],
    [-1, 'REDIS0010'],
  ] as const) {
    const b = emptyRdb(v);
    t.equal(b.length, 18, `version ${v}`);
    t.equal(b.toString('latin1', 0, 9), header);
    t.equal(b[9], 0xff);
    t.ok(b.subarray(10).equals(Buffer.alloc(8)), 'checksum 0');
    t.equal(parseRdbVersion(b), v > 0 ? v : 10);
  }
});
