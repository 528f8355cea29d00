import t, { type Test } from 'tap';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { DataDirLock, DataDirLockedError, LOCK_FILE } from '../../src/data-dir-lock.js';
import { smallFilesystem } from '../helpers/small-fs.js';
import { tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait.js';

const logger = pino({ level: 'silent' });

function opts(runId: string, extra: { onLost?: (o: string) => void; heartbeatMs?: number; staleMs?: number } = {}) {
  return { runId, logger, onLost: extra.onLost ?? (() => {}), heartbeatMs: extra.heartbeatMs ?? 50, staleMs: extra.staleMs ?? 400 };
}

/** A lock file as another relay writes it. */
function writeLock(dir: string, owner: Record<string, unknown>): void {
  writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ runId: 'other', host: 'elsewhere', since: 'earlier', ...owner }) + '\n');
}

function here(pid: number): Record<string, unknown> {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  return {
    pid,
    bootId: readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim(),
    pidNs: readlinkSync('/proc/self/ns/pid'),
    startTime: stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19],
  };
}

/** A directory whose lock names a live child process of this one (in this namespace). */
async function heldByChild(t: Test): Promise<{ dir: string; child: ChildProcess }> {
  const dir = tempDir('lock-');
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  t.teardown(() => child.kill('SIGKILL'));
  await waitFor(() => existsSync(`/proc/${child.pid}/stat`), { what: 'the child running' });
  writeLock(dir, here(child.pid!));
  return { dir, child };
}

t.test('a held directory is refused to a second relay of this process; released, it is free and the file gone', async (t) => {
  const dir = tempDir('lock-');
  const a = await DataDirLock.acquire(dir, opts('a'));
  await t.rejects(DataDirLock.acquire(dir, opts('b')), DataDirLockedError);
  t.match(JSON.parse(readFileSync(a.path, 'utf8')), { runId: 'a', pid: process.pid });
  await a.release();
  t.notOk(existsSync(a.path), 'release removes the lock file');
  const b = await DataDirLock.acquire(dir, opts('b'));
  t.teardown(() => b.release());
  t.match(JSON.parse(readFileSync(b.path, 'utf8')), { runId: 'b' });
});

t.test('two starts at once in this process: one takes the directory, the other is refused before either writes', async (t) => {
  const dir = tempDir('lock-');
  const results = await Promise.allSettled([DataDirLock.acquire(dir, opts('a')), DataDirLock.acquire(dir, opts('b'))]);
  const held = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  t.teardown(() => Promise.all(held.map((l) => l.release())));
  t.equal(held.length, 1, 'one holds it');
  const refused = results.find((r) => r.status === 'rejected');
  t.type(refused?.status === 'rejected' ? refused.reason : null, DataDirLockedError, 'the other is refused');
});

t.test('a lock of a live process here is refused, naming it; once that process is gone it is taken at once', async (t) => {
  const { dir, child } = await heldByChild(t);
  const err = await DataDirLock.acquire(dir, opts('me')).catch((e: Error) => e);
  t.type(err, DataDirLockedError);
  t.match((err as Error).message, new RegExp(`in use by another psync-relay \\(pid ${child.pid} on elsewhere`));
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
  // The stale time is far away: a dead process's lock in this namespace needs no wait.
  const lock = await DataDirLock.acquire(dir, opts('me', { staleMs: 3_600_000 }));
  t.teardown(() => lock.release());
  t.match(JSON.parse(readFileSync(lock.path, 'utf8')), { runId: 'me', pid: process.pid });
});

t.test('a lock from another namespace is refused while its heartbeat runs, taken once it stops', async (t) => {
  const dir = tempDir('lock-');
  writeLock(dir, { pid: 1, bootId: 'another-boot', pidNs: 'pid:[1]', startTime: '1' });
  const path = join(dir, LOCK_FILE);
  let beats = 0;
  const heartbeat = setInterval(() => {
    const now = new Date(Date.now() + ++beats * 1000); // a new mtime every beat, whatever the clock's resolution
    utimesSync(path, now, now);
  }, 50);
  t.teardown(() => clearInterval(heartbeat));
  await t.rejects(DataDirLock.acquire(dir, opts('me')), DataDirLockedError, 'refused while the holder beats');
  clearInterval(heartbeat);
  const lock = await DataDirLock.acquire(dir, opts('me'));
  t.teardown(() => lock.release());
  t.match(JSON.parse(readFileSync(path, 'utf8')), { runId: 'me' }, 'taken over once the heartbeat stopped');
});

t.test('an empty lock file (a crash between its creation and its write) is taken once it stays unchanged', async (t) => {
  const dir = tempDir('lock-');
  writeFileSync(join(dir, LOCK_FILE), '');
  const lock = await DataDirLock.acquire(dir, opts('me'));
  t.teardown(() => lock.release());
  t.match(JSON.parse(readFileSync(lock.path, 'utf8')), { runId: 'me' });
});

t.test('the holder refreshes the file, puts it back when removed, and learns when another relay took it over', async (t) => {
  const dir = tempDir('lock-');
  const lost: string[] = [];
  const lock = await DataDirLock.acquire(dir, opts('me', { onLost: (o) => lost.push(o) }));
  t.teardown(() => lock.release());
  const old = new Date(Date.now() - 3_600_000);
  utimesSync(lock.path, old, old);
  await waitFor(() => statSync(lock.path).mtimeMs > old.getTime() + 1000, { what: 'the heartbeat to refresh the mtime' });

  rmSync(lock.path);
  // Created, then written: an empty file can show for a moment.
  await waitFor(() => existsSync(lock.path) && /"runId":"me"/.test(readFileSync(lock.path, 'utf8')), { what: 'the removed lock file put back' });

  // Emptied (a put-back whose write a full disk refused): still this relay's, written again, not a takeover.
  writeFileSync(lock.path, '');
  await waitFor(() => /"runId":"me"/.test(readFileSync(lock.path, 'utf8')), { what: 'the emptied lock file written again' });
  // That heartbeat writes, then truncates to its length: a takeover written in between would be cut (or padded with
  // zeros) into a file naming nobody, which the holder rightly writes again. The takeover comes once the mtime moves
  // again (the truncate, or the next heartbeat's refresh), past that window.
  utimesSync(lock.path, old, old);
  await waitFor(() => statSync(lock.path).mtimeMs > old.getTime() + 1000, { what: 'the rewriting heartbeat done' });
  t.same(lost, [], 'an empty lock file is not a takeover');

  writeLock(dir, { pid: 4242, host: 'newcomer', bootId: 'x', pidNs: 'y', startTime: '1' });
  await waitFor(() => lost.length > 0, { what: 'onLost' });
  t.match(lost[0], /pid 4242 on newcomer/);
  await lock.release();
  t.match(JSON.parse(readFileSync(lock.path, 'utf8')), { runId: 'other' }, "release leaves the new holder's file alone");
});

t.test('on a full disk a dead relay\'s lock is taken over in place; on a read-only one the relay starts without it', async (t) => {
  const { dir } = smallFilesystem(t, 'tmpfs', '1m');
  const child = spawn('true', { stdio: 'ignore' });
  await new Promise((r) => child.once('exit', r));
  writeLock(dir, { ...here(process.pid), pid: child.pid, startTime: '1' }); // this namespace, a pid that is gone
  const fill = join(dir, 'fill');
  t.throws(() => writeFileSync(fill, Buffer.alloc(2 << 20)), { code: 'ENOSPC' }, 'the disk is full');
  const full = await DataDirLock.acquire(dir, opts('me'));
  t.match(JSON.parse(readFileSync(full.path, 'utf8')), { runId: 'me' }, 'taken over although the disk is full');
  await full.release();

  writeLock(dir, { ...here(process.pid), pid: child.pid, startTime: '1' });
  execFileSync('mount', ['-o', 'remount,ro', dir]);
  const warnings: string[] = [];
  const log = pino({ level: 'warn' }, { write: (s: string) => void warnings.push(s) });
  const ro = await DataDirLock.acquire(dir, { ...opts('me'), logger: log });
  t.match(warnings.join(''), /data directory lock not written \(the disk refuses writes\)/);
  execFileSync('mount', ['-o', 'remount,rw', dir]);
  await waitFor(() => /"runId":"me"/.test(readFileSync(ro.path, 'utf8')), { what: 'the lock taken once the disk takes writes' });
  await ro.release();
  t.notOk(existsSync(ro.path));
});

t.test('a lock of a killed relay its parent has not reaped yet (a zombie) is taken at once', async (t) => {
  const dir = tempDir('lock-');
  // A shell that runs a child and never waits for it: once killed, the child stays a zombie while the shell sleeps.
  const shell = spawn('bash', ['-c', 'sleep 60 & echo $!; exec sleep 60'], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => shell.kill('SIGKILL'));
  const pid = Number(await new Promise<string>((r) => shell.stdout!.once('data', (b: Buffer) => r(b.toString()))));
  await waitFor(() => existsSync(`/proc/${pid}/stat`), { what: 'the child running' });
  writeLock(dir, here(pid));
  await t.rejects(DataDirLock.acquire(dir, opts('me')), DataDirLockedError, 'refused while it runs');
  process.kill(pid, 'SIGKILL');
  await waitFor(() => readFileSync(`/proc/${pid}/stat`, 'latin1').split(') ')[1]?.startsWith('Z') || undefined, { what: 'the child a zombie' });
  const lock = await DataDirLock.acquire(dir, opts('me', { staleMs: 3_600_000 }));
  t.teardown(() => lock.release());
  t.match(JSON.parse(readFileSync(lock.path, 'utf8')), { runId: 'me' });
});

t.test("a restarted container's lock (another PID namespace, the same kernel, hostname and pid) is taken at once", async (t) => {
  const dir = tempDir('lock-');
  writeLock(dir, { ...here(process.pid), pidNs: 'pid:[1]', host: hostname() });
  const lock = await DataDirLock.acquire(dir, opts('me', { staleMs: 3_600_000 }));
  t.teardown(() => lock.release());
  t.match(JSON.parse(readFileSync(lock.path, 'utf8')), { runId: 'me' });
});

t.test('a live holder is waited for up to waitMs: the lock is taken once it exits, refused if it outlives the wait', async (t) => {
  const { dir, child } = await heldByChild(t);
  await t.rejects(DataDirLock.acquire(dir, { ...opts('me'), waitMs: 300 }), DataDirLockedError, 'refused after 300 ms');
  const waiting = DataDirLock.acquire(dir, { ...opts('me'), waitMs: 60_000 });
  child.kill('SIGKILL');
  const lock = await waiting;
  t.teardown(() => lock.release());
  t.match(JSON.parse(readFileSync(lock.path, 'utf8')), { runId: 'me' }, 'taken once the holder exited');
});

/** Runs lock-racer.ts on `dir` as `runId`; resolves with what it printed. */
function racer(dir: string, runId: string, delayMs: number): Promise<string> {
  const child = spawn(process.execPath, ['--import=./test/loader/register.mjs', 'test/helpers/lock-racer.ts', dir, runId, String(delayMs)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  return new Promise((resolve) => child.once('exit', () => resolve(out.trim())));
}

t.test('two relays starting together on a dead relay\'s lock: exactly one takes it, the other is refused', async (t) => {
  for (let round = 0; round < 4; round++) {
    const { dir, child } = await heldByChild(t);
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await gone;
    // Both judge the dead relay's lock stale; each then waits 150 ms before its write, so both judged it first.
    const outs = await Promise.all([racer(dir, 'one', 150), racer(dir, 'two', 150)]);
    const acquired = outs.filter((o) => o.startsWith('acquired'));
    t.equal(acquired.length, 1, `round ${round}: one takes the directory (${outs.map((o) => o.replace(/\n/g, ' | ')).join(' ; ')})`);
    t.notOk(outs.some((o) => o.includes('lost')), `round ${round}: and keeps it: no lock is taken from under a relay`);
    t.equal(outs.filter((o) => o.startsWith('refused') && o.includes('in use by another psync-relay')).length, 1, `round ${round}: the other is refused, naming it`);
    t.same(readdirSync(dir).filter((f) => f !== LOCK_FILE), [], `round ${round}: nothing is left beside the lock`);
  }
});

t.test('a directory where the lock file goes: the refusal names it', async (t) => {
  const dir = tempDir('lock-');
  mkdirSync(join(dir, LOCK_FILE));
  await t.rejects(DataDirLock.acquire(dir, opts('me')), { message: new RegExp(`the data directory lock ${join(dir, LOCK_FILE).replace(/[/.-]/g, '\\$&')} cannot be read \\(EISDIR`) });
});

t.test('a takeover\'s lock file left aside by a crash is removed by the next relay to hold the lock; a fresh one is left to its racer', async (t) => {
  const dir = tempDir('lock-');
  // What a SIGKILL between the rename aside and the link back leaves: no lock, the old one under the takeover's name.
  writeFileSync(join(dir, `${LOCK_FILE}.takeover-crashed`), JSON.stringify({ runId: 'crashed' }) + '\n');
  const fresh = await DataDirLock.acquire(dir, { ...opts('fresh'), takeoverLeftMs: 60_000 });
  t.ok(readdirSync(dir).includes(`${LOCK_FILE}.takeover-crashed`), 'set aside just now: maybe a takeover in progress, left');
  await fresh.release();
  const lock = await DataDirLock.acquire(dir, { ...opts('me'), takeoverLeftMs: 0 });
  t.teardown(() => lock.release());
  t.same(readdirSync(dir), [LOCK_FILE], 'older than takeoverLeftMs: removed');
});
