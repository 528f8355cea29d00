/**
 * The web port's listening socket is closed while the process's descriptors reach into the relay's reserve, and
 * opened again once they are back under it (src/web/fd-guard.ts).
 */
import t from 'tap';
import pino from 'pino';
import { FdGuard } from '../../src/web/fd-guard.js';

function guard(counts: (number | null)[], resumes: boolean[] = []) {
  const calls: string[] = [];
  const g = new FdGuard({
    limit: 256,
    reserve: 128,
    logger: pino({ level: 'silent' }),
    count: () => (counts.length > 0 ? counts.shift()! : 0),
    pause: () => void calls.push('pause'),
    resume: () => {
      calls.push('resume');
      return resumes.length > 0 ? resumes.shift()! : true;
    },
  });
  return { g, calls };
}

t.test('closed at half the reserve, open again only under the whole reserve', async (t) => {
  const { g, calls } = guard([150, 191, 192, 200, 129, 128, 100]);
  for (let i = 0; i < 7; i++) g.check();
  t.same(calls, ['pause', 'resume'], 'paused at 192 (256 - 64), resumed at 128 (256 - 128), once each');
  t.equal(g.paused, false);
});

t.test('no descriptor left to count with (EMFILE): closed', async (t) => {
  const { g, calls } = guard([Infinity]);
  g.check();
  t.same(calls, ['pause']);
  t.equal(g.paused, true);
});

t.test('a listen that fails is tried again at the next count', async (t) => {
  const { g, calls } = guard([200, 10, 10], [false, true]);
  g.check();
  g.check();
  t.equal(g.paused, true, 'still closed after the failed listen');
  g.check();
  t.same(calls, ['pause', 'resume', 'resume']);
  t.equal(g.paused, false);
});
