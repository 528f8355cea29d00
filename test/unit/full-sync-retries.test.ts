import t from 'tap';
import { FullSyncRetries } from '../../src/downstream/full-sync-retries.js';

t.test('from the second failed load in a row a replica waits 1 s, then twice as long each time, at most 5 s (Redis\'s repl-diskless-sync-delay)', async (t) => {
  let now = 1_000_000;
  const r = new FullSyncRetries(() => now);
  t.equal(r.notBefore('a:1'), 0, 'never failed: at once');
  t.equal(r.ended('a:1', false), 1);
  t.equal(r.notBefore('a:1'), 0, 'one failed load: at once (a replica killed while loading)');
  const waits: number[] = [];
  for (let i = 2; i <= 9; i++) {
    t.equal(r.ended('a:1', false), i);
    waits.push(r.notBefore('a:1') - now);
    now += 500;
  }
  t.same(waits, [1000, 2000, 4000, 5000, 5000, 5000, 5000, 5000]);
  t.equal(r.notBefore('b:1'), 0, 'another replica is not held back');
});

t.test('a load clears the count; failures long ago are forgotten', async (t) => {
  let now = 0;
  const r = new FullSyncRetries(() => now);
  r.ended('a:1', false);
  r.ended('a:1', false);
  t.ok(r.notBefore('a:1') > now);
  t.equal(r.ended('a:1', true), 0, 'it loaded one');
  t.equal(r.notBefore('a:1'), 0, 'at once again');
  t.equal(r.ended('a:1', false), 1, 'counted afresh');
  r.ended('a:1', false);
  now += 11 * 60_000;
  t.equal(r.notBefore('a:1'), 0, 'ten minutes later the failures no longer hold it back');
  t.equal(r.ended('a:1', false), 1, 'and a new failure counts from one');
});

t.test('it remembers a bounded number of replicas, the most recent failures', async (t) => {
  const r = new FullSyncRetries(() => 0);
  r.ended('first:1', false);
  r.ended('first:1', false);
  for (let i = 0; i < 5000; i++) r.ended(`10.0.${i >> 8}.${i & 255}:6379`, false);
  t.equal(r.notBefore('first:1'), 0, 'the oldest was dropped');
  r.ended('10.0.19.135:6379', false);
  t.ok(r.notBefore('10.0.19.135:6379') > 0, 'a recent one is kept');
});
