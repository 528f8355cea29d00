/**
 * The web port's listening socket is closed while the process's descriptors reach into the relay's reserve, and its
 * spare descriptors freed for the relay's files and links; both come back once there is room (src/web/fd-guard.ts).
 */
import t from 'tap';
import pino from 'pino';
import { readdirSync } from 'node:fs';
import { FdGuard, openFds } from '../../src/web/fd-guard.js';

function guard(counts: number[], resumes: boolean[] = [], opts: { limit?: number; promised?: () => number } = {}) {
  const calls: string[] = [];
  let next = 1000;
  const open = new Set<number>();
  const g = new FdGuard({
    limit: opts.limit ?? 256,
    reserve: 128,
    ...(opts.promised && { promised: opts.promised }),
    logger: pino({ level: 'silent' }),
    count: () => (counts.length > 0 ? counts.shift()! : 0),
    pause: () => void calls.push('pause'),
    resume: () => {
      calls.push('resume');
      return resumes.length > 0 ? resumes.shift()! : true;
    },
    openSpare: () => (open.add(next), next++),
    closeSpare: (fd) => void open.delete(fd),
  });
  // Each test calls start() (spares taken; its timer never fires within the synchronous test), check() by hand, stop().
  return { g, calls, open };
}

t.test('half the reserve is held as spares; at the other half the port closes, then the spares are freed', async (t) => {
  const { g, calls, open } = guard([150, 191, 192]);
  g.start();
  t.equal(open.size, 64, '64 spares held');
  g.check();
  g.check();
  t.same([calls, open.size], [[], 64], 'under 192 (256 - 64): nothing happens');
  g.check();
  t.same(calls, ['pause'], 'at 192: the port closes');
  t.equal(open.size, 0, 'and the spares are freed, after it');
  g.stop();
});

t.test('it listens again, with its spares taken first, only once there is room for them under the reserve', async (t) => {
  const { g, calls, open } = guard([Infinity, 100, 65, 64]);
  g.start();
  g.check();
  t.equal(g.paused, true, 'no descriptor left to count with (EMFILE): closed');
  g.check();
  g.check();
  t.same(calls, ['pause'], '100 and 65 open: no room for 64 spares under 128');
  g.check();
  t.same(calls, ['pause', 'resume'], '64 open: spares taken, listening again');
  t.equal(open.size, 64);
  t.equal(g.paused, false);
  g.stop();
});

t.test('a listen that fails is tried again at the next count', async (t) => {
  const { g, calls } = guard([200, 10, 10], [false, true]);
  g.start();
  g.check();
  g.check();
  t.equal(g.paused, true, 'still closed after the failed listen');
  g.check();
  t.same(calls, ['pause', 'resume', 'resume']);
  t.equal(g.paused, false);
  g.stop();
});

t.test('the count is exact near the limit, and the descriptor table size (a bound above it) while that is under it', async (t) => {
  const exact = readdirSync('/proc/self/fd').length;
  const counted = openFds(0)!;
  t.ok(Math.abs(counted - exact) <= 1, `exact when asked (${counted} against ${exact}; a readdir holds one itself)`);
  const bound = openFds(Infinity)!;
  t.ok(bound >= counted, `the table size (${bound}) is no fewer`);
  t.equal(openFds(bound), counted, 'a table as large as asked about: counted exactly again');
});

t.test("the RESP port's free client slots are the web port's to leave: it closes once it would take them", async (t) => {
  // An open files limit of 1024: listen.max-clients lowered to 796 (fd-limit.ts); 10 clients connected, 786 slots free.
  const free = 786;
  const { g, calls, open } = guard([150, 200, 222, 160, 94], [], { limit: 1024, promised: () => free });
  g.start();
  g.check();
  g.check();
  t.same(calls, [], '150 and 200 open (the clients, the relay, its spares, web connections): room for every free slot');
  g.check();
  t.same(calls, ['pause'], '222 open: with the 786 free slots, within 16 of the limit: the web port closes');
  t.equal(open.size, 0, 'and the spares are freed');
  g.check();
  t.same(calls, ['pause'], '160 open: not yet back under the reserve with the spares taken again');
  g.check();
  t.same(calls, ['pause', 'resume'], '94 open (web connections gone): room for the spares and every free slot, with the reserve');
  g.stop();
});
