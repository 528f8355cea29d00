import t from 'tap';
import { promises as fsp, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { SnapshotStore, parseRdbVersion, emptyRdb, writeFileAtomic } from '../../src/backlog/snapshot-store.js';

const REPLID = '0123456789abcdef0123456789abcdef01234567';
const OTHER = 'f'.repeat(40);

/** An RDB-looking payload: header, some body, EOF opcode and a checksum. */
function rdb(version: number, bodyLen = 100): Buffer {
  const body = Buffer.alloc(bodyLen);
  for (let i = 0; i < bodyLen; i++) body[i] = (i * 7 + 3) & 0xff;
  return Buffer.concat([Buffer.from(`REDIS${String(version).padStart(4, '0')}`, 'latin1'), body, Buffer.from([0xff]), Buffer.alloc(8, 1)]);
}

async function storeIn(dir: string): Promise<SnapshotStore> {
  const store = new SnapshotStore(dir);
  await store.init();
  return store;
}

t.test('commit renames the temp file and records replid, offset, size and rdbVersion', async (t) => {
  const dir = t.testdir();
  const store = await storeIn(dir);
  t.equal(store.current, null);
  t.equal(store.path, join(dir, 'snapshot.rdb'));
  const tmp = store.tempPath();
  t.equal(dirname(tmp), dir);
  const payload = rdb(11, 1234);
  await fsp.writeFile(tmp, payload);
  const before = Date.now();
  const meta = await store.commit(tmp, { replid: REPLID, offset: 4242 });
  t.match(meta, { replid: REPLID, offset: 4242, size: payload.length, rdbVersion: 11 });
  t.ok(meta.createdAt >= before && meta.createdAt <= Date.now(), 'createdAt is now');
  t.equal(store.current, meta);
  t.ok(Object.isFrozen(meta));
  t.notOk(existsSync(tmp), 'the temp file is gone');
  t.ok((await fsp.readFile(store.path)).equals(payload), 'snapshot.rdb holds the payload');
  const json = JSON.parse(await fsp.readFile(join(dir, 'snapshot.json'), 'utf8'));
  t.same(json, meta, 'the metadata file matches');
  t.same(
    (await fsp.readdir(dir)).sort(),
    ['snapshot.json', 'snapshot.rdb'],
    'no temp files are left behind',
  );
});

t.test('a second commit replaces the first', async (t) => {
  const store = await storeIn(t.testdir());
  const a = store.tempPath();
  await fsp.writeFile(a, rdb(10, 10));
  await store.commit(a, { replid: REPLID, offset: 1 });
  const b = store.tempPath();
  t.not(a, b, 'temp paths are unique');
  await fsp.writeFile(b, rdb(12, 50));
  const meta = await store.commit(b, { replid: OTHER, offset: 99 });
  t.match(meta, { replid: OTHER, offset: 99, size: 50 + 18, rdbVersion: 12 });
  const again = await new SnapshotStore(store.dir).recover();
  t.same(again, meta);
});

t.test('commit of a file that is not an RDB records rdbVersion 0', async (t) => {
  const store = await storeIn(t.testdir());
  const tmp = store.tempPath();
  await fsp.writeFile(tmp, 'hello');
  const meta = await store.commit(tmp, { replid: REPLID, offset: 0 });
  t.same([meta.size, meta.rdbVersion], [5, 0]);
});

t.test('recover() in a new store instance returns the committed snapshot', async (t) => {
  const dir = t.testdir();
  const first = await storeIn(dir);
  const tmp = first.tempPath();
  await fsp.writeFile(tmp, rdb(10, 500));
  const meta = await first.commit(tmp, { replid: REPLID, offset: 777 });

  const second = await storeIn(dir);
  t.equal(second.current, null, 'nothing until recover()');
  const got = await second.recover();
  t.same(got, meta);
  t.same(second.current, meta);
  t.ok(Object.isFrozen(second.current));
});

t.test('recover() returns null when there is nothing or it is not whole', async (t) => {
  t.test('empty directory', async (t) => {
    const store = await storeIn(t.testdir());
    t.equal(await store.recover(), null);
    t.equal(store.current, null);
  });

  const committed = async (dir: string) => {
    const store = await storeIn(dir);
    const tmp = store.tempPath();
    await fsp.writeFile(tmp, rdb(10, 100));
    await store.commit(tmp, { replid: REPLID, offset: 5 });
    return store;
  };

  t.test('the file is longer than the metadata says', async (t) => {
    const dir = t.testdir();
    await committed(dir);
    await fsp.appendFile(join(dir, 'snapshot.rdb'), 'x');
    const store = new SnapshotStore(dir);
    t.equal(await store.recover(), null);
    t.equal(store.current, null);
  });
  t.test('the file is shorter than the metadata says', async (t) => {
    const dir = t.testdir();
    await committed(dir);
    await fsp.truncate(join(dir, 'snapshot.rdb'), 50);
    t.equal(await new SnapshotStore(dir).recover(), null);
  });
  t.test('the rdb file is missing', async (t) => {
    const dir = t.testdir();
    await committed(dir);
    await fsp.rm(join(dir, 'snapshot.rdb'));
    t.equal(await new SnapshotStore(dir).recover(), null);
  });
  t.test('the metadata is missing', async (t) => {
    const dir = t.testdir();
    await committed(dir);
    await fsp.rm(join(dir, 'snapshot.json'));
    t.equal(await new SnapshotStore(dir).recover(), null);
  });
  t.test('the metadata is not JSON', async (t) => {
    const dir = t.testdir();
    await committed(dir);
    await fsp.writeFile(join(dir, 'snapshot.json'), '{"replid": ');
    t.equal(await new SnapshotStore(dir).recover(), null);
  });
  t.test('the metadata lacks a replid or offset', async (t) => {
    const dir = t.testdir();
    await committed(dir);
    await fsp.writeFile(join(dir, 'snapshot.json'), JSON.stringify({ offset: 5, size: 127 }));
    t.equal(await new SnapshotStore(dir).recover(), null);
    await fsp.writeFile(join(dir, 'snapshot.json'), JSON.stringify({ replid: REPLID, offset: '5', size: 127 }));
    t.equal(await new SnapshotStore(dir).recover(), null);
  });
});

t.test('init() removes leftover temp files and keeps the rest', async (t) => {
  const dir = t.testdir({
    'temp-123-1.rdb': 'partial',
    'temp-999-42.rdb': 'partial',
    'snapshot.rdb': 'keep',
    'snapshot.json': '{}',
    'temp-notes.txt': 'keep',
    'other.rdb': 'keep',
  });
  const store = new SnapshotStore(dir);
  await store.init();
  t.same((await fsp.readdir(dir)).sort(), ['other.rdb', 'snapshot.json', 'snapshot.rdb', 'temp-notes.txt']);
});

t.test('init() removes what tempPath() named in an earlier run', async (t) => {
  const dir = t.testdir();
  const before = await storeIn(dir);
  await fsp.writeFile(before.tempPath(), 'cut midway');
  await storeIn(dir);
  t.same(await fsp.readdir(dir), []);
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

t.test('writeFileAtomic writes the data and leaves no temp file', async (t) => {
  const dir = t.testdir({ 'f.json': 'old' });
  await writeFileAtomic(join(dir, 'f.json'), 'new');
  t.equal(await fsp.readFile(join(dir, 'f.json'), 'utf8'), 'new');
  await writeFileAtomic(join(dir, 'g.bin'), Buffer.from([0, 1, 2]));
  t.same([...(await fsp.readFile(join(dir, 'g.bin')))], [0, 1, 2]);
  t.same((await fsp.readdir(dir)).sort(), ['f.json', 'g.bin']);
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
