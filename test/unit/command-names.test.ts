import t from 'tap';
import { CommandCounter, isWord } from '../../src/resp/command-names.js';

const b = (s: string) => Buffer.from(s, 'latin1');

t.test('command counter counts names case-insensitively under the lower-case name', async (t) => {
  const c = new CommandCounter();
  for (const name of ['SET', 'set', 'Set', 'PING', 'select', 'SELECT', 'sEt']) c.count(b(name));
  t.same(Object.fromEntries(c.counts()), { set: 4, ping: 1, select: 2 });
});

t.test('command counter names as String.prototype.toLowerCase does for latin1 bytes, and skips empty names', async (t) => {
  const c = new CommandCounter();
  const names = ['ÀÉÞ×ß', 'àéþ×ß', '\x00\xff', 'X_Y-1'];
  for (const name of names) c.count(b(name));
  c.count(b(''));
  const want = new Map<string, number>();
  for (const name of names) want.set(name.toLowerCase(), (want.get(name.toLowerCase()) ?? 0) + 1);
  t.same(Object.fromEntries(c.counts()), Object.fromEntries(want));
});

t.test('command counter keeps names apart that share a hash slot', async (t) => {
  const c = new CommandCounter();
  // 2,000 distinct names over 256 slots: every slot holds several.
  for (let round = 0; round < 3; round++) for (let i = 0; i < 2000; i++) c.count(b(`cmd${i}`));
  const counts = c.counts();
  t.equal(counts.size, 2000);
  t.ok([...counts.values()].every((n) => n === 3));
});

t.test('command counter counts() is a copy as of the call, in the order names were first seen', async (t) => {
  const c = new CommandCounter();
  c.count(b('SET'));
  c.count(b('PING'));
  const before = c.counts();
  c.count(b('set'));
  t.same([...before], [['set', 1], ['ping', 1]]);
  t.same([...c.counts()], [['set', 2], ['ping', 1]]);
});

t.test('isWord compares bytes with an upper-case word ignoring ASCII case', async (t) => {
  t.ok(isWord(b('replconf'), 'REPLCONF'));
  t.ok(isWord(b('GetAck'), 'GETACK'));
  t.notOk(isWord(b('GETACKS'), 'GETACK'));
  t.notOk(isWord(b('GETAC'), 'GETACK'));
  t.notOk(isWord(undefined, 'GETACK'));
  t.notOk(isWord(b('GET@CK'), 'GETACK'), 'only letters fold');
});
