import t from 'tap';
import { existsSync, readFileSync, statSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DiskRoom, refusesWrites } from '../../src/util/disk-room.js';
import { createLogger } from '../../src/log.js';
import { tempDir } from '../helpers/temp-dir.js';

const logger = createLogger('silent');

t.test('the wait for room on the disk outlives a restart: a relay killed and started again does not make the master fork for an RDB that cannot be written', async (t) => {
  const dir = tempDir('disk-room-');
  const opts = { dir, logger, what: 'snapshot fetch', then: 'fetching it', file: 'room-snapshot-fetch.json' };
  const first = new DiskRoom(opts);
  const keep = join(dir, 'room-snapshot-fetch.json');
  t.notOk(existsSync(keep), 'nothing is written from the constructor (it runs before the data directory is locked)');
  t.equal(first.needBytes, 0, 'first use (the relay started): no wait');
  t.ok(existsSync(keep), 'its file is made then, while there is room, before any write can fail');
  const size = statSync(keep).size;
  // An RDB ran out of room: it was written up to the filesystem's free space, plus far more than is free now.
  const rdb = join(dir, 'temp-1.rdb');
  writeFileSync(rdb, Buffer.alloc(1024));
  await first.ranOut(rdb);
  // What it needs: the whole filesystem (no more can be kept: a larger wait would never end).
  const whole = statfsSync(dir).blocks * statfsSync(dir).bsize;
  first.atLeast(whole);
  t.equal(statSync(keep).size, size, 'written in place: no block more on a full disk');
  t.notOk(await first.hasRoom(), 'no room: waits');

  const restarted = new DiskRoom(opts);
  t.equal(restarted.needBytes, whole, 'a new process (a restart) knows what the last attempt needed');
  t.notOk(await restarted.hasRoom(), 'and waits for it too');

  // The disk has room again (needBytes below what is free): the wait ends, and is forgotten on disk as well.
  writeFileSync(keep, JSON.stringify({ needBytes: 1 }).padEnd(size, ' '));
  const again = new DiskRoom(opts);
  t.ok(await again.hasRoom(), 'room again: it starts');
  t.equal(new DiskRoom(opts).needBytes, 0, 'and the next restart waits for nothing');
  t.match(readFileSync(keep, 'utf8'), /"needBytes":0/);
});

t.test('an unreadable or torn wait file is no wait (at worst one more attempt)', async (t) => {
  const dir = tempDir('disk-room-');
  writeFileSync(join(dir, 'room-x.json'), '{"needBytes": 12');
  const r = new DiskRoom({ dir, logger, what: 'x', then: 'y', file: 'room-x.json' });
  t.equal(r.needBytes, 0);
  t.ok(await r.hasRoom());
});

t.test('a kept wait for more room than the whole filesystem has is not kept (a damaged file must not stop the relay for good)', async (t) => {
  const dir = tempDir('disk-room-');
  writeFileSync(join(dir, 'room-x.json'), JSON.stringify({ needBytes: 2 ** 52 }).padEnd(256, ' '));
  const r = new DiskRoom({ dir, logger, what: 'x', then: 'y', file: 'room-x.json' });
  t.equal(r.needBytes, 0, 'no wait');
  t.ok(await r.hasRoom(), 'the next attempt may start');
});

t.test('a write refused by the disk is told from a socket refused by a firewall', async (t) => {
  const err = (code: string, extra: Record<string, unknown>) => Object.assign(new Error(code), { code, ...extra });
  t.ok(refusesWrites(err('EROFS', { syscall: 'open', path: '/data/temp-1.rdb' })), 'EROFS opening a file');
  t.ok(refusesWrites(err('EACCES', { syscall: 'open', path: '/data/temp-1.rdb' })), 'EACCES opening a file');
  t.ok(refusesWrites(err('EROFS', { syscall: 'write' })), 'EROFS writing an open file');
  t.notOk(refusesWrites(err('EPERM', { syscall: 'connect', address: '10.0.0.1', port: 6379 })), 'EPERM connecting (netfilter)');
  t.notOk(refusesWrites(err('EACCES', { syscall: 'connect', address: '10.0.0.1', port: 6379 })), 'EACCES connecting (SELinux)');
  t.notOk(refusesWrites(err('ENOSPC', { syscall: 'write' })), 'no room is not a refusal');
});
