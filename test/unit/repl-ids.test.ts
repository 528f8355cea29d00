import t from 'tap';
import { ReplIds, NULL_REPLID, randomReplid } from '../../src/backlog/repl-ids.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const C = 'c'.repeat(40);

t.test('randomReplid gives 40 hex characters, different each time', async (t) => {
  const a = randomReplid();
  t.match(a, /^[0-9a-f]{40}$/);
  t.not(a, randomReplid());
});

t.test('a new ReplIds has a random replid and no second id', async (t) => {
  const ids = new ReplIds();
  t.match(ids.replid, /^[0-9a-f]{40}$/);
  t.equal(ids.replid2, NULL_REPLID);
  t.equal(ids.secondReplOffset, -1);
  t.equal(new ReplIds(A).replid, A);
});

t.test('accepts() takes the current replid at any offset', async (t) => {
  const ids = new ReplIds(A);
  for (const off of [0, 1, 1000, Number.MAX_SAFE_INTEGER]) t.ok(ids.accepts(A, off), `offset ${off}`);
  t.notOk(ids.accepts(B, 1));
  t.notOk(ids.accepts('?', -1), 'first contact is never a continuation');
});

t.test('NULL id is never accepted through replid2', async (t) => {
  const ids = new ReplIds(A);
  t.notOk(ids.accepts(NULL_REPLID, -1));
  t.notOk(ids.accepts(NULL_REPLID, 0));
  // Even with a second offset set, a NULL replid2 does not match.
  ids.replid2 = NULL_REPLID;
  ids.secondReplOffset = 1_000_000;
  t.notOk(ids.accepts(NULL_REPLID, 5));
});

t.test('shift() moves replid to replid2, valid up to master offset + 1', async (t) => {
  const ids = new ReplIds(A);
  ids.shift(B, 500);
  t.same([ids.replid, ids.replid2, ids.secondReplOffset], [B, A, 501]);
  t.ok(ids.accepts(B, 1), 'the new id');
  t.ok(ids.accepts(B, 10_000));
  t.ok(ids.accepts(A, 1), 'the old id well within');
  t.ok(ids.accepts(A, 500));
  t.ok(ids.accepts(A, 501), 'a replica that had every byte up to the shift (asks offset+1)');
  t.notOk(ids.accepts(A, 502), 'beyond the shift the old history diverges');
  t.notOk(ids.accepts(A, 100_000));
  t.notOk(ids.accepts(C, 1));
});

t.test("shift() takes upstream's second_repl_offset when upstream's ids vouch for it (INFO before PSYNC)", async (t) => {
  t.test('INFO matches: replid is the new id, replid2 ours', async (t) => {
    const ids = new ReplIds(A);
    const r = ids.shift(B, 500, { replid: B, replid2: A, secondReplOffset: 90_001 });
    t.same(r, { secondReplOffset: 90_001, from: 'upstream' });
    t.same([ids.replid, ids.replid2, ids.secondReplOffset], [B, A, 90_001]);
    t.ok(ids.accepts(A, 90_001), 'a replica ahead of us, up to where upstream switched, continues through replid2');
    t.notOk(ids.accepts(A, 90_002), 'not past it');
  });
  t.test('ids compare case-insensitively, as Redis does', async (t) => {
    const ids = new ReplIds(A);
    t.same(ids.shift(B, 500, { replid: B.toUpperCase(), replid2: A.toUpperCase(), secondReplOffset: 700 }), { secondReplOffset: 700, from: 'upstream' });
  });
  t.test("INFO's replid2 is not ours (upstream came from another history): our offset + 1", async (t) => {
    const ids = new ReplIds(A);
    t.same(ids.shift(B, 500, { replid: B, replid2: C, secondReplOffset: 90_001 }), { secondReplOffset: 501, from: 'offset' });
    t.notOk(ids.accepts(A, 502));
  });
  t.test("INFO's replid is not the id PSYNC named (upstream moved on in between): our offset + 1", async (t) => {
    const ids = new ReplIds(A);
    t.same(ids.shift(B, 500, { replid: C, replid2: A, secondReplOffset: 90_001 }), { secondReplOffset: 501, from: 'offset' });
  });
  t.test("INFO's second_repl_offset below our offset + 1: our offset + 1, never less than Redis's rule", async (t) => {
    const ids = new ReplIds(A);
    t.same(ids.shift(B, 500, { replid: B, replid2: A, secondReplOffset: 300 }), { secondReplOffset: 501, from: 'offset' });
  });
  t.test('no INFO (refused with an error, or not asked): our offset + 1', async (t) => {
    const ids = new ReplIds(A);
    t.same(ids.shift(B, 500, null), { secondReplOffset: 501, from: 'offset' });
    t.same([ids.replid, ids.replid2, ids.secondReplOffset], [B, A, 501]);
  });
});

t.test('a second shift forgets the first id', async (t) => {
  const ids = new ReplIds(A);
  ids.shift(B, 100);
  ids.shift(C, 200);
  t.same([ids.replid, ids.replid2, ids.secondReplOffset], [C, B, 201]);
  t.ok(ids.accepts(B, 201));
  t.notOk(ids.accepts(B, 202));
  t.notOk(ids.accepts(A, 50), 'only one previous id is kept');
});

t.test('reset() names a new history and drops the second id', async (t) => {
  const ids = new ReplIds(A);
  ids.shift(B, 100);
  ids.reset(C);
  t.same([ids.replid, ids.replid2, ids.secondReplOffset], [C, NULL_REPLID, -1]);
  t.ok(ids.accepts(C, 7));
  t.notOk(ids.accepts(B, 1));
  t.notOk(ids.accepts(A, 1));
  t.notOk(ids.accepts(NULL_REPLID, -1));
});

/**
 * accepts() against Redis 7.0 masterTryPartialResynchronization's id check:
 *
 *   if (strcasecmp(replid, server.replid) &&
 *       (strcasecmp(replid, server.replid2) || offset > server.second_replid_offset)) -> full resync
 *
 * i.e. accepted when the id is our replid (any offset), or our replid2 and offset <= second_repl_offset. Each row's
 * expectation is that rule applied to the row's state; offsets are >= 1 (the backlog check, done by the caller,
 * refuses anything lower whatever the ids say). State: history A, then a failover at offset 500 to B.
 */
t.test('accepts() follows Redis id rule, row by row', async (t) => {
  const state = () => {
    const ids = new ReplIds(A);
    ids.shift(B, 500); // replid B, replid2 A, second_repl_offset 501
    return ids;
  };
  const rows: Array<[string, string, number, boolean]> = [
    ['the current replid at the first offset', B, 1, true],
    ['the current replid before the failover point', B, 400, true],
    ['the current replid far ahead (the backlog check decides)', B, 1_000_000, true],
    ['replid2 at the first offset', A, 1, true],
    ['replid2 at second_repl_offset - 1', A, 500, true],
    ['replid2 at second_repl_offset (every byte before the failover held)', A, 501, true],
    ['replid2 one past second_repl_offset (a history that diverged)', A, 502, false],
    ['replid2 far past second_repl_offset', A, 100_000, false],
    ['an unknown replid', C, 1, false],
    ['first contact (?)', '?', 1, false],
  ];
  for (const [what, replid, offset, redis] of rows) {
    t.equal(state().accepts(replid, offset), redis, `${what}: PSYNC ${replid.slice(0, 6)}… ${offset}`);
  }
});

t.test('accepts() compares replids as Redis does, ignoring case (strcasecmp)', async (t) => {
  const ids = new ReplIds(A);
  ids.shift(B, 500);
  t.equal(ids.accepts(B.toUpperCase(), 1), true, 'the current replid in upper case');
  t.equal(ids.accepts(A.toUpperCase(), 501), true, 'replid2 in upper case, within second_repl_offset');
  t.equal(ids.accepts(A.toUpperCase(), 502), false, 'replid2 in upper case, past second_repl_offset');
});

t.test('vouches(): our id at any offset; after failovers, any id of the history only up to second_repl_offset', async (t) => {
  const ids = new ReplIds(A);
  t.ok(ids.vouches(A, 10_000), 'the current id');
  t.notOk(ids.vouches(B, 1), 'no failover yet: no other id');
  ids.shift(B, 1000);
  ids.shift(C, 2000);
  t.ok(ids.vouches(C.toUpperCase(), 50_000), 'the current id, any case');
  t.ok(ids.vouches(A, 1001), 'an older id of this history, before the first failover');
  t.ok(ids.vouches(B, 2001), 'replid2 up to second_repl_offset');
  t.notOk(ids.vouches(B, 2002), 'past it: the old master may have written what the new one never had');
  t.notOk(ids.accepts(A, 1001), 'unlike accepts(), which knows replid2 only');
});
