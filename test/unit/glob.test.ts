import t from 'tap';
import { globBytes, globMatch } from '../../src/util/glob.js';

t.test('glob matching follows Redis stringmatchlen (PSUBSCRIBE and the /stream key filter)', async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ['*', '', true],
    ['*', 'anything', true],
    ['h?llo', 'hello', true],
    ['h?llo', 'hllo', false],
    ['h*llo', 'heeeello', true],
    ['h*llo', 'hellox', false],
    ['h[ae]llo', 'hallo', true],
    ['h[ae]llo', 'hillo', false],
    ['h[^e]llo', 'hallo', true],
    ['h[^e]llo', 'hello', false],
    ['h[a-c]llo', 'hbllo', true],
    ['h[c-a]llo', 'hbllo', true],
    ['h[a-c]llo', 'hdllo', false],
    ['h\\*llo', 'h*llo', true],
    ['h\\*llo', 'hello', false],
    ['__sentinel__:*', '__sentinel__:hello', true],
    ['*:hello', '__sentinel__:hello', true],
    ['a*b*c', 'aXXbYYc', true],
    ['a*b*c', 'aXXbYY', false],
    ['**x', 'abcx', true],
    ['[abc', 'a', true],
    ['user:*', 'user:1', true],
    ['user:*', 'usr:1', false],
    ['h\\*llo', 'hallo', false],
    ['*a*b*c*', 'xxaxxbxxcxx', true],
    ['*a*b*c*', 'xxaxxcxxbxx', false],
    ['a[', 'a[', false],
    ['ab', 'abc', false],
    ['abc**', 'abc', true],
  ];
  for (const [p, s, want] of cases) t.equal(globMatch(p, s), want, `${p} ~ ${s}`);
  t.ok(globMatch(globBytes('ключ:*'), Buffer.from('ключ:1').toString('latin1')), 'UTF-8 patterns match byte for byte');
});
